//! [`FusedKernels`] and [`FusedOps`] for Burn's `Fusion<B>` (the CUDA and wgpu builds' kernel
//! fusion): each kernel of `B` is registered in the fusion stream as a custom operation, run
//! when the stream reaches it, so the element-wise chains around it still fuse. Ops without
//! a kernel run the [`decomposed`](super::decomposed) defaults on `Fusion<B>` itself, where
//! they fuse like any tensor op.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{DType, FloatDType};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::adam::{AdamOperand, AdamUpdated};
use super::cube::{inference_attention, inference_layer_norm};
use super::is_float;
use super::{
    AttentionState, DropoutMask, FusedKernels, FusedOps, LayerNormGrads, LayerNormOutput, LayerNormState,
};

/// `B::dropout_apply` as a custom operation of the fusion stream.
fn dropout_apply<B: FusionBackend + FusedKernels>(
    x: FloatTensor<Fusion<B>>,
    mask: DropoutMask,
) -> FloatTensor<Fusion<B>> {
    #[derive(Clone, Debug)]
    struct DropoutOp<B> {
        desc: CustomOpIr,
        mask: DropoutMask,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedKernels> Operation<B::FusionRuntime> for DropoutOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let ([input], [output]) = self.desc.as_fixed();
            let x = handles.get_float_tensor::<B>(input);
            handles.register_float_tensor::<B>(&output.id, B::dropout_apply(x, self.mask));
        }
    }

    let client = x.client.clone();
    let streams = OperationStreams::with_inputs([&x]);
    let out = TensorIr::uninit(client.create_empty_handle(), x.shape.clone(), x.dtype);
    let desc = CustomOpIr::new("bertlab_hash_dropout", &[x.into_ir()], &[out]);
    client
        .register(
            streams,
            OperationIr::Custom(desc.clone()),
            DropoutOp::<B> { desc, mask, _backend: core::marker::PhantomData },
        )
        .output()
}

/// `B::layer_norm_forward` as a custom operation: inputs residual, (branch), γ, β; outputs
/// the normalised rows, (their copy,) and, when `keep`, x̂ and 1/σ.
#[allow(clippy::too_many_arguments)]
fn layer_norm_forward<B: FusionBackend + FusedKernels>(
    residual: FloatTensor<Fusion<B>>,
    branch: Option<FloatTensor<Fusion<B>>>,
    gamma: FloatTensor<Fusion<B>>,
    beta: FloatTensor<Fusion<B>>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
    copy: Option<FloatDType>,
    keep: bool,
) -> LayerNormOutput<Fusion<B>> {
    #[derive(Clone, Debug)]
    struct LayerNormForwardOp<B> {
        desc: CustomOpIr,
        epsilon: f64,
        dropout: Option<DropoutMask>,
        with_branch: bool,
        copy: Option<FloatDType>,
        keep: bool,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedKernels> Operation<B::FusionRuntime> for LayerNormForwardOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let mut inputs =
                self.desc.inputs.iter().map(|ir| handles.get_float_tensor::<B>(ir)).collect::<Vec<_>>();
            let beta = inputs.pop().expect("β");
            let gamma = inputs.pop().expect("γ");
            let branch = if self.with_branch { inputs.pop() } else { None };
            let residual = inputs.pop().expect("the residual");
            let normed = B::layer_norm_forward(
                residual,
                branch,
                gamma,
                beta,
                self.epsilon,
                self.dropout,
                self.copy,
                self.keep,
            );
            let mut outputs = self.desc.outputs.iter();
            let mut register = |t| {
                let ir = outputs.next().expect("an output for each tensor the kernel wrote");
                handles.register_float_tensor::<B>(&ir.id, t);
            };
            register(normed.output);
            normed.copy.into_iter().for_each(&mut register);
            if let Some(state) = normed.state {
                register(state.x_hat);
                register(state.inv_std);
            }
        }
    }

    let client = residual.client.clone();
    let (shape, dtype) = (residual.shape.clone(), residual.dtype);
    let rows = shape[0];
    let with_branch = branch.is_some();
    let mut operands = vec![residual];
    operands.extend(branch);
    operands.extend([gamma, beta]);
    let streams = OperationStreams::with_inputs(operands.iter());
    let mut outputs = vec![TensorIr::uninit(client.create_empty_handle(), shape.clone(), dtype)];
    if let Some(copy) = copy {
        outputs.push(TensorIr::uninit(client.create_empty_handle(), shape.clone(), copy.into()));
    }
    if keep {
        outputs.push(TensorIr::uninit(client.create_empty_handle(), shape, dtype));
        outputs.push(TensorIr::uninit(client.create_empty_handle(), [rows].into(), dtype));
    }
    let inputs: Vec<TensorIr> = operands.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new("bertlab_layer_norm_forward", &inputs, &outputs);
    let op = LayerNormForwardOp::<B> {
        desc: desc.clone(),
        epsilon,
        dropout,
        with_branch,
        copy,
        keep,
        _backend: core::marker::PhantomData,
    };
    let mut out = client.register(streams, OperationIr::Custom(desc), op).into_iter();
    let output = out.next().expect("the output");
    let copy = copy.map(|_| out.next().expect("the copy"));
    let state =
        keep.then(|| LayerNormState { x_hat: out.next().expect("x̂"), inv_std: out.next().expect("1/σ") });
    LayerNormOutput { output, copy, state }
}

