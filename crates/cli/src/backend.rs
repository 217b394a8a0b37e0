//! The Burn backend this binary was built with (cargo features `cpu` / `cuda`).

#[cfg(feature = "cuda")]
mod chosen {
    /// Inference backend.
    pub type Backend = burn::backend::Cuda<f32, i32>;
    /// Name recorded in run records and printed by `--version`.
    pub const BACKEND_NAME: &str = "cuda";

    /// Parse `--device`: `cuda`, `cuda:N`, or `N`.
    pub fn device(spec: &str) -> anyhow::Result<burn::backend::cuda::CudaDevice> {
        let index = match spec.trim() {
            "" | "cuda" | "gpu" | "default" => 0,
            s => s
                .trim_start_matches("cuda:")
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("--device {spec:?}: expected cuda, cuda:N or N"))?,
        };
        Ok(burn::backend::cuda::CudaDevice::new(index))
    }
}

#[cfg(all(feature = "cpu", not(feature = "cuda")))]
mod chosen {
    /// Inference backend.
    pub type Backend = burn::backend::Flex;
    /// Name recorded in run records and printed by `--version`.
    pub const BACKEND_NAME: &str = "cpu (burn-flex)";

    /// Parse `--device`: only `cpu` exists in a CPU build.
    pub fn device(spec: &str) -> anyhow::Result<<Backend as burn::tensor::backend::Backend>::Device> {
        match spec.trim() {
            "" | "cpu" | "default" => Ok(Default::default()),
            other => anyhow::bail!(
                "--device {other:?}: this bertlab was built for the CPU only; rebuild with \
                 `cargo build --release -p bertlab --features cuda` to use a GPU"
            ),
        }
    }
}

#[cfg(not(any(feature = "cpu", feature = "cuda")))]
compile_error!("build bertlab with the `cpu` (default) or `cuda` feature");

pub use chosen::*;

/// The training backend: autodiff over the inference backend.
#[allow(dead_code)]
pub type TrainBackend = burn::backend::Autodiff<Backend>;
