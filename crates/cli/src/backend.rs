//! The Burn backend this binary was built with (cargo features `cpu` / `cuda` / `cuda-unfused` /
//! `wgpu`; with several, CUDA wins over wgpu, wgpu over the CPU).

#[cfg(feature = "cuda-unfused")]
mod chosen {
    /// Inference backend.
    pub type Backend = burn::backend::Cuda<f32, i32>;
    /// Name recorded in run records and printed by `--version`.
    pub const BACKEND_NAME: &str = "cuda";
    /// Kernels are compiled (and tuned) at first use: `train` warms up by default.
    pub const COMPILES_KERNELS: bool = true;
    /// CubeCL's kernel logs, for `bench step-profile`.
    pub const KERNEL_LOG: Option<bertlab_bench::KernelLog> = Some(crate::kernel_cache::with_kernel_log);

    /// Check that the NVIDIA driver and NVRTC load, with advice when they do not.
    ///
    /// Burn's CUDA runtime (cudarc) loads both lazily and panics on a background thread when one
    /// is missing; checking first turns that into an error that says what to install.
    pub fn preflight() -> anyhow::Result<()> {
        let needs = [
            (
                "cuda",
                "the NVIDIA driver library (libcuda.so.1). Install the NVIDIA driver for your GPU \
                 (e.g. `apt install nvidia-driver-580`), check `nvidia-smi` works, and in a container \
                 run with the GPU exposed (`--gpus all`)",
            ),
            (
                "nvrtc",
                "NVRTC, the CUDA runtime compiler (libnvrtc.so), which Burn uses to compile its \
                 kernels. Install the CUDA toolkit (e.g. `apt install cuda-nvrtc-13-0`) or \
                 `pip install nvidia-cuda-nvrtc`, and add the folder holding libnvrtc.so* to LD_LIBRARY_PATH",
            ),
        ];
        for (lib, advice) in needs {
            let candidates = cudarc::get_lib_name_candidates(lib);
            // SAFETY: loading a system library runs its initialisers; these are the same
            // libraries cudarc itself would load a moment later.
            let found = candidates.iter().any(|name| unsafe { libloading::Library::new(name) }.is_ok());
            if !found {
                anyhow::bail!(
                    "this bertlab was built for CUDA but cannot load {advice}. \
                     (Searched: {}; LD_LIBRARY_PATH={:?}.) To run on the CPU instead, build without \
                     `--features cuda`.",
                    candidates.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
                    std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    /// Parse `--device` (`cuda`, `cuda:N`, or `N`) after checking the CUDA libraries load.
    pub fn device(spec: &str) -> anyhow::Result<burn::backend::cuda::CudaDevice> {
        preflight()?;
        crate::kernel_cache::configure();
        let index = match spec.trim() {
            "" | "cuda" | "gpu" | "default" => 0,
            s => s
                .trim_start_matches("cuda:")
                .parse::<usize>()
                .map_err(|_| crate::UsageError(format!("--device {spec:?}: expected cuda, cuda:N or N")))?,
        };
        Ok(burn::backend::cuda::CudaDevice::new(index))
    }
}

#[cfg(all(feature = "wgpu-unfused", not(feature = "cuda-unfused")))]
mod chosen {
    /// Inference backend: Burn's wgpu backend (Vulkan, Metal, DirectX 12), with kernel fusion.
    pub type Backend = burn::backend::Wgpu<f32, i32>;
    /// Name recorded in run records and printed by `--version`.
    pub const BACKEND_NAME: &str = if cfg!(feature = "vulkan") { "vulkan" } else { "wgpu" };
    /// Kernels are compiled (and tuned) at first use: `train` warms up by default.
    pub const COMPILES_KERNELS: bool = true;
    /// CubeCL's kernel logs, for `bench step-profile`.
    pub const KERNEL_LOG: Option<bertlab_bench::KernelLog> = Some(crate::kernel_cache::with_kernel_log);

    /// Parse `--device`: `default`, `wgpu` or the build's name (`vulkan` for the vulkan build,
    /// what `cargo xtask --backend vulkan` passes): wgpu's pick, the most powerful adapter (the
    /// `CUBECL_WGPU_DEFAULT_DEVICE` variable overrides it); `gpu` / `gpu:N` (discrete GPU N,
    /// also `wgpu:N` or `vulkan:N`), `integrated` / `integrated:N`, or `cpu` (a software
    /// adapter such as Mesa's lavapipe).
    pub fn device(spec: &str) -> anyhow::Result<burn::backend::wgpu::WgpuDevice> {
        use burn::backend::wgpu::WgpuDevice;
        crate::kernel_cache::configure();
        let spec = spec.trim();
        let index = |s: &str| {
            s.parse::<usize>().map_err(|_| {
                crate::UsageError(format!(
                    "--device {spec:?}: expected default, {BACKEND_NAME}, gpu, gpu:N, integrated, integrated:N or cpu"
                ))
            })
        };
        let named = |s: &str| s == "wgpu" || s == BACKEND_NAME;
        Ok(match spec {
            "" | "default" => WgpuDevice::DefaultDevice,
            s if named(s) => WgpuDevice::DefaultDevice,
            "cpu" => WgpuDevice::Cpu,
            "gpu" => WgpuDevice::DiscreteGpu(0),
            "integrated" => WgpuDevice::IntegratedGpu(0),
            s => match s.split_once(':') {
                Some((name, n)) if name == "gpu" || named(name) => WgpuDevice::DiscreteGpu(index(n)?),
                Some(("integrated", n)) => WgpuDevice::IntegratedGpu(index(n)?),
                _ => WgpuDevice::DiscreteGpu(index(s)?),
            },
        })
    }
}

#[cfg(all(feature = "cpu", not(any(feature = "cuda-unfused", feature = "wgpu-unfused"))))]
mod chosen {
    /// Inference backend.
    pub type Backend = burn::backend::Flex;
    /// Name recorded in run records and printed by `--version`.
    pub const BACKEND_NAME: &str = "cpu (burn-flex)";
    /// Burn-flex's kernels are compiled with bertlab: nothing to warm up.
    pub const COMPILES_KERNELS: bool = false;
    /// No CubeCL, no kernel launches: `bench step-profile` counts host waits only.
    pub const KERNEL_LOG: Option<bertlab_bench::KernelLog> = None;

    /// Parse `--device`: only `cpu` exists in a CPU build.
    pub fn device(spec: &str) -> anyhow::Result<<Backend as burn::tensor::backend::BackendTypes>::Device> {
        match spec.trim() {
            "" | "cpu" | "default" => Ok(Default::default()),
            other => {
                // A GPU's name needs another build; anything else is no device at all.
                let gpu = ["cuda", "gpu", "wgpu", "integrated"]
                    .iter()
                    .any(|g| other == *g || other.starts_with(&format!("{g}:")))
                    || other.parse::<usize>().is_ok();
                if !gpu {
                    return Err(crate::UsageError(format!(
                        "--device {other:?}: expected cpu or default (a GPU build also takes cuda:N, gpu:N, …)"
                    ))
                    .into());
                }
                anyhow::bail!(
                    "--device {other:?}: this bertlab was built for the CPU only; rebuild with \
                     `cargo build --release -p bertlab --features cuda` to use a GPU"
                )
            }
        }
    }
}

#[cfg(not(any(feature = "cpu", feature = "cuda-unfused", feature = "wgpu-unfused")))]
compile_error!("build bertlab with the `cpu` (default), `cuda` or `wgpu` feature");

pub use chosen::*;

/// Whether this build autotunes its matmuls and reductions (`cuda-tuned`, `wgpu-tuned`).
pub const AUTOTUNES: bool = cfg!(any(feature = "cuda-tuned", feature = "wgpu-tuned"));

/// The device of the inference (and training) backend.
pub type Device = <Backend as burn::tensor::backend::BackendTypes>::Device;

/// The training backend: autodiff over the inference backend.
#[allow(dead_code)]
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// Route `bertlab_models::ops` to this build's fast paths: the CubeCL kernels of the GPU
/// builds, for inference and training (Flex's are built in); and apply `BERTLAB_ATTENTION`
/// (`rows`, the default; `tiles`; `tensor-cores`): which kernels multiply in attention on the
/// GPU builds (`bertlab_models::ops::AttentionProducts`; the CPU build has one attention).
pub fn register_fast_paths() -> Result<(), bertlab_models::ops::UnknownAttentionProducts> {
    #[cfg(any(feature = "cuda-unfused", feature = "wgpu-unfused"))]
    {
        bertlab_models::ops::register::<Backend>();
        bertlab_models::ops::register::<TrainBackend>();
    }
    if let Ok(value) = std::env::var("BERTLAB_ATTENTION") {
        let products = value.trim().parse()?;
        // Only the CubeCL builds have a choice; the CPU build checks the name and keeps the
        // default, so what reads the choice (the record, the bench lines) needs no build test.
        if cfg!(any(feature = "cuda-unfused", feature = "wgpu-unfused")) {
            bertlab_models::ops::set_attention_products(products);
        }
    }
    Ok(())
}