/// `B::layer_norm_backward` as a custom operation: inputs the gradient, x̂, 1/σ, γ; outputs
/// the residual's, (the branch's,) γ's and β's gradients.
fn layer_norm_backward<B: FusionBackend + FusedKernels>(
    grad: FloatTensor<Fusion<B>>,
    state: LayerNormState<Fusion<B>>,
    gamma: FloatTensor<Fusion<B>>,
    dropout: Option<DropoutMask>,
    branch: Option<DType>,
) -> LayerNormGrads<Fusion<B>> {
    #[derive(Clone, Debug)]
    struct LayerNormBackwardOp<B> {
        desc: CustomOpIr,
        dropout: Option<DropoutMask>,
        branch: Option<DType>,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedKernels> Operation<B::FusionRuntime> for LayerNormBackwardOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let [grad, x_hat, inv_std, gamma]: &[TensorIr; 4] =
                self.desc.inputs.as_slice().try_into().expect("gradient, x̂, 1/σ, γ");
            let outputs = &self.desc.outputs;
            let state = LayerNormState {
                x_hat: handles.get_float_tensor::<B>(x_hat),
                inv_std: handles.get_float_tensor::<B>(inv_std),
            };
            let grad = handles.get_float_tensor::<B>(grad);
            let gamma = handles.get_float_tensor::<B>(gamma);
            let g = B::layer_norm_backward(grad, state, gamma, self.dropout, self.branch);
            handles.register_float_tensor::<B>(&outputs[0].id, g.residual);
            let mut next = 1;
            if let Some(branch) = g.branch {
                handles.register_float_tensor::<B>(&outputs[next].id, branch);
                next += 1;
            }
            handles.register_float_tensor::<B>(&outputs[next].id, g.gamma);
            handles.register_float_tensor::<B>(&outputs[next + 1].id, g.beta);
        }
    }

    let client = grad.client.clone();
    let (shape, dtype) = (grad.shape.clone(), grad.dtype);
    let width_shape = gamma.shape.clone();
    let operands = [grad, state.x_hat, state.inv_std, gamma];
    let streams = OperationStreams::with_inputs(operands.iter());
    let mut outputs = vec![TensorIr::uninit(client.create_empty_handle(), shape.clone(), dtype)];
    if let Some(branch_dtype) = branch {
        outputs.push(TensorIr::uninit(client.create_empty_handle(), shape, branch_dtype));
    }
    outputs.push(TensorIr::uninit(client.create_empty_handle(), width_shape.clone(), dtype));
    outputs.push(TensorIr::uninit(client.create_empty_handle(), width_shape, dtype));
    let inputs: Vec<TensorIr> = operands.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new("bertlab_layer_norm_backward", &inputs, &outputs);
    let op =
        LayerNormBackwardOp::<B> { desc: desc.clone(), dropout, branch, _backend: core::marker::PhantomData };
    let mut out = client.register(streams, OperationIr::Custom(desc), op).into_iter();
    let residual = out.next().expect("the residual's gradient");
    let branch = branch.and_then(|_| out.next());
    LayerNormGrads {
        residual,
        branch,
        gamma: out.next().expect("γ's gradient"),
        beta: out.next().expect("β's gradient"),
    }
}

