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
//! - [`FusedKernels`]: forward and backward kernels on a backend's primitives, implemented for
//!   Flex (multi-threaded, AVX-512/AVX2 loops picked at run time, strided GEMMs without
//!   permuted copies);
//! - [`FusedOps`]: the differentiable op a model calls — Burn's backend-extension pattern: the
//!   trait is implemented for the plain backend (forward kernels only) and for
//!   `Autodiff<B: FusedKernels>`, whose implementation records one graph node per op with a
//!   custom backward step that calls the backend's backward kernel.
//!
//! Models are generic over `B: Backend` (callers such as the training loop only know that
//! bound), so the free functions of this module route by type: `Flex` and `Autodiff<Flex>`
//! reach their [`FusedOps`] implementation, every other backend (and f16/bf16 tensors) the
//! reference. A GPU backend plugs in by implementing [`FusedKernels`] (CubeCL kernels) and
//! [`FusedOps`], then one line in the router — or none, once models require
//! `B: FusedOps` themselves (see the crate README, "The ops seam").
//!
//! Dropout masks are not drawn element by element from an RNG: [`DropoutMask`] takes one 64-bit
//! seed from the backend's seeded RNG per call, and element `i` is kept when a hash of
//! `(seed, i)` is above `p·2³²`. Forward and backward passes regenerate the same mask without
//! storing it, in any order on any number of threads, and a run is reproducible under
//! `B::seed`.

#[cfg(feature = "flex")]
use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bool, DType, Distribution, Int, Tensor, TensorData, TensorPrimitive};

#[cfg(feature = "flex")]
mod autodiff;
#[cfg(feature = "flex")]
pub(crate) mod cpu;
#[cfg(feature = "flex")]
mod flex;
pub mod reference;

/// Which implementation of the hot ops a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The fused fast path where the backend has one for the tensors' dtype (Flex, f32, with
    /// or without autodiff), [`Kernels::Reference`] elsewhere.
    #[default]
    Fused,
    /// Burn's plain decomposition everywhere (the model code as it was before the seam, with
    /// `burn::nn::Dropout` and the [`crate::AttentionKernel`] choice).
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

/// One dropout call: drop probability and the seed its mask is a hash of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutMask {
    prob: f64,
    seed: u64,
}

impl DropoutMask {
    /// A mask dropping each element with probability `prob` (clamped to [0, 1]).
    pub fn new(prob: f64, seed: u64) -> DropoutMask {
        DropoutMask { prob: prob.clamp(0.0, 1.0), seed }
    }

    /// A fresh mask for one dropout call in training, its seed drawn from the backend's RNG
    /// (so `B::seed` makes a run reproducible and successive calls independent); `None` when
    /// `prob` is 0 or the backend does not track gradients (inference), as `burn::nn::Dropout`.
    pub fn draw<B: Backend>(prob: f64, device: &B::Device) -> Option<DropoutMask> {
        if prob <= 0.0 || !B::ad_enabled(device) {
            return None;
        }
        // Three 30-bit draws: every backend's integer dtype (i32 included) holds them.
        let words = Tensor::<B, 1, Int>::random([3], Distribution::Uniform(0.0, (1u64 << 30) as f64), device);
        let words = crate::host_wait::read(words).iter::<i64>().map(|w| w as u64).collect::<Vec<_>>();
        let seed = (words[0] << 34) ^ (words[1] << 4) ^ words[2];
        Some(DropoutMask::new(prob, seed))
    }

    /// The drop probability.
    pub fn prob(&self) -> f64 {
        self.prob
    }

    /// The seed of the mask's hash.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The multiplier of element `index` (row-major index in the tensor the mask applies to):
    /// 0 for a dropped element, `1/(1−p)` for a kept one.
    pub fn factor(&self, index: u64) -> f32 {
        HashMask::new(*self).factor(index)
    }

    /// The multipliers of a whole tensor, computed on the host (the reference path and tests).
    pub fn factors<B: Backend, const D: usize>(&self, shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n as u64).map(|i| self.factor(i)).collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// A [`DropoutMask`] prepared for per-element use by kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HashMask {
    seed: u64,
    /// An element is dropped when its 32 hash bits are below this.
    threshold: u32,
    /// `1/(1 − p)` for kept elements.
    scale: f32,
    /// `p = 1`: every element dropped.
    drop_all: bool,
}

