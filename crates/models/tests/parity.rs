//! f32 eval-mode parity with `transformers` (PyTorch) on the shared fixtures: max abs error
//! ≤ 1e-4. Each check runs the fused ops (`Kernels::Fused`, the default) and the seam's
//! reference decomposition (`Kernels::Reference`), so both paths are held to the fixtures.

mod common;

use bertlab_hub::{HubOptions, RepoRef};
use bertlab_models::{load_classifier, load_encoder, mean_pool, Kernels, Precision};
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use common::*;

const TOLERANCE: f32 = 1e-4;

fn hub() -> HubOptions {
    HubOptions::default()
}

/// Encoder outputs of a fixture against its expected.json, fused and reference.
fn check_encoder<B: Backend>(name: &str) {
    check_encoder_with::<B>(name, Kernels::Fused);
    check_encoder_with::<B>(name, Kernels::Reference);
}

fn check_encoder_with<B: Backend>(name: &str, kernels: Kernels) {
    let Some(dir) = fixture(name) else { return };
    let expected = read_json(&dir.join("expected.json"));
    let device = B::Device::default();
    let (encoder, _, _) = load_encoder::<B>(&RepoRef::Local(dir), &hub(), &device).unwrap();
    let encoder = encoder.with_kernels(kernels);
    let ids = int_matrix::<B>(&expected["input_ids"], &device);
    let mask = int_matrix::<B>(&expected["attention_mask"], &device);
    let out = encoder.forward(ids, mask, Precision::F32);
    let err = max_abs_diff(&values(out.last_hidden_state), &flat_f32(&expected["last_hidden_state"]));
    eprintln!("{name} last_hidden_state ({kernels:?}): max abs error {err:.2e}");
    assert!(err <= TOLERANCE, "{name} last_hidden_state ({kernels:?}): max abs error {err}");
    match expected.get("pooler_output") {
        Some(pooled) => {
            let got = out.pooler_output.expect("BERT fixture has a pooler");
            let err = max_abs_diff(&values(got), &flat_f32(pooled));
            assert!(err <= TOLERANCE, "{name} pooler_output ({kernels:?}): max abs error {err}");
        }
        None => assert!(out.pooler_output.is_none(), "{name}: DistilBERT has no pooler"),
    }
}

fn check_classifier<B: Backend>(name: &str) {
    check_classifier_with::<B>(name, Kernels::Fused);
    check_classifier_with::<B>(name, Kernels::Reference);
}

fn check_classifier_with<B: Backend>(name: &str, kernels: Kernels) {
    let Some(dir) = fixture(name) else { return };
    let expected = read_json(&dir.join("expected.json"));
    let device = B::Device::default();
    let (model, config, report) =
        load_classifier::<B>(&RepoRef::Local(dir), &hub(), &[], 0, &device).unwrap();
    assert!(report.initialised.is_empty(), "{name}: {report:?}");
    assert!(report.ignored.is_empty(), "{name}: {report:?}");
    assert_eq!(config.num_labels(), 2);
    let model = model.with_kernels(kernels);
    let ids = int_matrix::<B>(&expected["input_ids"], &device);
    let mask = int_matrix::<B>(&expected["attention_mask"], &device);
    let logits = model.forward(ids, mask, Precision::F32);
    assert_eq!(logits.dims(), [3, 2]);
    let err = max_abs_diff(&values(logits), &flat_f32(&expected["logits"]));
    eprintln!("{name} logits ({kernels:?}): max abs error {err:.2e}");
    assert!(err <= TOLERANCE, "{name} logits ({kernels:?}): max abs error {err}");
}

#[test]
fn tiny_bert_hidden_state_and_pooler_match_transformers() {
    check_encoder::<Flex>("tiny-bert");
}

#[test]
fn tiny_distilbert_hidden_state_matches_transformers() {
    check_encoder::<Flex>("tiny-distilbert");
}

#[test]
fn tiny_bert_classifier_logits_match_transformers() {
    check_classifier::<Flex>("tiny-bert-classifier");
}

#[test]
fn tiny_distilbert_classifier_logits_match_transformers() {
    check_classifier::<Flex>("tiny-distilbert-classifier");
}

