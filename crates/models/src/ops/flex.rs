//! The Flex fast path: [`FusedKernels`] and [`FusedOps`] for burn-flex tensors, on the kernels
//! of [`super::cpu`].

use burn::backend::Flex;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bytes, DType, FloatDType, Shape};
use burn_flex::{FlexTensor, Layout};

use super::cpu::{self, attention, linear, norm, Mask};
use super::{
    cast_copy, AttentionState, DropoutMask, FusedKernels, FusedOps, LayerNormGrads, LayerNormOutput,
    LayerNormState, LinearActivation,
};

/// A contiguous f32 tensor (copied only when it is a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    cpu::retain_freed_memory();
    assert_eq!(t.dtype(), DType::F32, "the fused Flex kernels take f32 tensors (the router checks)");
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("made contiguous f32 by `contiguous`")
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().iter().copied().collect()
}

fn tensor(data: Vec<f32>, dims: &[usize]) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), Layout::contiguous(Shape::from(dims.to_vec())), DType::F32)
}

/// `[batch, seq]` booleans as bytes (1 = padded key).
fn padding_bytes(mask: BoolTensor<Flex>) -> Vec<u8> {
    mask.into_data().iter::<bool>().map(u8::from).collect()
}

fn act(a: LinearActivation) -> linear::Act {
    match a {
        LinearActivation::Identity => linear::Act::None,
        LinearActivation::Gelu => linear::Act::Gelu,
    }
}

fn attention_dims(qkv: &FlexTensor, heads: usize) -> attention::Dims {
    let d = dims(qkv);
    assert_eq!(d.len(), 3, "attention: qkv must be [batch, seq, 3·hidden]");
    attention::Dims { batch: d[0], seq: d[1], heads, head_dim: d[2] / 3 / heads }
}

