//! Training attention on a CubeCL backend: one launch forward, two backward, straight from the
//! fused projection `qkv [batch, seq, 3·hidden]` into `[batch, seq, hidden]` and back into
//! `d_qkv [batch, seq, 3·hidden]`.
//!
//! The decomposition costs about 11 launches forward and 21 backward a layer (issue 24): the
//! score product, the mask and scale, a softmax of four launches, dropout, two casts, the value
//! product, the head merge; backward the same again and the slices of dQ, dK and dV assembled
//! into one tensor with zero fills. Here, as in FlashAttention (Dao et al., 2022), each query
//! row keeps a running maximum and sum of its exponentiated scores over tiles of keys and
//! values staged in shared memory, so the `seq × seq` scores and probabilities are never
//! written: the forward keeps the output and each row's log-sum-exp, and the backward
//! recomputes the probabilities from them.
//!
//! - Scores, softmax and every sum in f32 whatever the operands' dtype (f32, f16, bf16), as
//!   autocast computes softmax; the outputs are rounded once, to the operands' dtype.
//! - Padded keys score `f32::MIN`, as `transformers`' eager attention and the reference: they
//!   get probability 0, and a row whose keys are all padded attends evenly to them. Their
//!   scores' gradients are 0 (the reference's `mask_fill` passes none).
//! - Dropout acts on the probabilities with the hash mask of the `[batch, heads, seq, seq]`
//!   tensor the reference drops, element for element, so both draw the same mask.
//! - One unit a query row (forward, dQ) or a key row (dK, dV), its head's row and accumulators
//!   in registers (`head_dim` is a compile-time size), a tile of the other side's rows in
//!   shared memory at a time (`tile_rows`: 32 for heads up to 64 wide).

use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::{CubeCount, CubeDim};

use self::kernels::{attention_forward_kernel, attention_key_grad_kernel, attention_query_grad_kernel};
use super::attention_products::{attention_products, record_ran, AttentionProducts};
use super::cube_attention_tiles;
use super::cube_shared::{attention_sizes, empty_on, hash_dropout_arg};
use super::is_float;
use super::DropoutMask;
use burn_cubecl::kernel::into_contiguous;

/// The largest head size the kernels are compiled for: each unit holds two to four head rows
/// in registers.
pub(crate) const MAX_HEAD_DIM: usize = 256;

/// Bytes of shared memory for a cube's two staged tiles of `tile × head_dim` f32 (a kernel
/// adds a few floats a row): within the 16 KiB every Vulkan device offers (lavapipe 32 KiB,
/// CUDA 48 KiB without opting in).
const SHARED_BYTES: usize = 16 * 1024;

/// Whether the kernels take `qkv` of `dtype` with heads of `head_dim`.
pub(crate) fn accepts(dtype: DType, head_dim: usize) -> bool {
    is_float(dtype) && (1..=MAX_HEAD_DIM).contains(&head_dim)
}

/// Rows a cube handles and rows a shared tile holds (one unit a row): 32 for heads up to 64
/// wide, fewer for wider heads, so two f32 tiles fit [`SHARED_BYTES`].
fn tile_rows(head_dim: usize) -> usize {
    let fit = (SHARED_BYTES / (2 * 4 * head_dim.max(1))).clamp(1, 32);
    1 << fit.ilog2()
}

mod kernels {
    use cubecl::prelude::*;

    use crate::ops::cube_shared::kernels::{
        AttentionSizes, CubeHead, HashDropout, KEYS, OUTPUT, QUERIES, VALUES,
    };

    /// The score of a padded key (`f32::MIN`, as the reference's `mask_fill`).
    const PADDED: f32 = -3.402_823_5e38f32;

