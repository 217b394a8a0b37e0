//! One AdamW step on the tiny DistilBERT classifier fixture reproduces PyTorch
//! (`../shared/fixtures/tiny-distilbert-classifier/adamw_step.json`: `torch.optim.AdamW` over all
//! parameters, lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, eval mode, no dropout).

use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::{load_classifier, Precision, TextClassifier};
use bertlab_tokenize::{EncodedTexts, Truncation};
use bertlab_train::optim::{AdamSettings, DecayPolicy, EpsilonForm};
use bertlab_train::predict::{logits_to_vec, metrics_from_logits, predict_logits};
use bertlab_train::{forward_backward, Adam, Batch, BatchArrays, EvalSettings, Padding};
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use serde_json::Value;

type AB = Autodiff<Flex>;

fn flat_i64(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect()
}

fn flat_f32(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        .collect()
}

struct Fixture {
    model: TextClassifier<AB>,
    arrays: BatchArrays,
    labels: Vec<u32>,
    expected: Value,
    step: Value,
}

fn fixture() -> Option<Fixture> {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return None;
    };
    let dir = shared.join("fixtures/tiny-distilbert-classifier");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let step: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adamw_step.json")).unwrap()).unwrap();
    let (model, _, _) = load_classifier::<AB>(
        &RepoRef::parse(dir.to_str().unwrap(), RepoKind::Model),
        &HubOptions::default(),
        &[],
        0,
        &Default::default(),
    )
    .unwrap();
    let rows = expected["input_ids"].as_array().unwrap().len();
    let len = expected["input_ids"][0].as_array().unwrap().len();
    let arrays = BatchArrays {
        input_ids: flat_i64(&expected["input_ids"]),
        attention_mask: flat_i64(&expected["attention_mask"]),
        rows,
        len,
    };
    let labels = step["labels"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap() as u32).collect();
    Some(Fixture { model, arrays, labels, expected, step })
}

#[test]
fn one_adamw_step_matches_pytorch() {
    let Some(Fixture { model, arrays, labels, expected, step }) = fixture() else { return };
    let device = Default::default();
    let rows = arrays.rows;
    assert_eq!(step["optimizer"], "AdamW");
    let lr = step["lr"].as_f64().unwrap();
    let settings = AdamSettings {
        beta1: step["betas"][0].as_f64().unwrap(),
        beta2: step["betas"][1].as_f64().unwrap(),
        epsilon: step["eps"].as_f64().unwrap(),
        epsilon_form: EpsilonForm::BiasCorrected,
        weight_decay: step["weight_decay"].as_f64().unwrap(),
        // The fixture was made with `torch.optim.AdamW(model.parameters())`: decay on everything.
        decay_policy: DecayPolicy::All,
    };

    // The fixture runs in eval mode: train the inference copy through autodiff with dropout
    // off (its config has every dropout at 0, so the autodiff model is equivalent).
    let (grads, logits) =
        forward_backward(&model, &arrays, &labels, 1.0 / rows as f64, Precision::F32, &device);
    let logits = logits_to_vec(logits);
    let before = flat_f32(&expected["logits"]);
    for (a, b) in logits.iter().zip(&before) {
        assert!((a - b).abs() < 1e-5, "logits before the step: {logits:?} vs {before:?}");
    }
    let loss: f64 =
        bertlab_train::metrics::cross_entropy_rows(&logits, &labels, 2).iter().sum::<f64>() / rows as f64;
    let loss_before = step["loss_before"].as_f64().unwrap();
    assert!((loss - loss_before).abs() <= 1e-4, "loss {loss} vs loss_before {loss_before}");

    let mut adam = Adam::<AB>::new(settings, &model);
    let model: TextClassifier<AB> = adam.step(lr, model, grads, 1.0);
    let after = model.valid();
    let (ids, mask) = bertlab_train::predict::batch_tensors::<Flex>(&arrays, &device);
    let got = logits_to_vec(after.forward(ids, mask, Precision::F32));
    let want = flat_f32(&step["logits_after"]);
    let max_diff = bertlab_run::metrics::max_abs_diff(&got, &want);
    eprintln!("loss_before {loss:.9} (torch {loss_before:.9}); logits_after max |diff| = {max_diff:e}");
    assert!(max_diff <= 1e-6, "logits after one AdamW step: {got:?} vs {want:?}");
}

/// Largest |a − b| over every parameter gradient of `model`.
fn max_grad_diff(model: &TextClassifier<AB>, a: &GradientsParams, b: &GradientsParams) -> f32 {
    struct Diff<'a> {
        a: &'a GradientsParams,
        b: &'a GradientsParams,
        max: f32,
        count: usize,
    }
    impl ModuleVisitor<AB> for Diff<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let (Some(x), Some(y)) = (self.a.get::<Flex, D>(param.id), self.b.get::<Flex, D>(param.id))
            else {
                assert!(
                    self.a.get::<Flex, D>(param.id).is_none() && self.b.get::<Flex, D>(param.id).is_none()
                );
                return;
            };
            self.count += 1;
            let diff: f32 = (x - y).abs().max().into_scalar();
            // A NaN gradient must fail the comparison, not vanish in `max`.
            self.max = self.max.max(if diff.is_finite() { diff } else { f32::INFINITY });
        }
    }
    let mut d = Diff { a, b, max: 0.0, count: 0 };
    model.visit(&mut d);
    assert!(d.count > 30, "only {} gradients compared", d.count);
    d.max
}

