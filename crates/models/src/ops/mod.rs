//! The hot ops of an encoder layer, behind one seam: a fused fast path where the backend has
//! one, Burn's plain decomposition everywhere else.
//!
//! | op | what it computes |
//! |---|---|
//! | [`linear`] | `act(x·W + b)`, `act` = identity or GELU (bias + activation fused) |
//! | [`attention`] | `softmax(QKᵀ/√d + padding mask)·V` with dropout on the probabilities, per (batch row, head), from the fused QKV projection `[batch, seq, 3·hidden]` to `[batch, seq, hidden]` |
//! | [`residual_layer_norm`] | `LayerNorm(residual + dropout(branch))` (post-LN residual block) |
//! | [`dropout`] | `x·mask/(1−p)`, mask a hash of (seed, element index) |
//! | [`gelu`] | exact (erf) GELU |
//!
//! Each op exists three times:
//!
//! - [`reference`]: Burn tensor ops, the definition the others are tested against, and what
//!   every backend without a fast path runs;
//! - [`FusedKernels`]: forward and backward kernels on a backend's primitives, each defaulting
//!   to Burn tensor ops ([`decomposed`]: the reference forward, the backward derived by hand).
//!   Flex implements all of them (multi-threaded, AVX-512/AVX2 loops picked at run time,
//!   strided GEMMs without permuted copies); CubeCL backends (features `cubecl`, `fusion`:
//!   `CubeBackend` for any CubeCL runtime, and `Fusion` over it) the ops they have CubeCL
//!   kernels for, so far dropout, residual + dropout + LayerNorm and training attention;
//! - [`FusedOps`]: the differentiable op a model calls — Burn's backend-extension pattern: the
//!   trait is implemented for the plain backend (forward kernels only) and for
//!   `Autodiff<B: FusedKernels>`, whose implementation records one graph node per op with a
//!   custom backward step that calls the backend's backward kernel.
//!
//! Models are generic over `B: Backend` (callers such as the training loop only know that
//! bound), so the free functions of this module look `B` up in a registry of fast paths:
//! Flex and `Autodiff<Flex>` are in it from the start, and a binary that knows its backend
//! type adds it with [`register`] (the GPU builds of `bertlab` do, at start-up). Every other
//! backend, and tensors of a dtype the fast path does not [`FusedOps::accepts`], run the
//! reference. A new backend plugs in by implementing [`FusedOps`] (and [`FusedKernels`] for
//! training) and calling [`register`]; see the crate README, "The ops seam".
//!
//! Dropout masks are not drawn element by element from an RNG: [`DropoutMask`] takes one 64-bit
//! seed per call from a host-side sequence ([`seed_dropout`]), and element `i` is kept when a
//! hash of `(seed, i)` is above `p·2³²`. Forward and backward passes regenerate the same mask
//! without storing it, in any order on any number of threads (or GPU threads: the CubeCL
//! kernel hashes on the device), a run is reproducible under [`seed_dropout`], and drawing a
//! mask reads nothing back from the device.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use burn::tensor::backend::Backend;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bool, DType, FloatDType, Tensor, TensorPrimitive};

pub mod adam;
mod attention_products;
#[cfg(any(feature = "flex", feature = "cubecl"))]
mod autodiff;
pub mod check;
#[cfg(feature = "flex")]
pub(crate) mod cpu;
#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "cubecl")]
mod cube_adam;
#[cfg(feature = "cubecl")]
mod cube_attention;
#[cfg(feature = "cubecl")]
mod cube_attention_tiles;
#[cfg(feature = "cubecl")]
mod cube_norm;
#[cfg(feature = "cubecl")]
mod cube_shared;
pub mod decomposed;
mod dropout_mask;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "fusion")]
mod fusion;
mod layer_norm;
pub mod norm;
pub mod reference;