/// `B::attention_forward` (its kernel: `B::attention_kernel_accepts` holds) as a custom
/// operation: inputs qkv and the padding mask; outputs the context and, when `keep`, the
/// row log-sum-exps.
fn attention_forward<B: FusionBackend + FusedKernels>(
    qkv: FloatTensor<Fusion<B>>,
    key_padding: BoolTensor<Fusion<B>>,
    heads: usize,
    dropout: Option<DropoutMask>,
    keep: bool,
) -> (FloatTensor<Fusion<B>>, Option<AttentionState<Fusion<B>>>) {
    #[derive(Clone, Debug)]
    struct AttentionForwardOp<B> {
        desc: CustomOpIr,
        heads: usize,
        dropout: Option<DropoutMask>,
        keep: bool,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedKernels> Operation<B::FusionRuntime> for AttentionForwardOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let [qkv, padding]: &[TensorIr; 2] =
                self.desc.inputs.as_slice().try_into().expect("qkv, padding");
            let qkv = handles.get_float_tensor::<B>(qkv);
            let padding = handles.get_bool_tensor::<B>(padding);
            let (context, state) = B::attention_forward(qkv, padding, self.heads, self.dropout, self.keep);
            let outputs = &self.desc.outputs;
            handles.register_float_tensor::<B>(&outputs[0].id, context);
            if let Some(state) = state {
                let AttentionState::RowStats { log_sum_exp, .. } = state else {
                    panic!("attention_kernel_accepts promised the kernel's row statistics")
                };
                handles.register_float_tensor::<B>(&outputs[1].id, log_sum_exp);
            }
        }
    }

    let client = qkv.client.clone();
    let [batch, seq, width] = qkv.shape.dims();
    let dtype = qkv.dtype;
    let mut outputs =
        vec![TensorIr::uninit(client.create_empty_handle(), [batch, seq, width / 3].into(), dtype)];
    if keep {
        outputs.push(TensorIr::uninit(client.create_empty_handle(), [batch, heads, seq].into(), DType::F32));
    }
    let streams = OperationStreams::with_inputs([&qkv, &key_padding]);
    let inputs = [qkv.into_ir(), key_padding.into_ir()];
    let desc = CustomOpIr::new("bertlab_attention_forward", &inputs, &outputs);
    let op = AttentionForwardOp::<B> {
        desc: desc.clone(),
        heads,
        dropout,
        keep,
        _backend: core::marker::PhantomData,
    };
    let mut out = client.register(streams, OperationIr::Custom(desc), op).into_iter();
    let context = out.next().expect("the context");
    let state = keep.then(|| AttentionState::RowStats {
        context: context.clone(),
        log_sum_exp: out.next().expect("the log-sum-exps"),
    });
    (context, state)
}

/// `B::attention_backward` from the kernel's row statistics as a custom operation: inputs
/// the gradient, qkv, the context, the log-sum-exps and the padding mask; output qkv's
/// gradient.
#[allow(clippy::too_many_arguments)]
fn attention_backward<B: FusionBackend + FusedKernels>(
    grad: FloatTensor<Fusion<B>>,
    qkv: FloatTensor<Fusion<B>>,
    context: FloatTensor<Fusion<B>>,
    log_sum_exp: FloatTensor<Fusion<B>>,
    key_padding: BoolTensor<Fusion<B>>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> FloatTensor<Fusion<B>> {
    #[derive(Clone, Debug)]
    struct AttentionBackwardOp<B> {
        desc: CustomOpIr,
        heads: usize,
        dropout: Option<DropoutMask>,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedKernels> Operation<B::FusionRuntime> for AttentionBackwardOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let [grad, qkv, context, log_sum_exp, padding]: &[TensorIr; 5] = self
                .desc
                .inputs
                .as_slice()
                .try_into()
                .expect("gradient, qkv, context, log-sum-exps, padding");
            let state = AttentionState::RowStats {
                context: handles.get_float_tensor::<B>(context),
                log_sum_exp: handles.get_float_tensor::<B>(log_sum_exp),
            };
            let d_qkv = B::attention_backward(
                handles.get_float_tensor::<B>(grad),
                handles.get_float_tensor::<B>(qkv),
                state,
                handles.get_bool_tensor::<B>(padding),
                self.heads,
                self.dropout,
            );
            handles.register_float_tensor::<B>(&self.desc.outputs[0].id, d_qkv);
        }
    }

    let client = qkv.client.clone();
    let output = TensorIr::uninit(client.create_empty_handle(), qkv.shape.clone(), qkv.dtype);
    let streams = OperationStreams::with_inputs([&grad, &qkv, &context, &log_sum_exp, &key_padding]);
    let inputs =
        [grad.into_ir(), qkv.into_ir(), context.into_ir(), log_sum_exp.into_ir(), key_padding.into_ir()];
    let desc = CustomOpIr::new("bertlab_attention_backward", &inputs, &[output]);
    let op =
        AttentionBackwardOp::<B> { desc: desc.clone(), heads, dropout, _backend: core::marker::PhantomData };
    client.register(streams, OperationIr::Custom(desc), op).output()
}

