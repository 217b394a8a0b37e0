//! `y = LayerNorm(residual + dropout(branch))` in one pass over the rows, and its backward pass.
//!
//! The backward pass needs only the normalised rows `x̂` and `1/σ` per row (kept by the
//! forward pass) and regenerates the branch's dropout mask from its seed.

use rayon::prelude::*;

use super::{dot, multiversion, sum, Mask};

/// Rows per parallel task. γ/β gradients are summed per block of this many rows and the block
/// sums added in block order, so the result does not depend on the number of threads.
const ROWS: usize = 32;

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn forward_rows(
        residual: &[f32],
        branch: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
        x_hat: &mut [f32],
        inv_std: &mut [f32],
        eps: f32,
        mask: Option<Mask>,
        first: u64,
    ) {
        let width = gamma.len();
        for (r, y) in y.chunks_exact_mut(width).enumerate() {
            let res = &residual[r * width..(r + 1) * width];
            // y holds the sum, then the centred sum, then the output.
            if branch.is_empty() {
                y.copy_from_slice(res);
            } else {
                let br = &branch[r * width..(r + 1) * width];
                match mask {
                    Some(mask) => {
                        let row_first = first + (r * width) as u64;
                        for (j, ((y, &a), &b)) in y.iter_mut().zip(res).zip(br).enumerate() {
                            *y = a + b * mask.factor(row_first + j as u64);
                        }
                    }
                    None => {
                        for ((y, &a), &b) in y.iter_mut().zip(res).zip(br) {
                            *y = a + b;
                        }
                    }
                }
            }
            let mean = sum(y) / width as f32;
            for v in y.iter_mut() {
                *v -= mean;
            }
            let var = dot(y, y) / width as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            if !inv_std.is_empty() {
                inv_std[r] = rstd;
                let xh = &mut x_hat[r * width..(r + 1) * width];
                for (xh, &c) in xh.iter_mut().zip(y.iter()) {
                    *xh = c * rstd;
                }
            }
            for ((v, &g), &b) in y.iter_mut().zip(gamma).zip(beta) {
                *v = *v * rstd * g + b;
            }
        }
    }
}

/// What the backward pass needs from the forward pass.
pub(crate) struct Saved {
    /// `(x − μ)/σ`, `[rows, width]`.
    pub(crate) x_hat: Vec<f32>,
    /// `1/σ` per row.
    pub(crate) inv_std: Vec<f32>,
}

/// `LayerNorm(residual + dropout(branch)) · γ + β` over rows of `gamma.len()`; `branch` may be
/// empty (plain LayerNorm). Keeps [`Saved`] when `keep`.
pub(crate) fn forward(
    residual: &[f32],
    branch: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    dropout: Option<Mask>,
    keep: bool,
) -> (Vec<f32>, Option<Saved>) {
    let width = gamma.len();
    let rows = residual.len() / width;
    assert_eq!(residual.len(), rows * width, "layer norm: input is not [rows, {width}]");
    assert!(
        branch.is_empty() || branch.len() == residual.len(),
        "layer norm: branch shape differs from the input"
    );
    assert_eq!(beta.len(), width, "layer norm: beta is not [{width}]");
    let mut y = vec![0.0f32; residual.len()];
    let mut saved = keep.then(|| Saved { x_hat: vec![0.0; residual.len()], inv_std: vec![0.0; rows] });
    let block = ROWS * width;
    match saved.as_mut() {
        Some(s) => y
            .par_chunks_mut(block)
            .zip(s.x_hat.par_chunks_mut(block).zip(s.inv_std.par_chunks_mut(ROWS)))
            .enumerate()
            .for_each(|(c, (y, (xh, rs)))| {
                let at = c * block;
                let br = if branch.is_empty() { branch } else { &branch[at..at + y.len()] };
                forward_rows(
                    &residual[at..at + y.len()],
                    br,
                    gamma,
                    beta,
                    y,
                    xh,
                    rs,
                    eps,
                    dropout,
                    at as u64,
                );
            }),
        None => y.par_chunks_mut(block).enumerate().for_each(|(c, y)| {
            let at = c * block;
            let br = if branch.is_empty() { branch } else { &branch[at..at + y.len()] };
            forward_rows(
                &residual[at..at + y.len()],
                br,
                gamma,
                beta,
                y,
                &mut [],
                &mut [],
                eps,
                dropout,
                at as u64,
            );
        }),
    }
    (y, saved)
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn backward_rows(
        dy: &[f32],
        x_hat: &[f32],
        inv_std: &[f32],
        gamma: &[f32],
        d_residual: &mut [f32],
        d_branch: &mut [f32],
        d_gamma: &mut [f32],
        d_beta: &mut [f32],
        mask: Option<Mask>,
        first: u64,
    ) {
        let width = gamma.len();
        for (r, ds) in d_residual.chunks_exact_mut(width).enumerate() {
            let dy = &dy[r * width..(r + 1) * width];
            let xh = &x_hat[r * width..(r + 1) * width];
            for (((dg, db), &g), &x) in d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(dy).zip(xh) {
                *dg += g * x;
                *db += g;
            }
            // ds holds γ·dy, then the input gradient.
            for ((v, &g), &gm) in ds.iter_mut().zip(dy).zip(gamma) {
                *v = g * gm;
            }
            let mean_g = sum(ds) / width as f32;
            let mean_gx = dot(ds, xh) / width as f32;
            let rstd = inv_std[r];
            for (v, &x) in ds.iter_mut().zip(xh) {
                *v = rstd * (*v - mean_g - x * mean_gx);
            }
            if !d_branch.is_empty() {
                let out = &mut d_branch[r * width..(r + 1) * width];
                match mask {
                    Some(mask) => {
                        let row_first = first + (r * width) as u64;
                        for (j, (o, &v)) in out.iter_mut().zip(ds.iter()).enumerate() {
                            *o = v * mask.factor(row_first + j as u64);
                        }
                    }
                    None => out.copy_from_slice(ds),
                }
            }
        }
    }
}

