//! The CubeCL fast path: [`FusedKernels`] and [`FusedOps`] for Burn's `CubeBackend`, generic
//! over the CubeCL runtime, so the same kernels run on CUDA and on wgpu (and Mesa's lavapipe
//! in CI). Kernels replace the [`decomposed`](super::decomposed) defaults one op at a time;
//! what has no kernel yet runs the decomposition, one autodiff node per op.
//!
//! | op | kernel |
//! |---|---|
//! | dropout (forward and backward) | `hash_dropout_kernel`: the mask hashed on the device |
//! | AdamW with device factors (f16 steps) | `cube_adam`: mask, moments and parameter in one pass, many tensors a launch |
//! | residual + dropout + LayerNorm | `layer_norm_forward_kernel`, `layer_norm_backward_kernel`: a row a cube, statistics in f32 (γ's and β's gradients: `layer_norm_affine_grad_kernel`, both column sums in one launch) |
//! | Σ x² of many tensors (the gradient norm) | `cube_norm`: a few launches for all, a partial sum a cube |
//! | attention in training (forward and backward) | `cube_attention`: flash-style, from the fused QKV projection, softmax, padding mask and dropout inside, one launch forward and two backward; a unit a row, or (`ops::AttentionProducts`) `cube_attention_tiles`: 16 × 16 tile products, on tensor cores where the device has them |