    /// Stages rows `first .. first + len` of the cube's head in `part` of `source` (Q, K or V
    /// of `qkv`, or the output's gradient: `CubeHead::start`) into `tile` as f32, the cube's
    /// units reading consecutive elements.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn stage<F: Float>(
        source: &Tensor<F>,
        tile: &mut SharedMemory<f32>,
        at: &CubeHead,
        #[comptime] part: usize,
        first: usize,
        len: usize,
        #[comptime] head_dim: usize,
    ) {
        let mut e = UNIT_POS_X as usize;
        let step = CUBE_DIM_X as usize;
        while e < len * head_dim {
            let row = e / head_dim;
            let c = e % head_dim;
            tile[e] = f32::cast_from(source[at.start(part, first + row) + c]);
            e += step;
        }
    }

    /// Whether key `j` of batch row `b` is padded.
    #[cube]
    fn padded<M: Int>(padding: &Tensor<M>, b: usize, seq: usize, j: usize) -> bool {
        u32::cast_from(padding[b * seq + j]) != 0u32
    }

    /// The forward pass: a cube a (query tile, head, batch row), a unit a query row. Writes
    /// the output row in `F` and its log-sum-exp in f32.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_forward_kernel<F: Float, M: Int>(
        qkv: &Tensor<F>,
        padding: &Tensor<M>,
        context: &mut Tensor<F>,
        log_sum_exp: &mut Tensor<f32>,
        sizes: AttentionSizes,
        mask: HashDropout,
        #[comptime] head_dim: usize,
        #[comptime] tile: usize,
        #[define(F, M)] _dtypes: [StorageType; 2],
    ) {
        let at = CubeHead::of_cube(&sizes, head_dim);
        let seq = at.seq;
        let scale = sizes.scale;
        let lowest = f32::new(PADDED);
        let unit = UNIT_POS_X as usize;
        let i = CUBE_POS_X as usize * tile + unit;
        let active = i < seq;

        let mut q = Array::<f32>::new(head_dim);
        let mut acc = Array::<f32>::new(head_dim);
        #[unroll]
        for c in 0..head_dim {
            q[c] = 0.0f32;
            acc[c] = 0.0f32;
        }
        if active {
            #[unroll]
            for c in 0..head_dim {
                q[c] = f32::cast_from(qkv[at.query(i) + c]);
            }
        }
        let mut keys = SharedMemory::<f32>::new(tile * head_dim);
        let mut values = SharedMemory::<f32>::new(tile * head_dim);
        let mut key_padded = SharedMemory::<u32>::new(tile);
        let mut scores = Array::<f32>::new(tile);
        let mut max_score = lowest;
        let mut sum = 0.0f32;

        let mut first = 0usize;
        while first < seq {
            let len = min(tile, seq - first);
            stage::<F>(qkv, &mut keys, &at, KEYS, first, len, head_dim);
            stage::<F>(qkv, &mut values, &at, VALUES, first, len, head_dim);
            if unit < len {
                key_padded[unit] = u32::cast_from(padded::<M>(padding, at.b, seq, first + unit));
            }
            sync_cube();
            if active {
                let mut tile_max = lowest;
                for j in 0..len {
                    let mut dot = 0.0f32;
                    #[unroll]
                    for c in 0..head_dim {
                        dot += q[c] * keys[j * head_dim + c];
                    }
                    let s = select(key_padded[j] != 0u32, lowest, dot * scale);
                    scores[j] = s;
                    tile_max = max(tile_max, s);
                }
                let new_max = max(max_score, tile_max);
                let rescale = f32::exp(max_score - new_max);
                sum *= rescale;
                #[unroll]
                for c in 0..head_dim {
                    acc[c] *= rescale;
                }
                let element = at.element(i, first);
                for j in 0..len {
                    let p = f32::exp(scores[j] - new_max);
                    sum += p;
                    let kept = p * mask.factor(element + j);
                    #[unroll]
                    for c in 0..head_dim {
                        acc[c] += kept * values[j * head_dim + c];
                    }
                }
                max_score = new_max;
            }
            sync_cube();
            first += tile;
        }
        if active {
            let out = at.out(i);
            #[unroll]
            for c in 0..head_dim {
                context[out + c] = F::cast_from(acc[c] / sum);
            }
            log_sum_exp[at.stat(i)] = max_score + f32::ln(sum);
        }
    }

    /// The backward pass for the queries: a cube a (query tile, head, batch row), a unit a
    /// query row `i`. With `g` the output's gradient, `Δᵢ = gᵢ·oᵢ` (written to `delta` for
    /// the key pass) and, over the keys `j`, `pᵢⱼ = exp(sᵢⱼ − lseᵢ)`,
    /// `dsᵢⱼ = pᵢⱼ(mᵢⱼ·gᵢ·vⱼ − Δᵢ)` (0 on padded keys, `m` the dropout factor) and
    /// `dqᵢ = scale·Σⱼ dsᵢⱼ·kⱼ`, written into Q's part of `d_qkv`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_query_grad_kernel<F: Float, M: Int>(
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
        #[comptime] tile: usize,
        #[define(F, M)] _dtypes: [StorageType; 2],
    ) {
        let at = CubeHead::of_cube(&sizes, head_dim);
        let seq = at.seq;
        let scale = sizes.scale;
        let lowest = f32::new(PADDED);
        let unit = UNIT_POS_X as usize;
        let i = CUBE_POS_X as usize * tile + unit;
        let active = i < seq;

        let mut q = Array::<f32>::new(head_dim);
        let mut g = Array::<f32>::new(head_dim);
        let mut dq = Array::<f32>::new(head_dim);
        let mut d = 0.0f32;
        let mut lse = 0.0f32;
        #[unroll]
        for c in 0..head_dim {
            q[c] = 0.0f32;
            g[c] = 0.0f32;
            dq[c] = 0.0f32;
        }
        if active {
            let out = at.out(i);
            #[unroll]
            for c in 0..head_dim {
                q[c] = f32::cast_from(qkv[at.query(i) + c]);
                g[c] = f32::cast_from(grad[out + c]);
                d += g[c] * f32::cast_from(context[out + c]);
            }
            lse = log_sum_exp[at.stat(i)];
        }
        let mut keys = SharedMemory::<f32>::new(tile * head_dim);
        let mut values = SharedMemory::<f32>::new(tile * head_dim);
        let mut key_padded = SharedMemory::<u32>::new(tile);

        let mut first = 0usize;
        while first < seq {
            let len = min(tile, seq - first);
            stage::<F>(qkv, &mut keys, &at, KEYS, first, len, head_dim);
            stage::<F>(qkv, &mut values, &at, VALUES, first, len, head_dim);
            if unit < len {
                key_padded[unit] = u32::cast_from(padded::<M>(padding, at.b, seq, first + unit));
            }
            sync_cube();
            if active {
                let element = at.element(i, first);
                for j in 0..len {
                    let mut qk = 0.0f32;
                    let mut gv = 0.0f32;
                    #[unroll]
                    for c in 0..head_dim {
                        qk += q[c] * keys[j * head_dim + c];
                        gv += g[c] * values[j * head_dim + c];
                    }
                    let is_padded = key_padded[j] != 0u32;
                    let p = f32::exp(select(is_padded, lowest, qk * scale) - lse);
                    let kept = mask.factor(element + j);
                    let ds = select(is_padded, 0.0f32, p * (gv * kept - d));
                    #[unroll]
                    for c in 0..head_dim {
                        dq[c] += ds * keys[j * head_dim + c];
                    }
                }
            }
            sync_cube();
            first += tile;
        }
        if active {
            let token = at.query(i);
            #[unroll]
            for c in 0..head_dim {
                d_qkv[token + c] = F::cast_from(dq[c] * scale);
            }
            delta[at.stat(i)] = d;
        }
    }

    /// The backward pass for the keys and values: a cube a (key tile, head, batch row), a unit
    /// a key row `j`. Over the queries `i` (their rows, output gradients, log-sum-exps and
    /// `Δ` staged in shared memory): `dkⱼ = scale·Σᵢ dsᵢⱼ·qᵢ` and `dvⱼ = Σᵢ mᵢⱼ·pᵢⱼ·gᵢ`,
    /// written into K's and V's parts of `d_qkv`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_key_grad_kernel<F: Float, M: Int>(
        qkv: &Tensor<F>,
        padding: &Tensor<M>,
        grad: &Tensor<F>,
        log_sum_exp: &Tensor<f32>,
        delta: &Tensor<f32>,
        d_qkv: &mut Tensor<F>,
        sizes: AttentionSizes,
        mask: HashDropout,
        #[comptime] head_dim: usize,
        #[comptime] tile: usize,
        #[define(F, M)] _dtypes: [StorageType; 2],
    ) {
        let at = CubeHead::of_cube(&sizes, head_dim);
        let seq = at.seq;
        let scale = sizes.scale;
        let lowest = f32::new(PADDED);
        let unit = UNIT_POS_X as usize;
        let j = CUBE_POS_X as usize * tile + unit;
        let active = j < seq;

        let mut k = Array::<f32>::new(head_dim);
        let mut v = Array::<f32>::new(head_dim);
        let mut dk = Array::<f32>::new(head_dim);
        let mut dv = Array::<f32>::new(head_dim);
        #[unroll]
        for c in 0..head_dim {
            k[c] = 0.0f32;
            v[c] = 0.0f32;
            dk[c] = 0.0f32;
            dv[c] = 0.0f32;
        }
        let mut is_padded = false;
        if active {
            let token = at.query(j);
            #[unroll]
            for c in 0..head_dim {
                k[c] = f32::cast_from(qkv[token + at.hidden + c]);
                v[c] = f32::cast_from(qkv[token + 2 * at.hidden + c]);
            }
            is_padded = padded::<M>(padding, at.b, seq, j);
        }
        let mut queries = SharedMemory::<f32>::new(tile * head_dim);
        let mut grads = SharedMemory::<f32>::new(tile * head_dim);
        let mut lse = SharedMemory::<f32>::new(tile);
        let mut deltas = SharedMemory::<f32>::new(tile);

        let mut first = 0usize;
        while first < seq {
            let len = min(tile, seq - first);
            stage::<F>(qkv, &mut queries, &at, QUERIES, first, len, head_dim);
            stage::<F>(grad, &mut grads, &at, OUTPUT, first, len, head_dim);
            if unit < len {
                lse[unit] = log_sum_exp[at.stat(first + unit)];
                deltas[unit] = delta[at.stat(first + unit)];
            }
            sync_cube();
            if active {
                for r in 0..len {
                    let mut qk = 0.0f32;
                    let mut gv = 0.0f32;
                    #[unroll]
                    for c in 0..head_dim {
                        qk += queries[r * head_dim + c] * k[c];
                        gv += grads[r * head_dim + c] * v[c];
                    }
                    let p = f32::exp(select(is_padded, lowest, qk * scale) - lse[r]);
                    let element = at.element(first + r, j);
                    let kept = mask.factor(element);
                    let ds = select(is_padded, 0.0f32, p * (gv * kept - deltas[r]));
                    let pk = p * kept;
                    #[unroll]
                    for c in 0..head_dim {
                        dk[c] += ds * queries[r * head_dim + c];
                        dv[c] += pk * grads[r * head_dim + c];
                    }
                }
            }
            sync_cube();
            first += tile;
        }
        if active {
            let token = at.query(j);
            #[unroll]
            for c in 0..head_dim {
                d_qkv[token + at.hidden + c] = F::cast_from(dk[c] * scale);
                d_qkv[token + 2 * at.hidden + c] = F::cast_from(dv[c]);
            }
        }
    }
}

