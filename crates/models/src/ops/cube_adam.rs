//! AdamW on a CubeCL backend: many parameter tensors in one kernel launch.
//!
//! A BERT has ~100 to ~200 parameter tensors; one launch a tensor made the optimizer the largest
//! group of a step's launches (80 of 669 for a DistilBERT f16 step on lavapipe, issue 24). Here
//! the operands are grouped by what the kernel is compiled for (dtype, moments or not, weight
//! decay or not) and each group is updated in as few launches as the device's bindings allow:
//! the kernel takes the group's tensors as CubeCL sequences, and each cube finds its tensor from
//! the group's cube offsets (a tensor of `n` elements owns `⌈n / units⌉` consecutive cubes), so
//! a small bias does not pay for the threads of an embedding matrix beside it.

use burn::tensor::TensorMetadata;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::{CubeDim, SequenceArg};

use self::kernels::adam_many_kernel;
use super::adam::{AdamOperand, AdamUpdated, ADAM_FACTORS};
use super::cube_shared::{contiguous_float, empty_on};

/// At most this many parameter tensors a launch: the kernel's body is unrolled once a tensor,
/// so a longer group compiles a longer kernel for no fewer launches worth having.
const MAX_TENSORS_PER_LAUNCH: usize = 32;

/// Bindings a parameter tensor takes: the parameter, its gradient and the three outputs, plus
/// both moments when it has them, plus the low-precision copy when one is written.
fn bindings_per_tensor(moments: bool, copies: bool) -> usize {
    5 + 2 * usize::from(moments) + usize::from(copies)
}

/// How many of a group's `members` tensors one launch updates ([`tensors_per_launch`]; one
/// binding goes to the factors).
fn chunk_len(members: usize, moments: bool, copies: bool, max_bindings: usize) -> usize {
    tensors_per_launch(members, bindings_per_tensor(moments, copies), 1, max_bindings)
}

/// How many of `members` tensors one launch of a multi-tensor kernel takes, each tensor taking
/// `per_tensor` bindings and the launch `shared` more: as many as the device's bindings allow,
/// at least one, at most [`MAX_TENSORS_PER_LAUNCH`], in near-equal chunks (at most two lengths,
/// so at most two compilations a group).
pub(crate) fn tensors_per_launch(
    members: usize,
    per_tensor: usize,
    shared: usize,
    max_bindings: usize,
) -> usize {
    let per_launch =
        (max_bindings.saturating_sub(shared) / per_tensor.max(1)).clamp(1, MAX_TENSORS_PER_LAUNCH);
    let launches = members.div_ceil(per_launch).max(1);
    members.div_ceil(launches).max(1)
}

mod kernels {
    use cubecl::prelude::*;

