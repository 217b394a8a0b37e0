//! The LayerNorm op's types on a backend's primitives: what the forward kernel returns and the
//! backward reads, and the reference forward a fast path falls back to.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::FloatDType;

use super::{float, reference, DropoutMask};

/// What [`FusedKernels::layer_norm_forward`] returns.
#[derive(Debug, Clone)]
pub struct LayerNormOutput<B: Backend> {
    /// The normalised rows, in the residual's dtype.
    pub output: FloatTensor<B>,
    /// The output in the dtype asked for: bit for bit the cast of `output`.
    pub copy: Option<FloatTensor<B>>,
    /// What the backward pass needs, when asked for.
    pub state: Option<LayerNormState<B>>,
}

/// `output` cast to `copy`: the copy of a LayerNorm's output where no kernel writes it.
pub(crate) fn cast_copy<B: Backend>(
    output: &FloatTensor<B>,
    copy: Option<FloatDType>,
) -> Option<FloatTensor<B>> {
    copy.map(|dtype| B::float_cast(output.clone(), dtype))
}

/// The reference LayerNorm on a backend's primitives and, when asked for, its output's cast:
/// [`FusedOps::fused_residual_layer_norm`]'s default, and what a backend's fast path falls
/// back to for operands its kernel does not take.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference_layer_norm_copied<B: Backend>(
    residual: FloatTensor<B>,
    branch: Option<FloatTensor<B>>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    dropout: Option<DropoutMask>,
    copy: Option<FloatDType>,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let output = reference::residual_layer_norm(
        float::<B, 2>(residual),
        branch.map(float),
        float(gamma),
        float(beta),
        epsilon,
        dropout,
    )
    .into_primitive()
    .tensor();
    let copy = cast_copy::<B>(&output, copy);
    (output, copy)
}

/// What [`FusedKernels::layer_norm_backward`] needs from the forward pass.
#[derive(Debug, Clone)]
pub struct LayerNormState<B: Backend> {
    /// The normalised rows `(x − μ)/σ`, `[rows, width]`.
    pub x_hat: FloatTensor<B>,
    /// `1/σ` per row, `[rows]`.
    pub inv_std: FloatTensor<B>,
}

/// Gradients of `LayerNorm(residual + dropout(branch))`.
#[derive(Debug, Clone)]
pub struct LayerNormGrads<B: Backend> {
    /// Of the residual input.
    pub residual: FloatTensor<B>,
    /// Of the branch (when asked for).
    pub branch: Option<FloatTensor<B>>,
    /// Of γ.
    pub gamma: FloatTensor<B>,
    /// Of β.
    pub beta: FloatTensor<B>,
}