impl HashMask {
    pub(crate) fn new(mask: DropoutMask) -> HashMask {
        let p = mask.prob;
        HashMask {
            seed: mask.seed,
            threshold: (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32,
            scale: if p >= 1.0 { 0.0 } else { (1.0 / (1.0 - p)) as f32 },
            drop_all: p >= 1.0,
        }
    }

    /// The multiplier of element `index`: 0 (dropped) or `1/(1 − p)`.
    #[inline(always)]
    pub(crate) fn factor(&self, index: u64) -> f32 {
        let kept = !self.drop_all && hash(self.seed, index) >= self.threshold;
        if kept {
            self.scale
        } else {
            0.0
        }
    }
}

/// Two rounds of the `lowbias32` integer hash (Wellons), keyed by both halves of the seed.
/// Bijective in the low 32 index bits for a fixed seed; only 32-bit multiplies, so it
/// vectorises on AVX2 as well as AVX-512.
#[inline(always)]
fn hash(seed: u64, index: u64) -> u32 {
    #[inline(always)]
    fn mix(mut x: u32) -> u32 {
        x ^= x >> 16;
        x = x.wrapping_mul(0x7feb_352d);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846c_a68b);
        x ^= x >> 16;
        x
    }
    let first = mix((index as u32) ^ (seed as u32));
    mix(first ^ (seed >> 32) as u32 ^ ((index >> 32) as u32).wrapping_mul(0x9e37_79b9))
}

/// The differentiable hot ops, on a backend's primitives (Burn's backend-extension pattern).
///
/// Every method has Burn's plain decomposition ([`reference`]) as its default, so
/// `impl FusedOps for MyBackend {}` is a correct (unfused) implementation. Fast paths override
/// them: Flex with its forward kernels, `Autodiff<B>` (for `B: FusedKernels`) with one graph
/// node per op whose backward step runs `B`'s backward kernel.
pub trait FusedOps: Backend {
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
    /// `[rows, width]` tensors; without `branch`, a plain LayerNorm.
    fn fused_residual_layer_norm(
        residual: FloatTensor<Self>,
        branch: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        reference::residual_layer_norm(
            float::<Self, 2>(residual),
            branch.map(float),
            float(gamma),
            float(beta),
            epsilon,
            dropout,
        )
        .into_primitive()
        .tensor()
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
        Self::gelu(x)
    }
}

