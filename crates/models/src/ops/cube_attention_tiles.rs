//! Training attention as products of 16 × 16 tiles, for tensor cores (issue 24): the same
//! contract as `cube_attention` (from `qkv [batch, seq, 3·hidden]`, the context and each row's
//! log-sum-exp forward; `d_qkv` backward from them; the same padding rule and the same hash
//! dropout mask), for f16 and bf16 operands.
//!
//! `cube_attention`'s kernels give each unit a row and multiply in scalar f32: at 512 tokens
//! that is most of an H100 step (issue 24's 32 × 512 MFU goal needs the products on tensor
//! cores). Here a cube is 32 units (one plane on NVIDIA GPUs) and 16 rows (queries forward and
//! for dQ, keys for dK and dV), and every product is a sum of 16 × 16 × 16 matrix products
//! (CubeCL's `cmma`: f16 or bf16 operands, f32 accumulators; on devices whose fragments are
//! 8 × 8 × 8, eight of those), staged through shared memory as FlashAttention-2 (Dao, 2023)
//! arranges them:
//!
//! - forward, per tile of 16 keys: `S = Q·Kᵀ` (f32), each row's running maximum and sum
//!   updated by one unit a row, `P` (dropped out, in the operands' dtype), the output
//!   accumulator's rows rescaled, then `O += P·V`;
//! - query pass, per tile of keys: `S = Q·Kᵀ`, `dP = dO·Vᵀ`, `dS = P∘(m∘dP − Δ)` (`m` the
//!   dropout factor, `Δ = dO·O` a row), `dQ += dS·K`;
//! - key pass, per tile of queries: `Sᵀ = K·Qᵀ`, `dPᵀ = V·dOᵀ`, `dV += (m∘P)ᵀ·dO`,
//!   `dK += dSᵀ·Q`.
//!
//! Softmax, its statistics and the accumulators stay in f32; what goes into a product is
//! rounded to the operands' dtype (`P`, `dS`), as on every tensor-core attention. The products
//! have two implementations chosen at compile time: `cmma` on devices that have it for the
//! operands' dtype (CUDA's tensor cores; Vulkan's cooperative matrices through the SPIR-V
//! build, `--features vulkan`, which Mesa's lavapipe emulates from version 26), and the same
//! products in plain code (every unit a few of the 256 outputs), which checks this kernel's
//! tiling, masking, dropout and statistics on devices without either.

use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::ir::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::{CubeCount, CubeDim};

use self::kernels::{tiles_forward_kernel, tiles_key_grad_kernel, tiles_query_grad_kernel};
use super::cube_shared::{attention_sizes, empty_on, hash_dropout_arg};
use super::DropoutMask;

/// Rows of a cube's tile and of every product's side: the `cmma` shape 16 × 16 × 16.
const TILE: usize = 16;

/// Units a cube: one plane on NVIDIA GPUs (a `cmma` product needs whole planes).
const UNITS: usize = 32;

/// The most shared memory a kernel may use: what lavapipe offers (CUDA 48 KiB).
const SHARED_BYTES: usize = 32 * 1024;

/// Shared memory of the largest kernel (the key pass) for heads of `head_dim` in a 2-byte
/// dtype: four operand tiles (K, V, Q, dO), four 16 × 16 score tiles (two f32, two operands),
/// the dK and dV accumulators in f32, three rows of 16 (log-sum-exps, `Δ`, the keys' flags).
fn key_pass_shared_bytes(head_dim: usize) -> usize {
    4 * TILE * head_dim * 2
        + 2 * TILE * TILE * 4
        + 2 * TILE * TILE * 2
        + 2 * TILE * head_dim * 4
        + 3 * TILE * 4
}

/// Whether the tile kernels take `qkv` of `dtype` with heads of `head_dim`: f16 or bf16 (what
/// tensor cores multiply), heads a multiple of 16 whose tiles fit [`SHARED_BYTES`] (up to 112).
pub(crate) fn accepts(dtype: DType, head_dim: usize) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
        && head_dim > 0
        && head_dim.is_multiple_of(TILE)
        && key_pass_shared_bytes(head_dim) <= SHARED_BYTES
}

