//! `y = act(x·W + b)` and its backward pass, on the `gemm` crate with strides (no transposed
//! copies) and the bias folded into the product's destination.

use rayon::prelude::*;

use super::{column_sums, gelu_backward, gelu_inplace, CHUNK};

/// Below this many multiply-adds a product runs on one thread (burn-flex's threshold).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// A strided read-only matrix operand: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub(crate) ptr: *const f32,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

impl View {
    /// A row-major `[_, cols]` matrix.
    pub(crate) fn rows(data: &[f32], cols: usize) -> View {
        View { ptr: data.as_ptr(), rs: cols as isize, cs: 1 }
    }

    /// The transpose of a row-major `[_, cols]` matrix.
    pub(crate) fn transposed(data: &[f32], cols: usize) -> View {
        View { ptr: data.as_ptr(), rs: 1, cs: cols as isize }
    }
}

/// `dst[m, n] = (accumulate ? dst : 0) + scale · lhs[m, k] · rhs[k, n]`, `dst` row-major with
/// row stride `dst_rs`.
///
/// # Safety
/// Every element the three views address must be in bounds of live allocations, and `dst`
/// must not overlap `lhs` or `rhs` nor be written by another thread meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    scale: f32,
    parallel: bool,
) {
    let threads = if parallel && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            scale,
            false,
            false,
            false,
            threads,
        )
    }
}

/// The activation fused into a linear layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    None,
    Gelu,
}

/// `x [rows, d_in] · w [d_in, d_out] + b`, then `act`. Returns the output and, when
/// `keep_pre` and `act` is not the identity, the pre-activation (for the backward pass).
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    d_in: usize,
    d_out: usize,
    act: Act,
    keep_pre: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let rows = x.len() / d_in;
    assert_eq!(x.len(), rows * d_in, "linear: input is not [rows, {d_in}]");
    assert_eq!(w.len(), d_in * d_out, "linear: weight is not [{d_in}, {d_out}]");
    assert_eq!(b.len(), d_out, "linear: bias is not [{d_out}]");
    let mut y = vec![0.0f32; rows * d_out];
    // The bias, copied into every row, becomes the GEMM's accumulator: no extra pass over y.
    let rows_per_task = (CHUNK / d_out).max(1);
    y.par_chunks_mut(rows_per_task * d_out).for_each(|block| {
        for row in block.chunks_exact_mut(d_out) {
            row.copy_from_slice(b);
        }
    });
    // SAFETY: x is [rows, d_in], w is [d_in, d_out], y is [rows, d_out]; y is fresh.
    unsafe {
        gemm(
            rows,
            d_out,
            d_in,
            y.as_mut_ptr(),
            d_out,
            true,
            View::rows(x, d_in),
            View::rows(w, d_out),
            1.0,
            true,
        )
    };
    match act {
        Act::None => (y, None),
        Act::Gelu if keep_pre => {
            let out = super::gelu_forward(&y);
            (out, Some(y))
        }
        Act::Gelu => {
            gelu_inplace(&mut y);
            (y, None)
        }
    }
}

/// The gradients of [`forward`] that were asked for.
pub(crate) struct Grads {
    pub(crate) x: Option<Vec<f32>>,
    pub(crate) w: Option<Vec<f32>>,
    pub(crate) b: Option<Vec<f32>>,
}

/// Backward pass of [`forward`] for the output gradient `dy [rows, d_out]`; `pre` is the
/// pre-activation `forward` kept (required for GELU). `need` = which of (x, w, b) to compute.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    pre: Option<&[f32]>,
    d_in: usize,
    d_out: usize,
    act: Act,
    need: [bool; 3],
) -> Grads {
    let rows = x.len() / d_in;
    assert_eq!(dy.len(), rows * d_out, "linear backward: gradient is not [{rows}, {d_out}]");
    let dz_owned;
    let dz: &[f32] = match act {
        Act::None => dy,
        Act::Gelu => {
            let pre = pre.expect("the GELU linear's forward pass keeps its pre-activation when tracked");
            dz_owned = gelu_backward(pre, dy);
            &dz_owned
        }
    };
    let dx = need[0].then(|| {
        let mut dx = vec![0.0f32; rows * d_in];
        // dx = dz · wᵀ
        // SAFETY: dz [rows, d_out], wᵀ [d_out, d_in] read through strides, dx [rows, d_in] fresh.
        unsafe {
            gemm(
                rows,
                d_in,
                d_out,
                dx.as_mut_ptr(),
                d_in,
                false,
                View::rows(dz, d_out),
                View::transposed(w, d_out),
                1.0,
                true,
            )
        };
        dx
    });
    let dw = need[1].then(|| {
        let mut dw = vec![0.0f32; d_in * d_out];
        // dw = xᵀ · dz
        // SAFETY: xᵀ [d_in, rows] read through strides, dz [rows, d_out], dw [d_in, d_out] fresh.
        unsafe {
            gemm(
                d_in,
                d_out,
                rows,
                dw.as_mut_ptr(),
                d_out,
                false,
                View::transposed(x, d_in),
                View::rows(dz, d_out),
                1.0,
                true,
            )
        };
        dw
    });
    let db = need[2].then(|| column_sums(dz, d_out));
    Grads { x: dx, w: dw, b: db }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], b: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
        let rows = x.len() / d_in;
        let mut y = vec![0.0f32; rows * d_out];
        for r in 0..rows {
            for o in 0..d_out {
                let mut s = b[o] as f64;
                for i in 0..d_in {
                    s += x[r * d_in + i] as f64 * w[i * d_out + o] as f64;
                }
                y[r * d_out + o] = s as f32;
            }
        }
        y
    }

    #[test]
    fn forward_and_backward_match_naive_sums() {
        let (rows, d_in, d_out) = (5, 7, 3);
        let x: Vec<f32> = (0..rows * d_in).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
        let w: Vec<f32> = (0..d_in * d_out).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.05).collect();
        let b: Vec<f32> = (0..d_out).map(|i| i as f32 * 0.5).collect();
        let (y, pre) = forward(&x, &w, &b, d_in, d_out, Act::None, true);
        assert!(pre.is_none());
        for (a, e) in y.iter().zip(naive(&x, &w, &b, d_in, d_out)) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
        let dy: Vec<f32> = (0..rows * d_out).map(|i| (i as f32 * 0.3).cos()).collect();
        let g = backward(&dy, &x, &w, None, d_in, d_out, Act::None, [true, true, true]);
        let (dx, dw, db) = (g.x.unwrap(), g.w.unwrap(), g.b.unwrap());
        for r in 0..rows {
            for i in 0..d_in {
                let e: f32 = (0..d_out).map(|o| dy[r * d_out + o] * w[i * d_out + o]).sum();
                assert!((dx[r * d_in + i] - e).abs() < 1e-5);
            }
        }
        for i in 0..d_in {
            for o in 0..d_out {
                let e: f32 = (0..rows).map(|r| x[r * d_in + i] * dy[r * d_out + o]).sum();
                assert!((dw[i * d_out + o] - e).abs() < 1e-5);
            }
        }
        for o in 0..d_out {
            let e: f32 = (0..rows).map(|r| dy[r * d_out + o]).sum();
            assert!((db[o] - e).abs() < 1e-5);
        }
    }
}