/// `[batch, seq, heads, head_dim]` of a `[batch, seq, 3·hidden]` projection.
fn dims<R: CubeRuntime>(qkv: &CubeTensor<R>, heads: usize) -> [usize; 4] {
    let shape = qkv.meta.shape();
    assert_eq!(shape.len(), 3, "attention: qkv must be [batch, seq, 3·hidden]");
    let (batch, seq, width) = (shape[0], shape[1], shape[2]);
    assert!(heads > 0 && width % (3 * heads) == 0, "attention: {width} is not 3 × {heads} heads × head size");
    [batch, seq, heads, width / 3 / heads]
}

/// The launch shape: a cube a (tile of rows, head, batch row), a unit a row.
fn launch_shape(batch: usize, seq: usize, heads: usize, tile: usize) -> (CubeCount, CubeDim) {
    let max = u16::MAX as usize;
    assert!(
        batch <= max && heads <= max,
        "attention: {batch} batch rows × {heads} heads exceed the launch grid"
    );
    let count = CubeCount::Static(seq.div_ceil(tile) as u32, heads as u32, batch as u32);
    (count, CubeDim::new_1d(tile as u32))
}

/// Whether the tile kernels (`cube_attention_tiles`) run for `qkv`, and with which `cmma`
/// fragment (0: products in plain code): what `ops::attention_products` asks for where those
/// kernels take the dtype and head size (and, for tensor cores, where the device has them),
/// else `None`: the row kernels here.
fn tile_kernels<R: CubeRuntime>(qkv: &CubeTensor<R>, head_dim: usize) -> Option<usize> {
    let fragment = match attention_products() {
        AttentionProducts::Rows => None,
        AttentionProducts::Tiles => Some(0),
        AttentionProducts::TensorCores => cube_attention_tiles::tensor_core_fragment(&qkv.client, qkv.dtype),
    }
    .filter(|_| cube_attention_tiles::accepts(qkv.dtype, head_dim));
    record_ran(match fragment {
        None => AttentionProducts::Rows,
        Some(0) => AttentionProducts::Tiles,
        Some(_) => AttentionProducts::TensorCores,
    });
    fragment
}