pub use attention_products::{
    attention_products, attention_products_chosen, attention_products_label, attention_products_ran,
    set_attention_products, AttentionProducts, UnknownAttentionProducts,
};
#[cfg(any(feature = "flex", feature = "cubecl"))]
pub(crate) use dropout_mask::HashMask;
pub use dropout_mask::{seed_dropout, DropoutMask};
pub(crate) use layer_norm::{cast_copy, reference_layer_norm_copied};
pub use layer_norm::{LayerNormGrads, LayerNormOutput, LayerNormState};

/// Which implementation of the hot ops a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The fused fast path where the backend has one for the tensors' dtype (Flex, f32, with
    /// or without autodiff), [`Kernels::Reference`] elsewhere.
    #[default]
    Fused,
    /// The seam's [`reference`] decomposition everywhere (Burn tensor ops, Burn's autodiff
    /// through them): what the fast paths are checked against.
    Reference,
}

/// The activation fused into [`linear`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearActivation {
    /// `x·W + b`.
    #[default]
    Identity,
    /// `gelu(x·W + b)`, exact (erf) GELU.
    Gelu,
}

/// The differentiable hot ops, on a backend's primitives (Burn's backend-extension pattern).
///
/// Every method has Burn's plain decomposition ([`reference`]) as its default, so
/// `impl FusedOps for MyBackend {}` is a correct (unfused) implementation. Fast paths override
/// them: Flex with its forward kernels, `Autodiff<B>` (for `B: FusedKernels`) with one graph
/// node per op whose backward step runs `B`'s backward kernel.
pub trait FusedOps: Backend {
    /// Whether the fast path takes tensors of `dtype` (the router sends the others to the
    /// [`reference`]); f32 only by default.
    fn accepts(dtype: DType) -> bool {
        dtype == DType::F32
    }

    /// Whether [`FusedOps::fused_dropout`] takes tensors of `dtype` (dropout also runs inside
    /// the reference decomposition of the other ops, so a backend whose dropout kernel takes
    /// more dtypes than its other ops says so here); [`FusedOps::accepts`] by default.
    fn dropout_accepts(dtype: DType) -> bool {
        Self::accepts(dtype)
    }

    /// Whether [`FusedOps::fused_residual_layer_norm`] takes a residual (and γ, β) of
    /// `residual`'s dtype with a branch of `branch`'s ([`FusedOps::accepts`] of both by
    /// default; `Autodiff<B>` also takes what `B`'s LayerNorm kernel does: a branch in a
    /// product's dtype beside the f32 residual stream).
    fn layer_norm_accepts(residual: DType, branch: Option<DType>) -> bool {
        Self::accepts(residual) && branch.is_none_or(Self::accepts)
    }

    /// Whether [`FusedOps::fused_attention`] takes `qkv` of `dtype` with heads of `head_dim`
    /// ([`FusedOps::accepts`] by default; `Autodiff<B>` also takes what `B`'s attention kernel
    /// does).
    fn attention_accepts(dtype: DType, head_dim: usize) -> bool {
        let _ = head_dim;
        Self::accepts(dtype)
    }