/// The low-precision copies of the f32 master parameters that the AdamW kernel wrote in its
/// pass, by the id of the master they copy: what a product's [`FusedKernels::param_copy`] reads
/// instead of casting the master (one cast launch a parameter and a forward). Fusion tensor ids
/// are unique in the process and never reused, so a copy is found only for the very tensor it
/// copies; each update replaces its parameter's entry, so at most one copy a parameter lives.
type Copies = Mutex<HashMap<u64, Box<dyn Any + Send + Sync>>>;

fn copies() -> &'static Copies {
    static COPIES: OnceLock<Copies> = OnceLock::new();
    COPIES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The copy of `master` in `dtype`, if the last update wrote one.
fn copy_of<B: FusionBackend>(
    master: &FloatTensor<Fusion<B>>,
    dtype: FloatDType,
) -> Option<FloatTensor<Fusion<B>>> {
    let copies = copies().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let copy = copies.get(&master.id.value())?.downcast_ref::<FloatTensor<Fusion<B>>>()?;
    (copy.dtype == DType::from(dtype) && copy.shape == master.shape).then(|| copy.clone())
}

/// `param` in `dtype`: the update's copy where there is one, else a cast.
fn param_copy<B: FusionBackend>(param: FloatTensor<Fusion<B>>, dtype: FloatDType) -> FloatTensor<Fusion<B>> {
    match copy_of::<B>(&param, dtype) {
        Some(copy) => copy,
        None => <Fusion<B> as FloatTensorOps<Fusion<B>>>::float_cast(param, dtype),
    }
}