use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{DType, FloatDType, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::{CubeCount, CubeDim};

use self::kernels::{
    hash_dropout_kernel, layer_norm_affine_grad_kernel, layer_norm_backward_kernel, layer_norm_forward_kernel,
};

use super::adam::{AdamOperand, AdamUpdated};
use super::cube_attention;
use super::cube_shared::{contiguous_float, empty_on, hash_dropout_arg};
use super::is_float;
use super::{
    AttentionState, DropoutMask, FusedKernels, FusedOps, LayerNormGrads, LayerNormOutput, LayerNormState,
};

/// The CubeCL kernels (their own module: CubeCL's prelude has its own `Tensor`).
mod kernels {
    use cubecl::prelude::*;

    use crate::ops::cube_shared::kernels::{cube_sum, HashDropout};

    /// `output[i] = input[i] · mask.factor(i)`, the same bits as `DropoutMask::factor` on the
    /// host, the product in f32 before it is rounded to the tensor's dtype. Tensors are contiguous, of fewer than 2³² elements (the hash's high
    /// index word is then 0).
    #[cube(launch)]
    pub(super) fn hash_dropout_kernel<F: Float>(
        input: &Tensor<F>,
        output: &mut Tensor<F>,
        mask: HashDropout,
        #[define(F)] _dtype: StorageType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= output.len() {
            terminate!();
        }
        // A product, as the reference: a dropped ±∞ or NaN gives NaN, not 0, so an overflow
        // the step must see is not hidden by the mask.
        output[i] = F::cast_from(f32::cast_from(input[i]) * mask.factor(i));
    }

    /// The row this cube normalises (cubes laid out on a 2-D grid: more rows than one grid
    /// dimension holds).
    #[cube]
    fn row_index() -> usize {
        (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
    }

    /// Element `index` of `residual + dropout(branch)` in f32 (`residual` alone without a
    /// branch).
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn row_value<F: Float, G: Float>(
        residual: &Tensor<F>,
        branch: &Tensor<G>,
        index: usize,
        mask: &HashDropout,
        #[comptime] with_branch: bool,
    ) -> f32 {
        let mut x = f32::cast_from(residual[index]);
        if with_branch {
            x += f32::cast_from(branch[index]) * mask.factor(index);
        }
        x
    }

    /// One row of `LayerNorm(residual + dropout(branch))·γ + β` per cube: the row's sum, then
    /// its centred sum of squares (two passes, as the reference's variance), then the output;
    /// statistics in f32. Writes `x̂` and `1/σ` when `keep` is 1, and the output's cast into
    /// `copy` (a product's input) when `with_copy` is 1: runtime flags (uniform over the
    /// launch, so the branches cost nothing), so that training and inference, with and
    /// without a copy, share one compiled kernel. The cube's size is `block`, a power of two.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_norm_forward_kernel<F: Float, G: Float, H: Float>(
        residual: &Tensor<F>,
        branch: &Tensor<G>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        copy: &mut Tensor<H>,
        x_hat: &mut Tensor<F>,
        inv_std: &mut Tensor<F>,
        rows: u32,
        width: u32,
        epsilon: f32,
        mask: HashDropout,
        keep: u32,
        with_copy: u32,
        #[comptime] with_branch: bool,
        #[comptime] block: u32,
        #[define(F, G, H)] _dtypes: [StorageType; 3],
    ) {
        let row = row_index();
        if row >= rows as usize {
            terminate!();
        }
        let w = width as usize;
        let base = row * w;
        let unit = UNIT_POS_X as usize;
        let step = CUBE_DIM_X as usize;
        let mut shared = SharedMemory::<f32>::new(block as usize);

        let mut sum = 0.0f32;
        let mut j = unit;
        while j < w {
            let x = row_value::<F, G>(residual, branch, base + j, &mask, with_branch);
            sum += x;
            j += step;
        }
        let mean = cube_sum(sum, &mut shared) / f32::cast_from(width);

        let mut squares = 0.0f32;
        let mut j = unit;
        while j < w {
            let x = row_value::<F, G>(residual, branch, base + j, &mask, with_branch);
            squares += (x - mean) * (x - mean);
            j += step;
        }
        let var = cube_sum(squares, &mut shared) / f32::cast_from(width);
        let std = f32::sqrt(var + epsilon);

        let mut j = unit;
        while j < w {
            let x = row_value::<F, G>(residual, branch, base + j, &mask, with_branch);
            let normed = (x - mean) / std;
            let y = F::cast_from(normed * f32::cast_from(gamma[j]) + f32::cast_from(beta[j]));
            output[base + j] = y;
            if with_copy == 1 {
                copy[base + j] = H::cast_from(y);
            }
            if keep == 1 {
                x_hat[base + j] = F::cast_from(normed);
            }
            j += step;
        }
        if keep == 1 && unit == 0 {
            inv_std[row] = F::cast_from(1.0f32 / std);
        }
    }

    /// One row of LayerNorm's backward per cube: with `ĝ = grad·γ`, `dx = (ĝ − mean(ĝ) −
    /// x̂·mean(ĝ⊙x̂))/σ` into `d_residual`, and `dx` through the branch's dropout into
    /// `d_branch` when `with_branch`; row means in f32.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_norm_backward_kernel<F: Float, G: Float>(
        grad: &Tensor<F>,
        x_hat: &Tensor<F>,
        inv_std: &Tensor<F>,
        gamma: &Tensor<F>,
        d_residual: &mut Tensor<F>,
        d_branch: &mut Tensor<G>,
        rows: u32,
        width: u32,
        mask: HashDropout,
        #[comptime] with_branch: bool,
        #[comptime] block: u32,
        #[define(F, G)] _dtypes: [StorageType; 2],
    ) {
        let row = row_index();
        if row >= rows as usize {
            terminate!();
        }
        let w = width as usize;
        let base = row * w;
        let unit = UNIT_POS_X as usize;
        let step = CUBE_DIM_X as usize;
        let mut shared = SharedMemory::<f32>::new(block as usize);

        let mut sum_g = 0.0f32;
        let mut sum_gx = 0.0f32;
        let mut j = unit;
        while j < w {
            let g = f32::cast_from(grad[base + j]) * f32::cast_from(gamma[j]);
            sum_g += g;
            sum_gx += g * f32::cast_from(x_hat[base + j]);
            j += step;
        }
        let mean_g = cube_sum(sum_g, &mut shared) / f32::cast_from(width);
        let mean_gx = cube_sum(sum_gx, &mut shared) / f32::cast_from(width);
        let inv = f32::cast_from(inv_std[row]);

        let mut j = unit;
        while j < w {
            let g = f32::cast_from(grad[base + j]) * f32::cast_from(gamma[j]);
            let dx = (g - mean_g - f32::cast_from(x_hat[base + j]) * mean_gx) * inv;
            d_residual[base + j] = F::cast_from(dx);
            if with_branch {
                d_branch[base + j] = G::cast_from(dx * mask.factor(base + j));
            }
            j += step;
        }
    }
    /// γ's and β's gradients of LayerNorm, `dγ = Σ_rows grad ⊙ x̂` and `dβ = Σ_rows grad`, in
    /// one launch: a cube a `columns`-wide block of columns, its `lanes` rows of units each
    /// summing every `lanes`-th row in f32, the lanes then summed in shared memory.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_norm_affine_grad_kernel<F: Float>(
        grad: &Tensor<F>,
        x_hat: &Tensor<F>,
        d_gamma: &mut Tensor<F>,
        d_beta: &mut Tensor<F>,
        rows: u32,
        width: u32,
        #[comptime] columns: u32,
        #[comptime] lanes: u32,
        #[define(F)] _dtype: StorageType,
    ) {
        let column = UNIT_POS_X as usize;
        let lane = UNIT_POS_Y as usize;
        let c = CUBE_POS_X as usize * columns as usize + column;
        let w = width as usize;
        let mut sum_g = 0.0f32;
        let mut sum_gx = 0.0f32;
        if c < w {
            let mut r = lane;
            while r < rows as usize {
                let g = f32::cast_from(grad[r * w + c]);
                sum_g += g;
                sum_gx += g * f32::cast_from(x_hat[r * w + c]);
                r += lanes as usize;
            }
        }
        let mut shared_g = SharedMemory::<f32>::new((columns * lanes) as usize);
        let mut shared_gx = SharedMemory::<f32>::new((columns * lanes) as usize);
        shared_g[lane * columns as usize + column] = sum_g;
        shared_gx[lane * columns as usize + column] = sum_gx;
        sync_cube();
        if lane == 0 && c < w {
            let mut total_g = 0.0f32;
            let mut total_gx = 0.0f32;
            #[unroll]
            for l in 0..lanes {
                total_g += shared_g[l as usize * columns as usize + column];
                total_gx += shared_gx[l as usize * columns as usize + column];
            }
            d_gamma[c] = F::cast_from(total_gx);
            d_beta[c] = F::cast_from(total_g);
        }
    }
}