    /// `act(x·W + b)`: `x [rows, d_in]`, `weight [d_in, d_out]`, `bias [d_out]`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: LinearActivation,
    ) -> FloatTensor<Self> {
        reference::linear(float::<Self, 2>(x), float(weight), float(bias), activation)
            .into_primitive()
            .tensor()
    }

    /// Multi-head self-attention from the fused projection `qkv [batch, seq, 3·hidden]` (Q, K,
    /// V side by side) to `[batch, seq, hidden]`; `key_padding [batch, seq]` is true on padded
    /// keys; dropout acts on the attention probabilities.
    fn fused_attention(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        reference::attention(float::<Self, 3>(qkv), Tensor::from_primitive(key_padding), heads, dropout)
            .into_primitive()
            .tensor()
    }

    /// `LayerNorm(residual + dropout(branch))·γ + β` over the last dimension of
    /// `[rows, width]` tensors; without `branch`, a plain LayerNorm. The branch may be in
    /// another dtype (a product's, [`FusedOps::layer_norm_accepts`]): it is widened to the
    /// residual's. With `copy`, also the output in that dtype (by default a cast of it; a
    /// backend whose kernel writes both saves the cast's launch).
    #[allow(clippy::too_many_arguments)]
    fn fused_residual_layer_norm(
        residual: FloatTensor<Self>,
        branch: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        dropout: Option<DropoutMask>,
        copy: Option<FloatDType>,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        reference_layer_norm_copied::<Self>(residual, branch, gamma, beta, epsilon, dropout, copy)
    }

    /// `x · mask` (any rank).
    fn fused_dropout(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        let shape = burn::tensor::TensorMetadata::shape(&x);
        let device = Self::float_device(&x);
        let factors = Tensor::<Self, 1>::from_primitive(TensorPrimitive::Float(
            mask.factors::<Self, 1>([shape.num_elements()], &device).into_primitive().tensor(),
        ));
        let flat = Self::float_reshape(x, burn::tensor::Shape::new([shape.num_elements()]));
        let out = Tensor::<Self, 1>::from_primitive(TensorPrimitive::Float(flat)) * factors;
        Self::float_reshape(out.into_primitive().tensor(), shape)
    }

    /// Exact (erf) GELU (any rank).
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        decomposed::gelu_forward::<Self>(x)
    }

    /// A parameter (f32 master weights, any rank) in a product's `dtype`: a cast forward, and
    /// backward the gradient handed on in `dtype` as the product made it (by default, Burn's
    /// cast, whose backward casts it back to f32). The optimizer widens it to f32 where it
    /// reads it, so a backend that passes it on saves a cast launch a parameter and a step.
    fn fused_param_cast(param: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        Self::float_cast(param, dtype)
    }

    /// Whether [`FusedOps::fused_adam_many`] is a multi-tensor kernel (a few launches for all
    /// the parameters) rather than the update tensor by tensor: where it is, a trainer
    /// updates through it every step, not only the steps whose verdict needs the device.
    fn adam_is_multi_tensor() -> bool {
        false
    }

    /// AdamW updates of many parameter tensors with packed device factors
    /// ([`adam::adam_update_many`], any ranks): `(parameter, first moment, second moment)` of
    /// each operand, in order. A backend with a multi-tensor kernel updates them in a few
    /// launches instead of one or more a tensor.
    fn fused_adam_many(
        operands: Vec<adam::AdamOperand<Self>>,
        factors: FloatTensor<Self>,
        epsilon: f64,
    ) -> Vec<adam::AdamUpdated<Self>> {
        adam::adam_update_many::<Self>(operands, factors, epsilon)
    }

    /// `Σ x²` over many tensors ([`norm::sum_squares_many`]: any ranks and float dtypes,
    /// squared in f32, `[1]` f32, NaN or ∞ when any element is). A backend with a
    /// multi-tensor kernel reads them in a few launches instead of a few a shape.
    fn fused_sum_squares_many(tensors: Vec<FloatTensor<Self>>) -> Option<FloatTensor<Self>> {
        norm::sum_squares_many::<Self>(tensors)
    }

    /// 1 where `x` is finite, else 0 ([`norm::finite_flag`]).
    fn fused_finite_flag(x: FloatTensor<Self>) -> FloatTensor<Self> {
        norm::finite_flag::<Self>(x)
    }
}

