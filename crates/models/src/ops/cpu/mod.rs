//! CPU kernels on plain row-major `f32` slices: the arithmetic behind the Flex fast path.
//!
//! Everything here is deterministic run to run: work is split into fixed-size chunks (never by
//! thread count), reductions keep a fixed lane layout and order, and the dropout mask is a
//! counter-based hash of (seed, element index), so neither rayon's scheduling nor the CPU's SIMD
//! level changes a bit of the result (a plain `a * b + c` is never contracted into an FMA, and an
//! explicit `mul_add` rounds once everywhere, so the AVX-512, AVX2 and scalar builds of a loop
//! compute the same roundings).

pub(crate) mod attention;
pub(crate) mod linear;
pub(crate) mod norm;

use std::sync::OnceLock;

use rayon::prelude::*;

/// Keep freed memory in the heap for reuse instead of returning it to the OS (glibc only; once
/// per process, on the first fused op).
///
/// Every op of a training step allocates its outputs (3–13 MB each for MiniLM at 16 × 128) and
/// frees them a few ops later. glibc serves such blocks with fresh `mmap`s, or trims the heap
/// top when they are freed, so each reuse page-faults and zeroes every 4 KiB page again: 1.03 M
/// page faults for 10 steps and 4 inference batches, ≈ 9 % of the CPU time (measured with
/// `perf stat`). A fixed 32 MiB mmap threshold (glibc's maximum) and a 1 GiB trim threshold cut
/// that to 0.2 M. The cost is that the process keeps its peak heap, as a training run does
/// anyway; BERTLAB_MALLOC_TUNING=0 leaves glibc's defaults alone.
pub(crate) fn retain_freed_memory() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if std::env::var("BERTLAB_MALLOC_TUNING").as_deref() == Ok("0") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; both values are within glibc's
        // documented ranges, and a rejected value leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

/// Elements per parallel task of an element-wise kernel: big enough to amortise rayon's task
/// cost (~1 µs), small enough that 2–16 threads all get work on a `[2048, 384]` activation.
pub(crate) const CHUNK: usize = 16 * 1024;

/// The vector instruction sets a kernel is compiled for, picked once at run time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Level {
    /// Baseline x86-64 (SSE2) or another architecture.
    Scalar,
    /// AVX2 + FMA (x86-64-v3).
    V3,
    /// AVX-512 F/BW/DQ/VL (x86-64-v4).
    V4,
}

pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let v3 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            let v4 = v3
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl");
            if v4 {
                return Level::V4;
            }
            if v3 {
                return Level::V3;
            }
        }
        Level::Scalar
    })
}

/// Define a kernel whose body is compiled three times (AVX-512, AVX2, baseline) and picked by
/// [`level`] at each call: Rust builds for baseline x86-64 unless told otherwise, which would
/// leave the auto-vectorised loops at 4 lanes.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            $(#[$meta])*
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                $(#[$meta])*
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) {
                    body($($arg),*)
                }
                $(#[$meta])*
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    body($($arg),*)
                }
                match $crate::ops::cpu::level() {
                    // SAFETY: `level` saw the CPU report every feature these were built for.
                    $crate::ops::cpu::Level::V4 => return unsafe { v4($($arg),*) },
                    $crate::ops::cpu::Level::V3 => return unsafe { v3($($arg),*) },
                    $crate::ops::cpu::Level::Scalar => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Lanes of the explicit-accumulator reductions: a multiple of every vector width used, so
/// LLVM maps them onto whole registers, and a fixed summation order on every CPU.
pub(crate) const LANES: usize = 16;

/// `Σ x` with [`LANES`] partial sums combined in a fixed order.
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    finish_sum(acc, rest.iter().copied())
}

/// `Σ a·b`, lanes as in [`sum`].
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let whole = n - n % LANES;
    for (ca, cb) in a[..whole].chunks_exact(LANES).zip(b[..whole].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    finish_sum(acc, a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y))
}

/// `max x` (−∞ for an empty slice).
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.into_iter().chain(rest.iter().copied()) {
        m = if v > m { v } else { m };
    }
    m
}

#[inline(always)]
fn finish_sum(acc: [f32; LANES], rest: impl Iterator<Item = f32>) -> f32 {
    // Pairwise over the lanes, then the tail in order.
    let mut width = LANES;
    let mut acc = acc;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    let mut s = acc[0];
    for v in rest {
        s += v;
    }
    s
}

/// `eˣ` to within 1e-7 relative (Cody–Waite reduction, degree-6 polynomial), exactly 0 below
/// −87 — where f32 softmax inputs such as masked scores (`f32::MIN − max`) land. Branch-free
/// and without float→int casts (Rust's saturating `as i32` does not vectorise), so loops over
/// it vectorise. `mul_add` is one rounding on every CPU (hardware FMA, or libm's exact `fmaf`
/// on the baseline build), so every SIMD level computes the same bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer n (default rounding mode) and leaves n in
    // the low mantissa bits: bits(t) = 0x4B40_0000 + n.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = 1.987_569_2e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        y * two_n
    }
}

/// `erfc(z)` to within 1.2e-7 relative (the Chebyshev fit of Numerical Recipes' `erfcc`),
/// accurate in both tails, which GELU needs: `gelu(x) = x·erfc(−x/√2)/2`.
#[inline(always)]
pub(crate) fn erfc(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / 0.5f32.mul_add(a, 1.0);
    let mut p = 0.170_872_77f32;
    p = p.mul_add(t, -0.822_152_23);
    p = p.mul_add(t, 1.488_515_9);
    p = p.mul_add(t, -1.135_204);
    p = p.mul_add(t, 0.278_868_07);
    p = p.mul_add(t, -0.186_288_06);
    p = p.mul_add(t, 0.096_784_18);
    p = p.mul_add(t, 0.374_091_96);
    p = p.mul_add(t, 1.000_023_7);
    p = p.mul_add(t, -1.265_512_2);
    let r = t * exp(a.mul_add(-a, p));
    if z < 0.0 {
        2.0 - r
    } else {
        r
    }
}

