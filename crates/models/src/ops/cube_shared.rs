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

    /// A dropout mask as the kernels take it (`super::hash_dropout_arg` makes it from a
    /// `DropoutMask`): element `i` is scaled by `scale` when the hash of `(seed, i)` is at
    /// least `threshold`, else zeroed; no mask is threshold 0 (every hash passes) and scale 1.
    /// One kernel argument for the four numbers, so every kernel that drops out takes the same.
    #[derive(CubeLaunch, CubeType)]
    pub(crate) struct HashDropout {
        /// The seed's low and high 32 bits.
        pub seed_lo: u32,
        pub seed_hi: u32,
        /// The least hash that keeps an element.
        pub threshold: u32,
        /// A kept element's factor, `1/(1 − p)`.
        pub scale: f32,
    }

    #[cube]
    impl HashDropout {
        /// The dropout factor of element `i`: `scale` or 0, the same bits as
        /// `DropoutMask::factor` on the host.
        pub(crate) fn factor(&self, i: usize) -> f32 {
            let hash = mix(mix(u32::cast_from(i) ^ self.seed_lo) ^ self.seed_hi);
            select(hash >= self.threshold, self.scale, 0.0f32)
        }
    }

    /// The attention kernels' sizes, one argument: `seq` tokens a batch row, `heads` heads,
    /// scores scaled by `scale` (1/√head_dim).
    #[derive(CubeLaunch, CubeType)]
    pub(crate) struct AttentionSizes {
        pub seq: u32,
        pub heads: u32,
        pub scale: f32,
    }

    /// The parts of `qkv` and the output (or its gradient), as `CubeHead::start` reads them.
    pub(crate) const QUERIES: usize = 0;
    pub(crate) const KEYS: usize = 1;
    pub(crate) const VALUES: usize = 2;
    pub(crate) const OUTPUT: usize = 3;

    /// Where the cube's (batch row, head) sits, in every attention kernel (their grid:
    /// tiles of rows × heads × batch rows): offsets into `qkv [batch, seq, 3·hidden]`, the
    /// output and its gradient `[batch, seq, hidden]`, the rows' statistics
    /// `[batch, heads, seq]` and the dropout mask's elements `[batch, heads, seq, seq]`.
    #[derive(CubeType)]
    pub(crate) struct CubeHead {
        /// Tokens a batch row.
        pub seq: usize,
        /// The batch row.
        pub b: usize,
        /// Columns of the output (heads × head_dim); `qkv` has three times as many.
        pub hidden: usize,
        /// The batch row's first element in `qkv`.
        pub qkv_base: usize,
        /// The head's first column: Q's (K's and V's are `hidden` and `2·hidden` further).
        pub col: usize,
        /// (batch row, head) as one index: the row of its statistics.
        pub stats: usize,
    }

    #[cube]
    impl CubeHead {
        /// The cube's head, from its position on the grid.
        pub(crate) fn of_cube(sizes: &AttentionSizes, #[comptime] head_dim: usize) -> CubeHead {
            let seq = sizes.seq as usize;
            let b = CUBE_POS_Z as usize;
            let h = CUBE_POS_Y as usize;
            let hidden = sizes.heads as usize * head_dim;
            CubeHead {
                seq,
                b,
                hidden,
                qkv_base: b * seq * 3 * hidden,
                col: h * head_dim,
                stats: b * sizes.heads as usize + h,
            }
        }

        /// Elements between two tokens in `qkv`.
        pub(crate) fn qkv_stride(&self) -> usize {
            3 * self.hidden
        }

        /// Token `i`'s query in `qkv` (its key `hidden` further, its value `2·hidden`).
        pub(crate) fn query(&self, i: usize) -> usize {
            self.qkv_base + i * self.qkv_stride() + self.col
        }

        /// The batch row's first element in the output and its gradient.
        pub(crate) fn out_base(&self) -> usize {
            self.b * self.seq * self.hidden
        }

        /// Token `i`'s head in the output and its gradient.
        pub(crate) fn out(&self, i: usize) -> usize {
            self.out_base() + i * self.hidden + self.col
        }

        /// Where token `i`'s `head_dim` elements of the cube's head start in `part`
        /// ([`QUERIES`], [`KEYS`] or [`VALUES`] of `qkv`; the [`OUTPUT`] or its gradient).
        pub(crate) fn start(&self, #[comptime] part: usize, i: usize) -> usize {
            let mut at = self.out(i);
            if comptime!(part != OUTPUT) {
                at = self.query(i) + self.hidden * part;
            }
            at
        }

        /// Query `i`'s statistics (log-sum-exp, `Δ`).
        pub(crate) fn stat(&self, i: usize) -> usize {
            self.stats * self.seq + i
        }

        /// The dropout mask's element of query `i` and key `j`.
        pub(crate) fn element(&self, i: usize, j: usize) -> usize {
            self.stat(i) * self.seq + j
        }
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

/// `mask` as the kernels take it ([`kernels::HashDropout`]); `None` keeps every element.
pub(crate) fn hash_dropout_arg<R: cubecl::Runtime>(
    mask: Option<DropoutMask>,
) -> kernels::HashDropoutLaunch<R> {
    let (seed_lo, seed_hi, threshold, scale) = match mask.map(HashMask::new) {
        None => (0, 0, 0, 1.0),
        Some(hm) if hm.drop_all => (hm.seed as u32, (hm.seed >> 32) as u32, u32::MAX, 0.0),
        Some(hm) => (hm.seed as u32, (hm.seed >> 32) as u32, hm.threshold, hm.scale),
    };
    kernels::HashDropoutLaunch::new(seed_lo, seed_hi, threshold, scale)
}

/// The attention kernels' sizes ([`kernels::AttentionSizes`]), scores scaled by 1/√head_dim.
pub(crate) fn attention_sizes<R: cubecl::Runtime>(
    seq: usize,
    heads: usize,
    head_dim: usize,
) -> kernels::AttentionSizesLaunch<R> {
    kernels::AttentionSizesLaunch::new(seq as u32, heads as u32, (head_dim as f32).powf(-0.5))
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
