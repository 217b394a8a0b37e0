//! What loading all-MiniLM-L6-v2 costs, and the share of it spent refusing non-finite weights:
//! `cargo bench -p bertlab-models --bench load`.
//!
//! The loader scans every value it reads for NaN and ±inf (`ModelError::NonFiniteWeights`).
//! This times a whole `load_encoder` (scan included) and, apart, the same scan over the same
//! f32 values, and prints the ratio. Needs ../shared (or BERTLAB_SHARED).

use std::time::{Duration, Instant};

use bertlab_hub::{HubOptions, RepoRef};
use bertlab_models::load_encoder;
use burn::backend::Flex;
use safetensors::{Dtype, SafeTensors};

fn best_and_median<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[runs / 2])
}

fn main() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let dir = shared.join("models/all-MiniLM-L6-v2");
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("MiniLM weights");
    let file = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let tensors: Vec<Vec<f32>> = file
        .tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == Dtype::F32)
        .map(|(_, view)| {
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        })
        .collect();
    let values: usize = tensors.iter().map(Vec::len).sum();

    let runs = 9;
    let repo = RepoRef::Local(dir);
    let hub = HubOptions::default();
    let device = Default::default();
    let load = best_and_median(runs, || load_encoder::<Flex>(&repo, &hub, &device).expect("load MiniLM"));
    // The loader's test, tensor by tensor (a branch-free fold, which vectorises; locating the
    // first bad value happens only on failure).
    let scan = best_and_median(runs, || {
        tensors.iter().filter(|t| !t.iter().fold(true, |ok, v| ok & v.is_finite())).count()
    });
    println!("\n{:<48} {:>10} {:>10}", "step", "best ms", "median ms");
    for (name, (best, median)) in [
        ("load_encoder, all-MiniLM-L6-v2 (scan included)".to_string(), load),
        (format!("non-finite scan alone ({:.1} M values)", values as f64 / 1e6), scan),
    ] {
        println!("{name:<48} {:>10.1} {:>10.1}", best.as_secs_f64() * 1e3, median.as_secs_f64() * 1e3);
    }
    println!("scan / load (medians): {:.1} %", 100.0 * scan.1.as_secs_f64() / load.1.as_secs_f64());
}
