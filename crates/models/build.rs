//! `KERNELS_BUILD` (`ops::KERNELS_BUILD`): a hash of what the GPU builds' compiled kernels
//! depend on, for the kernel cache's folder name. CubeCL keys a cached kernel by its name and
//! compile-time arguments, not by its code, so a cache filled by another version of bertlab's
//! kernels (or of Burn's and CubeCL's, which Cargo.lock pins) would hand back stale kernels.

use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let ops = Path::new(&manifest).join("src/ops");
    // The workspace's lock file, when built inside the workspace (a published crate has none).
    let lock = Path::new(&manifest).join("../../Cargo.lock");
    let mut files: Vec<_> = std::fs::read_dir(&ops)
        .expect("src/ops is readable")
        .map(|e| e.expect("src/ops lists").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    if lock.is_file() {
        files.push(lock);
    }
    // FNV-1a (64-bit) over each file's name and bytes: stable across toolchains.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for file in &files {
        eat(file.file_name().expect("a file name").as_encoded_bytes());
        eat(&std::fs::read(file).expect("a kernel source is readable"));
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed={}", ops.display());
    println!("cargo:rustc-env=BERTLAB_KERNELS_BUILD={hash:016x}");
}
