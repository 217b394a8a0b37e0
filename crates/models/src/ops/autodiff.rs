//! [`FusedOps`] for `Autodiff<B>`: one graph node per op, whose backward step is `B`'s
//! backward kernel ([`FusedKernels`]). Each op keeps only what its backward kernel reads, and
//! nothing when no input is tracked.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::FloatDType;

use super::{AttentionState, DropoutMask, FusedKernels, FusedOps, LayerNormState, LinearActivation};

fn register<B: FusedKernels>(grads: &mut Gradients, node: Option<NodeId>, grad: Option<FloatTensor<B>>) {
    if let (Some(node), Some(grad)) = (node, grad) {
        grads.register::<B>(node, grad);
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: FusedKernels> Backward<B, 3> for LinearBackward {
    /// Input, weight, pre-activation (GELU only), activation.
    type State = (FloatTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>, LinearActivation);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node, b_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, pre, activation) = ops.state;
        let needs = [x_node.is_some(), w_node.is_some(), b_node.is_some()];
        let [dx, dw, db] = B::linear_backward(grad, x, w, pre, activation, needs);
        register::<B>(grads, x_node, dx);
        register::<B>(grads, w_node, dw);
        register::<B>(grads, b_node, db);
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedKernels> Backward<B, 1> for AttentionBackward {
    /// QKV, what the backward kernel reads, padding mask, heads, dropout.
    type State = (FloatTensor<B>, AttentionState<B>, BoolTensor<B>, usize, Option<DropoutMask>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [qkv_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        let (qkv, state, padding, heads, dropout) = ops.state;
        if qkv_node.is_some() {
            let d_qkv = B::attention_backward(grad, qkv, state, padding, heads, dropout);
            register::<B>(grads, qkv_node, Some(d_qkv));
        }
    }
}

#[derive(Debug)]
struct ResidualLayerNormBackward;

impl<B: FusedKernels> Backward<B, 4> for ResidualLayerNormBackward {
    /// Saved rows, γ, the branch's dropout, the branch's dtype.
    type State = (LayerNormState<B>, FloatTensor<B>, Option<DropoutMask>, burn::tensor::DType);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [res_node, branch_node, gamma_node, beta_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        let (state, gamma, dropout, branch_dtype) = ops.state;
        let g = B::layer_norm_backward(grad, state, gamma, dropout, branch_node.map(|_| branch_dtype));
        register::<B>(grads, res_node, Some(g.residual));
        register::<B>(grads, branch_node, g.branch);
        register::<B>(grads, gamma_node, Some(g.gamma));
        register::<B>(grads, beta_node, Some(g.beta));
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: FusedKernels> Backward<B, 3> for LayerNormBackward {
    /// Saved rows, γ.
    type State = (LayerNormState<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        let (state, gamma) = ops.state;
        let g = B::layer_norm_backward(grad, state, gamma, None, None);
        register::<B>(grads, x_node, Some(g.residual));
        register::<B>(grads, gamma_node, Some(g.gamma));
        register::<B>(grads, beta_node, Some(g.beta));
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl<B: FusedKernels> Backward<B, 1> for DropoutBackward {
    type State = DropoutMask;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        register::<B>(grads, x_node, x_node.map(|_| B::dropout_apply(grad, ops.state)));
    }
}

#[derive(Debug)]
struct GeluBackward;

impl<B: FusedKernels> Backward<B, 1> for GeluBackward {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        register::<B>(grads, x_node, x_node.map(|_| B::erf_gelu_backward(grad, ops.state)));
    }
}

/// A parameter's cast into a product's dtype, whose backward hands the gradient on as the
/// product made it: the optimizer widens it where it reads it, in the same kernel.
#[derive(Debug)]
struct ParamCastBackward;

impl<B: FusedKernels> Backward<B, 1> for ParamCastBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [param_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        register::<B>(grads, param_node, param_node.map(|_| grad));
    }
}

/// A LayerNorm's output in a product's dtype, written by the LayerNorm's kernel: the forward
/// launches nothing, and backward the gradient flows into the output's widened to its dtype,
/// as through a cast.
#[derive(Debug)]
struct LayerNormCopyBackward;

impl<B: FusedKernels> Backward<B, 1> for LayerNormCopyBackward {
    /// The output's dtype.
    type State = FloatDType;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [output_node] = ops.parents.map(|n| n.map(|n| n.id));
        let grad = grads.consume::<B>(&ops.node);
        register::<B>(grads, output_node, output_node.map(|_| B::float_cast(grad, ops.state)));
    }
}

/// `copy` (a LayerNorm's output in another dtype, computed with it) as a node of the graph
/// whose parent is the output.
fn layer_norm_copy<B: FusedKernels, C: CheckpointStrategy>(
    output: &FloatTensor<Autodiff<B, C>>,
    copy: Option<FloatTensor<B>>,
) -> Option<FloatTensor<Autodiff<B, C>>> {
    let copy = copy?;
    let dtype = FloatDType::from(burn::tensor::TensorMetadata::dtype(&output.primitive));
    Some(match LayerNormCopyBackward.prepare::<C>([output.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(dtype, copy),
        OpsKind::UnTracked(prep) => prep.finish(copy),
    })
}

impl<B: FusedKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_param_cast(param: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        match ParamCastBackward.prepare::<C>([param.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((), B::param_copy(param.primitive, dtype)),
            OpsKind::UnTracked(prep) => prep.finish(B::param_copy(param.primitive, dtype)),
        }
    }

    fn dropout_accepts(dtype: burn::tensor::DType) -> bool {
        B::dropout_kernel_accepts(dtype)
    }

    fn layer_norm_accepts(residual: burn::tensor::DType, branch: Option<burn::tensor::DType>) -> bool {
        Self::accepts(residual)
            && branch.is_none_or(|b| Self::accepts(b) || B::layer_norm_kernel_accepts(residual, b))
    }

    fn attention_accepts(dtype: burn::tensor::DType, head_dim: usize) -> bool {
        Self::accepts(dtype) || B::attention_kernel_accepts(dtype, head_dim)
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: LinearActivation,
    ) -> FloatTensor<Self> {
        let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        match LinearBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let keep_pre = activation != LinearActivation::Identity;
                let (y, pre) = B::linear_forward(
                    x.primitive.clone(),
                    weight.primitive.clone(),
                    bias.primitive,
                    activation,
                    keep_pre,
                );
                prep.finish((x.primitive, weight.primitive, pre, activation), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                B::linear_forward(x.primitive, weight.primitive, bias.primitive, activation, false).0,
            ),
        }
    }

    fn fused_attention(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        match AttentionBackward.prepare::<C>([qkv.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (ctx, state) =
                    B::attention_forward(qkv.primitive.clone(), key_padding.clone(), heads, dropout, true);
                let state = state.expect("attention_forward keeps its state when asked to");
                prep.finish((qkv.primitive, state, key_padding, heads, dropout), ctx)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::attention_forward(qkv.primitive, key_padding, heads, dropout, false).0)
            }
        }
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
        let forward = |keep: bool, residual: FloatTensor<Self>, branch: Option<FloatTensor<Self>>| {
            B::layer_norm_forward(
                residual.primitive,
                branch.map(|b| b.primitive),
                gamma.primitive.clone(),
                beta.primitive.clone(),
                epsilon,
                dropout,
                copy,
                keep,
            )
        };
        let (output, copied) = match branch {
            Some(branch) => {
                let nodes =
                    [residual.node.clone(), branch.node.clone(), gamma.node.clone(), beta.node.clone()];
                match ResidualLayerNormBackward.prepare::<C>(nodes).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => {
                        let branch_dtype = burn::tensor::TensorMetadata::dtype(&branch.primitive);
                        let normed = forward(true, residual, Some(branch));
                        let state = normed.state.expect("layer_norm_forward keeps its state when asked to");
                        let state = (state, gamma.primitive.clone(), dropout, branch_dtype);
                        (prep.finish(state, normed.output), normed.copy)
                    }
                    OpsKind::UnTracked(prep) => {
                        let normed = forward(false, residual, Some(branch));
                        (prep.finish(normed.output), normed.copy)
                    }
                }
            }
            None => {
                let nodes = [residual.node.clone(), gamma.node.clone(), beta.node.clone()];
                match LayerNormBackward.prepare::<C>(nodes).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => {
                        let normed = forward(true, residual, None);
                        let state = normed.state.expect("layer_norm_forward keeps its state when asked to");
                        (prep.finish((state, gamma.primitive.clone()), normed.output), normed.copy)
                    }
                    OpsKind::UnTracked(prep) => {
                        let normed = forward(false, residual, None);
                        (prep.finish(normed.output), normed.copy)
                    }
                }
            }
        };
        let copied = layer_norm_copy::<B, C>(&output, copied);
        (output, copied)
    }

    fn fused_dropout(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        match DropoutBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(mask, B::dropout_apply(x.primitive, mask)),
            OpsKind::UnTracked(prep) => prep.finish(B::dropout_apply(x.primitive, mask)),
        }
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::erf_gelu_forward(x.primitive.clone());
                prep.finish(x.primitive, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::erf_gelu_forward(x.primitive)),
        }
    }
}