/// A contiguous float tensor of fewer than 2³² elements (the hash's index is 32 bits).
fn prepared<R: CubeRuntime>(t: CubeTensor<R>, what: &str) -> CubeTensor<R> {
    let t = contiguous_float(t, what);
    let n = t.meta.num_elements();
    assert!(n < (1usize << 32), "{what}: {n} elements, the hash mask indexes fewer than 2³²");
    t
}

/// `x · mask` on the device, in `x`'s dtype.
pub(crate) fn hash_dropout<R: CubeRuntime>(x: CubeTensor<R>, mask: DropoutMask) -> CubeTensor<R> {
    let x = prepared(x, "dropout");
    let n = x.meta.num_elements();
    let output = empty_on(&x, x.shape(), x.dtype);
    if n == 0 {
        return output;
    }
    let mask = hash_dropout_arg(Some(mask));
    let cube_dim = CubeDim::new(&x.client, n);
    let cube_count = calculate_cube_count_elemwise(&x.client, n, cube_dim);
    let dtype = x.dtype;
    hash_dropout_kernel::launch::<R>(
        &output.client,
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        mask,
        dtype.into(),
    );
    output
}

/// The launch shape of a row kernel: one cube of `block` units (a power of two, 32 to 256,
/// about the row's width) per row, rows on a 2-D grid.
fn row_launch(rows: usize, width: usize) -> (CubeCount, CubeDim, u32) {
    let block = width.next_power_of_two().clamp(32, 256) as u32;
    let max = u16::MAX as usize;
    let count = CubeCount::Static(rows.min(max) as u32, rows.div_ceil(max).max(1) as u32, 1);
    (count, CubeDim::new_1d(block), block)
}

