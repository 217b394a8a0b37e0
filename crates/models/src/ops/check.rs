//! The ops of [`crate::ops`] as a backend routes them against their [`reference`]
//! decomposition on the same backend: outputs and the gradients of every input, on random
//! shapes with padding and dropout. What `bertlab bench kernels` runs on whatever backend a
//! build has (the wgpu build on lavapipe in CI, CUDA on a GPU), so each kernel is checked where
//! it runs.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{Bool, FloatDType, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use super::{
    attention_products, attention_products_ran, reference, set_attention_products, AttentionProducts,
    DropoutMask, LinearActivation,
};

/// One comparison: an op on one case, its worst element-wise error over the output and every
/// input's gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct OpCheck {
    /// The op (`linear`, `attention`, …).
    pub op: &'static str,
    /// The case: shapes, activation, padding, dropout.
    pub case: String,
    /// `max |routed − reference| / max(1, |reference|)` over the output and the gradients;
    /// NaN when either side has a NaN (and then the check fails).
    pub max_error: f64,
    /// The bound the error must not exceed.
    pub tolerance: f64,
}

impl OpCheck {
    /// Whether the error is within the tolerance (false on NaN).
    pub fn passed(&self) -> bool {
        self.max_error <= self.tolerance
    }
}

/// f32 error bound: both sides accumulate in f32, in different orders.
pub const F32_TOLERANCE: f64 = 1e-5;

