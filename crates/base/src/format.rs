//! How numbers and durations are written, everywhere: progress lines, records' companions,
//! reports, run ids and plans.

/// A number as short as it reads: `2e-5`, `7.5e-6`, `0.25`, `1`, `128`.
pub fn format_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let x = round_sig(x, 12);
    if x.abs() < 1e-3 || x.abs() >= 1e6 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A learning rate in scientific notation: `1e-3`, `2e-5`, `7.5e-6`.
pub fn format_lr(x: f64) -> String {
    if x == 0.0 || x.abs() >= 1.0 {
        return format_number(x);
    }
    format!("{:e}", round_sig(x, 12))
}

/// `x` rounded to `digits` significant digits (removes binary noise such as 0.15000000000000002).
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// `HH:MM:SS`, as the notebook prints elapsed time.
pub fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// `1h 05m`, `3m 20s`, `12s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `1.2e9` → `1.2G` style for token and FLOP counts.
pub fn format_count(x: f64) -> String {
    let (v, unit) = if x >= 1e15 {
        (x / 1e15, "P")
    } else if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// At most eight items of a list, then how many there are in all: how an error names the
/// files, keys or labels it found.
pub fn abbreviate<T: std::fmt::Display>(items: &[T]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = items.iter().take(SHOWN).map(ToString::to_string).collect();
    if items.len() > SHOWN {
        format!("{}, … ({} in all)", head.join(", "), items.len())
    } else {
        head.join(", ")
    }
}

/// An error and its causes on one line, outermost first, joined by `: ` as `{err:#}` writes
/// them, except that a cause the message so far already quotes (an error whose message holds its
/// `#[source]`, or repeats it after advice) is not written twice.
pub fn error_chain<I: IntoIterator<Item = String>>(links: I) -> String {
    let mut message = String::new();
    for link in links {
        if message.is_empty() {
            message = link;
        } else if !message.contains(&link) {
            message.push_str(": ");
            message.push_str(&link);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_write_each_cause_once() {
        let links = |l: &[&str]| error_chain(l.iter().map(|s| s.to_string()));
        assert_eq!(links(&["outer", "inner"]), "outer: inner");
        assert_eq!(links(&["a.csv: cannot read it: gone", "gone"]), "a.csv: cannot read it: gone");
        assert_eq!(links(&["x; to start over, pass --fresh: x", "x"]), "x; to start over, pass --fresh: x");
        assert_eq!(links(&["run a", "b: c", "c"]), "run a: b: c");
        assert_eq!(links(&[]), "");
    }

    #[test]
    fn numbers_format_short() {
        assert_eq!(format_number(2e-5), "2e-5");
        assert_eq!(format_number(7.5e-6), "7.5e-6");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(0.02 * 0.75), "0.015");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(128.0), "128");
        assert_eq!(format_number(0.004), "0.004");
        assert_eq!(format_lr(0.001), "1e-3");
        assert_eq!(format_lr(7.5e-6), "7.5e-6");
    }

    #[test]
    fn durations() {
        assert_eq!(hms(167.4), "00:02:47");
        assert_eq!(hms(3_725.0), "01:02:05");
        assert_eq!(format_duration(3_725.0), "1h 02m");
        assert_eq!(format_duration(200.0), "3m 20s");
        assert_eq!(format_duration(12.4), "12s");
        assert_eq!(format_count(1.23e9), "1.2G");
        assert_eq!(format_count(512.0), "512");
    }
}
