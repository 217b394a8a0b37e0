//! What the CubeCL kernels of the seam share (`cube`, `cube_attention`, `cube_norm`): the
//! dropout mask's hash on the device, its parameters from the host, a cube-wide sum, and how
//! their launchers prepare operands.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;

use super::is_float;
use super::{DropoutMask, HashMask};

/// The shared `#[cube]` functions (their own module: CubeCL's prelude has its own `Tensor`).
pub(crate) mod kernels {
    use cubecl::prelude::*;

    /// One round of the `lowbias32` hash, as `ops::hash` on the host.
    #[cube]
    fn mix(x: u32) -> u32 {
        let mut x = x;
        x ^= x >> 16u32;
        x *= 0x7feb_352du32;
        x ^= x >> 15u32;
        x *= 0x846c_a68bu32;
        x ^= x >> 16u32;
        x
    }

    /// The dropout factor of element `i`: `scale` where the hash of `(seed, i)` is at least
    /// `threshold`, else 0 (threshold 0 and scale 1: no dropout).
    #[cube]
    pub(crate) fn factor(i: usize, seed_lo: u32, seed_hi: u32, threshold: u32, scale: f32) -> f32 {
        let hash = mix(mix(u32::cast_from(i) ^ seed_lo) ^ seed_hi);
        select(hash >= threshold, scale, 0.0f32)
    }

    /// The sum of `value` over the cube's units (a tree in shared memory); every unit gets it.
    #[cube]
    pub(crate) fn cube_sum(value: f32, shared: &mut SharedMemory<f32>) -> f32 {
        let unit = UNIT_POS_X as usize;
        shared[unit] = value;
        sync_cube();
        let mut stride = (CUBE_DIM_X / 2) as usize;
        while stride > 0 {
            if unit < stride {
                shared[unit] = shared[unit] + shared[unit + stride];
            }
            sync_cube();
            stride /= 2;
        }
        let total = shared[0];
        sync_cube();
        total
    }
}

/// A dropout mask as the kernels take it: `(seed_lo, seed_hi, threshold, scale)`, element `i`
/// scaled by `scale` when its hash is at least `threshold`, else zeroed. No mask: threshold 0
/// (every hash passes) and scale 1.
pub(crate) fn hash_params(mask: Option<DropoutMask>) -> (u32, u32, u32, f32) {
    match mask.map(HashMask::new) {
        None => (0, 0, 0, 1.0),
        Some(hm) if hm.drop_all => (hm.seed as u32, (hm.seed >> 32) as u32, u32::MAX, 0.0),
        Some(hm) => (hm.seed as u32, (hm.seed >> 32) as u32, hm.threshold, hm.scale),
    }
}

/// `t` in a contiguous layout, checked to be f32, f16 or bf16 (`what`: the op, for the
/// message).
pub(crate) fn contiguous_float<R: CubeRuntime>(t: CubeTensor<R>, what: &str) -> CubeTensor<R> {
    let t = burn_cubecl::kernel::into_contiguous(t);
    assert!(is_float(t.dtype), "{what}: a float tensor (got {:?})", t.dtype);
    t
}

/// An uninitialised tensor of `shape` and `dtype` on `like`'s device.
pub(crate) fn empty_on<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}