/// Gradients of [`forward`].
pub(crate) struct Grads {
    pub(crate) residual: Vec<f32>,
    pub(crate) branch: Option<Vec<f32>>,
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
}

/// Backward pass of [`forward`] for the output gradient `dy`; `with_branch` asks for the
/// branch's gradient (through the same dropout mask).
pub(crate) fn backward(
    dy: &[f32],
    x_hat: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    dropout: Option<Mask>,
    with_branch: bool,
) -> Grads {
    let width = gamma.len();
    let block = ROWS * width;
    let mut d_residual = vec![0.0f32; dy.len()];
    let mut d_branch = if with_branch { vec![0.0f32; dy.len()] } else { Vec::new() };
    let blocks = dy.len().div_ceil(block);
    let mut partials = vec![0.0f32; blocks * 2 * width];
    let run = |c: usize, ds: &mut [f32], dbr: &mut [f32], part: &mut [f32]| {
        let at = c * block;
        let n = ds.len();
        let (pg, pb) = part.split_at_mut(width);
        backward_rows(
            &dy[at..at + n],
            &x_hat[at..at + n],
            &inv_std[at / width..(at + n) / width],
            gamma,
            ds,
            dbr,
            pg,
            pb,
            dropout,
            at as u64,
        );
    };
    if with_branch {
        d_residual
            .par_chunks_mut(block)
            .zip(d_branch.par_chunks_mut(block))
            .zip(partials.par_chunks_mut(2 * width))
            .enumerate()
            .for_each(|(c, ((ds, dbr), part))| run(c, ds, dbr, part));
    } else {
        d_residual
            .par_chunks_mut(block)
            .zip(partials.par_chunks_mut(2 * width))
            .enumerate()
            .for_each(|(c, (ds, part))| run(c, ds, &mut [], part));
    }
    let mut d_gamma = vec![0.0f32; width];
    let mut d_beta = vec![0.0f32; width];
    for part in partials.chunks_exact(2 * width) {
        for j in 0..width {
            d_gamma[j] += part[j];
            d_beta[j] += part[width + j];
        }
    }
    Grads { residual: d_residual, branch: with_branch.then_some(d_branch), gamma: d_gamma, beta: d_beta }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_row() {
        let x: Vec<f32> = (0..3 * 40).map(|i| ((i * 13 % 17) as f32) * 0.3 - 2.0).collect();
        let gamma = vec![1.0; 40];
        let beta = vec![0.0; 40];
        let (y, saved) = forward(&x, &[], &gamma, &beta, 1e-12, None, true);
        for row in y.chunks(40) {
            let mean: f32 = row.iter().sum::<f32>() / 40.0;
            let var: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 40.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "mean {mean} var {var}");
        }
        assert_eq!(saved.unwrap().x_hat, y);
    }
}