/// The forward and backward kernels behind `Autodiff<Self>`'s [`FusedOps`].
///
/// Every method defaults to Burn tensor ops ([`decomposed`]: the reference forward, the
/// backward derived by hand), so a backend overrides the ops it has kernels for and
/// `Autodiff<Self>` still records one node per op for the rest. Tensors come in the layouts
/// the methods describe (f32 on Flex; the dtypes a backend's [`FusedOps::accepts`] allows);
/// optional outputs are computed only when asked for (`keep_*`, `needs`), so inference pays
/// for no saved state.
pub trait FusedKernels: Backend {
    /// `(act(x·W + b), pre-activation if keep_pre and act is not the identity)`.
    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: LinearActivation,
        keep_pre: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        decomposed::linear_forward::<Self>(x, weight, bias, activation, keep_pre)
    }

    /// Gradients `[x, weight, bias]` (those `needs` asks for) of [`FusedKernels::linear_forward`].
    fn linear_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        pre_activation: Option<FloatTensor<Self>>,
        activation: LinearActivation,
        needs: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        decomposed::linear_backward::<Self>(grad, x, weight, pre_activation, activation, needs)
    }

    /// Whether the backend has an attention kernel (forward and backward) for `qkv` of `dtype`
    /// with heads of `head_dim`: then `Autodiff<Self>` routes attention of that dtype to it,
    /// whatever [`FusedOps::accepts`] says of the other ops. None by default.
    fn attention_kernel_accepts(dtype: DType, head_dim: usize) -> bool {
        let _ = (dtype, head_dim);
        false
    }

    /// `(context, what the backward reads if keep)`.
    fn attention_forward(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
        keep: bool,
    ) -> (FloatTensor<Self>, Option<AttentionState<Self>>) {
        decomposed::attention_forward::<Self>(qkv, key_padding, heads, dropout, keep)
    }

    /// The gradient of `qkv`.
    fn attention_backward(
        grad: FloatTensor<Self>,
        qkv: FloatTensor<Self>,
        state: AttentionState<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        decomposed::attention_backward::<Self>(grad, qkv, state, key_padding, heads, dropout)
    }

    /// The output, its copy in `copy`'s dtype if asked for (by default a cast), and, if
    /// `keep`, what the backward pass needs.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_forward(
        residual: FloatTensor<Self>,
        branch: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        dropout: Option<DropoutMask>,
        copy: Option<FloatDType>,
        keep: bool,
    ) -> LayerNormOutput<Self> {
        let (output, state) =
            decomposed::layer_norm_forward::<Self>(residual, branch, gamma, beta, epsilon, dropout, keep);
        LayerNormOutput { copy: cast_copy::<Self>(&output, copy), output, state }
    }

    /// Gradients of [`FusedKernels::layer_norm_forward`]; the branch's (in `branch`, its
    /// dtype) when asked for.
    fn layer_norm_backward(
        grad: FloatTensor<Self>,
        state: LayerNormState<Self>,
        gamma: FloatTensor<Self>,
        dropout: Option<DropoutMask>,
        branch: Option<DType>,
    ) -> LayerNormGrads<Self> {
        decomposed::layer_norm_backward::<Self>(grad, state, gamma, dropout, branch)
    }

    /// Whether [`FusedKernels::layer_norm_forward`] takes a branch of `branch`'s dtype beside a
    /// residual (and γ, β) of `residual`'s: then `Autodiff<Self>` routes it here, whatever
    /// [`FusedOps::accepts`] says of `branch`. f32 only by default.
    fn layer_norm_kernel_accepts(residual: DType, branch: DType) -> bool {
        residual == DType::F32 && branch == DType::F32
    }

    /// `param` in `dtype` for a product: a cast by default; a backend that keeps the copies its
    /// AdamW update wrote ([`adam::AdamUpdated::copy`]) returns the current one instead.
    fn param_copy(param: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        Self::float_cast(param, dtype)
    }

    /// Whether [`FusedKernels::dropout_apply`] takes tensors of `dtype` (f32 by default).
    fn dropout_kernel_accepts(dtype: DType) -> bool {
        dtype == DType::F32
    }

    /// `x · mask` — the forward pass of dropout and, on the gradient, its backward pass.
    fn dropout_apply(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        decomposed::dropout_apply::<Self>(x, mask)
    }

    /// `gelu(x)`.
    fn erf_gelu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        decomposed::gelu_forward::<Self>(x)
    }

    /// `grad · gelu'(x)`.
    fn erf_gelu_backward(grad: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        decomposed::gelu_backward::<Self>(grad, x)
    }
}