/// Deterministic uniform numbers in [-1, 1): the cases' data, the same for a seed on every
/// machine (the kernel checks and the fused-op tests draw from it).
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number, in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` numbers in [-scale, scale).
    pub fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }

    /// A whole number in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.uniform() + 1.0) * 0.5 * n as f32) as usize).min(n - 1)
    }
}

fn host<B: AutodiffBackend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    crate::host_wait::read(t).convert::<f32>().to_vec().expect("f32 values")
}

/// The worst element of one compared tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorError {
    /// `max |routed − reference| / max(1, |reference|)`; NaN when an element of either is NaN.
    pub max_error: f64,
    /// The flat index of the worst element (of the first NaN, if any).
    pub at: usize,
    /// The routed op's value there.
    pub routed: f32,
    /// The reference's value there.
    pub reference: f32,
}

/// `max |a − b| / max(1, |b|)`, NaN when any element of either is NaN.
fn error(a: &[f32], b: &[f32]) -> f64 {
    worst_element(a, b).max_error
}

/// [`error`] and where, stopping at the first element where either is NaN.
pub fn worst_element(a: &[f32], b: &[f32]) -> TensorError {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    let mut worst = TensorError { max_error: 0.0, at: 0, routed: 0.0, reference: 0.0 };
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let e = ((x - y).abs() / y.abs().max(1.0)) as f64;
        if e.is_nan() || e > worst.max_error {
            worst = TensorError { max_error: e, at: i, routed: x, reference: y };
            if e.is_nan() {
                break;
            }
        }
    }
    worst
}

/// An op's output and every input's gradient, routed against reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The output's worst element.
    pub output: TensorError,
    /// Each input's gradient's worst element, in the inputs' order (an input without a
    /// gradient counts as a gradient of zeros).
    pub grads: Vec<TensorError>,
}

impl Comparison {
    /// The worst error over the output and the gradients; NaN if any is NaN.
    pub fn max_error(&self) -> f64 {
        let all = std::iter::once(&self.output).chain(&self.grads);
        all.fold(0.0, |worst: f64, e| match worst.is_nan() || e.max_error.is_nan() {
            true => f64::NAN,
            false => worst.max(e.max_error),
        })
    }
}

/// Runs `op` (the reference, then the routed one) on fresh leaves made of `inputs`,
/// backpropagates `Σ output·weights` (weights drawn from `rng`, the same for both) and compares
/// the outputs and the inputs' gradients.
pub fn compare_op<B: AutodiffBackend, const N: usize, const D: usize>(
    device: &B::Device,
    inputs: &[Vec<f32>; N],
    routed: &dyn Fn(&[Tensor<B, 1>; N]) -> Tensor<B, D>,
    reference: &dyn Fn(&[Tensor<B, 1>; N]) -> Tensor<B, D>,
    rng: &mut Lcg,
) -> Comparison {
    let mut weights: Option<Tensor<B, D>> = None;
    let mut run = |f: &dyn Fn(&[Tensor<B, 1>; N]) -> Tensor<B, D>| {
        let _graph_turn = crate::autodiff_lock::lock();
        let leaves: [Tensor<B, 1>; N] = std::array::from_fn(|i| {
            Tensor::<B, 1>::from_data(TensorData::new(inputs[i].clone(), [inputs[i].len()]), device)
                .require_grad()
        });
        let out = f(&leaves);
        let w = weights
            .get_or_insert_with(|| {
                let shape = out.dims();
                let n = shape.iter().product::<usize>();
                Tensor::from_data(TensorData::new(rng.values(n, 1.0), shape), device)
            })
            .clone();
        let grads = (out.clone() * w).sum().backward();
        let input_grads: Vec<Vec<f32>> = leaves
            .iter()
            .map(|leaf| match leaf.grad(&grads) {
                Some(g) => crate::host_wait::read(g).convert::<f32>().to_vec().expect("f32 values"),
                None => vec![0.0; leaf.dims()[0]],
            })
            .collect();
        (host(out), input_grads)
    };
    let (out_r, grads_r) = run(reference);
    let (out_f, grads_f) = run(routed);
    Comparison {
        output: worst_element(&out_f, &out_r),
        grads: grads_f.iter().zip(&grads_r).map(|(f, r)| worst_element(f, r)).collect(),
    }
}

/// [`compare_op`]'s worst error.
fn compare<B: AutodiffBackend, const N: usize, const D: usize>(
    device: &B::Device,
    inputs: &[Vec<f32>; N],
    routed: &dyn Fn(&[Tensor<B, 1>; N]) -> Tensor<B, D>,
    reference: &dyn Fn(&[Tensor<B, 1>; N]) -> Tensor<B, D>,
    rng: &mut Lcg,
) -> f64 {
    compare_op(device, inputs, routed, reference, rng).max_error()
}

fn shaped<B: AutodiffBackend, const D: usize>(t: &Tensor<B, 1>, shape: [usize; D]) -> Tensor<B, D> {
    t.clone().reshape(shape)
}

/// Every op of [`crate::ops`] against its reference on `B` (f32), on cases drawn from `seed`.
pub fn check_ops<B: AutodiffBackend>(device: &B::Device, seed: u64) -> Vec<OpCheck> {
    let mut rng = Lcg(seed);
    let mut checks = Vec::new();
    let mut record =
        |op, case: String, max_error, tolerance| checks.push(OpCheck { op, case, max_error, tolerance });

    let (rows, d_in, d_out) = (37, 24, 40);
    for activation in [LinearActivation::Identity, LinearActivation::Gelu] {
        let inputs = [rng.values(rows * d_in, 1.0), rng.values(d_in * d_out, 0.3), rng.values(d_out, 0.5)];
        type Linear<B> = fn(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>, LinearActivation) -> Tensor<B, 2>;
        let run = |linear: Linear<B>| {
            move |t: &[Tensor<B, 1>; 3]| {
                linear(shaped(&t[0], [rows, d_in]), shaped(&t[1], [d_in, d_out]), t[2].clone(), activation)
            }
        };
        let e = compare(device, &inputs, &run(super::linear), &run(reference::linear), &mut rng);
        record("linear", format!("[{rows}, {d_in}]·[{d_in}, {d_out}] {activation:?}"), e, F32_TOLERANCE);
    }
    // In f16, as an f16 step's products get them (input, weight and bias in f16): the feed-
    // forward's two products at a small width, a row count no tile divides.
    for (rows, d_in, d_out, activation) in
        [(70, 32, 64, LinearActivation::Gelu), (70, 64, 32, LinearActivation::Identity)]
    {
        let (routed, decomposed) =
            linear_in_dtype::<B>(device, &mut rng, [rows, d_in, d_out], activation, FloatDType::F16);
        record(
            "linear",
            format!("[{rows}, {d_in}]·[{d_in}, {d_out}] {activation:?} in f16 against f32 (the decomposition in f16: {decomposed:.1e})"),
            routed,
            2.0 * decomposed,
        );
    }

    // 70 tokens of 32-wide heads span
    // three of the CubeCL kernel's 32-row tiles, the last one partial.
    for (batch, seq, heads, head_dim, prob) in [(3, 13, 2, 8, 0.0), (3, 13, 2, 8, 0.1), (3, 70, 2, 32, 0.1)] {
        let width = 3 * heads * head_dim;
        let padding = padded_rows(batch, seq);
        let dropout = (prob > 0.0).then(|| DropoutMask::new(prob, 0x5eed_0000_0000_0001 ^ seed));
        let inputs = [rng.values(batch * seq * width, 1.0)];
        let mask = || Tensor::<B, 2, Bool>::from_data(TensorData::new(padding.clone(), [batch, seq]), device);
        let routed = |t: &[Tensor<B, 1>; 1]| {
            super::attention(shaped(&t[0], [batch, seq, width]), mask(), heads, dropout)
        };
        let refer = |t: &[Tensor<B, 1>; 1]| {
            reference::attention(shaped(&t[0], [batch, seq, width]), mask(), heads, dropout)
        };
        let e = compare(device, &inputs, &routed, &refer, &mut rng);
        record(
            "attention",
            format!("qkv [{batch}, {seq}, {width}], {heads} heads, padded rows, dropout {prob}"),
            e,
            F32_TOLERANCE,
        );
    }

    // In f16 (what an f16 step's attention gets): the routed op and the decomposition in f16,
    // each against the decomposition in f32. Rounding the operands and the output to f16
    // costs both the same; the routed op may add its own summation order, so it passes
    // within twice the decomposition's own error (which is NaN, and fails, if either is).
    let dims = [3, 70, 2, 32];
    let dropout = Some(DropoutMask::new(0.1, 0x5eed_0000_0000_0004 ^ seed));
    let (routed, decomposed) = attention_in_dtype::<B>(device, &mut rng, dims, dropout, FloatDType::F16);
    let [batch, seq, heads, head_dim] = dims;
    let width = 3 * heads * head_dim;
    record(
        "attention",
        format!("qkv [{batch}, {seq}, {width}] in f16 against f32, padded rows, dropout 0.1 (the decomposition in f16: {decomposed:.1e})"),
        routed,
        2.0 * decomposed,
    );

    let (rows, width, eps) = (29, 48, 1e-12);
    // The branch in f16 beside the f32 residual is what an f16 step's LayerNorms get (a
    // product's output). Both sides widen the same f16 values and round the branch's gradient
    // to f16; values a few f32 ulps apart may round to neighbouring f16 values, so that case
    // passes within one f16 ulp (2⁻¹⁰ relative).
    let f16_ulp = 2f64.powi(-10);
    let f32_ = FloatDType::F32;
    for (with_branch, prob, branch_dtype, tolerance) in [
        (true, 0.1, f32_, F32_TOLERANCE),
        (true, 0.0, f32_, F32_TOLERANCE),
        (false, 0.0, f32_, F32_TOLERANCE),
        (true, 0.1, FloatDType::F16, f16_ulp),
    ] {
        let dropout = (prob > 0.0).then(|| DropoutMask::new(prob, 0x1a7e_0000_0000_0002 ^ seed));
        let branch = rng.values(rows * width, 2.0);
        let inputs = [
            rng.values(rows * width, 2.0),
            if branch_dtype == FloatDType::F16 { f16_values(branch) } else { branch },
            rng.values(width, 1.0),
            rng.values(width, 1.0),
        ];
        type Norm<B> = fn(
            Tensor<B, 2>,
            Option<Tensor<B, 2>>,
            Tensor<B, 1>,
            Tensor<B, 1>,
            f64,
            Option<DropoutMask>,
        ) -> Tensor<B, 2>;
        let run = |norm: Norm<B>| {
            move |t: &[Tensor<B, 1>; 4]| {
                let branch = with_branch.then(|| shaped(&t[1], [rows, width]).cast(branch_dtype));
                norm(shaped(&t[0], [rows, width]), branch, t[2].clone(), t[3].clone(), eps, dropout)
            }
        };
        let e = compare(
            device,
            &inputs,
            &run(super::residual_layer_norm),
            &run(reference::residual_layer_norm),
            &mut rng,
        );
        let case = match (with_branch, branch_dtype) {
            (true, FloatDType::F32) => format!("[{rows}, {width}] + branch, dropout {prob}"),
            (true, dtype) => format!("[{rows}, {width}] f32 + {dtype:?} branch, dropout {prob}"),
            (false, _) => format!("[{rows}, {width}], no branch"),
        };
        record("residual_layer_norm", case, e, tolerance);
    }

    // The output's copy in a product's dtype (an f16 step's LayerNorms before a product): the
    // routed op's output beside its copy, against the reference's output beside that output's
    // cast, and the gradients through both (the copy's flows back widened, as a cast's);
    // within one f16 ulp, as the f16 branch above. Then, exact: the copy is the cast of the
    // routed op's own output, in training and in inference.
    let dropout = Some(DropoutMask::new(0.1, 0xc0b1_0000_0000_0005 ^ seed));
    let f16_ = FloatDType::F16;
    let inputs = [
        rng.values(rows * width, 2.0),
        f16_values(rng.values(rows * width, 2.0)),
        rng.values(width, 1.0),
        rng.values(width, 1.0),
    ];
    let routed = |t: &[Tensor<B, 1>; 4]| {
        let branch = Some(shaped(&t[1], [rows, width]).cast(f16_));
        let (y, copy) = super::residual_layer_norm_with_copy(
            shaped(&t[0], [rows, width]),
            branch,
            t[2].clone(),
            t[3].clone(),
            eps,
            dropout,
            f16_,
        );
        Tensor::cat(vec![y, copy.cast(f32_)], 1)
    };
    let refer = |t: &[Tensor<B, 1>; 4]| {
        let branch = Some(shaped(&t[1], [rows, width]).cast(f16_));
        let y = reference::residual_layer_norm(
            shaped(&t[0], [rows, width]),
            branch,
            t[2].clone(),
            t[3].clone(),
            eps,
            dropout,
        );
        Tensor::cat(vec![y.clone(), y.cast(f16_).cast(f32_)], 1)
    };
    let e = compare(device, &inputs, &routed, &refer, &mut rng);
    record(
        "residual_layer_norm",
        format!("[{rows}, {width}] f32 + F16 branch, dropout 0.1, with its F16 copy"),
        e,
        f16_ulp,
    );
    let copy_error = |training: bool| {
        let leaf = |values: &Vec<f32>| {
            Tensor::<B, 1>::from_data(TensorData::new(values.clone(), [values.len()]), device)
        };
        let residual = shaped(&leaf(&inputs[0]), [rows, width]);
        let branch = shaped(&leaf(&inputs[1]), [rows, width]).cast(f16_);
        let (gamma, beta) = (leaf(&inputs[2]), leaf(&inputs[3]));
        let (y, copy) = match training {
            true => {
                let _graph_turn = crate::autodiff_lock::lock();
                let (residual, gamma) = (residual.require_grad(), gamma.require_grad());
                super::residual_layer_norm_with_copy(residual, Some(branch), gamma, beta, eps, dropout, f16_)
            }
            false => {
                let inner = |t: Tensor<B, 2>| t.inner();
                let (y, copy) = super::residual_layer_norm_with_copy(
                    inner(residual),
                    Some(inner(branch)),
                    gamma.inner(),
                    beta.inner(),
                    eps,
                    dropout,
                    f16_,
                );
                (Tensor::from_inner(y), Tensor::from_inner(copy))
            }
        };
        error(&host(copy), &host(y.cast(f16_)))
    };
    for (training, case) in [(true, "training"), (false, "inference")] {
        let e = copy_error(training);
        record(
            "residual_layer_norm",
            format!("[{rows}, {width}]: the F16 copy is the output's cast, {case}"),
            e,
            0.0,
        );
    }

    // Dropout multiplies by the same factors on both sides: exact.
    let mask = DropoutMask::new(0.1, 0xd20b_0000_0000_0003 ^ seed);
    let inputs = [rng.values(7 * 301, 3.0)];
    let e = compare(
        device,
        &inputs,
        &|t: &[Tensor<B, 1>; 1]| super::dropout(shaped(&t[0], [7, 301]), Some(mask)),
        &|t: &[Tensor<B, 1>; 1]| reference::dropout(shaped(&t[0], [7, 301]), mask),
        &mut rng,
    );
    record("dropout", "[7, 301], p 0.1".to_string(), e, 0.0);

    let inputs = [rng.values(5 * 211, 4.0)];
    let e = compare(
        device,
        &inputs,
        &|t: &[Tensor<B, 1>; 1]| super::gelu(shaped(&t[0], [5, 211])),
        &|t: &[Tensor<B, 1>; 1]| reference::gelu(shaped(&t[0], [5, 211])),
        &mut rng,
    );
    record("gelu", "[5, 211]".to_string(), e, F32_TOLERANCE);

    // AdamW with device factors, on the inner backend (the optimizer runs there). Each case is
    // one call of the multi-tensor op: tensors of ranks 1 to 3 and sizes from 1 element up,
    // with and without moments (a parameter's first step) and weight decay, against the
    // reference update of each tensor alone; on a clean step, and on a skipped step whose
    // gradients hold NaN and infinities (masked to 0: nothing may come out non-finite).
    let clean = [0.9, 0.1 * 0.37, 0.999, 0.001 * 0.37 * 0.37, 31.6, 1e-3 * 0.95, 1.0 - 1e-5, 0.0];
    let skipped = [1.0, 0.0, 1.0, 0.0, 31.6, 0.0, 1.0, 1.0];
    let tensors: [(&[usize], bool, bool); 7] = [
        (&[19, 23], true, true),
        (&[23], true, false),
        (&[1], false, false),
        (&[300], true, false),
        (&[5, 7, 3], false, true),
        (&[41, 2], true, true),
        (&[2, 2], true, true),
    ];
    // Gradients in f16 are what `param_cast` hands the update (read as f32).
    let (f32_, f16_) = (FloatDType::F32, FloatDType::F16);
    for (case, factors, operands, grads) in [
        ("one tensor with moments and weight decay", clean, &tensors[..1], f32_),
        ("one tensor's first step, no decay", clean, &tensors[2..3], f32_),
        ("7 tensors in one call, ranks 1-3, first steps and no decay among them", clean, &tensors[..], f32_),
        ("7 tensors, a skipped step, NaN and ∞ in the gradients", skipped, &tensors[..], f32_),
        ("7 tensors, gradients in f16", clean, &tensors[..], f16_),
    ] {
        let (e, copies) = adam_error::<B>(device, &mut rng, factors, operands, grads);
        let case = match copies {
            0 => case.to_string(),
            n => format!("{case}: {n} copies written"),
        };
        record("adam", case, e, F32_TOLERANCE);
    }

    // Σ x² of many tensors (the gradient norm), on the inner backend: f32 and f16 tensors of
    // ranks 1 to 3, one spanning several of the CubeCL kernel's cubes, against the default
    // (grouped by shape); and with a NaN and an ∞ among them, where both must come out NaN.
    for (case, poison) in [
        ("9 tensors, f32 and f16, ranks 1-3, 1 to 5 000 elements", false),
        ("the same with a NaN and an ∞", true),
    ] {
        let (routed, reference) = sum_squares_pair::<B>(device, &mut rng, poison);
        let e = match poison {
            true if routed.is_nan() && reference.is_nan() => 0.0,
            true => f64::INFINITY,
            false => error(&[routed as f32], &[reference as f32]),
        };
        record("sum_squares", format!("{case}: {routed:e} against {reference:e}"), e, F32_TOLERANCE);
    }

    // The overflow flag: exact, on the values an overflow check meets (f32 and f16).
    let values = [1.0, 0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0e38, -65504.0, 1e-40];
    let want = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    for dtype in [FloatDType::F32, FloatDType::F16] {
        // 3e38 overflows f16 (∞: flag 0) and 1e-40 flushes to 0 there (flag 1).
        let want: Vec<f32> = match dtype {
            FloatDType::F16 => want.iter().enumerate().map(|(i, w)| if i == 5 { 0.0 } else { *w }).collect(),
            _ => want.to_vec(),
        };
        let x =
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
                .cast(dtype);
        let got = crate::host_wait::read(super::finite_flag(x))
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 values");
        let e = error(&got, &want);
        record("finite_flag", format!("{dtype:?}: 1, 0, NaN, ±∞, 3e38, −65 504, 1e−40"), e, 0.0);
    }
    checks
}

/// `act(x·W + b)` with `x`, `W` and `b` in `dtype` (what a low-precision step's products get,
/// the weight through [`super::param_cast`] on the routed side) against the decomposition in
/// f32 on the same inputs: `(the routed op's error, the decomposition's own error in dtype)`.
fn linear_in_dtype<B: AutodiffBackend>(
    device: &B::Device,
    rng: &mut Lcg,
    [rows, d_in, d_out]: [usize; 3],
    activation: LinearActivation,
    dtype: FloatDType,
) -> (f64, f64) {
    let inputs = [rng.values(rows * d_in, 1.0), rng.values(d_in * d_out, 0.3), rng.values(d_out, 0.5)];
    let routed = move |t: &[Tensor<B, 1>; 3]| {
        let w = super::param_cast(shaped(&t[1], [d_in, d_out]), dtype);
        let b = super::param_cast(t[2].clone(), dtype);
        super::linear(shaped(&t[0], [rows, d_in]).cast(dtype), w, b, activation).cast(FloatDType::F32)
    };
    let in_dtype = |dtype: FloatDType| {
        move |t: &[Tensor<B, 1>; 3]| {
            let (x, w) = (shaped(&t[0], [rows, d_in]).cast(dtype), shaped(&t[1], [d_in, d_out]).cast(dtype));
            reference::linear(x, w, t[2].clone().cast(dtype), activation).cast(FloatDType::F32)
        }
    };
    let f32_reference = in_dtype(FloatDType::F32);
    let routed = compare(device, &inputs, &routed, &f32_reference, rng);
    let decomposed = compare(device, &inputs, &in_dtype(dtype), &f32_reference, rng);
    (routed, decomposed)
}

/// Attention on operands in `dtype` (what a low-precision step's attention gets) against the
/// decomposition in f32 on the same inputs (`dims`: batch, seq, heads, head size; rows padded
/// by [`padded_rows`]): `(the routed op's error, the decomposition's own error in dtype)`.
fn attention_in_dtype<B: AutodiffBackend>(
    device: &B::Device,
    rng: &mut Lcg,
    [batch, seq, heads, head_dim]: [usize; 4],
    dropout: Option<DropoutMask>,
    dtype: FloatDType,
) -> (f64, f64) {
    let width = 3 * heads * head_dim;
    let padding = padded_rows(batch, seq);
    let inputs = [rng.values(batch * seq * width, 1.0)];
    let mask = || Tensor::<B, 2, Bool>::from_data(TensorData::new(padding.clone(), [batch, seq]), device);
    type Attention<B> = fn(Tensor<B, 3>, Tensor<B, 2, Bool>, usize, Option<DropoutMask>) -> Tensor<B, 3>;
    let in_dtype = |attention: Attention<B>, dtype: FloatDType| {
        move |t: &[Tensor<B, 1>; 1]| {
            let qkv = shaped(&t[0], [batch, seq, width]).cast(dtype);
            attention(qkv, mask(), heads, dropout).cast(FloatDType::F32)
        }
    };
    let f32_reference = in_dtype(reference::attention, FloatDType::F32);
    let routed = compare(device, &inputs, &in_dtype(super::attention, dtype), &f32_reference, rng);
    let decomposed = compare(device, &inputs, &in_dtype(reference::attention, dtype), &f32_reference, rng);
    (routed, decomposed)
}

/// Attention in f16 (and bf16 where `B` runs it) under each of [`AttentionProducts::ALL`]
/// (set in turn with [`set_attention_products`], the process's choice restored after): on
/// the CubeCL backends the row kernels, the tile kernels with their products in plain code,
/// and the tile kernels on tensor cores where the device has them; in f16 heads of 32 and 64,
/// with and without dropout, in bf16 heads of 64 with dropout; 70 tokens (four whole tiles of
/// 16 and a partial one), padded rows.
/// Each passes within twice the decomposition's own error in that dtype against the f32
/// decomposition, as [`check_ops`]' f16 case. A case names the kernels that ran
/// ([`attention_products_ran`]; `tensor-cores` runs the row kernels on a device without
/// them). Empty where attention reaches no CubeCL kernel (the choice means nothing there).
pub fn check_attention_products<B: AutodiffBackend>(device: &B::Device, seed: u64) -> Vec<OpCheck> {
    let mut rng = Lcg(seed ^ 0xa77e_0000);
    let chosen = attention_products();
    let mut dtypes = vec![FloatDType::F16];
    if B::supports_dtype(device, burn::tensor::DType::BF16) {
        dtypes.push(FloatDType::BF16);
    }
    let mut checks = Vec::new();
    'products: for products in AttentionProducts::ALL {
        set_attention_products(products);
        for &dtype in &dtypes {
            // bf16 (GPUs only) in one case: each case compiles its kernels, ~1 s each there.
            let cases: &[(usize, f64)] = match dtype {
                FloatDType::F16 => &[(32, 0.1), (64, 0.0), (64, 0.1)],
                _ => &[(64, 0.1)],
            };
            for &(head_dim, prob) in cases {
                let dims = [3, 70, 2, head_dim];
                let dropout = (prob > 0.0).then(|| DropoutMask::new(prob, 0x5eed_0000_0000_0005 ^ seed));
                let (routed, decomposed) = attention_in_dtype::<B>(device, &mut rng, dims, dropout, dtype);
                let Some(ran) = attention_products_ran() else { break 'products };
                let width = 3 * 2 * head_dim;
                checks.push(OpCheck {
                    op: "attention",
                    case: format!(
                        "products {products}, ran {ran}: qkv [3, 70, {width}] in {dtype:?} against f32, padded rows, dropout {prob} (the decomposition in {dtype:?}: {decomposed:.1e})"
                    ),
                    max_error: routed,
                    tolerance: 2.0 * decomposed,
                });
            }
        }
    }
    set_attention_products(chosen);
    checks
}

/// `values` rounded to the nearest f16 numbers, so that their cast to f16 is exact. A case
/// that casts its inputs to f16 on both sides then compares the ops, not the driver: lavapipe
/// from Mesa 25 drops a cast to f16 and straight back inside one fused kernel (measured on the
/// reference side of the LayerNorm cases: the inputs' cast, the branch gradient's, the copy's),
/// so its reference kept unrounded values where the kernels hand on f16 ones: errors up to
/// 1.6e-3 with random inputs (4 seeds of 6 over the one-ulp bound), at most half an f16 ulp
/// with these (the gradient's and the copy's roundings; Mesa 22: ~1e-6 either way).
fn f16_values(values: Vec<f32>) -> Vec<f32> {
    values.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect()
}

/// The padding mask of the attention cases: row `r` keeps its first `seq − 4r` tokens (row 0
/// unpadded).
fn padded_rows(batch: usize, seq: usize) -> Vec<bool> {
    (0..batch * seq).map(|i| i % seq >= seq - 4 * (i / seq)).collect()
}

/// A tensor of `shape` holding `values` (row-major) on `B`'s inner backend, where the optimizer
/// ops run.
fn inner_tensor<B: AutodiffBackend>(
    device: &B::Device,
    values: Vec<f32>,
    shape: &[usize],
) -> FloatTensor<B::InnerBackend> {
    let flat = Tensor::<B::InnerBackend, 1>::from_data(
        TensorData::new(values, [shape.iter().product::<usize>()]),
        device,
    );
    <B::InnerBackend as FloatTensorOps<B::InnerBackend>>::float_reshape(
        flat.into_primitive().tensor(),
        shape.into(),
    )
}

/// `Σ x²` of the same tensors routed to `B`'s inner backend's fast path and by the default
/// decomposition.
fn sum_squares_pair<B: AutodiffBackend>(device: &B::Device, rng: &mut Lcg, poison: bool) -> (f64, f64) {
    type Inner<B> = <B as AutodiffBackend>::InnerBackend;
    let shapes: [&[usize]; 9] =
        [&[5000], &[19, 23], &[23], &[1], &[5, 7, 3], &[19, 23], &[64, 3], &[7], &[2, 2]];
    let tensors: Vec<FloatTensor<Inner<B>>> = shapes
        .iter()
        .enumerate()
        .map(|(k, shape)| {
            let n = shape.iter().product::<usize>();
            let mut values = rng.values(n, 3.0);
            if poison && k == 1 {
                values[7] = f32::NAN;
            }
            if poison && k == 6 {
                values[0] = f32::INFINITY;
            }
            let t = inner_tensor::<B>(device, values, shape);
            // Every other tensor in f16, as the gradients `param_cast` hands on.
            match k % 2 {
                0 => t,
                _ => <Inner<B> as FloatTensorOps<Inner<B>>>::float_cast(t, FloatDType::F16),
            }
        })
        .collect();
    let read = |t: Option<Tensor<Inner<B>, 1>>| {
        let t = t.expect("a sum of nine tensors");
        crate::host_wait::read(t).convert::<f32>().to_vec::<f32>().expect("f32 values")[0] as f64
    };
    let routed = read(super::sum_squares_many::<Inner<B>>(tensors.clone()));
    let reference = read(
        super::norm::sum_squares_many::<Inner<B>>(tensors)
            .map(|t| Tensor::from_primitive(TensorPrimitive::Float(t))),
    );
    (routed, reference)
}

/// The largest error of one multi-tensor AdamW call (routed to `B`'s fast path) against the
/// reference update of each tensor alone, over every output, and of each low-precision copy
/// the call wrote against the cast of its parameter; NaN if either side has one. With the
/// number of copies written.
/// `operands`: each tensor's shape, whether it has moments, whether it decays; the gradients
/// in `grad_dtype`.
fn adam_error<B: AutodiffBackend>(
    device: &B::Device,
    rng: &mut Lcg,
    factors: [f32; super::adam::ADAM_FACTORS],
    operands: &[(&[usize], bool, bool)],
    grad_dtype: FloatDType,
) -> (f64, usize) {
    type Inner<B> = <B as AutodiffBackend>::InnerBackend;
    let skip = factors[super::adam::ADAM_SKIP] > 0.5;
    let tensor = |values: Vec<f32>, shape: &[usize]| inner_tensor::<B>(device, values, shape);
    let operands: Vec<super::adam::AdamOperand<Inner<B>>> = operands
        .iter()
        .map(|&(shape, moments, decays)| {
            let n = shape.iter().product::<usize>();
            let mut grad = rng.values(n, 3.0);
            if skip {
                grad[0] = f32::NAN;
                grad[n - 1] = f32::INFINITY;
            }
            let value = tensor(rng.values(n, 1.0), shape);
            let moments = moments.then(|| {
                let second = rng.values(n, 0.01).iter().map(|x| x.abs()).collect();
                (tensor(rng.values(n, 0.1), shape), tensor(second, shape))
            });
            let grad = <Inner<B> as FloatTensorOps<Inner<B>>>::float_cast(tensor(grad, shape), grad_dtype);
            super::adam::AdamOperand { value, grad, moments, decays, copy: None }
        })
        .collect();
    let packed = Tensor::<Inner<B>, 1>::from_data(TensorData::new(factors.to_vec(), [factors.len()]), device);
    let host = |t: FloatTensor<Inner<B>>| {
        let n = t.shape().num_elements();
        let flat = <Inner<B> as FloatTensorOps<Inner<B>>>::float_reshape(t, [n].into());
        let t = Tensor::<Inner<B>, 1>::from_primitive(TensorPrimitive::Float(flat));
        crate::host_wait::read(t).convert::<f32>().to_vec::<f32>().expect("f32 values")
    };
    let outputs = |updated: Vec<super::adam::AdamUpdated<Inner<B>>>| -> Vec<Vec<f32>> {
        updated.into_iter().flat_map(|u| [host(u.value), host(u.first), host(u.second)]).collect()
    };
    let updated = super::adam_update_many(operands.clone(), packed.clone(), 1e-8);
    // A low-precision copy written in the same pass (the CubeCL kernel, for gradients in a
    // product's dtype) must be the new parameter cast as a cast kernel casts it: exactly.
    let copies: Vec<f64> = updated
        .iter()
        .filter_map(|u| {
            let copy = u.copy.clone()?;
            let cast =
                <Inner<B> as FloatTensorOps<Inner<B>>>::float_cast(u.value.clone(), copy.dtype().into());
            Some(error(&host(copy), &host(cast)))
        })
        .collect();
    let copies_written = copies.len();
    let got = outputs(updated);
    let want =
        outputs(super::adam::adam_update_many::<Inner<B>>(operands, packed.into_primitive().tensor(), 1e-8));
    let worst = got.iter().zip(&want).map(|(g, w)| error(g, w)).chain(copies).fold(0.0, |a: f64, e| {
        if a.is_nan() || e.is_nan() {
            f64::NAN
        } else {
            a.max(e)
        }
    });
    (worst, copies_written)
}
