//! The sum of squares of many tensors on a CubeCL backend (a step's global gradient norm): a
//! few launches for all of a model's gradients, where Burn's ops took a square, a sum and an
//! add a distinct shape (about 30 launches a DistilBERT step, issue 24).
//!
//! As the multi-tensor AdamW kernel ([`super::cube_adam`]), the tensors of one dtype go to a
//! kernel as CubeCL sequences, as many a launch as the device's bindings allow; each cube finds
//! its tensor from the group's cube offsets, sums the squares of its slice in f32 (a tree in
//! shared memory) and writes one partial sum. One reduction adds the partial sums of every
//! launch.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::{CubeDim, SequenceArg};

use self::kernels::{finite_flag_kernel, sum_squares_many_kernel};
use super::cube_adam::tensors_per_launch;
use super::cube_shared::{contiguous_float, empty_on};

/// Units a cube.
const UNITS: usize = 256;
/// Elements a unit reads (so a cube covers `UNITS × ELEMENTS_PER_UNIT` of its tensor).
const ELEMENTS_PER_UNIT: usize = 8;

mod kernels {
    use cubecl::prelude::*;

    use crate::ops::cube_shared::kernels::cube_sum;

    /// Tensor `k` owns the cubes `[cube_starts[k], cube_starts[k + 1])`; each cube writes the
    /// sum of the squares of its slice (`units × per_unit` elements, read `units` apart) to
    /// `partials[first_partial + cube]`. Cubes past the last own nothing and write nothing.
    #[cube(launch)]
    pub(super) fn sum_squares_many_kernel<F: Float>(
        tensors: Sequence<Tensor<F>>,
        partials: &mut Tensor<f32>,
        cube_starts: Sequence<usize>,
        first_partial: usize,
        #[comptime] units: usize,
        #[comptime] per_unit: usize,
        #[define(F)] _dtype: StorageType,
    ) {
        let count = comptime!(tensors.len());
        let cube = CUBE_POS;
        let unit = UNIT_POS as usize;
        let mut sum = 0.0f32;
        #[unroll]
        for k in 0..count {
            let start = cube_starts[k];
            if cube >= start && cube < cube_starts[k + 1] {
                let t = tensors.index(k);
                let base = (cube - start) * units * per_unit;
                #[unroll]
                for e in 0..per_unit {
                    let i = base + e * units + unit;
                    if i < t.len() {
                        let x = f32::cast_from(t[i]);
                        sum += x * x;
                    }
                }
            }
        }
        let mut shared = SharedMemory::<f32>::new(units);
        let total = cube_sum(sum, &mut shared);
        if unit == 0 && cube < cube_starts[count] {
            partials[first_partial + cube] = total;
        }
    }

    /// `output[i] = 1` where `input[i]` is finite, else 0.
    #[cube(launch)]
    pub(super) fn finite_flag_kernel<F: Float>(
        input: &Tensor<F>,
        output: &mut Tensor<F>,
        #[define(F)] _dtype: StorageType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= output.len() {
            terminate!();
        }
        let x = f32::cast_from(input[i]);
        output[i] = F::cast_from(select(f32::is_nan(x) || f32::is_inf(x), 0.0f32, 1.0f32));
    }
}

/// `ops::finite_flag` in one launch: 1 where `x` is finite, else 0.
pub(crate) fn finite_flag<R: CubeRuntime>(x: CubeTensor<R>) -> CubeTensor<R> {
    let x = contiguous_float(x, "finite_flag");
    let n = x.meta.num_elements();
    let output = empty_on(&x, x.shape(), x.dtype);
    if n > 0 {
        let cube_dim = CubeDim::new(&x.client, n);
        let cube_count = calculate_cube_count_elemwise(&x.client, n, cube_dim);
        let dtype = x.dtype;
        finite_flag_kernel::launch::<R>(
            &output.client,
            cube_count,
            cube_dim,
            x.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            dtype.into(),
        );
    }
    output
}

/// `Σ x²` of `tensors` (`ops::sum_squares_many`): `[1]` f32.
pub(crate) fn sum_squares_many<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    tensors: Vec<CubeTensor<R>>,
) -> Option<CubeTensor<R>> {
    let first = tensors.first()?;
    let (client, device) = (first.client.clone(), first.device.clone());
    let per_cube = UNITS * ELEMENTS_PER_UNIT;
    let tensors: Vec<CubeTensor<R>> = tensors
        .into_iter()
        .map(|t| contiguous_float(t, "sum_squares_many"))
        .filter(|t| t.meta.num_elements() > 0)
        .collect();
    // One partial sum a cube, over every launch.
    let cubes_of = |t: &CubeTensor<R>| t.meta.num_elements().div_ceil(per_cube);
    let total_cubes: usize = tensors.iter().map(cubes_of).sum();
    if total_cubes == 0 {
        return Some(<CubeBackend<R, F, I, BT> as FloatTensorOps<_>>::float_zeros(
            [1].into(),
            &device,
            burn::tensor::FloatDType::F32,
        ));
    }
    let partials = empty_device_dtype(client.clone(), device, [total_cubes].into(), DType::F32);
    let mut groups: Vec<(DType, Vec<&CubeTensor<R>>)> = Vec::new();
    for t in &tensors {
        match groups.iter_mut().find(|(d, _)| *d == t.dtype) {
            Some((_, members)) => members.push(t),
            None => groups.push((t.dtype, vec![t])),
        }
    }
    let max_bindings = client.properties().hardware.max_bindings as usize;
    let mut first_partial = 0usize;
    for (dtype, members) in groups {
        for chunk in members.chunks(tensors_per_launch(members.len(), 1, 1, max_bindings)) {
            let mut args = SequenceArg::new();
            let mut cube_starts = SequenceArg::<R, usize>::new();
            let mut cubes = 0usize;
            for t in chunk {
                cube_starts.push(cubes);
                cubes += cubes_of(t);
                args.push((*t).clone().into_tensor_arg());
            }
            cube_starts.push(cubes);
            let cube_dim = CubeDim::new_1d(UNITS as u32);
            let cube_count = calculate_cube_count_elemwise(&client, cubes * UNITS, cube_dim);
            sum_squares_many_kernel::launch::<R>(
                &client,
                cube_count,
                cube_dim,
                args,
                partials.clone().into_tensor_arg(),
                cube_starts,
                first_partial,
                UNITS,
                ELEMENTS_PER_UNIT,
                dtype.into(),
            );
            first_partial += cubes;
        }
    }
    Some(<CubeBackend<R, F, I, BT> as FloatTensorOps<_>>::float_sum(partials))
}