/// What [`FusedKernels::attention_backward`] reads from the forward pass, besides `qkv` and
/// the padding mask.
#[derive(Debug, Clone)]
pub enum AttentionState<B: Backend> {
    /// The probabilities `[batch, heads, seq, seq]` before dropout: what the decomposition
    /// (and Flex) keep.
    Probs(FloatTensor<B>),
    /// A flash-style kernel's: the output `[batch, seq, hidden]` and each query row's
    /// log-sum-exp of its scaled, masked scores, `[batch, heads, seq]` in f32. The backward
    /// recomputes the probabilities from them, so no `seq × seq` tensor is kept or written.
    RowStats {
        /// The forward's output.
        context: FloatTensor<B>,
        /// `max + ln Σ exp(score − max)` a query row.
        log_sum_exp: FloatTensor<B>,
    },
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// [`FusedOps::fused_linear`]'s signature.
type LinearFn<B> = fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, LinearActivation) -> FloatTensor<B>;
/// [`FusedOps::fused_attention`]'s signature.
type AttentionFn<B> = fn(FloatTensor<B>, BoolTensor<B>, usize, Option<DropoutMask>) -> FloatTensor<B>;
/// [`FusedOps::fused_adam_many`]'s signature.
type AdamFn<B> = fn(Vec<adam::AdamOperand<B>>, FloatTensor<B>, f64) -> Vec<adam::AdamUpdated<B>>;
/// [`FusedOps::fused_residual_layer_norm`]'s signature.
type LayerNormFn<B> = fn(
    FloatTensor<B>,
    Option<FloatTensor<B>>,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
    Option<DropoutMask>,
    Option<FloatDType>,
) -> (FloatTensor<B>, Option<FloatTensor<B>>);

/// A backend's [`FusedOps`] as the router keeps it: plain function pointers, so generic model
/// code (which knows only `B: Backend`) can call them once the backend's type is matched.
struct FastPath<B: Backend> {
    linear: LinearFn<B>,
    attention: AttentionFn<B>,
    residual_layer_norm: LayerNormFn<B>,
    dropout: fn(FloatTensor<B>, DropoutMask) -> FloatTensor<B>,
    gelu: fn(FloatTensor<B>) -> FloatTensor<B>,
    param_cast: fn(FloatTensor<B>, FloatDType) -> FloatTensor<B>,
    adam: AdamFn<B>,
    adam_is_multi_tensor: fn() -> bool,
    sum_squares: fn(Vec<FloatTensor<B>>) -> Option<FloatTensor<B>>,
    finite_flag: fn(FloatTensor<B>) -> FloatTensor<B>,
    accepts: fn(DType) -> bool,
    dropout_accepts: fn(DType) -> bool,
    attention_accepts: fn(DType, usize) -> bool,
    layer_norm_accepts: fn(DType, Option<DType>) -> bool,
}

impl<B: Backend> Clone for FastPath<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for FastPath<B> {}

impl<B: FusedOps> FastPath<B> {
    fn of() -> FastPath<B> {
        FastPath {
            linear: B::fused_linear,
            attention: B::fused_attention,
            residual_layer_norm: B::fused_residual_layer_norm,
            dropout: B::fused_dropout,
            gelu: B::fused_gelu,
            param_cast: B::fused_param_cast,
            adam: B::fused_adam_many,
            adam_is_multi_tensor: B::adam_is_multi_tensor,
            sum_squares: B::fused_sum_squares_many,
            finite_flag: B::fused_finite_flag,
            accepts: B::accepts,
            dropout_accepts: B::dropout_accepts,
            attention_accepts: B::attention_accepts,
            layer_norm_accepts: B::layer_norm_accepts,
        }
    }
}

type Registry = RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>;