/// `[rows, width]` of a LayerNorm operand.
fn rows_width<R: CubeRuntime>(t: &CubeTensor<R>) -> (usize, usize) {
    let dims = t.meta.shape();
    assert_eq!(dims.len(), 2, "residual_layer_norm: [rows, width] tensors");
    (dims[0], dims[1])
}

/// The forward kernel of `LayerNorm(residual + dropout(branch))·γ + β`: the output, its
/// cast to `copy` when asked for, and, when `keep`, `(x̂, 1/σ)`.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn layer_norm_forward<R: CubeRuntime>(
    residual: CubeTensor<R>,
    branch: Option<CubeTensor<R>>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
    copy: Option<FloatDType>,
    keep: bool,
) -> (CubeTensor<R>, Option<CubeTensor<R>>, Option<(CubeTensor<R>, CubeTensor<R>)>) {
    let residual = prepared(residual, "residual_layer_norm");
    let (rows, width) = rows_width(&residual);
    let dtype = residual.dtype;
    let same = |t: CubeTensor<R>| {
        let t = prepared(t, "residual_layer_norm");
        assert_eq!(t.dtype, dtype, "residual_layer_norm: every operand in the residual's dtype");
        t
    };
    let (gamma, beta) = (same(gamma), same(beta));
    let with_branch = branch.is_some();
    // The branch may be in a product's dtype (read as f32 in the kernel).
    let branch = branch.map(|b| prepared(b, "residual_layer_norm"));
    let branch_dtype = branch.as_ref().map_or(dtype, |b| b.dtype);
    // Absent operands are 1-element placeholders the kernel never touches (`with_branch` and
    // `keep` say which).
    let placeholder = || empty_on(&residual, [1].into(), residual.dtype);
    let branch = branch.unwrap_or_else(placeholder);
    let output = empty_on(&residual, residual.shape(), residual.dtype);
    // Without a copy, its placeholder takes the branch's dtype: the kernel compiled for a
    // product's branch (f32 residual, f16 branch, f16 copy) serves the calls without a copy.
    let copy_dtype = copy.map_or(branch_dtype, DType::from);
    let copied = match copy {
        Some(_) => empty_on(&residual, residual.shape(), copy_dtype),
        None => empty_on(&residual, [1].into(), copy_dtype),
    };
    let (x_hat, inv_std) = match keep {
        true => (
            empty_on(&residual, residual.shape(), residual.dtype),
            empty_on(&residual, [rows].into(), residual.dtype),
        ),
        false => (placeholder(), placeholder()),
    };
    if rows > 0 {
        let mask = hash_dropout_arg(if with_branch { dropout } else { None });
        let (count, dim, block) = row_launch(rows, width);
        layer_norm_forward_kernel::launch::<R>(
            &output.client,
            count,
            dim,
            residual.into_tensor_arg(),
            branch.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            copied.clone().into_tensor_arg(),
            x_hat.clone().into_tensor_arg(),
            inv_std.clone().into_tensor_arg(),
            rows as u32,
            width as u32,
            epsilon as f32,
            mask,
            keep as u32,
            copy.is_some() as u32,
            with_branch,
            block,
            [dtype.into(), branch_dtype.into(), copy_dtype.into()],
        );
    }
    (output, copy.map(|_| copied), keep.then_some((x_hat, inv_std)))
}