/// The side of the `cmma` fragments the tile kernels multiply with on `client`'s device, for
/// `dtype` operands into f32: 16 (NVIDIA's tensor cores, whose plane is a cube's [`UNITS`]) or
/// else 8 (lavapipe's cooperative matrices, planes of 8: a cube's four planes take a 16 × 16
/// product's four blocks). `None` where the device has neither, or its planes are not of one
/// size dividing a cube's units (a `cmma` product needs whole planes).
pub(crate) fn tensor_core_fragment<R: CubeRuntime>(
    client: &cubecl::client::ComputeClient<R>,
    dtype: DType,
) -> Option<usize> {
    let operand = match dtype {
        DType::F16 => ElemType::Float(FloatKind::F16),
        DType::BF16 => ElemType::Float(FloatKind::BF16),
        _ => return None,
    };
    let hardware = &client.properties().hardware;
    let plane = hardware.plane_size_min as usize;
    if plane == 0 || plane != hardware.plane_size_max as usize || !UNITS.is_multiple_of(plane) {
        return None;
    }
    let f32_ = StorageType::Scalar(ElemType::Float(FloatKind::F32));
    FRAGMENTS.into_iter().find(|&side| {
        client.features().matmul.cmma.contains(&MmaConfig {
            a_type: StorageType::Scalar(operand),
            b_type: StorageType::Scalar(operand),
            cd_type: f32_,
            m: side as u32,
            n: side as u32,
            k: side as u32,
        })
    })
}

/// The `cmma` fragment sides the kernels can multiply with, in order of preference: each
/// divides [`TILE`] (and so every head size [`accepts`] takes).
const FRAGMENTS: [usize; 2] = [16, 8];

mod kernels {
    use cubecl::prelude::*;

    use super::TILE;
    use crate::ops::cube_shared::kernels::{
        AttentionSizes, CubeHead, HashDropout, KEYS, OUTPUT, QUERIES, VALUES,
    };

    /// The score of a padded key (`f32::MIN`, as the reference's `mask_fill`).
    const PADDED: f32 = -3.402_823_5e38f32;

    /// A key's flag in shared memory: a real key, a padded one, or past the sequence's end
    /// (no key: probability 0, not counted in any sum).
    const KEY: u32 = 0;
    const PADDED_KEY: u32 = 1;
    const NO_KEY: u32 = 2;