/// Backend type → its [`FastPath`]; Flex and `Autodiff<Flex>` from the start (feature `flex`).
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        #[allow(unused_mut)]
        let mut paths: HashMap<TypeId, Box<dyn Any + Send + Sync>> = HashMap::new();
        #[cfg(feature = "flex")]
        {
            paths
                .insert(TypeId::of::<burn::backend::Flex>(), Box::new(FastPath::<burn::backend::Flex>::of()));
            type AutodiffFlex = burn::backend::Autodiff<burn::backend::Flex>;
            paths.insert(TypeId::of::<AutodiffFlex>(), Box::new(FastPath::<AutodiffFlex>::of()));
        }
        RwLock::new(paths)
    })
}

/// The float dtypes the CubeCL kernels take.
#[cfg(feature = "cubecl")]
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// A hash of this build's kernel sources (this module's files) and of the Burn and CubeCL
/// versions the workspace's Cargo.lock pins: a cache of compiled kernels is valid only for
/// the build that filled it, since CubeCL keys a cached kernel by its name and compile-time
/// arguments, not by its code. The GPU builds of `bertlab` keep their kernels in a folder of
/// this name (crates/models/build.rs computes it).
pub const KERNELS_BUILD: &str = env!("BERTLAB_KERNELS_BUILD");

/// Route the ops of this module to `B`'s [`FusedOps`] from now on, in this process: what a
/// binary that knows its backend type does once at start-up (the CUDA and wgpu builds of
/// `bertlab` register their backend and its `Autodiff`). Flex is registered already.
pub fn register<B: FusedOps>() {
    let mut paths = registry().write().unwrap_or_else(|poisoned| poisoned.into_inner());
    paths.insert(TypeId::of::<B>(), Box::new(FastPath::<B>::of()));
}

fn fast_path<B: Backend>() -> Option<FastPath<B>> {
    let paths = registry().read().unwrap_or_else(|poisoned| poisoned.into_inner());
    paths.get(&TypeId::of::<B>()).and_then(|path| path.downcast_ref::<FastPath<B>>()).copied()
}

/// Whether `B` has a fast path (built in or [`register`]ed) for f32 tensors: when false,
/// every op of this module runs its [`reference`] decomposition.
pub fn has_fast_path<B: Backend>() -> bool {
    fast_path::<B>().is_some_and(|path| (path.accepts)(DType::F32))
}

/// `B`'s fast path when it takes every one of `dtypes`.
fn fast_path_for<B: Backend>(dtypes: &[DType]) -> Option<FastPath<B>> {
    fast_path::<B>().filter(|path| dtypes.iter().all(|d| (path.accepts)(*d)))
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// `act(x·W + b)`: `x [rows, d_in]`, `weight [d_in, d_out]`, `bias [d_out]` → `[rows, d_out]`.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    activation: LinearActivation,
) -> Tensor<B, 2> {
    match fast_path_for::<B>(&[x.dtype(), weight.dtype(), bias.dtype()]) {
        Some(fast) => float((fast.linear)(prim(x), prim(weight), prim(bias), activation)),
        None => reference::linear(x, weight, bias, activation),
    }
}

/// Self-attention from the fused QKV projection: `qkv [batch, seq, 3·hidden]` (Q, K, V side
/// by side, `heads` contiguous heads in each), `key_padding [batch, seq]` true on padded keys
/// → `[batch, seq, hidden]`. Dropout (training) acts on the attention probabilities.
pub fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    key_padding: Tensor<B, 2, Bool>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> Tensor<B, 3> {
    let [_, _, width] = qkv.dims();
    assert!(
        heads > 0 && width % (3 * heads) == 0,
        "attention: the last dimension ({width}) must be 3 × heads ({heads}) × head size"
    );
    let head_dim = width / 3 / heads;
    match fast_path::<B>().filter(|path| (path.attention_accepts)(qkv.dtype(), head_dim)) {
        Some(fast) => float((fast.attention)(prim(qkv), key_padding.into_primitive(), heads, dropout)),
        None => reference::attention(qkv, key_padding, heads, dropout),
    }
}

