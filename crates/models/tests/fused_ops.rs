//! The fused ops (`bertlab_models::ops`, Flex fast path) against their reference decomposition:
//! outputs and gradients within 1e-5 (relative to max(1, |reference|)) in f32 on random shapes
//! with padding masks, with and without dropout (both sides use the same hash mask); dropout's
//! statistics; and determinism — a seeded training step is bit-identical when rerun.

mod common;

use bertlab_models::ops::check::{self, Lcg};
use bertlab_models::ops::{self, reference, DropoutMask, LinearActivation};
use bertlab_models::{Kernels, ModelConfig, Precision, TextClassifier};
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Tensor, TensorData};
use common::*;

type AD = Autodiff<Flex>;

/// Tests that seed Flex's global RNG and then draw from it run one at a time.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TOLERANCE: f64 = 1e-5;

fn tensor<B: Backend, const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

/// `got` within 1e-5 of `want`, element-wise, relative to max(1, |want|); NaN anywhere fails.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_within(what, &check::worst_element(got, want));
}

fn assert_within(what: &str, e: &check::TensorError) {
    assert!(
        e.max_error <= TOLERANCE,
        "{what}[{}]: fused {}, reference {} (error {:e})",
        e.at,
        e.routed,
        e.reference,
        e.max_error
    );
    eprintln!("{what}: max error {:.1e}", e.max_error);
}

/// Run `fused` and `reference` on fresh leaves of `inputs` (`ops::check::compare_op`:
/// backpropagate `Σ out·weights`) and assert the output and every input's gradient within
/// 1e-5 relative to max(1, |reference|); NaN anywhere fails.
fn compare_grads<const N: usize, const D: usize>(
    what: &str,
    inputs: [(&[f32], Vec<usize>); N],
    fused: impl Fn(&[Tensor<AD, 1>; N]) -> Tensor<AD, D>,
    reference: impl Fn(&[Tensor<AD, 1>; N]) -> Tensor<AD, D>,
    rng: &mut Lcg,
) {
    let values = inputs.each_ref().map(|(v, _)| v.to_vec());
    let c = check::compare_op::<AD, N, D>(&Default::default(), &values, &fused, &reference, rng);
    assert_within(&format!("{what} output"), &c.output);
    for (i, e) in c.grads.iter().enumerate() {
        assert_within(&format!("{what} grad of input {i} {:?}", inputs[i].1), e);
    }
}

fn shaped<const D: usize>(t: &Tensor<AD, 1>, shape: &[usize]) -> Tensor<AD, D> {
    t.clone().reshape::<D, _>(<[usize; D]>::try_from(shape).expect("rank"))
}

#[test]
fn linear_matches_reference_with_and_without_gelu() {
    let mut rng = Lcg(1);
    for (rows, d_in, d_out) in [(1, 1, 1), (7, 5, 3), (33, 64, 130), (130, 96, 40)] {
        let x = rng.values(rows * d_in, 2.0);
        let w = rng.values(d_in * d_out, 1.0);
        let b = rng.values(d_out, 1.0);
        for act in [LinearActivation::Identity, LinearActivation::Gelu] {
            let inputs = [(&x[..], vec![rows, d_in]), (&w[..], vec![d_in, d_out]), (&b[..], vec![d_out])];
            compare_grads(
                &format!("linear {rows}x{d_in}x{d_out} {act:?}"),
                inputs,
                |t| {
                    ops::linear(
                        shaped(&t[0], &[rows, d_in]),
                        shaped(&t[1], &[d_in, d_out]),
                        t[2].clone(),
                        act,
                    )
                },
                |t| {
                    reference::linear(
                        shaped(&t[0], &[rows, d_in]),
                        shaped(&t[1], &[d_in, d_out]),
                        t[2].clone(),
                        act,
                    )
                },
                &mut rng,
            );
        }
    }
}

/// `[batch, seq]` padding: each row keeps a random prefix (at least one token), and row 2,
/// when there is one, is padded entirely (its attention comes out uniform on both paths).
fn padding(rng: &mut Lcg, batch: usize, seq: usize) -> Vec<bool> {
    let mut padded = Vec::with_capacity(batch * seq);
    for b in 0..batch {
        let len = if b == 2 { 0 } else { 1 + rng.below(seq) };
        padded.extend((0..seq).map(|s| s >= len));
    }
    padded
}

