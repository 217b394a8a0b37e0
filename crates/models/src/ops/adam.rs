//! AdamW updates of parameter tensors with the step's factors decided on the device
//! (bertlab-train's `DeviceFactors`, packed): the optimizer's hot loop as an op of the seam, so
//! a backend can update many tensors in one kernel launch (the CubeCL backends do) instead of a
//! mask, a product by each `[1]` factor and a fused chain a tensor.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, Tensor, TensorMetadata, TensorPrimitive};

/// The factors, packed in a `[ADAM_FACTORS]` f32 tensor in this order: `β₁'`, `g₁'`, `β₂'`,
/// `g₂'`, the √v scale, the step size, the decay, and the skip flag (1 on a skipped step, else
/// 0). The update is `g ← skip ? 0 : g`, `m ← β₁'·m + g₁'·g`, `v ← β₂'·v + g₂'·g²`,
/// `p ← decay·p − step·m/(√v·scale + ε)` (decay only where weight decay applies).
pub const ADAM_FACTORS: usize = 8;

/// Index of the skip flag in the packed factors.
pub const ADAM_SKIP: usize = 7;

/// One parameter tensor's operands of an update (any rank; every operand has the parameter's
/// shape, and all but the gradient its dtype).
#[derive(Debug, Clone)]
pub struct AdamOperand<B: Backend> {
    /// The parameter (the f32 master weights).
    pub value: FloatTensor<B>,
    /// Its gradient: the parameter's shape, its dtype or a product's (`ops::param_cast`),
    /// widened to f32 in the update.
    pub grad: FloatTensor<B>,
    /// The first and second moments, or `None` before the parameter's first update (0).
    pub moments: Option<(FloatTensor<B>, FloatTensor<B>)>,
    /// Whether weight decay applies to it.
    pub decays: bool,
    /// Also write the new parameter in this dtype, in the same pass, where the backend can
    /// ([`AdamUpdated::copy`]): the low-precision copy the next forward's products read.
    pub copy: Option<FloatDType>,
}

/// A parameter tensor after an update.
#[derive(Debug, Clone)]
pub struct AdamUpdated<B: Backend> {
    /// The parameter.
    pub value: FloatTensor<B>,
    /// The first moment.
    pub first: FloatTensor<B>,
    /// The second moment.
    pub second: FloatTensor<B>,
    /// The parameter in [`AdamOperand::copy`]'s dtype, where the backend wrote it (the CubeCL
    /// kernel does; the reference does not, and nothing needs it there).
    pub copy: Option<FloatTensor<B>>,
}

/// [`adam_update`] of every operand, in order: the definition a backend's multi-tensor kernel
/// is checked against.
pub fn adam_update_many<B: Backend>(
    operands: Vec<AdamOperand<B>>,
    factors: FloatTensor<B>,
    epsilon: f64,
) -> Vec<AdamUpdated<B>> {
    operands
        .into_iter()
        .map(|o| {
            let (first, second) = o.moments.unzip();
            let (value, first, second) =
                adam_update::<B>(o.value, o.grad, first, second, factors.clone(), o.decays, epsilon);
            AdamUpdated { value, first, second, copy: None }
        })
        .collect()
}

/// `(p, m, v)` after one update, in Burn tensor ops on the flattened tensors: the definition the
/// kernels are checked against. A missing moment is 0 (a parameter's first update).
pub fn adam_update<B: Backend>(
    value: FloatTensor<B>,
    grad: FloatTensor<B>,
    first: Option<FloatTensor<B>>,
    second: Option<FloatTensor<B>>,
    factors: FloatTensor<B>,
    decays: bool,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = value.shape();
    let n = shape.num_elements();
    let flat = |t: FloatTensor<B>| {
        Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::float_reshape(t, [n].into())))
    };
    let back = |t: Tensor<B, 1>| B::float_reshape(t.into_primitive().tensor(), shape.clone());
    // A gradient in a product's dtype (`ops::param_cast`) widened to the parameter's first.
    let grad = match (grad.dtype(), value.dtype()) {
        (g, p) if g == p => grad,
        (_, p) => B::float_cast(grad, p.into()),
    };
    let factors = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(factors));
    let f = |i: usize| factors.clone().narrow(0, i, 1); // [1], broadcast against [n]
    let skip = f(ADAM_SKIP).greater_elem(0.5).expand([n]);
    let grad = flat(grad).mask_fill(skip, 0.0);
    let m = match first.map(flat) {
        Some(m) => m.mul(f(0)).add(grad.clone().mul(f(1))),
        None => grad.clone().mul(f(1)),
    };
    let g2 = grad.square().mul(f(3));
    let v = match second.map(flat) {
        Some(v) => v.mul(f(2)).add(g2),
        None => g2,
    };
    let denom = v.clone().sqrt().mul(f(4)).add_scalar(epsilon);
    let update = m.clone().div(denom).mul(f(5));
    let mut value = flat(value);
    if decays {
        value = value.mul(f(6));
    }
    (back(value.sub(update)), back(m), back(v))
}