#[test]
fn accumulated_micro_batches_equal_the_full_batch_gradient() {
    let Some(Fixture { model, arrays, labels, .. }) = fixture() else { return };
    let device = Default::default();
    let (full, _) = forward_backward(&model, &arrays, &labels, 1.0 / 3.0, Precision::F32, &device);
    // Rows {0, 1} then row {2}: each micro-batch loss weighted by 1 / (rows in the step).
    let part = |rows: std::ops::Range<usize>| BatchArrays {
        input_ids: arrays.input_ids[rows.start * arrays.len..rows.end * arrays.len].to_vec(),
        attention_mask: arrays.attention_mask[rows.start * arrays.len..rows.end * arrays.len].to_vec(),
        rows: rows.len(),
        len: arrays.len,
    };
    let mut acc = GradientsAccumulator::<TextClassifier<AB>>::new();
    let (g1, _) = forward_backward(&model, &part(0..2), &labels[0..2], 1.0 / 3.0, Precision::F32, &device);
    acc.accumulate(&model, g1);
    let (g2, _) = forward_backward(&model, &part(2..3), &labels[2..3], 1.0 / 3.0, Precision::F32, &device);
    acc.accumulate(&model, g2);
    let accumulated = acc.grads();
    let diff = max_grad_diff(&model, &full, &accumulated);
    assert!(diff < 1e-7, "accumulated gradient differs from the full batch's by {diff}");
}

/// Rows of the fixture's batch as token ids (its mask's ones).
fn fixture_rows(arrays: &BatchArrays) -> Vec<Vec<u32>> {
    (0..arrays.rows)
        .map(|r| {
            let span = r * arrays.len..(r + 1) * arrays.len;
            span.filter(|&i| arrays.attention_mask[i] == 1).map(|i| arrays.input_ids[i] as u32).collect()
        })
        .collect()
}

#[test]
fn filler_rows_change_no_loss_gradient_or_logit() {
    let Some(Fixture { model, arrays, labels, .. }) = fixture() else { return };
    let device = Default::default();
    let rows = fixture_rows(&arrays);
    let fill = |r: usize, out: &mut Vec<i64>| out.extend(rows[r].iter().map(|&id| i64::from(id)));
    let batch = Batch { rows: vec![0, 1, 2], padded_len: arrays.len, filler: 0 };
    let plain = BatchArrays::pack(&batch, 0, fill);
    // A partial batch of 3 filled to 8 rows, as the last batch of a split is.
    let filled = BatchArrays::pack(&Batch { filler: 5, ..batch }, 0, fill);
    assert_eq!((plain.rows, filled.rows), (3, 8));
    let weight = 1.0 / 3.0;
    let (g_plain, l_plain) = forward_backward(&model, &plain, &labels, weight, Precision::F32, &device);
    let (g_filled, l_filled) = forward_backward(&model, &filled, &labels, weight, Precision::F32, &device);
    let (l_plain, mut l_filled) = (logits_to_vec(l_plain), logits_to_vec(l_filled));
    // The logits keep the filler rows (whoever reads them drops them: `PendingLogits`), after
    // the real ones.
    assert_eq!(l_filled.len(), 8 * 2, "the batch's logits, filler rows included");
    l_filled.truncate(3 * 2);
    let diff = bertlab_run::metrics::max_abs_diff(&l_plain, &l_filled);
    assert!(diff <= 1e-6, "logits differ by {diff}: {l_plain:?} vs {l_filled:?}");
    let loss =
        |l: &[f32]| bertlab_train::metrics::cross_entropy_rows(l, &labels, 2).iter().sum::<f64>() / 3.0;
    assert!((loss(&l_plain) - loss(&l_filled)).abs() <= 1e-7);
    let diff = max_grad_diff(&model, &g_plain, &g_filled);
    assert!(diff <= 1e-6, "gradients with filler rows differ by {diff}");
}

#[test]
fn evaluation_with_a_filled_last_batch_gives_the_same_metrics() {
    let Some(Fixture { model, arrays, labels, .. }) = fixture() else { return };
    let device = Default::default();
    let model = model.valid();
    // 7 texts: the fixture's 3 rows and shortened copies, in batches of 4 (the second, of 3
    // rows, filled to 4) and in one batch of 8 (no filler: one batch).
    let mut rows = fixture_rows(&arrays);
    for r in 0..4 {
        let mut row = rows[r % 3].clone();
        row.truncate(row.len() - 1 - r.min(row.len() - 3));
        row.push(*rows[r % 3].last().unwrap());
        rows.push(row);
    }
    let labels: Vec<u32> = (0..7).map(|i| labels[i % 3]).collect();
    let encoded = EncodedTexts::from_rows(&rows, 30_522, arrays.len, Truncation::Head);
    let settings = |batch| EvalSettings {
        batch,
        padding: Padding::Bucket,
        pad_multiple: 8,
        precision: Precision::F32,
        pad_id: 0,
    };
    let filled = predict_logits(&model, &encoded, &settings(4), &device);
    let whole = predict_logits(&model, &encoded, &settings(8), &device);
    assert_eq!(filled.len(), 7 * 2);
    let diff = bertlab_run::metrics::max_abs_diff(&filled, &whole);
    assert!(diff <= 1e-6, "logits differ by {diff}");
    let (a, b) = (metrics_from_logits(&filled, &labels, 2), metrics_from_logits(&whole, &labels, 2));
    assert_eq!((a.accuracy, a.confusion.clone()), (b.accuracy, b.confusion.clone()));
    assert!((a.loss.unwrap() - b.loss.unwrap()).abs() <= 1e-7);
}
