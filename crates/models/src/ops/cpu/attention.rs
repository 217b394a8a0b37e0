//! Self-attention straight from the fused QKV projection: `qkv [batch, seq, 3·hidden]` (Q, K
//! and V side by side, heads contiguous inside each) → `context [batch, seq, hidden]`, one
//! parallel task per (batch row, head).
//!
//! Each head's Q, K and V are strided views into `qkv` and each head's context is written
//! into its columns of the output, so no head is ever split into, or merged from, a permuted
//! copy. The probabilities `softmax(QKᵀ/√d + mask)` are kept for the backward pass (before
//! dropout: the dropout mask is a hash of the element index and is regenerated there).

use rayon::prelude::*;

use super::linear::{gemm, View};
use super::{dot, dropout_chunk, exp, max, multiversion, sum, Mask, SharedMut};

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
}

impl Dims {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
}

multiversion! {
    /// Row-wise softmax of `scores [rows, n]` in place, keys with `padded[j] != 0` set to
    /// `f32::MIN` first (what `transformers`' eager attention adds; a fully padded row comes out
    /// uniform, as there).
    fn softmax_rows(scores: &mut [f32], n: usize, padded: &[u8]) {
        for row in scores.chunks_exact_mut(n) {
            for (v, &p) in row.iter_mut().zip(padded) {
                if p != 0 {
                    *v = f32::MIN;
                }
            }
            let m = max(row);
            for v in row.iter_mut() {
                *v = exp(*v - m);
            }
            let inv = 1.0 / sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// `dp ← scale · P ⊙ (dP − Σⱼ dPⱼ·Pⱼ)` row by row (the softmax backward pass), where `dP`
    /// is `dp` through the dropout mask when there is one; padded keys get no gradient, as
    /// `mask_fill`'s backward pass gives them none.
    fn softmax_backward_rows(
        p: &[f32],
        dp: &mut [f32],
        n: usize,
        padded: &[u8],
        mask: Option<Mask>,
        first: u64,
        scale: f32,
    ) {
        for (r, (p, dp)) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)).enumerate() {
            if let Some(mask) = mask {
                let row_first = first + (r * n) as u64;
                for (j, v) in dp.iter_mut().enumerate() {
                    *v *= mask.factor(row_first + j as u64);
                }
            }
            let c = dot(dp, p);
            for ((v, &pj), &pad) in dp.iter_mut().zip(p).zip(padded) {
                let g = scale * pj * (*v - c);
                *v = if pad != 0 { 0.0 } else { g };
            }
        }
    }
}

/// `context [batch, seq, hidden]` and, when `keep_probs`, the probabilities
/// `[batch, heads, seq, seq]` (before dropout).
pub(crate) fn forward(
    qkv: &[f32],
    padded: &[u8],
    dims: Dims,
    dropout: Option<Mask>,
    keep_probs: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let Dims { batch, seq, heads, head_dim } = dims;
    let hidden = dims.hidden();
    assert_eq!(qkv.len(), batch * seq * 3 * hidden, "attention: qkv is not [{batch}, {seq}, {}]", 3 * hidden);
    assert_eq!(padded.len(), batch * seq, "attention: padding mask is not [{batch}, {seq}]");
    let mut context = vec![0.0f32; batch * seq * hidden];
    let mut probs = keep_probs.then(|| vec![0.0f32; dims.probs_len()]);
    let ctx_out = SharedMut(context.as_mut_ptr());
    let probs_out = probs.as_mut().map(|p| SharedMut(p.as_mut_ptr()));
    let scale = 1.0 / (head_dim as f32).sqrt();
    let square = seq * seq;
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0.0f32; 2 * square],
        |scratch, task| {
            let (b, h) = (task / heads, task % heads);
            let (scores_buf, dropped) = scratch.split_at_mut(square);
            let scores: &mut [f32] = match probs_out {
                // SAFETY: task `task` alone writes probs[task·seq², (task+1)·seq²).
                Some(p) => unsafe { std::slice::from_raw_parts_mut(p.get().add(task * square), square) },
                None => scores_buf,
            };
            let row0 = b * seq * 3 * hidden;
            let q = View { ptr: qkv[row0 + h * head_dim..].as_ptr(), rs: (3 * hidden) as isize, cs: 1 };
            let k_t =
                View { ptr: qkv[row0 + hidden + h * head_dim..].as_ptr(), rs: 1, cs: (3 * hidden) as isize };
            let v = View {
                ptr: qkv[row0 + 2 * hidden + h * head_dim..].as_ptr(),
                rs: (3 * hidden) as isize,
                cs: 1,
            };
            // SAFETY: the views address rows b·seq..(b+1)·seq of qkv, columns of head h.
            unsafe { gemm(seq, seq, head_dim, scores.as_mut_ptr(), seq, false, q, k_t, scale, false) };
            softmax_rows(scores, seq, &padded[b * seq..(b + 1) * seq]);
            let used: &[f32] = match dropout {
                Some(mask) => {
                    dropout_chunk(scores, dropped, mask, (task * square) as u64);
                    dropped
                }
                None => scores,
            };
            // SAFETY: this task alone writes rows b·seq.. of context, columns of head h.
            unsafe {
                gemm(
                    seq,
                    head_dim,
                    seq,
                    ctx_out.get().add(b * seq * hidden + h * head_dim),
                    hidden,
                    false,
                    View::rows(used, seq),
                    v,
                    1.0,
                    false,
                )
            };
        },
    );
    (context, probs)
}

