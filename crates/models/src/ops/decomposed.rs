//! [`FusedKernels`](super::FusedKernels) as Burn tensor ops: the forward passes are the
//! [`reference`](super::reference) decomposition, the backward passes its gradients derived by
//! hand. They are the trait's default methods, so a backend with kernels for some ops only
//! (a CubeCL backend as its kernels come) overrides those and gets one autodiff node per op
//! for the rest, its backward written once here instead of Burn's autodiff recording every
//! tensor op. Checked against Burn's autodiff of the reference by [`super::check`].

use burn::tensor::backend::Backend;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};

use super::{reference, AttentionState, DropoutMask, LayerNormGrads, LayerNormState, LinearActivation};

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// `(act(x·W + b), x·W + b if keep_pre and act is GELU)`.
pub fn linear_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    activation: LinearActivation,
    keep_pre: bool,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let pre = reference::linear::<B>(float(x), float(weight), float(bias), LinearActivation::Identity);
    match activation {
        LinearActivation::Identity => (prim(pre), None),
        LinearActivation::Gelu => {
            let y = reference::gelu(pre.clone());
            (prim(y), keep_pre.then(|| prim(pre)))
        }
    }
}

/// `[dx = g·Wᵀ, dW = xᵀ·g, db = Σ_rows g]` with `g = grad·act'(pre)`.
pub fn linear_backward<B: Backend>(
    grad: FloatTensor<B>,
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    pre_activation: Option<FloatTensor<B>>,
    activation: LinearActivation,
    needs: [bool; 3],
) -> [Option<FloatTensor<B>>; 3] {
    let grad: Tensor<B, 2> = match activation {
        LinearActivation::Identity => float(grad),
        LinearActivation::Gelu => float(gelu_backward::<B>(
            grad,
            pre_activation.expect("linear_backward: GELU needs the pre-activation"),
        )),
    };
    let [dx, dw, db] = needs;
    let weight: Tensor<B, 2> = float(weight);
    let d_out = weight.dims()[1];
    [
        dx.then(|| prim(grad.clone().matmul(weight.transpose()))),
        dw.then(|| prim(float::<B, 2>(x).transpose().matmul(grad.clone()))),
        db.then(|| prim(grad.sum_dim(0).reshape([d_out]))),
    ]
}

/// `(context, the probabilities before dropout if keep)`.
pub fn attention_forward<B: Backend>(
    qkv: FloatTensor<B>,
    key_padding: BoolTensor<B>,
    heads: usize,
    dropout: Option<DropoutMask>,
    keep: bool,
) -> (FloatTensor<B>, Option<AttentionState<B>>) {
    let [q, k, v] = reference::split_heads::<B>(float(qkv), heads);
    let probs = reference::attention_probs(q, k, Tensor::from_primitive(key_padding));
    let dropped = match dropout {
        Some(mask) => reference::dropout(probs.clone(), mask),
        None => probs.clone(),
    };
    let dtype = v.dtype();
    let context = reference::merge_heads(dropped.cast(dtype).matmul(v));
    (prim(context), keep.then(|| AttentionState::Probs(prim(probs))))
}

/// The gradient of `qkv`: with `P` the probabilities, `P'` after dropout and `g` the
/// context's gradient per head, `dV = P'ᵀ·g`, `dP = dropout(g·Vᵀ)`, the softmax's
/// `dS = P ⊙ (dP − Σ_keys dP ⊙ P)` (0 on padded keys, where `P` is 0), `dQ = dS·K/√d` and
/// `dK = dSᵀ·Q/√d`, merged back side by side. From a kernel's row statistics
/// ([`AttentionState::RowStats`]), `P` is recomputed.
pub fn attention_backward<B: Backend>(
    grad: FloatTensor<B>,
    qkv: FloatTensor<B>,
    state: AttentionState<B>,
    key_padding: BoolTensor<B>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> FloatTensor<B> {
    let [q, k, v] = reference::split_heads::<B>(float(qkv), heads);
    let head_dim = q.dims()[3];
    let scale = (head_dim as f64).powf(-0.5);
    let probs: Tensor<B, 4> = match state {
        AttentionState::Probs(probs) => float(probs),
        AttentionState::RowStats { .. } => {
            reference::attention_probs(q.clone(), k.clone(), Tensor::from_primitive(key_padding))
        }
    };
    let grad: Tensor<B, 3> = float(grad);
    let [batch, seq, _] = grad.dims();
    let grad = grad.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2); // [batch, heads, seq, head_dim]
    let apply = |t: Tensor<B, 4>| match dropout {
        Some(mask) => reference::dropout(t, mask),
        None => t,
    };
    // The products in the operands' dtype, the softmax's backward in the probabilities' f32
    // (casts to the same dtype are no-ops in f32).
    let dtype = FloatDType::from(v.dtype());
    let dv = apply(probs.clone()).cast(dtype).swap_dims(2, 3).matmul(grad.clone());
    let dp = apply(grad.matmul(v.swap_dims(2, 3)).cast(FloatDType::F32)); // [batch, heads, seq, seq]
    let row = (dp.clone() * probs.clone()).sum_dim(3);
    let ds = (probs * (dp - row) * scale).cast(dtype);
    let dq = ds.clone().matmul(k);
    let dk = ds.swap_dims(2, 3).matmul(q);
    prim(Tensor::cat(vec![dq, dk, dv].into_iter().map(reference::merge_heads).collect(), 2))
}

