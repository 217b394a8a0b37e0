//! The sum of squares of many tensors (a step's global gradient norm, `Σ‖g‖²` over every
//! parameter's gradient) as an op of the seam, so a backend can read them all in a few kernel
//! launches (the CubeCL backends do) instead of a square, a sum and an add a shape; and its
//! finiteness as a number (the step's overflow check).

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, Tensor, TensorMetadata, TensorPrimitive};

/// `Σ x²` over every element of every tensor (any ranks and float dtypes), squared in f32 (a
/// loss-scaled f16 gradient's square can overflow f16), as a `[1]` f32 tensor; NaN or ∞ when
/// any element is (a step's overflow check reads it). `None` for no tensors.
///
/// Burn tensor ops: the tensors of one shape are squared and added in one element-wise chain
/// (fused under `Fusion`), then summed; the shapes' sums added.
pub fn sum_squares_many<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Option<FloatTensor<B>> {
    let mut groups: Vec<(Vec<usize>, Vec<FloatTensor<B>>)> = Vec::new();
    for t in tensors {
        let shape: Vec<usize> = t.shape().iter().copied().collect();
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, members)) => members.push(t),
            None => groups.push((shape, vec![t])),
        }
    }
    let square = |t: FloatTensor<B>| {
        let t = match t.dtype() {
            DType::F32 => t,
            _ => B::float_cast(t, FloatDType::F32),
        };
        B::float_mul(t.clone(), t)
    };
    groups
        .into_iter()
        .map(|(_, members)| {
            let mut members = members.into_iter();
            let first = square(members.next().expect("a group has a member"));
            B::float_sum(members.fold(first, |acc, t| B::float_add(acc, square(t))))
        })
        .reduce(B::float_add)
}

/// 1 where `x` is finite, 0 where it is NaN or ±∞, element-wise in `x`'s dtype (any rank): an
/// overflow check as a number, so what a step decides from it stays in float ops, which fuse
/// (Burn's `is_finite` and the bool ops after it are a launch each).
pub fn finite_flag<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let dtype = FloatDType::from(x.dtype());
    let shape = x.shape();
    let n = shape.num_elements();
    let flat = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(B::float_reshape(x, [n].into())));
    let flags = flat.is_finite().float().cast(dtype).into_primitive().tensor();
    B::float_reshape(flags, shape)
}
