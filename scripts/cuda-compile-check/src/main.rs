//! Writes the CUDA C++ source of each of bertlab-models' CubeCL kernels, in the variants the
//! ops launch (dtypes, compile-time sizes and flags), into the folder given as the argument:
//! the kernels expanded on a wgpu client (any Vulkan device, lavapipe included) and compiled by
//! CubeCL's own CUDA compiler (`cubecl-cpp`), as the CUDA runtime would before NVRTC.
//! `nvrtc.py` then compiles them for each GPU architecture. Exits 1 if a kernel does not
//! generate.

#[allow(unused, clippy::all)]
mod all {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

use std::path::{Path, PathBuf};

use cubecl::ir::{ElemType, FloatKind, IntKind, StorageType, UIntKind};
use cubecl::prelude::*;
use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
use cubecl::Compiler;
use cubecl_cpp::cuda::mma::CudaWmmaCompiler;
use cubecl_cpp::cuda::CudaDialect;
use cubecl_cpp::shared::{CompilationOptions, CppCompiler};

type R = WgpuRuntime;

fn tensor() -> TensorCompilationArg {
    TensorCompilationArg { inplace: None }
}

fn tensors<T: LaunchArg<CompilationArg = TensorCompilationArg>>(n: usize) -> SequenceCompilationArg<T> {
    SequenceCompilationArg { values: (0..n).map(|_| tensor()).collect() }
}

fn scalars(n: usize) -> SequenceCompilationArg<usize> {
    SequenceCompilationArg { values: (0..n).map(|_| ()).collect() }
}

/// A dropout mask's argument (`HashDropout`: four scalars, nothing to compile in).
fn mask() -> all::shared::HashDropoutCompilationArg {
    all::shared::HashDropoutCompilationArg { seed_lo: (), seed_hi: (), threshold: (), scale: () }
}

/// The attention kernels' sizes (`AttentionSizes`: three scalars).
fn sizes() -> all::shared::AttentionSizesCompilationArg {
    all::shared::AttentionSizesCompilationArg { seq: (), heads: (), scale: () }
}

fn units(n: u32) -> KernelSettings {
    KernelSettings::default().cube_dim(CubeDim::new_1d(n))
}

fn short(t: StorageType) -> &'static str {
    match t {
        StorageType::Scalar(ElemType::Float(FloatKind::F32)) => "f32",
        StorageType::Scalar(ElemType::Float(FloatKind::F16)) => "f16",
        StorageType::Scalar(ElemType::Float(FloatKind::BF16)) => "bf16",
        StorageType::Scalar(ElemType::UInt(UIntKind::U8)) => "u8",
        StorageType::Scalar(ElemType::UInt(UIntKind::U32)) => "u32",
        StorageType::Scalar(ElemType::Int(IntKind::I32)) => "i32",
        _ => "other",
    }
}

struct Writer {
    dir: PathBuf,
    written: usize,
    failed: Vec<String>,
}

impl Writer {
    fn kernel(&mut self, name: String, definition: KernelDefinition) {
        let mut compiler = CppCompiler::<CudaDialect<CudaWmmaCompiler>>::default();
        let address = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
        match compiler.compile(definition, &CompilationOptions::default(), ExecutionMode::Checked, address) {
            Ok(source) => {
                std::fs::write(self.dir.join(format!("{name}.cu")), source.to_string())
                    .expect("write a source");
                self.written += 1;
            }
            Err(e) => self.failed.push(format!("{name}: {e:?}")),
        }
    }
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: cuda-compile-check OUT_DIR"));
    std::fs::create_dir_all(&dir).expect("create the output folder");
    let mut w = Writer { dir: Path::new(&dir).to_path_buf(), written: 0, failed: Vec::new() };
    let c = R::client(&WgpuDevice::default());
    let float = |k| StorageType::Scalar(ElemType::Float(k));
    let (f32_, f16_, bf16_) = (float(FloatKind::F32), float(FloatKind::F16), float(FloatKind::BF16));
    let masks = [
        StorageType::Scalar(ElemType::UInt(UIntKind::U8)),
        StorageType::Scalar(ElemType::UInt(UIntKind::U32)),
        StorageType::Scalar(ElemType::Int(IntKind::I32)),
    ];
    use all::*;

    for f in [f32_, f16_, bf16_] {
        let k = layer::hash_dropout_kernel::HashDropoutKernel::<R>::new(
            units(256),
            c.clone(),
            tensor(),
            tensor(),
            mask(),
            f,
        );
        w.kernel(format!("dropout-{}", short(f)), k.define());
        let k = norm::finite_flag_kernel::FiniteFlagKernel::<R>::new(
            units(256),
            c.clone(),
            tensor(),
            tensor(),
            f,
        );
        w.kernel(format!("finite-flag-{}", short(f)), k.define());
        let k = norm::sum_squares_many_kernel::SumSquaresManyKernel::<R>::new(
            units(256),
            c.clone(),
            tensors(5),
            tensor(),
            scalars(6),
            (),
            256,
            8,
            f,
        );
        w.kernel(format!("sum-squares-{}", short(f)), k.define());
    }