    /// Stages rows `first .. first + len` of the cube's head in `part` of `source` (Q, K or V
    /// of `qkv`, or the output's gradient: `CubeHead::start`) into the 16-row `tile`, rows
    /// past `len` zero.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn stage<F: Float>(
        source: &Tensor<F>,
        tile: &mut SharedMemory<F>,
        at: &CubeHead,
        #[comptime] part: usize,
        first: usize,
        len: usize,
        #[comptime] head_dim: usize,
    ) {
        let mut e = UNIT_POS_X as usize;
        while e < TILE * head_dim {
            let row = e / head_dim;
            let c = e % head_dim;
            let mut value = F::new(0.0);
            if row < len {
                value = source[at.start(part, first + row) + c];
            }
            tile[e] = value;
            e += CUBE_DIM_X as usize;
        }
    }

    /// Sets `count` f32s of `tile` to 0.
    #[cube]
    fn zero(tile: &mut SharedMemory<f32>, #[comptime] count: usize) {
        let mut e = UNIT_POS_X as usize;
        while e < count {
            tile[e] = 0.0f32;
            e += CUBE_DIM_X as usize;
        }
    }

    /// One plane's block of [`product`] with `cmma`: the `fragment` × `fragment` block of the
    /// output at row `row0`, column `col0`, over all of `depth` in steps of `fragment`.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn block_product<F: Float>(
        a: &SharedMemory<F>,
        a_stride: usize,
        b: &SharedMemory<F>,
        b_at: usize,
        b_stride: usize,
        c: &mut SharedMemory<f32>,
        c_at: usize,
        c_stride: usize,
        row0: usize,
        col0: usize,
        #[comptime] b_cols: bool,
        #[comptime] depth: usize,
        #[comptime] accumulate: bool,
        #[comptime] fragment: usize,
    ) {
        let b_layout = comptime![match b_cols {
            true => cmma::MatrixLayout::ColMajor,
            false => cmma::MatrixLayout::RowMajor,
        }];
        let row_major = cmma::MatrixLayout::RowMajor;
        let span = (fragment - 1) * c_stride + fragment;
        let c_from = c_at + row0 * c_stride + col0;
        let acc = cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            fragment,
            fragment,
            fragment,
            cmma::MatrixLayout::Undefined,
            0.0,
        );
        if accumulate {
            cmma::load_with_layout(&acc, &c.slice(c_from, c_from + span), c_stride as u32, row_major);
        }
        #[unroll]
        for s in 0..depth / fragment {
            // The block's rows of A, its s-th `fragment` columns; the s-th `fragment` rows of
            // B, the block's columns.
            let a_from = row0 * a_stride + s * fragment;
            let mut b_from = b_at + s * fragment * b_stride + col0;
            if b_cols {
                b_from = b_at + col0 * b_stride + s * fragment;
            }
            let a_tile = a.slice(a_from, a_from + (fragment - 1) * a_stride + fragment);
            let b_tile = b.slice(b_from, b_from + (fragment - 1) * b_stride + fragment);
            let a_ident = cmma::MatrixIdent::A;
            let fa = cmma::Matrix::<F>::from_slice(
                a_ident,
                fragment,
                fragment,
                fragment,
                row_major,
                &a_tile,
                a_stride as u32,
            );
            let b_ident = cmma::MatrixIdent::B;
            let fb = cmma::Matrix::<F>::from_slice(
                b_ident,
                fragment,
                fragment,
                fragment,
                b_layout,
                &b_tile,
                b_stride as u32,
            );
            cmma::execute::<F, F, f32, f32>(&fa, &fb, &acc, &acc);
        }
        cmma::store(&mut c.slice_mut(c_from, c_from + span), &acc, c_stride as u32, row_major);
    }

    /// The 16 × 16 tile of `c` at `c_at` (rows `c_stride` apart) set to, or with `accumulate`
    /// increased by, `A·B`: `A` 16 × `depth` from `a` (row-major, rows `a_stride` apart), `B`
    /// `depth` × 16 from `b` at `b_at` (row-major: element (k, n) at `k·b_stride + n`; with
    /// `b_cols` at `n·b_stride + k`). With a `fragment` side (16 on NVIDIA's tensor cores, 8 on
    /// lavapipe's), `cmma` products of `fragment`³ into f32 fragments: the output in
    /// (16 / `fragment`)² blocks, each computed whole by one plane (a `cmma` product needs its
    /// plane's every unit, and a block written by one plane has no race), the cube's planes
    /// taking blocks in turn. With `fragment` 0, each unit sums a few of the 256 outputs in f32
    /// (f16 and bf16 products are exact in f32, as a tensor core's are). Every unit of the cube
    /// calls it; the caller syncs before and after.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn product<F: Float>(
        a: &SharedMemory<F>,
        a_stride: usize,
        b: &SharedMemory<F>,
        b_at: usize,
        b_stride: usize,
        c: &mut SharedMemory<f32>,
        c_at: usize,
        c_stride: usize,
        #[comptime] b_cols: bool,
        #[comptime] depth: usize,
        #[comptime] accumulate: bool,
        #[comptime] fragment: usize,
    ) {
        if fragment > 0 {
            let side = comptime![TILE / fragment.max(1)];
            let plane = (UNIT_POS_X / PLANE_DIM) as usize;
            if comptime![side == 1] {
                // One block (NVIDIA: the cube is one plane): no loop around the fragments.
                if plane == 0 {
                    block_product::<F>(
                        a, a_stride, b, b_at, b_stride, c, c_at, c_stride, 0, 0, b_cols, depth, accumulate,
                        fragment,
                    );
                }
            } else {
                let planes = (CUBE_DIM_X / PLANE_DIM) as usize;
                let mut block = plane;
                while block < side * side {
                    let row0 = (block / side) * fragment;
                    let col0 = (block % side) * fragment;
                    block_product::<F>(
                        a, a_stride, b, b_at, b_stride, c, c_at, c_stride, row0, col0, b_cols, depth,
                        accumulate, fragment,
                    );
                    block += planes;
                }
            }
        } else {
            let mut e = UNIT_POS_X as usize;
            while e < TILE * TILE {
                let r = e / TILE;
                let n = e % TILE;
                let mut sum = 0.0f32;
                for k in 0..depth {
                    let y = if b_cols { b[b_at + n * b_stride + k] } else { b[b_at + k * b_stride + n] };
                    sum += f32::cast_from(a[r * a_stride + k]) * f32::cast_from(y);
                }
                let at = c_at + r * c_stride + n;
                if accumulate {
                    c[at] += sum;
                } else {
                    c[at] = sum;
                }
                e += CUBE_DIM_X as usize;
            }
        }
    }

    /// `out = a·bᵀ` (16 × 16, f32) of two 16-row tiles of `head_dim` columns: scores, or the
    /// probabilities' gradients.
    #[cube]
    fn row_products<F: Float>(
        a: &SharedMemory<F>,
        b: &SharedMemory<F>,
        out: &mut SharedMemory<f32>,
        #[comptime] head_dim: usize,
        #[comptime] fragment: usize,
    ) {
        product::<F>(a, head_dim, b, 0, head_dim, out, 0, TILE, true, head_dim, false, fragment);
    }

    /// `acc += p·rows`: a 16 × 16 tile of weights (probabilities, score gradients) times a
    /// 16-row tile of `head_dim` columns, into the 16 × `head_dim` f32 accumulator.
    #[cube]
    fn accumulate_rows<F: Float>(
        p: &SharedMemory<F>,
        rows: &SharedMemory<F>,
        acc: &mut SharedMemory<f32>,
        #[comptime] head_dim: usize,
        #[comptime] fragment: usize,
    ) {
        #[unroll]
        for t in 0..head_dim / TILE {
            product::<F>(
                p,
                TILE,
                rows,
                t * TILE,
                head_dim,
                acc,
                t * TILE,
                head_dim,
                false,
                TILE,
                true,
                fragment,
            );
        }
    }

    /// Each of the tile's 16 keys from `first`: [`KEY`], [`PADDED_KEY`] or [`NO_KEY`].
    #[cube]
    fn stage_key_flags<M: Int>(
        padding: &Tensor<M>,
        flags: &mut SharedMemory<u32>,
        b: usize,
        seq: usize,
        first: usize,
    ) {
        let unit = UNIT_POS_X as usize;
        if unit < TILE {
            let in_seq = first + unit < seq;
            let at = select(in_seq, b * seq + first + unit, b * seq);
            let is_padded = u32::cast_from(padding[at]) != 0u32;
            flags[unit] = select(in_seq, select(is_padded, PADDED_KEY, KEY), NO_KEY);
        }
    }

    /// The forward pass: a cube a (16 queries, head, batch row). Writes the output rows in `F`
    /// and their log-sum-exps in f32.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tiles_forward_kernel<F: Float, M: Int>(
        qkv: &Tensor<F>,
        padding: &Tensor<M>,
        context: &mut Tensor<F>,
        log_sum_exp: &mut Tensor<f32>,
        sizes: AttentionSizes,
        mask: HashDropout,
        #[comptime] head_dim: usize,
        #[comptime] fragment: usize,
        #[define(F, M)] _dtypes: [StorageType; 2],
    ) {
        let at = CubeHead::of_cube(&sizes, head_dim);
        let seq = at.seq;
        let scale = sizes.scale;
        let lowest = f32::new(PADDED);
        let unit = UNIT_POS_X as usize;
        let first_query = CUBE_POS_X as usize * TILE;
        let queries_here = min(TILE, seq - first_query);

        let mut queries = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut keys = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut values = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut scores = SharedMemory::<f32>::new_aligned(TILE * TILE, 32usize);
        let mut probs = SharedMemory::<F>::new_aligned(TILE * TILE, 32usize);
        let mut acc = SharedMemory::<f32>::new_aligned(TILE * head_dim, 32usize);
        let mut flags = SharedMemory::<u32>::new(TILE);
        stage::<F>(qkv, &mut queries, &at, QUERIES, first_query, queries_here, head_dim);
        zero(&mut acc, TILE * head_dim);
        // Unit r < 16 keeps query row r's running maximum and sum.
        let mut max_score = lowest;
        let mut sum = 0.0f32;

        let mut first = 0usize;
        while first < seq {
            let len = min(TILE, seq - first);
            stage::<F>(qkv, &mut keys, &at, KEYS, first, len, head_dim);
            stage::<F>(qkv, &mut values, &at, VALUES, first, len, head_dim);
            stage_key_flags::<M>(padding, &mut flags, at.b, seq, first);
            sync_cube();
            row_products::<F>(&queries, &keys, &mut scores, head_dim, fragment);
            sync_cube();
            if unit < TILE {
                let r = unit;
                let mut tile_max = lowest;
                for j in 0..TILE {
                    let flag = flags[j];
                    if flag != NO_KEY {
                        tile_max =
                            max(tile_max, select(flag == PADDED_KEY, lowest, scores[r * TILE + j] * scale));
                    }
                }
                let new_max = max(max_score, tile_max);
                let rescale = f32::exp(max_score - new_max);
                sum *= rescale;
                let element = at.element(first_query + r, first);
                for j in 0..TILE {
                    let flag = flags[j];
                    let s = select(flag == PADDED_KEY, lowest, scores[r * TILE + j] * scale);
                    let p = select(flag == NO_KEY, 0.0f32, f32::exp(s - new_max));
                    sum += p;
                    let kept = p * mask.factor(element + j);
                    probs[r * TILE + j] = F::cast_from(kept);
                }
                for c in 0..head_dim {
                    acc[r * head_dim + c] *= rescale;
                }
                max_score = new_max;
            }
            sync_cube();
            accumulate_rows::<F>(&probs, &values, &mut acc, head_dim, fragment);
            sync_cube();
            first += TILE;
        }
        if unit < queries_here {
            let r = unit;
            let out = at.out(first_query + r);
            for c in 0..head_dim {
                context[out + c] = F::cast_from(acc[r * head_dim + c] / sum);
            }
            log_sum_exp[at.stat(first_query + r)] = max_score + f32::ln(sum);
        }
    }

    /// The backward pass for the queries: a cube a (16 queries, head, batch row). Writes dQ
    /// into Q's part of `d_qkv` and each row's `Δ = dO·O` into `delta` for the key pass.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tiles_query_grad_kernel<F: Float, M: Int>(
        qkv: &Tensor<F>,
        padding: &Tensor<M>,
        context: &Tensor<F>,
        grad: &Tensor<F>,
        log_sum_exp: &Tensor<f32>,
        d_qkv: &mut Tensor<F>,
        delta: &mut Tensor<f32>,
        sizes: AttentionSizes,
        mask: HashDropout,
        #[comptime] head_dim: usize,
        #[comptime] fragment: usize,
        #[define(F, M)] _dtypes: [StorageType; 2],
    ) {
        let at = CubeHead::of_cube(&sizes, head_dim);
        let seq = at.seq;
        let scale = sizes.scale;
        let lowest = f32::new(PADDED);
        let unit = UNIT_POS_X as usize;
        let first_query = CUBE_POS_X as usize * TILE;
        let queries_here = min(TILE, seq - first_query);

        let mut queries = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut grads = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut keys = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut values = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut scores = SharedMemory::<f32>::new_aligned(TILE * TILE, 32usize);
        let mut grad_probs = SharedMemory::<f32>::new_aligned(TILE * TILE, 32usize);
        let mut grad_scores = SharedMemory::<F>::new_aligned(TILE * TILE, 32usize);
        let mut dq = SharedMemory::<f32>::new_aligned(TILE * head_dim, 32usize);
        let mut flags = SharedMemory::<u32>::new(TILE);
        stage::<F>(qkv, &mut queries, &at, QUERIES, first_query, queries_here, head_dim);
        stage::<F>(grad, &mut grads, &at, OUTPUT, first_query, queries_here, head_dim);
        zero(&mut dq, TILE * head_dim);
        // Unit r < 16 keeps query row r's log-sum-exp and Δ.
        let mut lse = 0.0f32;
        let mut d = 0.0f32;
        if unit < queries_here {
            let out = at.out(first_query + unit);
            for c in 0..head_dim {
                d += f32::cast_from(grad[out + c]) * f32::cast_from(context[out + c]);
            }
            lse = log_sum_exp[at.stat(first_query + unit)];
        }

        let mut first = 0usize;
        while first < seq {
            let len = min(TILE, seq - first);
            stage::<F>(qkv, &mut keys, &at, KEYS, first, len, head_dim);
            stage::<F>(qkv, &mut values, &at, VALUES, first, len, head_dim);
            stage_key_flags::<M>(padding, &mut flags, at.b, seq, first);
            sync_cube();
            row_products::<F>(&queries, &keys, &mut scores, head_dim, fragment);
            row_products::<F>(&grads, &values, &mut grad_probs, head_dim, fragment);
            sync_cube();
            if unit < TILE {
                let r = unit;
                let element = at.element(first_query + r, first);
                for j in 0..TILE {
                    let flag = flags[j];
                    let p = f32::exp(select(flag == PADDED_KEY, lowest, scores[r * TILE + j] * scale) - lse);
                    let kept = mask.factor(element + j);
                    let ds = p * (grad_probs[r * TILE + j] * kept - d);
                    let live = flag == KEY && r < queries_here;
                    grad_scores[r * TILE + j] = F::cast_from(select(live, ds, 0.0f32));
                }
            }
            sync_cube();
            accumulate_rows::<F>(&grad_scores, &keys, &mut dq, head_dim, fragment);
            sync_cube();
            first += TILE;
        }
        let mut e = unit;
        while e < queries_here * head_dim {
            let r = e / head_dim;
            let c = e % head_dim;
            d_qkv[at.query(first_query + r) + c] = F::cast_from(dq[e] * scale);
            e += CUBE_DIM_X as usize;
        }
        if unit < queries_here {
            delta[at.stat(first_query + unit)] = d;
        }
    }

    /// The backward pass for the keys and values: a cube a (16 keys, head, batch row). Over
    /// the tiles of queries (their rows, output gradients, log-sum-exps and `Δ`), writes dK
    /// and dV into K's and V's parts of `d_qkv`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tiles_key_grad_kernel<F: Float, M: Int>(
        qkv: &Tensor<F>,
        padding: &Tensor<M>,
        grad: &Tensor<F>,
        log_sum_exp: &Tensor<f32>,
        delta: &Tensor<f32>,
        d_qkv: &mut Tensor<F>,
        sizes: AttentionSizes,
        mask: HashDropout,
        #[comptime] head_dim: usize,
        #[comptime] fragment: usize,
        #[define(F, M)] _dtypes: [StorageType; 2],
    ) {
        let at = CubeHead::of_cube(&sizes, head_dim);
        let seq = at.seq;
        let scale = sizes.scale;
        let lowest = f32::new(PADDED);
        let unit = UNIT_POS_X as usize;
        let first_key = CUBE_POS_X as usize * TILE;
        let keys_here = min(TILE, seq - first_key);

        let mut keys = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut values = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut queries = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut grads = SharedMemory::<F>::new_aligned(TILE * head_dim, 32usize);
        let mut scores = SharedMemory::<f32>::new_aligned(TILE * TILE, 32usize);
        let mut grad_probs = SharedMemory::<f32>::new_aligned(TILE * TILE, 32usize);
        let mut kept_probs = SharedMemory::<F>::new_aligned(TILE * TILE, 32usize);
        let mut grad_scores = SharedMemory::<F>::new_aligned(TILE * TILE, 32usize);
        let mut dk = SharedMemory::<f32>::new_aligned(TILE * head_dim, 32usize);
        let mut dv = SharedMemory::<f32>::new_aligned(TILE * head_dim, 32usize);
        let mut lse = SharedMemory::<f32>::new(TILE);
        let mut deltas = SharedMemory::<f32>::new(TILE);
        let mut flags = SharedMemory::<u32>::new(TILE);
        stage::<F>(qkv, &mut keys, &at, KEYS, first_key, keys_here, head_dim);
        stage::<F>(qkv, &mut values, &at, VALUES, first_key, keys_here, head_dim);
        stage_key_flags::<M>(padding, &mut flags, at.b, seq, first_key);
        zero(&mut dk, TILE * head_dim);
        zero(&mut dv, TILE * head_dim);

        let mut first = 0usize;
        while first < seq {
            let len = min(TILE, seq - first);
            stage::<F>(qkv, &mut queries, &at, QUERIES, first, len, head_dim);
            stage::<F>(grad, &mut grads, &at, OUTPUT, first, len, head_dim);
            if unit < TILE {
                let mut l = 0.0f32;
                let mut dl = 0.0f32;
                if unit < len {
                    l = log_sum_exp[at.stat(first + unit)];
                    dl = delta[at.stat(first + unit)];
                }
                lse[unit] = l;
                deltas[unit] = dl;
            }
            sync_cube();
            // Transposed scores: row r a key, column i a query.
            row_products::<F>(&keys, &queries, &mut scores, head_dim, fragment);
            row_products::<F>(&values, &grads, &mut grad_probs, head_dim, fragment);
            sync_cube();
            if unit < TILE {
                let r = unit;
                let flag = flags[r];
                for i in 0..TILE {
                    let p =
                        f32::exp(select(flag == PADDED_KEY, lowest, scores[r * TILE + i] * scale) - lse[i]);
                    let element = at.element(first + i, first_key + r);
                    let kept = mask.factor(element);
                    let ds = p * (grad_probs[r * TILE + i] * kept - deltas[i]);
                    let query = i < len && flag != NO_KEY;
                    kept_probs[r * TILE + i] = F::cast_from(select(query, p * kept, 0.0f32));
                    grad_scores[r * TILE + i] = F::cast_from(select(query && flag == KEY, ds, 0.0f32));
                }
            }
            sync_cube();
            accumulate_rows::<F>(&kept_probs, &grads, &mut dv, head_dim, fragment);
            accumulate_rows::<F>(&grad_scores, &queries, &mut dk, head_dim, fragment);
            sync_cube();
            first += TILE;
        }
        let mut e = unit;
        while e < keys_here * head_dim {
            let r = e / head_dim;
            let c = e % head_dim;
            let token = at.query(first_key + r) + c;
            d_qkv[token + at.hidden] = F::cast_from(dk[e] * scale);
            d_qkv[token + 2 * at.hidden] = F::cast_from(dv[e]);
            e += CUBE_DIM_X as usize;
        }
    }
}