#[test]
fn attention_matches_reference_with_padding_and_dropout() {
    let mut rng = Lcg(2);
    for (batch, seq, heads, head_dim) in
        [(1, 1, 1, 1), (2, 5, 3, 4), (3, 17, 2, 8), (4, 33, 4, 16), (2, 70, 2, 32)]
    {
        let hidden = heads * head_dim;
        let qkv = rng.values(batch * seq * 3 * hidden, 2.0);
        let padded = padding(&mut rng, batch, seq);
        let mask = || {
            Tensor::<AD, 2, Bool>::from_data(
                TensorData::new(padded.clone(), [batch, seq]),
                &Default::default(),
            )
        };
        for dropout in [None, Some(DropoutMask::new(0.2, 0x5eed_0000 + seq as u64))] {
            let shape = [batch, seq, 3 * hidden];
            compare_grads(
                &format!("attention b{batch} s{seq} h{heads} d{head_dim} dropout {}", dropout.is_some()),
                [(&qkv[..], shape.to_vec())],
                |t| ops::attention(shaped(&t[0], &shape), mask(), heads, dropout),
                |t| reference::attention(shaped(&t[0], &shape), mask(), heads, dropout),
                &mut rng,
            );
        }
    }
}

#[test]
fn residual_layer_norm_matches_reference() {
    let mut rng = Lcg(3);
    for (rows, width, eps) in [(1, 2, 1e-12), (7, 33, 1e-5), (70, 384, 1e-12)] {
        let x = rng.values(rows * width, 3.0);
        let branch = rng.values(rows * width, 3.0);
        let gamma = rng.values(width, 1.5);
        let beta = rng.values(width, 1.0);
        for dropout in [None, Some(DropoutMask::new(0.1, 77 + rows as u64))] {
            let what = format!("layer norm {rows}x{width} dropout {}", dropout.is_some());
            let inputs = [
                (&x[..], vec![rows, width]),
                (&branch[..], vec![rows, width]),
                (&gamma[..], vec![width]),
                (&beta[..], vec![width]),
            ];
            let s = [rows, width];
            compare_grads(
                &format!("{what} with branch"),
                inputs,
                |t| {
                    ops::residual_layer_norm(
                        shaped(&t[0], &s),
                        Some(shaped(&t[1], &s)),
                        t[2].clone(),
                        t[3].clone(),
                        eps,
                        dropout,
                    )
                },
                |t| {
                    reference::residual_layer_norm(
                        shaped(&t[0], &s),
                        Some(shaped(&t[1], &s)),
                        t[2].clone(),
                        t[3].clone(),
                        eps,
                        dropout,
                    )
                },
                &mut rng,
            );
        }
        let s = [rows, width];
        compare_grads(
            &format!("layer norm {rows}x{width} without branch"),
            [(&x[..], vec![rows, width]), (&gamma[..], vec![width]), (&beta[..], vec![width])],
            |t| ops::residual_layer_norm(shaped(&t[0], &s), None, t[1].clone(), t[2].clone(), eps, None),
            |t| {
                reference::residual_layer_norm(shaped(&t[0], &s), None, t[1].clone(), t[2].clone(), eps, None)
            },
            &mut rng,
        );
    }
}

#[test]
fn dropout_and_gelu_match_reference() {
    let mut rng = Lcg(4);
    let x = rng.values(3 * 1000, 6.0);
    let mask = DropoutMask::new(0.3, 99);
    compare_grads(
        "dropout",
        [(&x[..], vec![3, 1000])],
        |t| ops::dropout(shaped::<2>(&t[0], &[3, 1000]), Some(mask)),
        |t| reference::dropout(shaped::<2>(&t[0], &[3, 1000]), mask),
        &mut rng,
    );
    compare_grads(
        "gelu",
        [(&x[..], vec![3, 1000])],
        |t| ops::gelu(shaped::<2>(&t[0], &[3, 1000])),
        |t| reference::gelu(shaped::<2>(&t[0], &[3, 1000])),
        &mut rng,
    );
}