/// The gradient of `qkv` for the context gradient `d_context [batch, seq, hidden]`.
pub(crate) fn backward(
    d_context: &[f32],
    qkv: &[f32],
    probs: &[f32],
    padded: &[u8],
    dims: Dims,
    dropout: Option<Mask>,
) -> Vec<f32> {
    let Dims { batch, seq, heads, head_dim } = dims;
    let hidden = dims.hidden();
    assert_eq!(d_context.len(), batch * seq * hidden, "attention backward: gradient shape");
    assert_eq!(probs.len(), dims.probs_len(), "attention backward: probabilities shape");
    let mut d_qkv = vec![0.0f32; qkv.len()];
    let out = SharedMut(d_qkv.as_mut_ptr());
    let scale = 1.0 / (head_dim as f32).sqrt();
    let square = seq * seq;
    let wide = (3 * hidden) as isize;
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0.0f32; 2 * square],
        |scratch, task| {
            let (b, h) = (task / heads, task % heads);
            let (dropped, d_scores) = scratch.split_at_mut(square);
            let p = &probs[task * square..(task + 1) * square];
            let used: &[f32] = match dropout {
                Some(mask) => {
                    dropout_chunk(p, dropped, mask, (task * square) as u64);
                    dropped
                }
                None => p,
            };
            let row0 = b * seq * 3 * hidden;
            let col = |part: usize| row0 + part * hidden + h * head_dim;
            let q = View { ptr: qkv[col(0)..].as_ptr(), rs: wide, cs: 1 };
            let k = View { ptr: qkv[col(1)..].as_ptr(), rs: wide, cs: 1 };
            let v_t = View { ptr: qkv[col(2)..].as_ptr(), rs: 1, cs: wide };
            let dc = View {
                ptr: d_context[b * seq * hidden + h * head_dim..].as_ptr(),
                rs: hidden as isize,
                cs: 1,
            };
            // SAFETY (all four products): the views stay inside rows b·seq..(b+1)·seq, columns of
            // head h; this task alone writes those columns of d_qkv.
            unsafe {
                // dV = P̃ᵀ · dC
                gemm(
                    seq,
                    head_dim,
                    seq,
                    out.get().add(col(2)),
                    3 * hidden,
                    false,
                    View::transposed(used, seq),
                    dc,
                    1.0,
                    false,
                );
                // dP̃ = dC · Vᵀ
                gemm(seq, seq, head_dim, d_scores.as_mut_ptr(), seq, false, dc, v_t, 1.0, false);
            }
            softmax_backward_rows(
                p,
                d_scores,
                seq,
                &padded[b * seq..(b + 1) * seq],
                dropout,
                (task * square) as u64,
                scale,
            );
            unsafe {
                // dQ = dS · K, dK = dSᵀ · Q (dS already carries 1/√d)
                gemm(
                    seq,
                    head_dim,
                    seq,
                    out.get().add(col(0)),
                    3 * hidden,
                    false,
                    View::rows(d_scores, seq),
                    k,
                    1.0,
                    false,
                );
                gemm(
                    seq,
                    head_dim,
                    seq,
                    out.get().add(col(1)),
                    3 * hidden,
                    false,
                    View::transposed(d_scores, seq),
                    q,
                    1.0,
                    false,
                );
            }
        },
    );
    d_qkv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of one (batch row, head) in f64, straight from the definition.
    fn naive(qkv: &[f32], padded: &[u8], d: Dims, b: usize, h: usize) -> Vec<f64> {
        let hidden = d.hidden();
        let at = |s: usize, part: usize, j: usize| {
            qkv[(b * d.seq + s) * 3 * hidden + part * hidden + h * d.head_dim + j] as f64
        };
        let mut out = vec![0.0; d.seq * d.head_dim];
        for i in 0..d.seq {
            let scores: Vec<f64> = (0..d.seq)
                .map(|k| {
                    if padded[b * d.seq + k] != 0 {
                        f32::MIN as f64
                    } else {
                        (0..d.head_dim).map(|j| at(i, 0, j) * at(k, 1, j)).sum::<f64>()
                            / (d.head_dim as f64).sqrt()
                    }
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for j in 0..d.head_dim {
                out[i * d.head_dim + j] = (0..d.seq).map(|k| e[k] / z * at(k, 2, j)).sum();
            }
        }
        out
    }

    #[test]
    fn forward_matches_the_definition_with_padding() {
        let d = Dims { batch: 2, seq: 5, heads: 3, head_dim: 4 };
        let n = d.batch * d.seq * 3 * d.hidden();
        let qkv: Vec<f32> = (0..n).map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0).collect();
        let padded = [0, 0, 0, 1, 1, 0, 0, 0, 0, 0];
        let (ctx, probs) = forward(&qkv, &padded, d, None, true);
        let probs = probs.unwrap();
        for b in 0..d.batch {
            for h in 0..d.heads {
                let want = naive(&qkv, &padded, d, b, h);
                for i in 0..d.seq {
                    for j in 0..d.head_dim {
                        let got = ctx[(b * d.seq + i) * d.hidden() + h * d.head_dim + j] as f64;
                        assert!((got - want[i * d.head_dim + j]).abs() < 1e-6, "b{b} h{h} i{i} j{j}");
                    }
                }
            }
        }
        // Padded keys get zero probability; rows sum to one.
        for row in probs.chunks(d.seq).take(d.heads * d.seq) {
            assert_eq!(&row[3..], &[0.0, 0.0]);
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