impl FusedKernels for Flex {
    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: LinearActivation,
        keep_pre: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let (x, w, b) = (contiguous(x), contiguous(weight), contiguous(bias));
        let wd = dims(&w);
        let (d_in, d_out) = (wd[0], wd[1]);
        let rows = dims(&x)[0];
        let (y, pre) =
            linear::forward(values(&x), values(&w), values(&b), d_in, d_out, act(activation), keep_pre);
        (tensor(y, &[rows, d_out]), pre.map(|p| tensor(p, &[rows, d_out])))
    }

    fn linear_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        pre_activation: Option<FloatTensor<Self>>,
        activation: LinearActivation,
        needs: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        let (dy, x, w) = (contiguous(grad), contiguous(x), contiguous(weight));
        let pre = pre_activation.map(contiguous);
        let wd = dims(&w);
        let (d_in, d_out) = (wd[0], wd[1]);
        let rows = dims(&x)[0];
        let g = linear::backward(
            values(&dy),
            values(&x),
            values(&w),
            pre.as_ref().map(values),
            d_in,
            d_out,
            act(activation),
            needs,
        );
        [
            g.x.map(|v| tensor(v, &[rows, d_in])),
            g.w.map(|v| tensor(v, &[d_in, d_out])),
            g.b.map(|v| tensor(v, &[d_out])),
        ]
    }

    fn attention_forward(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
        keep: bool,
    ) -> (FloatTensor<Self>, Option<AttentionState<Self>>) {
        let qkv = contiguous(qkv);
        let d = attention_dims(&qkv, heads);
        let padded = padding_bytes(key_padding);
        let (ctx, probs) = attention::forward(values(&qkv), &padded, d, dropout.map(Mask::new), keep);
        (
            tensor(ctx, &[d.batch, d.seq, d.heads * d.head_dim]),
            probs.map(|p| AttentionState::Probs(tensor(p, &[d.batch, d.heads, d.seq, d.seq]))),
        )
    }

    fn attention_backward(
        grad: FloatTensor<Self>,
        qkv: FloatTensor<Self>,
        state: AttentionState<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        // Flex's forward keeps the probabilities; row statistics (another forward's) go to
        // the decomposition, which recomputes them.
        let probs = match state {
            AttentionState::Probs(probs) => probs,
            state => {
                return super::decomposed::attention_backward::<Self>(
                    grad,
                    qkv,
                    state,
                    key_padding,
                    heads,
                    dropout,
                )
            }
        };
        let (dy, qkv, probs) = (contiguous(grad), contiguous(qkv), contiguous(probs));
        let d = attention_dims(&qkv, heads);
        let padded = padding_bytes(key_padding);
        let shape = dims(&qkv);
        let g = attention::backward(
            values(&dy),
            values(&qkv),
            values(&probs),
            &padded,
            d,
            dropout.map(Mask::new),
        );
        tensor(g, &shape)
    }

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
        let (x, g, b) = (contiguous(residual), contiguous(gamma), contiguous(beta));
        let branch = branch.map(contiguous);
        let shape = dims(&x);
        let (y, saved) = norm::forward(
            values(&x),
            branch.as_ref().map_or(&[][..], values),
            values(&g),
            values(&b),
            epsilon as f32,
            dropout.map(Mask::new),
            keep,
        );
        let rows = shape[0];
        let state = saved
            .map(|s| LayerNormState { x_hat: tensor(s.x_hat, &shape), inv_std: tensor(s.inv_std, &[rows]) });
        let output = tensor(y, &shape);
        LayerNormOutput { copy: cast_copy::<Self>(&output, copy), output, state }
    }

    fn layer_norm_backward(
        grad: FloatTensor<Self>,
        state: LayerNormState<Self>,
        gamma: FloatTensor<Self>,
        dropout: Option<DropoutMask>,
        branch: Option<DType>,
    ) -> LayerNormGrads<Self> {
        // Flex takes f32 only (its `layer_norm_kernel_accepts` is the default): the branch's
        // gradient is f32 too.
        let with_branch = branch.is_some();
        let (dy, g) = (contiguous(grad), contiguous(gamma));
        let (x_hat, inv_std) = (contiguous(state.x_hat), contiguous(state.inv_std));
        let shape = dims(&dy);
        let width = shape[1];
        let grads = norm::backward(
            values(&dy),
            values(&x_hat),
            values(&inv_std),
            values(&g),
            dropout.map(Mask::new),
            with_branch,
        );
        LayerNormGrads {
            residual: tensor(grads.residual, &shape),
            branch: grads.branch.map(|v| tensor(v, &shape)),
            gamma: tensor(grads.gamma, &[width]),
            beta: tensor(grads.beta, &[width]),
        }
    }

    fn dropout_apply(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        let x = contiguous(x);
        let shape = dims(&x);
        tensor(cpu::dropout(values(&x), Mask::new(mask)), &shape)
    }

    fn erf_gelu_forward(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = contiguous(x);
        let shape = dims(&x);
        tensor(cpu::gelu_forward(values(&x)), &shape)
    }

    fn erf_gelu_backward(grad: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (dy, x) = (contiguous(grad), contiguous(x));
        let shape = dims(&x);
        tensor(cpu::gelu_backward(values(&x), values(&dy)), &shape)
    }
}

/// Inference on Flex: the forward kernels, nothing kept for a backward pass.
impl FusedOps for Flex {
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: LinearActivation,
    ) -> FloatTensor<Self> {
        Self::linear_forward(x, weight, bias, activation, false).0
    }

    fn fused_attention(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        Self::attention_forward(qkv, key_padding, heads, dropout, false).0
    }

    fn fused_residual_layer_norm(
        residual: FloatTensor<Self>,
        branch: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        dropout: Option<DropoutMask>,
        copy: Option<FloatDType>,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let normed = Self::layer_norm_forward(residual, branch, gamma, beta, epsilon, dropout, copy, false);
        (normed.output, normed.copy)
    }

    fn fused_dropout(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        Self::dropout_apply(x, mask)
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::erf_gelu_forward(x)
    }
}
