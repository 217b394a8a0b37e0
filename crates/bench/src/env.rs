//! `bench env`: the backend, device and half precisions of this build.

use bertlab_models::Precision;
use bertlab_run::DeviceSetting;
use bertlab_train::check_precision;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use serde_json::json;

use crate::{emit, Runtime};

#[derive(Args)]
pub(crate) struct EnvArgs {
    #[command(flatten)]
    device: DeviceSetting,
}

pub(crate) fn run<B: AutodiffBackend>(args: EnvArgs, rt: &Runtime<B>) -> anyhow::Result<()> {
    let device = (rt.device)(&args.device.name())?;
    let backend_type = std::any::type_name::<B::InnerBackend>();
    let probe = |p: Precision| match check_precision::<B::InnerBackend>(&device, p) {
        Ok(()) => json!(true),
        Err(e) => json!(e.to_string()),
    };
    emit(json!({
        "bench": "env",
        "bertlab": env!("CARGO_PKG_VERSION"),
        "backend": rt.name,
        "build": rt.build_label(),
        "backend_type": backend_type,
        // Burn's CUDA backend is wrapped in `Fusion<…>` when built with the `fusion` feature.
        "fusion": backend_type.contains("Fusion"),
        "device": format!("{device:?}"),
        "backend_name": B::InnerBackend::name(&device),
        "f16": probe(Precision::F16),
        "bf16": probe(Precision::BF16),
        "host_threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
    }));
    Ok(())
}