    /// Element `i` of one tensor's update, as `ops::adam::adam_update` (the same operations
    /// in the same order, in f32; the gradient, in the parameter's dtype or a product's, read
    /// as f32): `factors` packed as `ops::adam::ADAM_FACTORS` says; without
    /// `moments` (a parameter's first update) both are 0.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn update<F: Float, G: Float>(
        value: &Tensor<F>,
        grad: &Tensor<G>,
        first: &Tensor<F>,
        second: &Tensor<F>,
        factors: &Tensor<F>,
        new_value: &mut Tensor<F>,
        new_first: &mut Tensor<F>,
        new_second: &mut Tensor<F>,
        i: usize,
        epsilon: f32,
        #[comptime] moments: bool,
        #[comptime] decays: bool,
    ) -> F {
        let skip = f32::cast_from(factors[7]) > 0.5f32;
        let g = select(skip, 0.0f32, f32::cast_from(grad[i]));
        let mut m = g * f32::cast_from(factors[1]);
        let g2 = g * g * f32::cast_from(factors[3]);
        let mut v = g2;
        if moments {
            m = f32::cast_from(first[i]) * f32::cast_from(factors[0]) + g * f32::cast_from(factors[1]);
            v = f32::cast_from(second[i]) * f32::cast_from(factors[2]) + g2;
        }
        let denom = f32::sqrt(v) * f32::cast_from(factors[4]) + epsilon;
        let step = m / denom * f32::cast_from(factors[5]);
        let mut p = f32::cast_from(value[i]);
        if decays {
            p *= f32::cast_from(factors[6]);
        }
        let stored = F::cast_from(p - step);
        new_value[i] = stored;
        new_first[i] = F::cast_from(m);
        new_second[i] = F::cast_from(v);
        stored
    }

    /// One AdamW update a thread for every tensor of the sequences: tensor `k` owns the cubes
    /// `[cube_starts[k], cube_starts[k + 1])`; cubes past the last own nothing. Without
    /// `moments` the moment sequences are empty; with `copies` each new parameter is also
    /// written in the gradients' dtype, else that sequence is empty.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn adam_many_kernel<F: Float, G: Float>(
        values: Sequence<Tensor<F>>,
        grads: Sequence<Tensor<G>>,
        firsts: Sequence<Tensor<F>>,
        seconds: Sequence<Tensor<F>>,
        factors: &Tensor<F>,
        new_values: &mut Sequence<Tensor<F>>,
        new_firsts: &mut Sequence<Tensor<F>>,
        new_seconds: &mut Sequence<Tensor<F>>,
        copies: &mut Sequence<Tensor<G>>,
        cube_starts: Sequence<usize>,
        epsilon: f32,
        #[comptime] moments: bool,
        #[comptime] decays: bool,
        #[comptime] with_copies: bool,
        #[define(F, G)] _dtypes: [StorageType; 2],
    ) {
        let count = comptime!(values.len());
        let cube = CUBE_POS;
        #[unroll]
        for k in 0..count {
            let start = cube_starts[k];
            if cube >= start && cube < cube_starts[k + 1] {
                let i = (cube - start) * CUBE_DIM as usize + UNIT_POS as usize;
                let out = new_values.index_mut(k);
                if i < out.len() {
                    // Without moments, the parameter's own tensor stands in for the moments
                    // it does not read.
                    let (first, second) = if moments {
                        (firsts.index(k), seconds.index(k))
                    } else {
                        (values.index(k), values.index(k))
                    };
                    let stored = update::<F, G>(
                        values.index(k),
                        grads.index(k),
                        first,
                        second,
                        factors,
                        out,
                        new_firsts.index_mut(k),
                        new_seconds.index_mut(k),
                        i,
                        epsilon,
                        moments,
                        decays,
                    );
                    if with_copies {
                        // The stored parameter rounded as a cast kernel rounds it.
                        let copy = copies.index_mut(k);
                        copy[i] = G::cast_from(stored);
                    }
                }
            }
        }
    }
}