/// The backward kernel: `(d residual, d branch in `branch`'s dtype when asked for)`.
fn layer_norm_backward<R: CubeRuntime>(
    grad: CubeTensor<R>,
    x_hat: CubeTensor<R>,
    inv_std: CubeTensor<R>,
    gamma: CubeTensor<R>,
    dropout: Option<DropoutMask>,
    branch: Option<DType>,
) -> (CubeTensor<R>, Option<CubeTensor<R>>) {
    let with_branch = branch.is_some();
    let grad = prepared(grad, "residual_layer_norm backward");
    let (rows, width) = rows_width(&grad);
    let dtype = grad.dtype;
    let [x_hat, inv_std, gamma] = [x_hat, inv_std, gamma].map(|t| {
        let t = prepared(t, "residual_layer_norm backward");
        assert_eq!(t.dtype, dtype, "residual_layer_norm backward: every operand in the gradient's dtype");
        t
    });
    let d_residual = empty_on(&grad, grad.shape(), grad.dtype);
    let branch_dtype = branch.unwrap_or(dtype);
    assert!(is_float(branch_dtype), "residual_layer_norm backward: a float branch (got {branch_dtype:?})");
    let d_branch = match with_branch {
        true => empty_on(&grad, grad.shape(), branch_dtype),
        false => empty_on(&grad, [1].into(), grad.dtype),
    };
    if rows > 0 {
        let mask = hash_dropout_arg(if with_branch { dropout } else { None });
        let (count, dim, block) = row_launch(rows, width);
        layer_norm_backward_kernel::launch::<R>(
            &d_residual.client,
            count,
            dim,
            grad.into_tensor_arg(),
            x_hat.into_tensor_arg(),
            inv_std.into_tensor_arg(),
            gamma.into_tensor_arg(),
            d_residual.clone().into_tensor_arg(),
            d_branch.clone().into_tensor_arg(),
            rows as u32,
            width as u32,
            mask,
            with_branch,
            block,
            [dtype.into(), branch_dtype.into()],
        );
    }
    (d_residual, with_branch.then_some(d_branch))
}

/// `(dγ, dβ)` of LayerNorm from the rows' gradient and `x̂`: one launch, 32 columns × 8 lanes
/// of rows a cube.
fn layer_norm_affine_grad<R: CubeRuntime>(
    grad: CubeTensor<R>,
    x_hat: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    const COLUMNS: u32 = 32;
    const LANES: u32 = 8;
    let [grad, x_hat] = [grad, x_hat].map(|t| prepared(t, "residual_layer_norm backward"));
    let (rows, width) = rows_width(&grad);
    let dtype = grad.dtype;
    let d_gamma = empty_on(&grad, [width].into(), grad.dtype);
    let d_beta = empty_on(&grad, [width].into(), grad.dtype);
    if width > 0 {
        layer_norm_affine_grad_kernel::launch::<R>(
            &d_gamma.client,
            CubeCount::Static(width.div_ceil(COLUMNS as usize) as u32, 1, 1),
            CubeDim::new_2d(COLUMNS, LANES),
            grad.into_tensor_arg(),
            x_hat.into_tensor_arg(),
            d_gamma.clone().into_tensor_arg(),
            d_beta.clone().into_tensor_arg(),
            rows as u32,
            width as u32,
            COLUMNS,
            LANES,
            dtype.into(),
        );
    }
    (d_gamma, d_beta)
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> FusedKernels
    for CubeBackend<R, F, I, BT>
{
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
        let (output, copy, state) =
            layer_norm_forward(residual, branch, gamma, beta, epsilon, dropout, copy, keep);
        LayerNormOutput {
            output,
            copy,
            state: state.map(|(x_hat, inv_std)| LayerNormState { x_hat, inv_std }),
        }
    }

    fn layer_norm_backward(
        grad: FloatTensor<Self>,
        state: LayerNormState<Self>,
        gamma: FloatTensor<Self>,
        dropout: Option<DropoutMask>,
        branch: Option<DType>,
    ) -> LayerNormGrads<Self> {
        let x_hat = state.x_hat.clone();
        let (residual, branch) =
            layer_norm_backward(grad.clone(), state.x_hat, state.inv_std, gamma, dropout, branch);
        let (gamma, beta) = layer_norm_affine_grad(grad, x_hat);
        LayerNormGrads { residual, branch, gamma, beta }
    }

    fn layer_norm_kernel_accepts(residual: DType, branch: DType) -> bool {
        is_float(residual) && is_float(branch)
    }

    fn dropout_kernel_accepts(dtype: DType) -> bool {
        is_float(dtype)
    }

    fn dropout_apply(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        hash_dropout(x, mask)
    }

    fn attention_kernel_accepts(dtype: DType, head_dim: usize) -> bool {
        cube_attention::accepts(dtype, head_dim)
    }

    fn attention_forward(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
        dropout: Option<DropoutMask>,
        keep: bool,
    ) -> (FloatTensor<Self>, Option<AttentionState<Self>>) {
        let head_dim = qkv.meta.shape()[2] / 3 / heads.max(1);
        if !cube_attention::accepts(qkv.dtype, head_dim) {
            return super::decomposed::attention_forward::<Self>(qkv, key_padding, heads, dropout, keep);
        }
        let (context, log_sum_exp) = cube_attention::forward(qkv, key_padding, heads, dropout);
        let state = keep.then(|| AttentionState::RowStats { context: context.clone(), log_sum_exp });
        (context, state)
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
                cube_attention::backward(grad, qkv, context, log_sum_exp, key_padding, heads, dropout)
            }
            probs => {
                super::decomposed::attention_backward::<Self>(grad, qkv, probs, key_padding, heads, dropout)
            }
        }
    }
}