/// The launch shape: a cube a (16 rows, head, batch row), of [`UNITS`] units.
fn launch_shape(batch: usize, seq: usize, heads: usize) -> (CubeCount, CubeDim) {
    let max = u16::MAX as usize;
    assert!(
        batch <= max && heads <= max,
        "attention: {batch} batch rows × {heads} heads exceed the launch grid"
    );
    let count = CubeCount::Static(seq.div_ceil(TILE) as u32, heads as u32, batch as u32);
    (count, CubeDim::new_1d(UNITS as u32))
}

/// `(context [batch, seq, hidden], log-sum-exps [batch, heads, seq] f32)` of contiguous `qkv`
/// `[batch, seq, heads·head_dim·3]` (`accepts` holds) and `padding`, the products on tensor
/// cores (`cmma` fragments of `fragment`, from [`tensor_core_fragment`]) unless `fragment` is 0.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward<R: CubeRuntime>(
    qkv: CubeTensor<R>,
    padding: CubeTensor<R>,
    [batch, seq, heads, head_dim]: [usize; 4],
    dropout: Option<DropoutMask>,
    fragment: usize,
) -> (CubeTensor<R>, CubeTensor<R>) {
    debug_assert!(accepts(qkv.dtype, head_dim));
    let context = empty_on(&qkv, [batch, seq, heads * head_dim].into(), qkv.dtype);
    let log_sum_exp = empty_on(&qkv, [batch, heads, seq].into(), DType::F32);
    if batch * seq == 0 {
        return (context, log_sum_exp);
    }
    let (count, dim) = launch_shape(batch, seq, heads);
    let mask = hash_dropout_arg(dropout);
    let dtypes = [qkv.dtype.into(), padding.dtype.into()];
    tiles_forward_kernel::launch::<R>(
        &qkv.client,
        count,
        dim,
        qkv.clone().into_tensor_arg(),
        padding.into_tensor_arg(),
        context.clone().into_tensor_arg(),
        log_sum_exp.clone().into_tensor_arg(),
        attention_sizes(seq, heads, head_dim),
        mask,
        head_dim,
        fragment,
        dtypes,
    );
    (context, log_sum_exp)
}

