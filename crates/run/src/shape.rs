//! A batch shape as text, `ROWSxLENGTH` (`32x128`; `×` is read too): how `bertlab train
//! --warmed-shapes` takes the `[rows, length]` pairs a record's `shapes` holds, and how `cargo
//! xtask` writes them.

/// Read `32x128` (or `32×128`) as `[32, 128]`; both numbers must be positive.
pub fn parse_batch_shape(text: &str) -> Result<[usize; 2], String> {
    let bad = || format!("'{text}' is not a batch shape ROWSxLENGTH, e.g. 32x128");
    let (rows, len) = text.trim().split_once(['x', '×']).ok_or_else(bad)?;
    let number = |s: &str| s.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match (number(rows), number(len)) {
        (Some(rows), Some(len)) => Ok([rows, len]),
        _ => Err(bad()),
    }
}

/// `[[32, 128], [32, 96]]` as `32x128,32x96`, what [`parse_batch_shape`] reads back one by one.
pub fn batch_shapes_text(shapes: &[[usize; 2]]) -> String {
    shapes.iter().map(|[rows, len]| format!("{rows}x{len}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_round_trip_and_bad_ones_are_named() {
        let shapes = [[32, 128], [32, 96], [8, 512]];
        let text = batch_shapes_text(&shapes);
        assert_eq!(text, "32x128,32x96,8x512");
        let back: Vec<[usize; 2]> = text.split(',').map(|s| parse_batch_shape(s).unwrap()).collect();
        assert_eq!(back, shapes);
        assert_eq!(parse_batch_shape(" 16×64 "), Ok([16, 64]));
        for bad in ["", "32", "32x", "x128", "0x128", "32x0", "-1x2", "32x128x2", "ax b"] {
            let e = parse_batch_shape(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")) && e.contains("ROWSxLENGTH"), "{bad}: {e}");
        }
        assert_eq!(batch_shapes_text(&[]), "");
    }
}