/// `LayerNorm(residual + dropout(branch))·γ + β` over the last dimension of `[rows, width]`;
/// without `branch`, a plain LayerNorm. The branch may be in a product's dtype beside an f32
/// residual: it is widened (and its gradient comes back in its dtype).
pub fn residual_layer_norm<B: Backend>(
    residual: Tensor<B, 2>,
    branch: Option<Tensor<B, 2>>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
) -> Tensor<B, 2> {
    residual_layer_norm_copied(residual, branch, gamma, beta, epsilon, dropout, None).0
}

/// [`residual_layer_norm`] and its output in `copy`'s dtype, bit for bit the output's cast:
/// the input of the product that reads the f32 output next. Where the backend has a
/// LayerNorm kernel it writes both (no cast launch); the copy's gradient flows back into the
/// output's, widened, as a cast's does.
#[allow(clippy::too_many_arguments)]
pub fn residual_layer_norm_with_copy<B: Backend>(
    residual: Tensor<B, 2>,
    branch: Option<Tensor<B, 2>>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
    copy: FloatDType,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    if residual.dtype() == DType::from(copy) {
        let output = residual_layer_norm(residual, branch, gamma, beta, epsilon, dropout);
        return (output.clone(), output);
    }
    let (output, copied) =
        residual_layer_norm_copied(residual, branch, gamma, beta, epsilon, dropout, Some(copy));
    let copied = copied.unwrap_or_else(|| output.clone().cast(copy));
    (output, copied)
}

#[allow(clippy::too_many_arguments)]
fn residual_layer_norm_copied<B: Backend>(
    residual: Tensor<B, 2>,
    branch: Option<Tensor<B, 2>>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
    copy: Option<FloatDType>,
) -> (Tensor<B, 2>, Option<Tensor<B, 2>>) {
    let dtype = residual.dtype();
    let path_for = |branch: Option<DType>| {
        fast_path::<B>().filter(|path| {
            (path.layer_norm_accepts)(dtype, branch) && gamma.dtype() == dtype && beta.dtype() == dtype
        })
    };
    // A fast path that takes the residual's dtype but not the branch's gets the branch widened
    // first (what the reference does inside).
    let (fast, branch) = match (path_for(branch.as_ref().map(|b| b.dtype())), branch) {
        (Some(fast), branch) => (Some(fast), branch),
        (None, Some(b)) if b.dtype() != dtype => match path_for(Some(dtype)) {
            Some(fast) => (Some(fast), Some(b.cast(FloatDType::from(dtype)))),
            None => (None, Some(b)),
        },
        (None, branch) => (None, branch),
    };
    match fast {
        Some(fast) => {
            let (output, copied) = (fast.residual_layer_norm)(
                prim(residual),
                branch.map(prim),
                prim(gamma),
                prim(beta),
                epsilon,
                dropout,
                copy,
            );
            (float(output), copied.map(float))
        }
        None => (reference::residual_layer_norm(residual, branch, gamma, beta, epsilon, dropout), None),
    }
}

/// `x · mask/(1−p)` with the hash mask of `mask`; the identity for `None`.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, mask: Option<DropoutMask>) -> Tensor<B, D> {
    let Some(mask) = mask else { return x };
    match fast_path::<B>().filter(|path| (path.dropout_accepts)(x.dtype())) {
        Some(fast) => float((fast.dropout)(prim(x), mask)),
        None => reference::dropout(x, mask),
    }
}

/// Exact (erf) GELU.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match fast_path_for::<B>(&[x.dtype()]) {
        Some(fast) => float((fast.gelu)(prim(x))),
        None => reference::gelu(x),
    }
}

/// `param` (f32 master weights) in a product's `dtype`, for a training step's forward. Its
/// gradient may come back in `dtype` ([`FusedOps::fused_param_cast`]: the `Autodiff` fast
/// paths hand it on as the product made it, which saves a cast launch a parameter and a step);
/// whoever reads it widens it ([`adam_update_many`] does). Nothing happens when `param` is in
/// `dtype` already.
pub fn param_cast<B: Backend, const D: usize>(param: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if param.dtype() == DType::from(dtype) {
        return param;
    }
    // Only the master's dtype must be the fast path's: the cast itself is Burn's, whatever
    // `dtype` is.
    match fast_path_for::<B>(&[param.dtype()]) {
        Some(fast) => float((fast.param_cast)(prim(param), dtype)),
        None => param.cast(dtype),
    }
}