/// `B::fused_adam_many` as one custom operation: inputs each operand's parameter, gradient
/// (and both moments), then the packed factors; outputs each operand's parameter and both
/// moments, and its copy in the gradient's dtype where that differs from the parameter's (a
/// gradient `ops::param_cast` handed on): the copy is kept for the next forward's
/// [`param_copy`] in place of the old parameter's.
fn adam_update_many<B: FusionBackend + FusedOps>(
    operands: Vec<AdamOperand<Fusion<B>>>,
    factors: FloatTensor<Fusion<B>>,
    epsilon: f64,
) -> Vec<AdamUpdated<Fusion<B>>> {
    /// Each operand's (has moments, decays, the copy's dtype).
    type Layout = Vec<(bool, bool, Option<FloatDType>)>;
    #[derive(Clone, Debug)]
    struct AdamOp<B> {
        desc: CustomOpIr,
        layout: Layout,
        epsilon: f64,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedOps> Operation<B::FusionRuntime> for AdamOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let mut inputs = self.desc.inputs.iter().map(|ir| handles.get_float_tensor::<B>(ir));
            let operands = self
                .layout
                .iter()
                .map(|&(moments, decays, copy)| {
                    let mut next = || inputs.next().expect("an operand of the update");
                    let (value, grad) = (next(), next());
                    let moments = moments.then(|| (next(), next()));
                    AdamOperand { value, grad, moments, decays, copy }
                })
                .collect::<Vec<_>>();
            let factors = inputs.next().expect("the factors");
            let updated = B::fused_adam_many(operands, factors, self.epsilon);
            let mut outputs = self.desc.outputs.iter();
            for (u, &(_, _, copy)) in updated.into_iter().zip(&self.layout) {
                let mut next = || outputs.next().expect("an output of the update");
                handles.register_float_tensor::<B>(&next().id, u.value.clone());
                handles.register_float_tensor::<B>(&next().id, u.first);
                handles.register_float_tensor::<B>(&next().id, u.second);
                if let Some(dtype) = copy {
                    // A backend without a copying kernel: the cast it would have saved.
                    let copy = u.copy.unwrap_or_else(|| B::float_cast(u.value, dtype));
                    handles.register_float_tensor::<B>(&next().id, copy);
                }
            }
        }
    }

    let Some(first) = operands.first() else { return Vec::new() };
    let client = first.value.client.clone();
    let layout: Layout = operands
        .iter()
        .map(|o| {
            let copy = (o.grad.dtype != o.value.dtype).then(|| FloatDType::from(o.grad.dtype));
            (o.moments.is_some(), o.decays, copy)
        })
        .collect();
    let masters: Vec<u64> = operands.iter().map(|o| o.value.id.value()).collect();
    let mut outputs: Vec<TensorIr> = Vec::new();
    let mut inputs = Vec::new();
    for (o, &(_, _, copy)) in operands.into_iter().zip(&layout) {
        let (shape, dtype) = (o.value.shape.clone(), o.value.dtype);
        outputs.extend((0..3).map(|_| TensorIr::uninit(client.create_empty_handle(), shape.clone(), dtype)));
        if let Some(copy) = copy {
            outputs.push(TensorIr::uninit(client.create_empty_handle(), shape.clone(), copy.into()));
        }
        inputs.extend([o.value, o.grad]);
        inputs.extend(o.moments.into_iter().flat_map(|(m, v)| [m, v]));
    }
    inputs.push(factors);
    let streams = OperationStreams::with_inputs(inputs.iter());
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new("bertlab_adam", &inputs, &outputs);
    let op = AdamOp::<B> {
        desc: desc.clone(),
        layout: layout.clone(),
        epsilon,
        _backend: core::marker::PhantomData,
    };
    let mut out = client.register(streams, OperationIr::Custom(desc), op).into_iter();
    let mut copies = copies().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut updated = Vec::with_capacity(layout.len());
    for (&(_, _, copy), master) in layout.iter().zip(masters) {
        let mut next = || out.next().expect("an output of the update");
        let (value, first, second) = (next(), next(), next());
        let copy = copy.map(|_| next());
        copies.remove(&master);
        if let Some(copy) = &copy {
            copies.insert(value.id.value(), Box::new(copy.clone()));
        }
        updated.push(AdamUpdated { value, first, second, copy });
    }
    updated
}

/// `B::fused_finite_flag` as a custom operation.
fn finite_flag<B: FusionBackend + FusedOps>(x: FloatTensor<Fusion<B>>) -> FloatTensor<Fusion<B>> {
    #[derive(Clone, Debug)]
    struct FiniteFlagOp<B> {
        desc: CustomOpIr,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedOps> Operation<B::FusionRuntime> for FiniteFlagOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let ([input], [output]) = self.desc.as_fixed();
            let x = handles.get_float_tensor::<B>(input);
            handles.register_float_tensor::<B>(&output.id, B::fused_finite_flag(x));
        }
    }

    let client = x.client.clone();
    let streams = OperationStreams::with_inputs([&x]);
    let out = TensorIr::uninit(client.create_empty_handle(), x.shape.clone(), x.dtype);
    let desc = CustomOpIr::new("bertlab_finite_flag", &[x.into_ir()], &[out]);
    client
        .register(
            streams,
            OperationIr::Custom(desc.clone()),
            FiniteFlagOp::<B> { desc, _backend: core::marker::PhantomData },
        )
        .output()
}