/// Exact (erf) GELU, as `transformers`' `gelu`: `x·Φ(x)`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// `d gelu / dx = Φ(x) + x·φ(x)`.
#[inline(always)]
pub(crate) fn gelu_grad(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * erfc(-x * std::f32::consts::FRAC_1_SQRT_2) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

multiversion! {
    fn gelu_chunk(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = gelu(x);
        }
    }
}

multiversion! {
    fn gelu_inplace_chunk(x: &mut [f32]) {
        for x in x.iter_mut() {
            *x = gelu(*x);
        }
    }
}

multiversion! {
    fn gelu_backward_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            *dx = dy * gelu_grad(x);
        }
    }
}

/// `gelu(x)`, in parallel chunks.
pub(crate) fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| gelu_chunk(x, y));
    y
}

/// `x ← gelu(x)`, in parallel chunks.
pub(crate) fn gelu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(gelu_inplace_chunk);
}

/// `dy · gelu'(x)`.
pub(crate) fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dx, (x, dy))| gelu_backward_chunk(x, dy, dx));
    dx
}

/// A dropout mask as a pure function of `(seed, element index)`: the forward pass and the
/// backward pass (and any thread, in any order) regenerate the same mask without storing it.
pub(crate) use super::HashMask as Mask;

multiversion! {
    pub(crate) fn dropout_chunk(x: &[f32], y: &mut [f32], mask: Mask, first: u64) {
        for (i, (y, &x)) in y.iter_mut().zip(x).enumerate() {
            *y = x * mask.factor(first + i as u64);
        }
    }
}

/// `x · mask` (the forward pass of dropout, and its backward pass on the gradient).
pub(crate) fn dropout(x: &[f32], mask: Mask) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (y, x))| dropout_chunk(x, y, mask, (c * CHUNK) as u64));
    y
}

/// Column sums of a `[rows, cols]` matrix, deterministic: fixed blocks of rows are summed in
/// parallel, then the block sums in block order.
pub(crate) fn column_sums(x: &[f32], cols: usize) -> Vec<f32> {
    const ROWS: usize = 64;
    let partials: Vec<Vec<f32>> = x
        .par_chunks(ROWS * cols)
        .map(|block| {
            let mut acc = vec![0.0f32; cols];
            add_rows(block, &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0.0f32; cols];
    for p in &partials {
        add_row(p, &mut total);
    }
    total
}

multiversion! {
    fn add_rows(block: &[f32], acc: &mut [f32]) {
        for row in block.chunks_exact(acc.len()) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

multiversion! {
    fn add_row(row: &[f32], acc: &mut [f32]) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// A raw pointer that parallel tasks may share: each task writes a region no other task
/// touches (the callers' invariant).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);

impl SharedMut {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: used only for disjoint writes, see above.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_and_zero_far_below() {
        for i in -7900..8000 {
            let x = i as f32 * 0.011;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(((got - want) / want).abs() < 2e-7, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(-87.5), 0.0, "below −87 (e⁻⁸⁷ ≈ 1.6e-38) the result is flushed to 0");
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        // f64 reference through the series/continued fraction of std-free erf: Φ via erfc.
        for i in -6000..6000 {
            let x = i as f32 * 0.002;
            let want = 0.5 * x as f64 * erfc_f64(-(x as f64) / std::f64::consts::SQRT_2);
            let got = gelu(x) as f64;
            assert!((got - want).abs() < 5e-7, "gelu({x}) = {got}, want {want}");
            let h = 1e-3f64;
            let xd = x as f64;
            let num = (0.5 * (xd + h) * erfc_f64(-(xd + h) / std::f64::consts::SQRT_2)
                - 0.5 * (xd - h) * erfc_f64(-(xd - h) / std::f64::consts::SQRT_2))
                / (2.0 * h);
            assert!((gelu_grad(x) as f64 - num).abs() < 2e-6, "gelu'({x})");
        }
    }

    /// erfc in f64 by its continued fraction (x ≥ 2) or the Maclaurin series of erf.
    fn erfc_f64(z: f64) -> f64 {
        if z < 0.0 {
            return 2.0 - erfc_f64(-z);
        }
        if z < 2.0 {
            let mut term = z;
            let mut s = z;
            for n in 1..200 {
                term *= -z * z / n as f64;
                s += term / (2 * n + 1) as f64;
            }
            1.0 - s * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = k as f64 / 2.0 / (z + f);
            }
            (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
        }
    }

    #[test]
    fn reductions_cover_every_element() {
        let x: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(sum(&x), 666.0);
        assert_eq!(max(&x), 36.0);
        assert_eq!(dot(&x, &x), (0..37).map(|i| (i * i) as f32).sum::<f32>());
        let m: Vec<f32> = (0..6).map(|i| i as f32).collect(); // [[0,1,2],[3,4,5]]
        assert_eq!(column_sums(&m, 3), vec![3.0, 5.0, 7.0]);
    }

    #[test]
    fn every_simd_level_computes_the_same_bits() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
        let mut fast = vec![0.0; x.len()];
        gelu_chunk(&x, &mut fast);
        let scalar: Vec<f32> = x.iter().map(|&v| gelu(v)).collect();
        assert_eq!(fast, scalar);
    }
}
