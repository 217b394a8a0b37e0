//! Copies the `mod kernels { … }` blocks of bertlab-models' CubeCL files into one module, so
//! the check compiles the kernels as they are in the source, not a copy kept by hand.

use std::fmt::Write;
use std::path::Path;

/// (file under crates/models/src/ops, module name here)
const FILES: [(&str, &str); 6] = [
    ("cube_shared.rs", "shared"),
    ("cube.rs", "layer"),
    ("cube_norm.rs", "norm"),
    ("cube_adam.rs", "adam"),
    ("cube_attention.rs", "rows"),
    ("cube_attention_tiles.rs", "tiles"),
];

/// The text of the `mod kernels { … }` block of `source` (braces counted; the kernels' code
/// has no brace inside a string or a char literal).
fn kernels_block(source: &str, file: &str) -> String {
    let start = source.find("mod kernels {").unwrap_or_else(|| panic!("{file}: no `mod kernels {{`"));
    let mut depth = 0usize;
    for (i, c) in source[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return source[start..=start + i].to_string();
                }
            }
            _ => {}
        }
    }
    panic!("{file}: `mod kernels` is not closed")
}

fn main() {
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/models/src/ops");
    let mut all = String::new();
    for (file, name) in FILES {
        let path = ops.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut block = kernels_block(&source, file)
            .replacen("mod kernels {", &format!("pub mod {name} {{"), 1)
            .replace("use crate::ops::cube_shared::kernels::", "use crate::all::shared::")
            .replace("pub(super) fn", "pub fn")
            .replace("pub(crate) fn", "pub fn");
        // A constant of the file the kernels use (`use super::X;`) comes along.
        for line in source.lines().filter(|l| l.starts_with("const ")) {
            let constant = line.trim_start_matches("const ").split(':').next().unwrap_or_default();
            let import = format!("    use super::{constant};\n");
            if block.contains(&import) {
                block = block.replace(&import, &format!("    {line}\n"));
            }
        }
        writeln!(all, "{block}").unwrap();
    }
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("kernels.rs");
    std::fs::write(out, all).unwrap();
}
