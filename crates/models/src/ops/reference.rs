//! The ops of [`crate::ops`] as plain Burn tensor ops: their definition, the implementation of
//! every backend without a fast path, and what the fused kernels are tested against.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Tensor};

use super::{DropoutMask, LinearActivation};

/// `act(x·W + b)`.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    activation: LinearActivation,
) -> Tensor<B, 2> {
    let y = x.matmul(weight) + bias.unsqueeze::<2>();
    match activation {
        LinearActivation::Identity => y,
        LinearActivation::Gelu => gelu(y),
    }
}

/// Q, K and V of the fused projection `[batch, seq, 3·hidden]`, each `[batch, heads, seq,
/// head_dim]` (a reshape and a transpose of a slice).
pub fn split_heads<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> [Tensor<B, 4>; 3] {
    let [batch, seq, width] = qkv.dims();
    let hidden = width / 3;
    let head_dim = hidden / heads;
    [0, 1, 2].map(|part| {
        qkv.clone().narrow(2, part * hidden, hidden).reshape([batch, seq, heads, head_dim]).swap_dims(1, 2)
    })
}

/// `[batch, heads, seq, head_dim]` → `[batch, seq, heads·head_dim]`, the inverse of
/// [`split_heads`] for one part.
pub fn merge_heads<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, seq, head_dim] = t.dims();
    t.swap_dims(1, 2).reshape([batch, seq, heads * head_dim])
}

/// The attention probabilities `softmax(QKᵀ/√d + mask)` `[batch, heads, seq, seq]` of
/// `[batch, heads, seq, head_dim]` queries and keys, in f32 whatever their dtype (the product
/// in theirs, then widened, as autocast computes softmax); padded keys (`key_padding [batch,
/// seq]` true) at `f32::MIN` as `transformers`' eager attention, so they get probability 0.
pub fn attention_probs<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    key_padding: Tensor<B, 2, Bool>,
) -> Tensor<B, 4> {
    let [batch, heads, seq, head_dim] = q.dims();
    let scores = q.matmul(k.swap_dims(2, 3)).cast(FloatDType::F32) * (head_dim as f64).powf(-0.5); // [batch, heads, seq, seq]
    let mask = key_padding.reshape([batch, 1, 1, seq]).expand([batch, heads, seq, seq]);
    activation::softmax(scores.mask_fill(mask, f32::MIN), 3)
}

/// `softmax(QKᵀ/√d + mask)·V` per head ([`attention_probs`]), heads split from and merged into
/// `[batch, seq, ·]` by [`split_heads`] and [`merge_heads`]; dropout on the (f32)
/// probabilities, which are then rounded to V's dtype for the product.
pub fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    key_padding: Tensor<B, 2, Bool>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> Tensor<B, 3> {
    let [q, k, v] = split_heads(qkv, heads);
    let mut probs = attention_probs(q, k, key_padding);
    // Dropout as the seam routes it (a backend's kernel, or `dropout` below): the op is
    // checked against its definition on its own, and a GPU backend must not build masks on
    // the host inside every layer.
    probs = super::dropout(probs, dropout);
    let dtype = v.dtype();
    merge_heads(probs.cast(dtype).matmul(v))
}

/// `LayerNorm(residual + dropout(branch))·γ + β`, LayerNorm as `burn::nn::LayerNorm`:
/// `(x − mean)/√(var + ε)` with the biased variance.
pub fn residual_layer_norm<B: Backend>(
    residual: Tensor<B, 2>,
    branch: Option<Tensor<B, 2>>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
) -> Tensor<B, 2> {
    // A branch in a product's dtype is widened to the residual's, as an f32 residual stream
    // adds it.
    let dtype = FloatDType::from(residual.dtype());
    let x = match (branch, dropout) {
        (Some(b), mask) => residual + super::dropout(b.cast(dtype), mask),
        (None, _) => residual,
    };
    let (x_hat, _) = normalize(x, epsilon);
    x_hat * gamma.unsqueeze::<2>() + beta.unsqueeze::<2>()
}

/// LayerNorm without its affine part: `(x̂ = (x − mean)/σ, 1/σ [rows])` for the rows of
/// `[rows, width]`, `σ = √(var + ε)` with the biased variance.
pub fn normalize<B: Backend>(x: Tensor<B, 2>, epsilon: f64) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let rows = x.dims()[0];
    let (var, mean) = x.clone().var_mean_bias(1);
    let std = (var + epsilon).sqrt(); // [rows, 1]
    let x_hat = (x - mean) / std.clone();
    (x_hat, std.recip().reshape([rows]))
}

/// `x · mask`, the mask's factors computed on the host.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, mask: DropoutMask) -> Tensor<B, D> {
    let factors = mask.factors::<B, D>(x.dims(), &x.device());
    x * factors
}

/// Exact (erf) GELU, `x·Φ(x)` with `Φ(x) = (1 + erf(x/√2))/2`, computed in f32 whatever
/// `x`'s dtype and rounded once to it, as PyTorch's kernels do for f16 and bf16 (they compute
/// in `float`). Written in tensor ops rather than as Burn's `gelu`, whose backward on backends
/// without one of their own (the CubeCL ones) is the derivative of the tanh approximation
/// (up to 8.7e-4 off `Φ(x) + x·φ(x)`) and raises `x` to a power in `x`'s dtype: NaN in f16 on
/// Mesa 26's lavapipe, whose f16 `pow` is NaN everywhere. Autodiff of this is the exact
/// derivative, in f32.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = FloatDType::from(x.dtype());
    let x = x.cast(FloatDType::F32);
    (x.clone() * normal_cdf(x)).cast(dtype)
}

/// `Φ(x) = (1 + erf(x/√2))/2`, the standard normal distribution function, element-wise.
pub(crate) fn normal_cdf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    (x * std::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5)
}