/// `FusedOps::fused_attention` of the CubeCL backends (plain and fused) outside autodiff: the
/// training kernel's forward without its state ([`FusedKernels::attention_forward`]: the
/// CubeCL attention kernel, or the decomposition for heads it does not take). One launch and
/// the kernels training already compiled, where Burn's attention op without autotuning is its
/// unfused fallback (two batched matmuls, the mask, a softmax: kernels of their own).
pub(crate) fn inference_attention<B: FusedKernels>(
    qkv: FloatTensor<B>,
    key_padding: BoolTensor<B>,
    heads: usize,
    dropout: Option<DropoutMask>,
) -> FloatTensor<B> {
    B::attention_forward(qkv, key_padding, heads, dropout, false).0
}

/// `FusedOps::fused_residual_layer_norm` of the CubeCL backends: the LayerNorm kernel when γ
/// and β are in the residual's dtype (the branch may be in another), else the reference.
pub(crate) fn inference_layer_norm<B: FusedKernels>(
    residual: FloatTensor<B>,
    branch: Option<FloatTensor<B>>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
    copy: Option<FloatDType>,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let dtype = residual.dtype();
    let same = gamma.dtype() == dtype && beta.dtype() == dtype;
    if same {
        let normed = B::layer_norm_forward(residual, branch, gamma, beta, epsilon, dropout, copy, false);
        (normed.output, normed.copy)
    } else {
        super::reference_layer_norm_copied::<B>(residual, branch, gamma, beta, epsilon, dropout, copy)
    }
}

/// Inference on a CubeCL backend (f32, f16, bf16): the attention, LayerNorm and dropout kernels,
/// the decomposition for the rest.
impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> FusedOps for CubeBackend<R, F, I, BT> {
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

    fn fused_dropout(x: FloatTensor<Self>, mask: DropoutMask) -> FloatTensor<Self> {
        hash_dropout(x, mask)
    }

    fn adam_is_multi_tensor() -> bool {
        true
    }

    fn fused_adam_many(
        operands: Vec<AdamOperand<Self>>,
        factors: FloatTensor<Self>,
        epsilon: f64,
    ) -> Vec<AdamUpdated<Self>> {
        super::cube_adam::adam_update_many(operands, factors, epsilon)
    }

    fn fused_sum_squares_many(tensors: Vec<FloatTensor<Self>>) -> Option<FloatTensor<Self>> {
        super::cube_norm::sum_squares_many::<R, F, I, BT>(tensors)
    }

    fn fused_finite_flag(x: FloatTensor<Self>) -> FloatTensor<Self> {
        super::cube_norm::finite_flag(x)
    }
}