/// Checks the hash mask's 32-bit element index covers the `[batch, heads, seq, seq]`
/// probabilities.
fn check_probability_count(batch: usize, heads: usize, seq: usize) {
    let n = batch as u128 * heads as u128 * seq as u128 * seq as u128;
    assert!(n < 1u128 << 32, "attention: {n} probabilities, the dropout hash indexes fewer than 2³²");
}

/// `(context [batch, seq, hidden], log-sum-exps [batch, heads, seq] f32)`.
pub(crate) fn forward<R: CubeRuntime>(
    qkv: CubeTensor<R>,
    padding: CubeTensor<R>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let qkv = into_contiguous(qkv);
    let padding = into_contiguous(padding);
    let [batch, seq, heads, head_dim] = dims(&qkv, heads);
    assert!(accepts(qkv.dtype, head_dim), "attention kernel: {:?} qkv, heads of {head_dim}", qkv.dtype);
    check_probability_count(batch, heads, seq);
    if let Some(fragment) = tile_kernels(&qkv, head_dim) {
        let dims = [batch, seq, heads, head_dim];
        return cube_attention_tiles::forward(qkv, padding, dims, dropout, fragment);
    }
    let context = empty_on(&qkv, [batch, seq, heads * head_dim].into(), qkv.dtype);
    let log_sum_exp = empty_on(&qkv, [batch, heads, seq].into(), DType::F32);
    if batch * seq == 0 {
        return (context, log_sum_exp);
    }
    let tile = tile_rows(head_dim);
    let (count, dim) = launch_shape(batch, seq, heads, tile);
    let mask = hash_dropout_arg(dropout);
    let dtypes = [qkv.dtype.into(), padding.dtype.into()];
    attention_forward_kernel::launch::<R>(
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
        tile,
        dtypes,
    );
    (context, log_sum_exp)
}