/// AdamW updates of `operands` (`ops::adam::adam_update_many`), in as few launches as the
/// device's bindings allow.
pub(crate) fn adam_update_many<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    operands: Vec<AdamOperand<CubeBackend<R, F, I, BT>>>,
    factors: CubeTensor<R>,
    epsilon: f64,
) -> Vec<AdamUpdated<CubeBackend<R, F, I, BT>>> {
    let factors = contiguous_float(factors, "adam");
    assert_eq!(factors.meta.num_elements(), ADAM_FACTORS, "adam: the packed factors");
    let operands: Vec<AdamOperand<CubeBackend<R, F, I, BT>>> = operands
        .into_iter()
        .map(|AdamOperand { value, grad, moments, decays, copy }| {
            let value = contiguous_float(value, "adam");
            let shaped = |t: CubeTensor<R>| {
                let t = contiguous_float(t, "adam");
                assert_eq!(t.shape(), value.shape(), "adam: every operand in the parameter's shape");
                t
            };
            let same = |t: CubeTensor<R>| {
                let t = shaped(t);
                assert_eq!(t.dtype, value.dtype, "adam: the moments in the parameter's dtype");
                t
            };
            // The gradient may be in a product's dtype (`ops::param_cast`): read as f32.
            let grad = shaped(grad);
            let moments = moments.map(|(m, v)| (same(m), same(v)));
            if let Some(dtype) = copy {
                let dtype = burn::tensor::DType::from(dtype);
                assert_eq!(dtype, grad.dtype, "adam: the copy is written in the gradient's dtype");
            }
            AdamOperand { value, grad, moments, decays, copy }
        })
        .collect();
    for AdamOperand { value, .. } in &operands {
        assert_eq!(value.dtype, factors.dtype, "adam: the factors in the parameters' dtype");
    }
    let outputs: Vec<AdamUpdated<CubeBackend<R, F, I, BT>>> = operands
        .iter()
        .map(|AdamOperand { value, copy, .. }| AdamUpdated {
            value: empty_on(value, value.shape(), value.dtype),
            first: empty_on(value, value.shape(), value.dtype),
            second: empty_on(value, value.shape(), value.dtype),
            copy: copy.map(|dtype| empty_on(value, value.shape(), dtype.into())),
        })
        .collect();

    // Groups of operands one kernel compilation serves, in the order they first appear.
    type Key = (burn::tensor::DType, burn::tensor::DType, bool, bool, bool);
    let mut groups: Vec<(Key, Vec<usize>)> = Vec::new();
    for (index, operand) in operands.iter().enumerate() {
        let AdamOperand { value, grad, moments, decays, copy } = operand;
        if value.meta.num_elements() == 0 {
            continue;
        }
        let key = (value.dtype, grad.dtype, moments.is_some(), *decays, copy.is_some());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(index),
            None => groups.push((key, vec![index])),
        }
    }
    for ((dtype, grad_dtype, moments, decays, with_copies), members) in groups {
        let client = factors.client.clone();
        let max_bindings = client.properties().hardware.max_bindings as usize;
        for chunk in members.chunks(chunk_len(members.len(), moments, with_copies, max_bindings)) {
            let largest = chunk.iter().map(|&i| operands[i].value.meta.num_elements()).max().unwrap_or(0);
            let cube_dim = CubeDim::new(&client, largest);
            let units = cube_dim.num_elems() as usize;
            let mut values = SequenceArg::new();
            let mut grads = SequenceArg::new();
            let mut firsts = SequenceArg::new();
            let mut seconds = SequenceArg::new();
            let mut new_values = SequenceArg::new();
            let mut new_firsts = SequenceArg::new();
            let mut new_seconds = SequenceArg::new();
            let mut copies = SequenceArg::new();
            let mut cube_starts = SequenceArg::<R, usize>::new();
            let mut cubes = 0usize;
            for &i in chunk {
                let AdamOperand { value, grad, moments, .. } = &operands[i];
                let AdamUpdated { value: p, first: m, second: v, copy } = &outputs[i];
                cube_starts.push(cubes);
                cubes += value.meta.num_elements().div_ceil(units);
                values.push(value.clone().into_tensor_arg());
                grads.push(grad.clone().into_tensor_arg());
                if let Some((first, second)) = moments {
                    firsts.push(first.clone().into_tensor_arg());
                    seconds.push(second.clone().into_tensor_arg());
                }
                new_values.push(p.clone().into_tensor_arg());
                new_firsts.push(m.clone().into_tensor_arg());
                new_seconds.push(v.clone().into_tensor_arg());
                if let Some(copy) = copy {
                    copies.push(copy.clone().into_tensor_arg());
                }
            }
            cube_starts.push(cubes);
            let cube_count = calculate_cube_count_elemwise(&client, cubes * units, cube_dim);
            adam_many_kernel::launch::<R>(
                &client,
                cube_count,
                cube_dim,
                values,
                grads,
                firsts,
                seconds,
                factors.clone().into_tensor_arg(),
                new_values,
                new_firsts,
                new_seconds,
                copies,
                cube_starts,
                epsilon as f32,
                moments,
                decays,
                with_copies,
                [dtype.into(), grad_dtype.into()],
            );
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::chunk_len;

    #[test]
    fn launches_follow_the_devices_bindings() {
        // Lavapipe offers 31 bindings: 4 tensors with moments a launch, 6 without.
        assert_eq!(chunk_len(52, true, false, 31), 4);
        assert_eq!(chunk_len(52, false, false, 31), 6);
        // With the f16 copy, 8 bindings a tensor: 3 a launch.
        assert_eq!(chunk_len(28, true, true, 31), 3);
        // CUDA offers 1 024: capped at 32 a launch, so DistilBERT's 52 tensors without weight
        // decay take two launches of 26 and its 28 with decay one.
        assert_eq!(chunk_len(52, true, true, 1024), 26);
        assert_eq!(chunk_len(28, true, true, 1024), 28);
        // A device with too few bindings for one tensor still gets one a launch.
        assert_eq!(chunk_len(3, true, false, 2), 1);
        assert_eq!(chunk_len(1, true, false, 1024), 1);
    }
}