/// The output and, if `keep`, `(x̂, 1/σ)` of `LayerNorm(residual + dropout(branch))`.
pub fn layer_norm_forward<B: Backend>(
    residual: FloatTensor<B>,
    branch: Option<FloatTensor<B>>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
    keep: bool,
) -> (FloatTensor<B>, Option<LayerNormState<B>>) {
    let residual: Tensor<B, 2> = float(residual);
    let dtype = FloatDType::from(residual.dtype());
    let x = match (branch.map(|b| float::<B, 2>(b).cast(dtype)), dropout) {
        (Some(b), Some(mask)) => residual + reference::dropout(b, mask),
        (Some(b), None) => residual + b,
        (None, _) => residual,
    };
    let (x_hat, inv_std) = reference::normalize(x, epsilon);
    let y = x_hat.clone() * float::<B, 1>(gamma).unsqueeze::<2>() + float::<B, 1>(beta).unsqueeze::<2>();
    let state = keep.then(|| LayerNormState { x_hat: prim(x_hat), inv_std: prim(inv_std) });
    (prim(y), state)
}

/// With `ĝ = grad·γ` per row of width `n`: `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂))/σ` (the
/// residual's gradient, and through the dropout the branch's), `dγ = Σ_rows grad⊙x̂`,
/// `dβ = Σ_rows grad`.
pub fn layer_norm_backward<B: Backend>(
    grad: FloatTensor<B>,
    state: LayerNormState<B>,
    gamma: FloatTensor<B>,
    dropout: Option<DropoutMask>,
    branch: Option<DType>,
) -> LayerNormGrads<B> {
    let grad: Tensor<B, 2> = float(grad);
    let x_hat: Tensor<B, 2> = float(state.x_hat);
    let [rows, width] = grad.dims();
    let inv_std = float::<B, 1>(state.inv_std).reshape([rows, 1]);
    let g_hat = grad.clone() * float::<B, 1>(gamma).unsqueeze::<2>();
    let mean_g = g_hat.clone().mean_dim(1);
    let mean_gx = (g_hat.clone() * x_hat.clone()).mean_dim(1);
    let dx = (g_hat - mean_g - x_hat.clone() * mean_gx) * inv_std;
    let branch = branch.map(|dtype| {
        let d_branch = match dropout {
            Some(mask) => reference::dropout(dx.clone(), mask),
            None => dx.clone(),
        };
        prim(d_branch.cast(FloatDType::from(dtype)))
    });
    LayerNormGrads {
        residual: prim(dx),
        branch,
        gamma: prim((grad.clone() * x_hat).sum_dim(0).reshape([width])),
        beta: prim(grad.sum_dim(0).reshape([width])),
    }
}

/// `x · mask`.
pub fn dropout_apply<B: Backend>(x: FloatTensor<B>, mask: DropoutMask) -> FloatTensor<B> {
    let (x, shape) = flat::<B>(x);
    B::float_reshape(prim(reference::dropout(x, mask)), shape)
}

/// `t` (any rank) as a flat tensor, and its shape.
fn flat<B: Backend>(t: FloatTensor<B>) -> (Tensor<B, 1>, burn::tensor::Shape) {
    let shape = burn::tensor::TensorMetadata::shape(&t);
    (float(B::float_reshape(t, burn::tensor::Shape::new([shape.num_elements()]))), shape)
}

/// Exact (erf) GELU ([`reference::gelu`]: in f32, rounded once to `x`'s dtype), any rank.
pub fn gelu_forward<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let (x, shape) = flat::<B>(x);
    B::float_reshape(prim(reference::gelu(x)), shape)
}

/// `grad · gelu'(x)` with the exact derivative `gelu'(x) = Φ(x) + x·φ(x)`, `φ(x) =
/// exp(−x²/2)/√(2π)`, in f32 and rounded once to `x`'s dtype (any rank). Not Burn's
/// `gelu_backward`: see [`reference::gelu`].
pub fn gelu_backward<B: Backend>(grad: FloatTensor<B>, x: FloatTensor<B>) -> FloatTensor<B> {
    let dtype = FloatDType::from(burn::tensor::TensorMetadata::dtype(&x));
    let (x, shape) = flat::<B>(x);
    let (grad, _) = flat::<B>(grad);
    let x = x.cast(FloatDType::F32);
    let cdf = reference::normal_cdf(x.clone());
    let pdf = (x.clone() * x.clone())
        .mul_scalar(-0.5)
        .exp()
        .mul_scalar(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    let slope = cdf + x * pdf;
    B::float_reshape(prim((grad.cast(FloatDType::F32) * slope).cast(dtype)), shape)
}