    // LayerNorm: the f32 residual stream, a branch and an output copy in a product's dtype.
    for (branch, copy) in [(f32_, f32_), (f16_, f16_), (bf16_, bf16_), (f16_, f32_)] {
        for with_branch in [true, false] {
            for block in [32u32, 256] {
                let tag = format!("{}-{}-{}-{block}", short(branch), short(copy), with_branch);
                let k = layer::layer_norm_forward_kernel::LayerNormForwardKernel::<R>::new(
                    units(block),
                    c.clone(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    (),
                    (),
                    (),
                    mask(),
                    (),
                    (),
                    with_branch,
                    block,
                    [f32_, branch, copy],
                );
                w.kernel(format!("layer-norm-forward-{tag}"), k.define());
                let k = layer::layer_norm_backward_kernel::LayerNormBackwardKernel::<R>::new(
                    units(block),
                    c.clone(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    (),
                    (),
                    mask(),
                    with_branch,
                    block,
                    [f32_, branch],
                );
                w.kernel(format!("layer-norm-backward-{tag}"), k.define());
            }
        }
    }
    let k = layer::layer_norm_affine_grad_kernel::LayerNormAffineGradKernel::<R>::new(
        KernelSettings::default().cube_dim(CubeDim::new_2d(32, 8)),
        c.clone(),
        tensor(),
        tensor(),
        tensor(),
        tensor(),
        (),
        (),
        32,
        8,
        f32_,
    );
    w.kernel("layer-norm-affine-grad-f32".into(), k.define());

    // AdamW: f32 parameters, gradients in f32 or a product's dtype.
    for grad in [f32_, f16_, bf16_] {
        for (moments, decays, copies) in
            [(true, true, false), (true, false, false), (true, true, true), (false, false, false)]
        {
            let n = 4;
            let k = adam::adam_many_kernel::AdamManyKernel::<R>::new(
                units(256),
                c.clone(),
                tensors(n),
                tensors(n),
                tensors(n),
                tensors(n),
                tensor(),
                tensors(n),
                tensors(n),
                tensors(n),
                tensors(n),
                scalars(n + 1),
                (),
                moments,
                decays,
                copies,
                [f32_, grad],
            );
            w.kernel(format!("adam-{}-{moments}-{decays}-{copies}", short(grad)), k.define());
        }
    }

    // Attention: the row kernels at every dtype, the tile kernels in f16 and bf16, with and
    // without tensor cores; heads of 32 and 64 (BERT's), and the largest each takes here.
    for f in [f32_, f16_, bf16_] {
        for m in masks {
            for (head_dim, tile) in [(64usize, 32usize), (32, 32), (128, 16)] {
                let tag = format!("{}-{}-{head_dim}", short(f), short(m));
                let k = rows::attention_forward_kernel::AttentionForwardKernel::<R>::new(
                    units(tile as u32),
                    c.clone(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    sizes(),
                    mask(),
                    head_dim,
                    tile,
                    [f, m],
                );
                w.kernel(format!("attention-rows-forward-{tag}"), k.define());
                let k = rows::attention_query_grad_kernel::AttentionQueryGradKernel::<R>::new(
                    units(tile as u32),
                    c.clone(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    sizes(),
                    mask(),
                    head_dim,
                    tile,
                    [f, m],
                );
                w.kernel(format!("attention-rows-query-grad-{tag}"), k.define());
                let k = rows::attention_key_grad_kernel::AttentionKeyGradKernel::<R>::new(
                    units(tile as u32),
                    c.clone(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    tensor(),
                    sizes(),
                    mask(),
                    head_dim,
                    tile,
                    [f, m],
                );
                w.kernel(format!("attention-rows-key-grad-{tag}"), k.define());
            }
            if f == f32_ {
                continue;
            }
            // CUDA's f16 and bf16 `wmma` is 16 × 16 × 16 (`fragment` 16); 0 is plain code.
            for fragment in [16usize, 0] {
                for head_dim in [64usize, 32, 112] {
                    let products = if fragment > 0 { "cmma" } else { "plain" };
                    let tag = format!("{}-{}-{head_dim}-{products}", short(f), short(m));
                    let k = tiles::tiles_forward_kernel::TilesForwardKernel::<R>::new(
                        units(32),
                        c.clone(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        sizes(),
                        mask(),
                        head_dim,
                        fragment,
                        [f, m],
                    );
                    w.kernel(format!("attention-tiles-forward-{tag}"), k.define());
                    let k = tiles::tiles_query_grad_kernel::TilesQueryGradKernel::<R>::new(
                        units(32),
                        c.clone(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        sizes(),
                        mask(),
                        head_dim,
                        fragment,
                        [f, m],
                    );
                    w.kernel(format!("attention-tiles-query-grad-{tag}"), k.define());
                    let k = tiles::tiles_key_grad_kernel::TilesKeyGradKernel::<R>::new(
                        units(32),
                        c.clone(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        tensor(),
                        sizes(),
                        mask(),
                        head_dim,
                        fragment,
                        [f, m],
                    );
                    w.kernel(format!("attention-tiles-key-grad-{tag}"), k.define());
                }
            }
        }
    }
    println!("{} CUDA sources in {}", w.written, dir.display());
    if !w.failed.is_empty() {
        for f in &w.failed {
            eprintln!("no CUDA source: {f}");
        }
        std::process::exit(1);
    }
}