/// The forward and backward kernels behind `Autodiff<Self>`'s [`FusedOps`].
///
/// Tensors are contiguous row-major `f32` as the methods describe; optional outputs are
/// computed only when asked for (`keep_*`, `needs`), so inference pays for no saved state.
pub trait FusedKernels: Backend {
    /// `(act(x·W + b), pre-activation if keep_pre and act is not the identity)`.
    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: LinearActivation,
        keep_pre: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>);

    /// Gradients `[x, weight, bias]` (those `needs` asks for) of [`FusedKernels::linear_forward`].
    fn linear_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        pre_activation: Option<FloatTensor<Self>>,
        activation: LinearActivation,
        needs: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3];

    /// `(context, probabilities [batch, heads, seq, seq] before dropout if keep_probs)`.
    fn attention_forward(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
        keep_probs: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>);

    /// The gradient of `qkv`.
    fn attention_backward(
        grad: FloatTensor<Self>,
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self>;

    /// The output and, if `keep`, what the backward pass needs.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_forward(
        residual: FloatTensor<Self>,
        branch: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        dropout: Option<DropoutMask>,
        keep: bool,
    ) -> (FloatTensor<Self>, Option<LayerNormState<Self>>);

    /// Gradients of [`FusedKernels::layer_norm_forward`].
    fn layer_norm_backward(
        grad: FloatTensor<Self>,
        state: LayerNormState<Self>,
        gamma: FloatTensor<Self>,
        dropout: Option<DropoutMask>,
        with_branch: bool,
    ) -> LayerNormGrads<Self>;

    /// `x · mask` — the forward pass of dropout and, on the gradient, its backward pass.
    fn dropout_apply(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self>;

    /// `gelu(x)`.
    fn erf_gelu_forward(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `grad · gelu'(x)`.
    fn erf_gelu_backward(grad: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// What [`FusedKernels::layer_norm_backward`] needs from the forward pass.
#[derive(Debug, Clone)]
pub struct LayerNormState<B: Backend> {
    /// The normalised rows `(x − μ)/σ`, `[rows, width]`.
    pub x_hat: FloatTensor<B>,
    /// `1/σ` per row, `[rows]`.
    pub inv_std: FloatTensor<B>,
}

/// Gradients of `LayerNorm(residual + dropout(branch))`.
#[derive(Debug, Clone)]
pub struct LayerNormGrads<B: Backend> {
    /// Of the residual input.
    pub residual: FloatTensor<B>,
    /// Of the branch (when asked for).
    pub branch: Option<FloatTensor<B>>,
    /// Of γ.
    pub gamma: FloatTensor<B>,
    /// Of β.
    pub beta: FloatTensor<B>,
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The backend types with a fast path that model code (generic over `B: Backend`) is routed to.
enum Route {
    #[cfg(feature = "flex")]
    Flex,
    #[cfg(feature = "flex")]
    AutodiffFlex,
    Reference,
}

fn route<B: Backend>() -> Route {
    #[cfg(feature = "flex")]
    {
        let id = TypeId::of::<B>();
        if id == TypeId::of::<burn::backend::Flex>() {
            return Route::Flex;
        }
        if id == TypeId::of::<burn::backend::Autodiff<burn::backend::Flex>>() {
            return Route::AutodiffFlex;
        }
    }
    Route::Reference
}

/// Whether `B` has a fused fast path for f32 tensors (when false, every op of this module runs
/// its [`reference`] decomposition).
pub fn has_fast_path<B: Backend>() -> bool {
    !matches!(route::<B>(), Route::Reference)
}

#[cfg(feature = "flex")]
/// Re-type a tensor between two names of the same backend type (checked by [`route`]).
fn same<From: Backend, To: Backend, const D: usize>(t: Tensor<From, D>) -> FloatTensor<To> {
    let primitive: Box<dyn Any> = Box::new(t.into_primitive().tensor());
    *primitive.downcast::<FloatTensor<To>>().expect("the router matched the backend types")
}

#[cfg(feature = "flex")]
fn same_bool<From: Backend, To: Backend, const D: usize>(t: Tensor<From, D, Bool>) -> BoolTensor<To> {
    let primitive: Box<dyn Any> = Box::new(t.into_primitive());
    *primitive.downcast::<BoolTensor<To>>().expect("the router matched the backend types")
}

#[cfg(feature = "flex")]
fn back<From: Backend, To: Backend, const D: usize>(t: FloatTensor<From>) -> Tensor<To, D> {
    let primitive: Box<dyn Any> = Box::new(t);
    Tensor::from_primitive(TensorPrimitive::Float(
        *primitive.downcast::<FloatTensor<To>>().expect("the router matched the backend types"),
    ))
}

/// `$fast` with the type alias `$F` naming the fast-path backend that `$B` is, else `$fallback`.
macro_rules! route_op {
    ($B:ty, |$F:ident| $fast:expr, else $fallback:expr) => {{
        match route::<$B>() {
            #[cfg(feature = "flex")]
            Route::Flex => {
                type $F = burn::backend::Flex;
                $fast
            }
            #[cfg(feature = "flex")]
            Route::AutodiffFlex => {
                type $F = burn::backend::Autodiff<burn::backend::Flex>;
                $fast
            }
            Route::Reference => $fallback,
        }
    }};
}

fn all_f32(dtypes: &[DType]) -> bool {
    dtypes.iter().all(|d| *d == DType::F32)
}

/// `act(x·W + b)`: `x [rows, d_in]`, `weight [d_in, d_out]`, `bias [d_out]` → `[rows, d_out]`.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    activation: LinearActivation,
) -> Tensor<B, 2> {
    if !all_f32(&[x.dtype(), weight.dtype(), bias.dtype()]) {
        return reference::linear(x, weight, bias, activation);
    }
    route_op!(B, |F| back::<F, B, 2>(F::fused_linear(
        same::<B, F, 2>(x),
        same::<B, F, 2>(weight),
        same::<B, F, 1>(bias),
        activation
    )), else reference::linear(x, weight, bias, activation))
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
    if qkv.dtype() != DType::F32 {
        return reference::attention(qkv, key_padding, heads, dropout);
    }
    route_op!(B, |F| back::<F, B, 3>(F::fused_attention(
        same::<B, F, 3>(qkv),
        same_bool::<B, F, 2>(key_padding),
        heads,
        dropout
    )), else reference::attention(qkv, key_padding, heads, dropout))
}

/// `LayerNorm(residual + dropout(branch))·γ + β` over the last dimension of `[rows, width]`;
/// without `branch`, a plain LayerNorm.
pub fn residual_layer_norm<B: Backend>(
    residual: Tensor<B, 2>,
    branch: Option<Tensor<B, 2>>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
) -> Tensor<B, 2> {
    let mut dtypes = vec![residual.dtype(), gamma.dtype(), beta.dtype()];
    dtypes.extend(branch.as_ref().map(|b| b.dtype()));
    if !all_f32(&dtypes) {
        return reference::residual_layer_norm(residual, branch, gamma, beta, epsilon, dropout);
    }
    route_op!(B, |F| back::<F, B, 2>(F::fused_residual_layer_norm(
        same::<B, F, 2>(residual),
        branch.map(same::<B, F, 2>),
        same::<B, F, 1>(gamma),
        same::<B, F, 1>(beta),
        epsilon,
        dropout
    )), else reference::residual_layer_norm(residual, branch, gamma, beta, epsilon, dropout))
}

/// `x · mask/(1−p)` with the hash mask of `mask`; the identity for `None`.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, mask: Option<DropoutMask>) -> Tensor<B, D> {
    let Some(mask) = mask else { return x };
    if x.dtype() != DType::F32 {
        return reference::dropout(x, mask);
    }
    route_op!(B, |F| back::<F, B, D>(F::fused_dropout(same::<B, F, D>(x), mask)), else reference::dropout(x, mask))
}

/// Exact (erf) GELU.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() != DType::F32 {
        return reference::gelu(x);
    }
    route_op!(B, |F| back::<F, B, D>(F::fused_gelu(same::<B, F, D>(x))), else reference::gelu(x))
}