/// The gradient of `qkv`: the query pass (which also writes each row's `Δ`), then the key
/// pass. Every operand contiguous, `accepts` holding.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward<R: CubeRuntime>(
    grad: CubeTensor<R>,
    qkv: CubeTensor<R>,
    context: CubeTensor<R>,
    log_sum_exp: CubeTensor<R>,
    padding: CubeTensor<R>,
    [batch, seq, heads, head_dim]: [usize; 4],
    dropout: Option<DropoutMask>,
    fragment: usize,
) -> CubeTensor<R> {
    debug_assert!(accepts(qkv.dtype, head_dim));
    let dtype = qkv.dtype;
    let d_qkv = empty_on(&qkv, qkv.shape(), dtype);
    if batch * seq == 0 {
        return d_qkv;
    }
    let delta = empty_on(&qkv, [batch, heads, seq].into(), DType::F32);
    let (count, dim) = launch_shape(batch, seq, heads);
    let dtypes = [dtype.into(), padding.dtype.into()];
    tiles_query_grad_kernel::launch::<R>(
        &qkv.client,
        count.clone(),
        dim,
        qkv.clone().into_tensor_arg(),
        padding.clone().into_tensor_arg(),
        context.into_tensor_arg(),
        grad.clone().into_tensor_arg(),
        log_sum_exp.clone().into_tensor_arg(),
        d_qkv.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        attention_sizes(seq, heads, head_dim),
        hash_dropout_arg(dropout),
        head_dim,
        fragment,
        dtypes,
    );
    tiles_key_grad_kernel::launch::<R>(
        &d_qkv.client,
        count,
        dim,
        qkv.into_tensor_arg(),
        padding.into_tensor_arg(),
        grad.into_tensor_arg(),
        log_sum_exp.into_tensor_arg(),
        delta.into_tensor_arg(),
        d_qkv.clone().into_tensor_arg(),
        attention_sizes(seq, heads, head_dim),
        hash_dropout_arg(dropout),
        head_dim,
        fragment,
        dtypes,
    );
    d_qkv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_kernels_take_16_wide_heads_of_two_byte_floats_that_fit_the_shared_memory() {
        for dtype in [DType::F16, DType::BF16] {
            for head_dim in [16, 32, 64, 96, 112] {
                assert!(accepts(dtype, head_dim), "{dtype:?} {head_dim}");
            }
            for head_dim in [0, 8, 24, 72, 128, 256] {
                assert!(!accepts(dtype, head_dim), "{dtype:?} {head_dim}");
            }
        }
        assert!(!accepts(DType::F32, 64) && !accepts(DType::I32, 64));
        // BERT's heads (64 wide): the key pass's 19.6 KB, as CubeCL's CUDA source lays it out
        // (scripts/cuda-compile-check: its last array ends at byte 19 648).
        assert_eq!(key_pass_shared_bytes(64), 19_648);
    }
}