/// The gradient of `qkv` `[batch, seq, 3·hidden]`: the query pass (which also writes each
/// row's `Δ = g·o`), then the key pass, each writing its parts of every row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R: CubeRuntime>(
    grad: CubeTensor<R>,
    qkv: CubeTensor<R>,
    context: CubeTensor<R>,
    log_sum_exp: CubeTensor<R>,
    padding: CubeTensor<R>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> CubeTensor<R> {
    let [grad, qkv, context, log_sum_exp, padding] =
        [grad, qkv, context, log_sum_exp, padding].map(into_contiguous);
    let [batch, seq, heads, head_dim] = dims(&qkv, heads);
    let dtype = qkv.dtype;
    assert!(accepts(dtype, head_dim), "attention kernel: {dtype:?} qkv, heads of {head_dim}");
    assert!(
        grad.dtype == dtype && context.dtype == dtype && log_sum_exp.dtype == DType::F32,
        "attention backward: the gradient and output in qkv's dtype ({dtype:?}), the log-sum-exps in f32"
    );
    check_probability_count(batch, heads, seq);
    if let Some(fragment) = tile_kernels(&qkv, head_dim) {
        let dims = [batch, seq, heads, head_dim];
        return cube_attention_tiles::backward(
            grad,
            qkv,
            context,
            log_sum_exp,
            padding,
            dims,
            dropout,
            fragment,
        );
    }
    let d_qkv = empty_on(&qkv, qkv.shape(), dtype);
    if batch * seq == 0 {
        return d_qkv;
    }
    let delta = empty_on(&qkv, [batch, heads, seq].into(), DType::F32);
    let tile = tile_rows(head_dim);
    let (count, dim) = launch_shape(batch, seq, heads, tile);
    let dtypes = [dtype.into(), padding.dtype.into()];
    attention_query_grad_kernel::launch::<R>(
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
        tile,
        dtypes,
    );
    attention_key_grad_kernel::launch::<R>(
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
        tile,
        dtypes,
    );
    d_qkv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_the_shared_memory_and_are_powers_of_two() {
        for head_dim in [1, 8, 32, 64, 80, 96, 128, 200, 256] {
            let tile = tile_rows(head_dim);
            assert!(tile.is_power_of_two() && (1..=32).contains(&tile), "{head_dim}: {tile}");
            assert!(2 * tile * head_dim * 4 <= SHARED_BYTES, "{head_dim}: {tile} rows overflow");
        }
        assert_eq!(tile_rows(64), 32);
        assert_eq!(tile_rows(128), 16);
        assert_eq!(tile_rows(80), 16);
    }

    #[test]
    fn the_kernels_take_float_heads_up_to_the_register_budget() {
        assert!(accepts(DType::F16, 64) && accepts(DType::BF16, 64) && accepts(DType::F32, MAX_HEAD_DIM));
        assert!(
            !accepts(DType::F32, MAX_HEAD_DIM + 1) && !accepts(DType::F32, 0) && !accepts(DType::I32, 64)
        );
    }
}