/// Whether `B` updates parameters in a multi-tensor kernel ([`adam_update_many`] takes a few
/// launches for all of them, [`FusedOps::adam_is_multi_tensor`]); false where every tensor is
/// its own chain of ops (the reference, Flex).
pub fn adam_is_multi_tensor<B: Backend>() -> bool {
    fast_path::<B>().is_some_and(|path| (path.adam_is_multi_tensor)())
}

/// AdamW updates of parameters (f32 master weights, any ranks) with the step's factors packed
/// on the device ([`adam::ADAM_FACTORS`]): `(parameter, first moment, second moment)` of each
/// operand, in order, a missing moment being 0. A backend's multi-tensor kernel where it has
/// one ([`FusedOps::fused_adam_many`]), else [`adam::adam_update_many`].
pub fn adam_update_many<B: Backend>(
    operands: Vec<adam::AdamOperand<B>>,
    factors: Tensor<B, 1>,
    epsilon: f64,
) -> Vec<adam::AdamUpdated<B>> {
    use burn::tensor::TensorMetadata;
    let mut dtypes = vec![factors.dtype()];
    for o in &operands {
        dtypes.extend([o.value.dtype(), o.grad.dtype()]);
        dtypes.extend(o.moments.iter().flat_map(|(m, v)| [m.dtype(), v.dtype()]));
    }
    let update = match fast_path_for::<B>(&dtypes) {
        Some(fast) => fast.adam,
        None => adam::adam_update_many::<B>,
    };
    update(operands, prim(factors), epsilon)
}

/// One AdamW update of one parameter: [`adam_update_many`] of it alone.
#[allow(clippy::too_many_arguments)]
pub fn adam_update<B: Backend, const D: usize>(
    value: Tensor<B, D>,
    grad: Tensor<B, D>,
    first: Option<Tensor<B, D>>,
    second: Option<Tensor<B, D>>,
    factors: Tensor<B, 1>,
    decays: bool,
    epsilon: f64,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let operand = adam::AdamOperand {
        value: prim(value),
        grad: prim(grad),
        moments: first.zip(second).map(|(m, v)| (prim(m), prim(v))),
        decays,
        copy: None,
    };
    let updated = adam_update_many(vec![operand], factors, epsilon).pop().expect("one update");
    (float(updated.value), float(updated.first), float(updated.second))
}

/// `Σ x²` over every element of `tensors` (any ranks and float dtypes; a step's gradients),
/// squared in f32: a `[1]` f32 tensor, NaN or ∞ when any element is; `None` for no tensors. A
/// backend's multi-tensor kernel where it has one ([`FusedOps::fused_sum_squares_many`]),
/// else [`norm::sum_squares_many`].
pub fn sum_squares_many<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Option<Tensor<B, 1>> {
    use burn::tensor::TensorMetadata;
    let dtypes: Vec<DType> = tensors.iter().map(|t| t.dtype()).collect();
    let sum = match fast_path_for::<B>(&dtypes) {
        Some(fast) => fast.sum_squares,
        None => norm::sum_squares_many::<B>,
    };
    sum(tensors).map(float)
}

/// 1 where `x` is finite, 0 where it is NaN or ±∞ (element-wise, in `x`'s dtype): a step's
/// overflow check as a number ([`norm::finite_flag`]; one kernel on the CubeCL backends).
pub fn finite_flag<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let flag = match fast_path_for::<B>(&[x.dtype()]) {
        Some(fast) => fast.finite_flag,
        None => norm::finite_flag::<B>,
    };
    float(flag(prim(x)))
}