/// Inference (plain Flex, no autodiff): the forward kernels alone.
#[test]
fn inference_forward_matches_reference() {
    let mut rng = Lcg(5);
    let (batch, seq, heads, head_dim) = (3, 20, 4, 8);
    let hidden = heads * head_dim;
    let x = tensor::<Flex, 2>(&rng.values(batch * seq * hidden, 2.0), [batch * seq, hidden]);
    let w = tensor::<Flex, 2>(&rng.values(hidden * 3 * hidden, 0.5), [hidden, 3 * hidden]);
    let b = tensor::<Flex, 1>(&rng.values(3 * hidden, 0.5), [3 * hidden]);
    let padded = padding(&mut rng, batch, seq);
    let mask = Tensor::<Flex, 2, Bool>::from_data(TensorData::new(padded, [batch, seq]), &Default::default());
    for act in [LinearActivation::Identity, LinearActivation::Gelu] {
        let got = ops::linear(x.clone(), w.clone(), b.clone(), act);
        let want = reference::linear(x.clone(), w.clone(), b.clone(), act);
        assert_close(&format!("inference linear {act:?}"), &values(got), &values(want));
    }
    let qkv =
        reference::linear(x.clone(), w, b, LinearActivation::Identity).reshape([batch, seq, 3 * hidden]);
    let got = ops::attention(qkv.clone(), mask.clone(), heads, None);
    let want = reference::attention(qkv, mask, heads, None);
    assert_close("inference attention", &values(got), &values(want));
    let gamma = tensor::<Flex, 1>(&rng.values(hidden, 1.0), [hidden]);
    let beta = tensor::<Flex, 1>(&rng.values(hidden, 1.0), [hidden]);
    let branch = tensor::<Flex, 2>(&rng.values(batch * seq * hidden, 2.0), [batch * seq, hidden]);
    let got =
        ops::residual_layer_norm(x.clone(), Some(branch.clone()), gamma.clone(), beta.clone(), 1e-12, None);
    let want = reference::residual_layer_norm(x, Some(branch), gamma, beta, 1e-12, None);
    assert_close("inference layer norm", &values(got), &values(want));
}

/// The mask `DropoutMask::factors` gives (the one both paths apply), on a million elements.
fn mask_values(mask: DropoutMask, n: usize) -> Vec<f32> {
    values(ops::dropout(Tensor::<Flex, 1>::ones([n], &Default::default()), Some(mask)))
}

#[test]
fn dropout_keeps_one_minus_p_scaled_and_independent() {
    let n = 1 << 20;
    for p in [0.1, 0.5] {
        let a = mask_values(DropoutMask::new(p, 11), n);
        let scale = (1.0 / (1.0 - p)) as f32;
        assert!(a.iter().all(|v| *v == 0.0 || *v == scale), "p {p}: values are 0 or 1/(1-p) exactly");
        let kept = |m: &[f32]| m.iter().filter(|v| **v != 0.0).count() as f64;
        let keep = 1.0 - p;
        let sigma = (n as f64 * keep * p).sqrt();
        assert!((kept(&a) - n as f64 * keep).abs() < 5.0 * sigma, "p {p}: kept {}", kept(&a));
        // Another call (another seed): independent of the first, element by element.
        let b = mask_values(DropoutMask::new(p, 12), n);
        let both = a.iter().zip(&b).filter(|(x, y)| **x != 0.0 && **y != 0.0).count() as f64;
        let want = n as f64 * keep * keep;
        let sigma = (n as f64 * keep * keep * (1.0 - keep * keep)).sqrt();
        assert!((both - want).abs() < 5.0 * sigma, "p {p}: both kept {both}, want {want}");
        // Neighbouring elements of one mask are independent too.
        let pairs = a.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64;
        let want = (n - 1) as f64 * keep * keep;
        assert!((pairs - want).abs() < 5.0 * sigma, "p {p}: neighbouring kept pairs {pairs}, want {want}");
        // Same seed, same mask.
        assert_eq!(a, mask_values(DropoutMask::new(p, 11), n));
    }
}