/// The training backend in eval mode (`valid()`) gives the fixture's logits; in training mode
/// (autodiff, dropout 0.1 in this config) it does not.
#[test]
fn autodiff_model_is_in_training_mode_and_valid_is_eval_mode() {
    type B = Autodiff<Flex>;
    let Some(dir) = fixture("tiny-bert-classifier") else { return };
    let expected = read_json(&dir.join("expected.json"));
    let device = Default::default();
    let (model, config, _) = load_classifier::<B>(&RepoRef::Local(dir), &hub(), &[], 0, &device).unwrap();
    assert!(config.hidden_dropout_prob > 0.0);
    let want = flat_f32(&expected["logits"]);

    let eval = model.valid();
    let ids = int_matrix::<Flex>(&expected["input_ids"], &device);
    let mask = int_matrix::<Flex>(&expected["attention_mask"], &device);
    let err = max_abs_diff(&values(eval.forward(ids, mask, Precision::F32)), &want);
    assert!(err <= TOLERANCE, "valid(): max abs error {err}");
    assert_eq!(eval.config(), &config, "the config survives valid()");

    <B as Backend>::seed(&device, 3);
    bertlab_models::ops::seed_dropout(3);
    let ids = int_matrix::<B>(&expected["input_ids"], &device);
    let mask = int_matrix::<B>(&expected["attention_mask"], &device);
    let train = values(model.forward(ids, mask, Precision::F32));
    assert!(max_abs_diff(&train, &want) > 1e-3, "dropout must act when training");
}

/// The real all-MiniLM-L6-v2: [CLS] hidden state and mask-weighted mean of its four texts.
#[test]
fn minilm_cls_and_mean_pooled_match_transformers() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let expected = read_json(&shared.join("fixtures/minilm-expected.json"));
    let device = Default::default();
    let repo = RepoRef::Local(shared.join("models/all-MiniLM-L6-v2"));
    let (encoder, config, report) = load_encoder::<Flex>(&repo, &hub(), &device).unwrap();
    assert_eq!((config.hidden_size, config.num_hidden_layers), (384, 6));
    assert_eq!(report.ignored, ["embeddings.position_ids"], "only the buffer is unused");
    let ids = int_matrix::<Flex>(&expected["input_ids"], &device);
    let mask = int_matrix::<Flex>(&expected["attention_mask"], &device);
    for kernels in [Kernels::Fused, Kernels::Reference] {
        let out = encoder.clone().with_kernels(kernels).forward(ids.clone(), mask.clone(), Precision::F32);
        assert!(out.pooler_output.is_some(), "MiniLM ships pooler weights");
        let cls = values(bertlab_models::cls(out.last_hidden_state.clone()));
        let err = max_abs_diff(&cls, &flat_f32(&expected["cls_hidden"]));
        eprintln!("minilm cls_hidden ({kernels:?}): max abs error {err:.2e}");
        assert!(err <= TOLERANCE, "cls_hidden ({kernels:?}): max abs error {err}");
        let mean = values(mean_pool(out.last_hidden_state, mask.clone()));
        let err = max_abs_diff(&mean, &flat_f32(&expected["mean_pooled"]));
        eprintln!("minilm mean_pooled ({kernels:?}): max abs error {err:.2e}");
        assert!(err <= TOLERANCE, "mean_pooled ({kernels:?}): max abs error {err}");
    }
}

/// f16 and bf16 matmuls stay close to f32 (their rounding, not a bug, sets the bound).
#[test]
fn mixed_precision_stays_close_to_f32() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let expected = read_json(&shared.join("fixtures/minilm-expected.json"));
    let device = Default::default();
    let repo = RepoRef::Local(shared.join("models/all-MiniLM-L6-v2"));
    let (encoder, _, _) = load_encoder::<Flex>(&repo, &hub(), &device).unwrap();
    let ids = int_matrix::<Flex>(&expected["input_ids"], &device);
    let mask = int_matrix::<Flex>(&expected["attention_mask"], &device);
    let reference = flat_f32(&expected["mean_pooled"]);
    for (precision, bound) in [(Precision::F16, 5e-3), (Precision::BF16, 5e-2)] {
        for kernel in [Kernels::Fused, Kernels::Reference] {
            let encoder = encoder.clone().with_kernels(kernel);
            let out = encoder.forward(ids.clone(), mask.clone(), precision);
            let mean = values(mean_pool(out.last_hidden_state, mask.clone()));
            let err = max_abs_diff(&mean, &reference);
            eprintln!("{precision} {kernel:?}: mean_pooled max abs error vs f32 transformers {err:.2e}");
            assert!(err <= bound, "{precision} {kernel:?}: max abs error {err} > {bound}");
        }
    }
}
