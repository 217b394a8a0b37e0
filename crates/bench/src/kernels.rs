//! `bench kernels`: the ops seam's fast path on this build's backend against the reference
//! decomposition (`bertlab_models::ops::check`), one JSON line per op and case.

use bertlab_models::ops;
use bertlab_run::DeviceSetting;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde_json::json;

use crate::{emit, Runtime};

#[derive(Args)]
pub(crate) struct KernelsArgs {
    #[command(flatten)]
    device: DeviceSetting,
    /// Seed of the random inputs, shapes' contents and dropout masks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub(crate) fn run<B: AutodiffBackend>(args: KernelsArgs, rt: &Runtime<B>) -> anyhow::Result<()> {
    let device = (rt.device)(&args.device.name())?;
    // Whether the ops reach a fast path at all: on a backend without one, both sides are the
    // reference and the check proves nothing about kernels.
    let fast_path = ops::has_fast_path::<B>() && ops::has_fast_path::<B::InnerBackend>();
    let mut checks = ops::check::check_ops::<B>(&device, args.seed);
    checks.extend(ops::check::check_attention_products::<B>(&device, args.seed));
    let mut failed = Vec::new();
    for check in &checks {
        emit(json!({
            "bench": "kernels",
            "build": rt.build_label(),
            "fast_path": fast_path,
            "op": check.op,
            "case": check.case,
            // NaN is not JSON: a NaN error is written as null (and fails).
            "max_error": if check.max_error.is_nan() { None } else { Some(check.max_error) },
            "tolerance": check.tolerance,
            "passed": check.passed(),
        }));
        if !check.passed() {
            failed.push(format!(
                "{} ({}): error {} > {}",
                check.op, check.case, check.max_error, check.tolerance
            ));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{} of {} op checks failed: {}", failed.len(), checks.len(), failed.join("; "));
    }
    eprintln!(
        "bench kernels: {} op checks passed on {} ({})",
        checks.len(),
        rt.build_label(),
        if fast_path { "fast path" } else { "no fast path: reference against itself" }
    );
    Ok(())
}