/// `B::fused_sum_squares_many` as one custom operation: inputs the tensors, output the `[1]`
/// f32 sum.
fn sum_squares_many<B: FusionBackend + FusedOps>(
    tensors: Vec<FloatTensor<Fusion<B>>>,
) -> Option<FloatTensor<Fusion<B>>> {
    #[derive(Clone, Debug)]
    struct SumSquaresOp<B> {
        desc: CustomOpIr,
        _backend: core::marker::PhantomData<B>,
    }

    impl<B: FusionBackend + FusedOps> Operation<B::FusionRuntime> for SumSquaresOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let tensors = self.desc.inputs.iter().map(|ir| handles.get_float_tensor::<B>(ir)).collect();
            let sum = B::fused_sum_squares_many(tensors).expect("a sum of at least one tensor");
            handles.register_float_tensor::<B>(&self.desc.outputs[0].id, sum);
        }
    }

    let client = tensors.first()?.client.clone();
    let output = TensorIr::uninit(client.create_empty_handle(), [1].into(), DType::F32);
    let streams = OperationStreams::with_inputs(tensors.iter());
    let inputs: Vec<TensorIr> = tensors.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new("bertlab_sum_squares", &inputs, &[output]);
    let op = SumSquaresOp::<B> { desc: desc.clone(), _backend: core::marker::PhantomData };
    Some(client.register(streams, OperationIr::Custom(desc), op).output())
}

impl<B: FusionBackend + FusedKernels> FusedKernels for Fusion<B> {
    fn param_copy(param: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        param_copy::<B>(param, dtype)
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
        layer_norm_forward::<B>(residual, branch, gamma, beta, epsilon, dropout, copy, keep)
    }

    fn layer_norm_backward(
        grad: FloatTensor<Self>,
        state: LayerNormState<Self>,
        gamma: FloatTensor<Self>,
        dropout: Option<DropoutMask>,
        branch: Option<DType>,
    ) -> LayerNormGrads<Self> {
        layer_norm_backward::<B>(grad, state, gamma, dropout, branch)
    }

    fn layer_norm_kernel_accepts(residual: DType, branch: DType) -> bool {
        B::layer_norm_kernel_accepts(residual, branch)
    }

    fn dropout_kernel_accepts(dtype: DType) -> bool {
        is_float(dtype)
    }

    fn dropout_apply(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        dropout_apply::<B>(x, mask)
    }

    fn attention_kernel_accepts(dtype: DType, head_dim: usize) -> bool {
        B::attention_kernel_accepts(dtype, head_dim)
    }

    fn attention_forward(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
        keep: bool,
    ) -> (FloatTensor<Self>, Option<AttentionState<Self>>) {
        let head_dim = qkv.shape[2] / 3 / heads.max(1);
        match B::attention_kernel_accepts(qkv.dtype, head_dim) {
            true => attention_forward::<B>(qkv, key_padding, heads, dropout, keep),
            false => super::decomposed::attention_forward::<Self>(qkv, key_padding, heads, dropout, keep),
        }
    }

    fn attention_backward(
        grad: FloatTensor<Self>,
        qkv: FloatTensor<Self>,
        state: AttentionState<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        match state {
            AttentionState::RowStats { context, log_sum_exp } => {
                attention_backward::<B>(grad, qkv, context, log_sum_exp, key_padding, heads, dropout)
            }
            probs => {
                super::decomposed::attention_backward::<Self>(grad, qkv, probs, key_padding, heads, dropout)
            }
        }
    }
}

/// Inference under fusion (f32, f16, bf16): the attention, LayerNorm and dropout kernels, the
/// decomposition for the rest.
impl<B: FusionBackend + FusedKernels + FusedOps> FusedOps for Fusion<B> {
    fn fused_param_cast(param: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        param_copy::<B>(param, dtype)
    }

    fn accepts(dtype: DType) -> bool {
        is_float(dtype)
    }

    fn fused_attention(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> FloatTensor<Self> {
        inference_attention::<Self>(qkv, key_padding, heads, dropout)
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
        inference_layer_norm::<Self>(residual, branch, gamma, beta, epsilon, dropout, copy)
    }

    fn adam_is_multi_tensor() -> bool {
        B::adam_is_multi_tensor()
    }

    fn fused_adam_many(
        operands: Vec<AdamOperand<Self>>,
        factors: FloatTensor<Self>,
        epsilon: f64,
    ) -> Vec<AdamUpdated<Self>> {
        adam_update_many::<B>(operands, factors, epsilon)
    }

    fn fused_sum_squares_many(tensors: Vec<FloatTensor<Self>>) -> Option<FloatTensor<Self>> {
        sum_squares_many::<B>(tensors)
    }

    fn fused_finite_flag(x: FloatTensor<Self>) -> FloatTensor<Self> {
        finite_flag::<B>(x)
    }

    fn fused_dropout(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        dropout_apply::<B>(x, mask)
    }
}