/// Masks come from `ops::seed_dropout`'s host-side sequence: no read-back from the device.
#[test]
fn dropout_masks_follow_the_dropout_seed() {
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let draw = |seed: u64| {
        ops::seed_dropout(seed);
        let waits = bertlab_models::host_wait::count();
        let first = DropoutMask::draw::<AD>(0.1, &device).expect("training draws a mask");
        let second = DropoutMask::draw::<AD>(0.1, &device).expect("training draws a mask");
        assert_eq!(bertlab_models::host_wait::count(), waits, "drawing a mask waits for nothing");
        (first, second)
    };
    let (a1, a2) = draw(5);
    assert_ne!(a1.seed(), a2.seed(), "successive calls get independent masks");
    assert_eq!(draw(5), (a1, a2), "the same seed gives the same masks");
    assert_ne!(draw(6).0, a1, "another seed gives other masks");
    assert!(DropoutMask::draw::<Flex>(0.1, &device).is_none(), "no dropout without autodiff");
    assert!(DropoutMask::draw::<AD>(0.0, &device).is_none(), "no dropout at p = 0");
}

/// Every parameter's gradient, in visiting order.
struct Grads<'a> {
    grads: &'a <AD as AutodiffBackend>::Gradients,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor<AD> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        let grad = param.val().grad(self.grads).expect("every parameter gets a gradient");
        self.out.push(values(grad));
    }
}

/// A training forward + backward of a fixture classifier; returns logits and gradients.
fn step(model: &TextClassifier<AD>, expected: &serde_json::Value) -> (Vec<f32>, Vec<Vec<f32>>) {
    let _graph_turn = bertlab_models::autodiff_lock::lock();
    let device = Default::default();
    let ids = int_matrix::<AD>(&expected["input_ids"], &device);
    let mask = int_matrix::<AD>(&expected["attention_mask"], &device);
    let logits = model.forward(ids, mask, Precision::F32);
    let grads = (logits.clone() * logits.clone()).sum().backward();
    let mut visitor = Grads { grads: &grads, out: Vec::new() };
    model.visit(&mut visitor);
    (values(logits), visitor.out)
}

fn classifier(name: &str, dropout: bool) -> Option<(TextClassifier<AD>, serde_json::Value)> {
    let dir = fixture(name)?;
    let expected = read_json(&dir.join("expected.json"));
    let mut config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    if !dropout {
        config.hidden_dropout_prob = 0.0;
        config.attention_probs_dropout_prob = 0.0;
        config.classifier_dropout = 0.0;
    } else {
        config.hidden_dropout_prob = 0.1;
        config.attention_probs_dropout_prob = 0.1;
    }
    let (model, _) = TextClassifier::<AD>::from_safetensors(
        config,
        &dir.join("model.safetensors"),
        0,
        &Default::default(),
    )
    .unwrap();
    Some((model, expected))
}

/// The whole classifier, padded batch, no dropout: the fused layer's logits and every
/// parameter's gradient equal the reference model's.
#[test]
fn fused_model_gradients_match_reference_model() {
    for name in ["tiny-bert-classifier", "tiny-distilbert-classifier"] {
        let Some((model, expected)) = classifier(name, false) else { return };
        let (logits_f, grads_f) = step(&model.clone().with_kernels(Kernels::Fused), &expected);
        let (logits_r, grads_r) = step(&model.with_kernels(Kernels::Reference), &expected);
        assert_close(&format!("{name} logits"), &logits_f, &logits_r);
        assert_eq!(grads_f.len(), grads_r.len());
        for (i, (gf, gr)) in grads_f.iter().zip(&grads_r).enumerate() {
            assert_close(&format!("{name} parameter {i} gradient"), gf, gr);
        }
    }
}

/// With dropout on, a training step under one backend seed is bit-identical when rerun
/// (rayon's scheduling never changes a sum), and another seed changes it.
#[test]
fn seeded_training_step_is_bit_identical_across_reruns() {
    let Some((model, expected)) = classifier("tiny-bert-classifier", true) else { return };
    let _rng = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let run = |seed: u64| {
        AD::seed(&device, seed);
        ops::seed_dropout(seed);
        step(&model, &expected)
    };
    let (logits, grads) = run(21);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for _ in 0..2 {
        let (l2, g2) = run(21);
        assert_eq!(bits(&logits), bits(&l2), "logits differ between reruns");
        for (a, b) in grads.iter().zip(&g2) {
            assert_eq!(bits(a), bits(b), "gradients differ between reruns");
        }
    }
    assert_ne!(bits(&run(22).0), bits(&logits), "dropout follows the seed");
}
