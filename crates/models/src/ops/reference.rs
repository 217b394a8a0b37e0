//! The ops of [`crate::ops`] as plain Burn tensor ops: their definition, the implementation of
//! every backend without a fast path, and what the fused kernels are tested against.

use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

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
        LinearActivation::Gelu => activation::gelu(y),
    }
}

/// `softmax(QKᵀ/√d + mask)·V` per head, heads split from and merged into `[batch, seq, ·]`
/// by reshape and transpose; padded keys at `f32::MIN` as `transformers`' eager attention.
pub fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    key_padding: Tensor<B, 2, Bool>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> Tensor<B, 3> {
    let [batch, seq, width] = qkv.dims();
    let hidden = width / 3;
    let head_dim = hidden / heads;
    let split = |part: usize| {
        qkv.clone().narrow(2, part * hidden, hidden).reshape([batch, seq, heads, head_dim]).swap_dims(1, 2)
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let scores = q.matmul(k.swap_dims(2, 3)) * (head_dim as f64).powf(-0.5); // [batch, heads, seq, seq]
    let mask = key_padding.reshape([batch, 1, 1, seq]).expand([batch, heads, seq, seq]);
    let mut probs = activation::softmax(scores.mask_fill(mask, f32::MIN), 3);
    if let Some(mask) = dropout {
        probs = probs.clone() * mask.factors::<B, 4>([batch, heads, seq, seq], &probs.device());
    }
    probs.matmul(v).swap_dims(1, 2).reshape([batch, seq, hidden])
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
    let x = match (branch, dropout) {
        (Some(b), Some(mask)) => residual + self::dropout(b, mask),
        (Some(b), None) => residual + b,
        (None, _) => residual,
    };
    let (var, mean) = x.clone().var_mean_bias(1);
    (x - mean) / (var + epsilon).sqrt() * gamma.unsqueeze::<2>() + beta.unsqueeze::<2>()
}

/// `x · mask`, the mask's factors computed on the host.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, mask: DropoutMask) -> Tensor<B, D> {
    let factors = mask.factors::<B, D>(x.dims(), &x.device());
    x * factors
}

/// Burn's exact GELU.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::gelu(x)
}
