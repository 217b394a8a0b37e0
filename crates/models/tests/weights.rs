//! Loading variants (prefixes, legacy names, stored dtypes, absent heads), errors, and the
//! export → reload round trip.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bertlab_hub::{HubOptions, RepoRef};
use bertlab_models::{
    export_classifier, load_classifier, load_encoder, ConfigError, ModelError, Precision, TextClassifier,
};
use burn::backend::Flex;
use common::*;
use safetensors::{Dtype, SafeTensors};

fn hub() -> HubOptions {
    HubOptions::default()
}

/// Logits of the fixture inputs.
fn logits(model: &TextClassifier<Flex>, fixture_dir: &Path) -> Vec<f32> {
    let expected = read_json(&fixture_dir.join("expected.json"));
    let device = Default::default();
    let ids = int_matrix::<Flex>(&expected["input_ids"], &device);
    let mask = int_matrix::<Flex>(&expected["attention_mask"], &device);
    values(model.forward(ids, mask, Precision::F32))
}

/// Copy a fixture's config.json into `dst` and write its weights through `edit`, which maps
/// (name, dtype, shape, bytes) to the tensors to store.
fn rewrite_fixture(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&str, Dtype, &[usize], &[u8]) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Vec::new();
    for (name, view) in file.tensors() {
        out.extend(edit(&name, view.dtype(), view.shape(), view.data()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = out
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
}

fn f32_to(dtype: Dtype, data: &[u8]) -> Vec<u8> {
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .flat_map(|v| match dtype {
            Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
            Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes(),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn export_then_reload_gives_identical_logits_and_transformers_names() {
    let Some(dir) = fixture("tiny-distilbert-classifier") else { return };
    let device = Default::default();
    let labels = labels(&["neg", "pos"]);
    let (model, config, _) =
        load_classifier::<Flex>(&RepoRef::Local(dir.clone()), &hub(), &labels, 0, &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    let export_dir = out.path().join("exported");
    export_classifier(&model, &config, &export_dir, Some(&dir)).unwrap();
    // Exporting again replaces the directory atomically and leaves no temporary behind.
    export_classifier(&model, &config, &export_dir, Some(&dir)).unwrap();
    let mut entries: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["exported"]);

    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(export_dir.join(file).is_file(), "{file} missing from the export");
    }
    let json = read_json(&export_dir.join("config.json"));
    assert_eq!(json["architectures"], serde_json::json!(["DistilBertForSequenceClassification"]));
    assert_eq!(json["model_type"], "distilbert");
    assert_eq!(json["num_labels"], 2);
    assert_eq!(json["id2label"], serde_json::json!({"0": "neg", "1": "pos"}));
    assert_eq!(json["label2id"], serde_json::json!({"neg": 0, "pos": 1}));
    assert_eq!(json["tie_word_embeddings"], true, "original keys are kept");

    // Same tensor names, shapes and values as the transformers checkpoint it came from.
    let original = std::fs::read(dir.join("model.safetensors")).unwrap();
    let exported = std::fs::read(export_dir.join("model.safetensors")).unwrap();
    let (original, exported) =
        (SafeTensors::deserialize(&original).unwrap(), SafeTensors::deserialize(&exported).unwrap());
    let shapes = |f: &SafeTensors| -> BTreeMap<String, Vec<usize>> {
        f.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect()
    };
    assert_eq!(shapes(&original), shapes(&exported));
    for (name, view) in original.tensors() {
        assert_eq!(view.data(), exported.tensor(&name).unwrap().data(), "{name} changed in the round trip");
    }
    let (_, metadata) =
        SafeTensors::read_metadata(&std::fs::read(export_dir.join("model.safetensors")).unwrap()).unwrap();
    assert_eq!(metadata.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));

    let (reloaded, reconfig, report) =
        load_classifier::<Flex>(&RepoRef::Local(export_dir.clone()), &hub(), &[], 0, &device).unwrap();
    assert!(report.initialised.is_empty() && report.ignored.is_empty(), "{report:?}");
    assert_eq!(reconfig.labels, labels);
    assert_eq!(logits(&reloaded, &dir), logits(&model, &dir), "identical logits after the round trip");
}

/// A model being trained (on an autodiff backend, parameters tracked) exports the same file:
/// the fused Q/K/V parameter's blocks are read off the graph.
#[test]
fn a_training_model_exports_the_same_tensors() {
    let Some(dir) = fixture("tiny-distilbert-classifier") else { return };
    type AD = burn::backend::Autodiff<Flex>;
    let (model, config, _) =
        load_classifier::<AD>(&RepoRef::Local(dir.clone()), &hub(), &[], 0, &Default::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    export_classifier(&model, &config, out.path(), None).unwrap();
    let original = std::fs::read(dir.join("model.safetensors")).unwrap();
    let exported = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let (original, exported) =
        (SafeTensors::deserialize(&original).unwrap(), SafeTensors::deserialize(&exported).unwrap());
    assert_eq!(original.len(), exported.len());
    for (name, view) in original.tensors() {
        assert_eq!(view.data(), exported.tensor(&name).unwrap().data(), "{name} changed in the export");
    }
}

#[test]
fn bert_export_uses_bert_prefix_and_keeps_pooler() {
    let Some(dir) = fixture("tiny-bert-classifier") else { return };
    let device = Default::default();
    let (model, config, _) =
        load_classifier::<Flex>(&RepoRef::Local(dir.clone()), &hub(), &[], 0, &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    export_classifier(&model, &config, out.path(), None).unwrap();
    let original = std::fs::read(dir.join("model.safetensors")).unwrap();
    let exported = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let names = |bytes: &[u8]| -> Vec<String> {
        let mut n: Vec<String> =
            SafeTensors::deserialize(bytes).unwrap().names().into_iter().map(String::from).collect();
        n.sort();
        n
    };
    assert_eq!(names(&original), names(&exported));
    assert!(!out.path().join("vocab.txt").exists(), "no tokenizer dir, no tokenizer files");
    let json = read_json(&out.path().join("config.json"));
    assert_eq!(json["architectures"], serde_json::json!(["BertForSequenceClassification"]));
}

/// A BERT pre-training checkpoint (`bert.` prefix, LayerNorm gamma/beta, `cls.*` heads): the
/// backbone loads, the classifier is initialised from the seed, the heads are ignored.
#[test]
fn pretraining_checkpoint_gets_a_seeded_head() {
    let Some(dir) = fixture("tiny-bert") else { return };
    let device = Default::default();
    let repo = RepoRef::Local(dir.clone());
    let three = labels(&["a", "b", "c"]);
    let (model, config, report) = load_classifier::<Flex>(&repo, &hub(), &three, 7, &device).unwrap();
    assert_eq!(config.num_labels(), 3);
    assert_eq!(report.initialised, ["classifier.weight", "classifier.bias"]);
    assert!(report.ignored.iter().all(|n| n.starts_with("cls.")), "{:?}", report.ignored);
    assert_eq!(report.ignored.len(), 7);

    let first = logits(&model, &dir);
    assert_eq!(first.len(), 9);
    let (again, _, _) = load_classifier::<Flex>(&repo, &hub(), &three, 7, &device).unwrap();
    assert_eq!(logits(&again, &dir), first, "same seed, same head");
    let (other, _, _) = load_classifier::<Flex>(&repo, &hub(), &three, 8, &device).unwrap();
    assert_ne!(logits(&other, &dir), first, "another seed, another head");
}

#[test]
fn masked_lm_distilbert_gets_both_head_layers() {
    let Some(dir) = fixture("tiny-distilbert") else { return };
    let device = Default::default();
    let (_, _, report) =
        load_classifier::<Flex>(&RepoRef::Local(dir), &hub(), &labels(&["neg", "pos"]), 0, &device).unwrap();
    assert_eq!(
        report.initialised,
        ["pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"]
    );
    assert_eq!(
        report.ignored,
        [
            "vocab_layer_norm.bias",
            "vocab_layer_norm.weight",
            "vocab_projector.bias",
            "vocab_transform.bias",
            "vocab_transform.weight"
        ]
    );
}

/// Unprefixed names and F16/BF16 storage load to the same model (up to the storage rounding).
#[test]
fn unprefixed_and_half_precision_files_load() {
    let Some(dir) = fixture("tiny-bert-classifier") else { return };
    let device = Default::default();
    let (reference, _, _) =
        load_classifier::<Flex>(&RepoRef::Local(dir.clone()), &hub(), &[], 0, &device).unwrap();
    let want = logits(&reference, &dir);
    let tmp = tempfile::tempdir().unwrap();
    for (dtype, bound) in [(Dtype::F32, 0.0), (Dtype::F16, 1e-3), (Dtype::BF16, 1e-2)] {
        let out = tmp.path().join(format!("{dtype:?}"));
        rewrite_fixture(&dir, &out, |name, d, shape, data| {
            assert_eq!(d, Dtype::F32);
            let name = name.strip_prefix("bert.").unwrap_or(name).to_string();
            let data = if dtype == Dtype::F32 { data.to_vec() } else { f32_to(dtype, data) };
            vec![(name, dtype, shape.to_vec(), data)]
        });
        let (model, _, report) =
            load_classifier::<Flex>(&RepoRef::Local(out), &hub(), &[], 0, &device).unwrap();
        assert!(report.initialised.is_empty() && report.ignored.is_empty(), "{report:?}");
        let err = max_abs_diff(&logits(&model, &dir), &want);
        assert!(err <= bound, "{dtype:?}: max abs error {err}");
    }
}

#[test]
fn shape_mismatch_names_the_tensor_and_both_shapes() {
    let Some(dir) = fixture("tiny-bert-classifier") else { return };
    let err = load_classifier::<Flex>(
        &RepoRef::Local(dir),
        &hub(),
        &labels(&["a", "b", "c"]),
        0,
        &Default::default(),
    )
    .map(|_| ())
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("classifier.weight") && msg.contains("[2, 32]") && msg.contains("[3, 32]"), "{msg}");
}

/// A NaN or an infinity anywhere in a tensor the model reads refuses the file, naming the
/// tensor, the first bad value and where it is: F32 and F16 storage, backbone and head, through
/// both loaders.
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let Some(dir) = fixture("tiny-bert-classifier") else { return };
    let tmp = tempfile::tempdir().unwrap();
    /// (flat index, value) pairs written into one tensor.
    type Poison = &'static [(usize, f32)];
    // (tensor, stored dtype, poison, expected message part)
    let cases: [(&str, Dtype, Poison, &str); 3] = [
        (
            "bert.encoder.layer.1.output.dense.weight",
            Dtype::F32,
            &[(5, f32::NAN), (2047, f32::NAN)],
            "2 non-finite value(s) (first: NaN at flat index 5",
        ),
        (
            "classifier.bias",
            Dtype::F16,
            &[(0, f32::INFINITY), (1, f32::NEG_INFINITY)],
            "2 non-finite value(s) (first: inf at flat index 0",
        ),
        (
            "bert.embeddings.word_embeddings.weight",
            Dtype::F32,
            &[(976_703, f32::NEG_INFINITY)],
            "1 non-finite value(s) (first: -inf at flat index 976703",
        ),
    ];
    for (i, (target, dtype, poison, want)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("case{i}"));
        rewrite_fixture(&dir, &out, |name, d, shape, data| {
            let mut data = data.to_vec();
            if name == target {
                for &(at, value) in poison {
                    data[4 * at..4 * at + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            let (dtype, data) = if dtype == Dtype::F32 { (d, data) } else { (dtype, f32_to(dtype, &data)) };
            vec![(name.to_string(), dtype, shape.to_vec(), data)]
        });
        let err = load_classifier::<Flex>(&RepoRef::Local(out.clone()), &hub(), &[], 0, &Default::default())
            .map(|_| ())
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelError::NonFiniteWeights { .. }), "{msg}");
        assert!(msg.contains(&format!("model.safetensors: tensor `{target}` holds {want}")), "{msg}");
        if !target.starts_with("classifier") {
            let msg = load_encoder::<Flex>(&RepoRef::Local(out), &hub(), &Default::default())
                .map(|_| ())
                .unwrap_err();
            assert!(msg.to_string().contains(target), "the encoder loader scans too: {msg}");
        }
    }
}

/// A config.json that cannot describe a classifier is refused, naming the file and the key,
/// before the weights are read; one that disagrees with the weights names the tensor and both
/// shapes.
#[test]
fn bad_config_json_is_refused_naming_file_and_key() {
    let Some(dir) = fixture("tiny-bert-classifier") else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
    let config = read_json(&dir.join("config.json"));
    let load = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json = config.clone();
        edit(&mut json);
        std::fs::write(tmp.path().join("config.json"), json.to_string()).unwrap();
        load_classifier::<Flex>(&RepoRef::Local(tmp.path().into()), &hub(), &[], 0, &Default::default())
            .map(|_| ())
            .unwrap_err()
    };
    let config_path = tmp.path().join("config.json").display().to_string();
    type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 4] = [
        (
            &|j| j["id2label"] = serde_json::json!({"0": "neg", "00": "pos"}),
            "key `id2label`: ids \"0\" and \"00\" both stand for class 0",
        ),
        (
            &|j| j["num_labels"] = 1_000_000_000_000u64.into(),
            "key `num_labels`: 1000000000000 is above the limit",
        ),
        (
            &|j| j["vocab_size"] = 1_000_000_000_000u64.into(),
            "key `vocab_size`: 1000000000000 is above the limit",
        ),
        (&|j| j["pad_token_id"] = 40_000.into(), "key `pad_token_id`: 40000 is not a token"),
    ];
    for (edit, want) in cases {
        let err = load(edit);
        let msg = err.to_string();
        assert!(matches!(err, ModelError::Config { .. }), "{msg}");
        assert!(msg.starts_with(&format!("{config_path}: {want}")), "{msg}");
    }
    let err = load(&|j| j["vocab_size"] = 30_000.into());
    let msg = err.to_string();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains(
            "model.safetensors: tensor `bert.embeddings.word_embeddings.weight` has shape [30522, 32] but \
             the model built from the config expects [30000, 32]"
        ),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_an_error_naming_it() {
    let Some(dir) = fixture("tiny-distilbert-classifier") else { return };
    let tmp = tempfile::tempdir().unwrap();
    rewrite_fixture(&dir, tmp.path(), |name, d, shape, data| {
        if name == "distilbert.transformer.layer.1.ffn.lin2.weight" {
            vec![]
        } else {
            vec![(name.to_string(), d, shape.to_vec(), data.to_vec())]
        }
    });
    let err =
        load_classifier::<Flex>(&RepoRef::Local(tmp.path().into()), &hub(), &[], 0, &Default::default())
            .map(|_| ())
            .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("transformer.layer.1.ffn.lin2.weight") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn ambiguous_legacy_and_modern_names_are_an_error() {
    let Some(dir) = fixture("tiny-bert") else { return };
    let tmp = tempfile::tempdir().unwrap();
    rewrite_fixture(&dir, tmp.path(), |name, d, shape, data| {
        let mut out = vec![(name.to_string(), d, shape.to_vec(), data.to_vec())];
        if name == "bert.embeddings.LayerNorm.gamma" {
            out.push(("bert.embeddings.LayerNorm.weight".into(), d, shape.to_vec(), data.to_vec()));
        }
        out
    });
    let msg =
        load_classifier::<Flex>(&RepoRef::Local(tmp.path().into()), &hub(), &[], 0, &Default::default())
            .map(|_| ())
            .unwrap_err()
            .to_string();
    assert!(msg.contains("LayerNorm.gamma") && msg.contains("LayerNorm.weight"), "{msg}");
}

#[test]
fn unknown_model_type_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "roberta", "hidden_size": 32}"#)
        .unwrap();
    let err =
        load_classifier::<Flex>(&RepoRef::Local(tmp.path().into()), &hub(), &[], 0, &Default::default())
            .map(|_| ())
            .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Config(ConfigError::UnknownModelType { .. })), "{msg}");
    assert!(msg.contains("roberta") && msg.contains("config.json"), "{msg}");
}

#[test]
fn missing_weights_file_names_it() {
    let Some(dir) = fixture("tiny-bert") else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    let msg =
        load_classifier::<Flex>(&RepoRef::Local(tmp.path().into()), &hub(), &[], 0, &Default::default())
            .map(|_| ())
            .unwrap_err()
            .to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn export_refuses_a_config_that_does_not_describe_the_model() {
    let Some(dir) = fixture("tiny-distilbert-classifier") else { return };
    let (model, config, _) =
        load_classifier::<Flex>(&RepoRef::Local(dir), &hub(), &[], 0, &Default::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wrong = config.with_labels(&["a", "b", "c"]);
    let msg = export_classifier(&model, &wrong, &tmp.path().join("x"), None).unwrap_err().to_string();
    assert!(msg.contains("num_labels"), "{msg}");
    assert!(!tmp.path().join("x").exists());
}

/// With `sinusoidal_pos_embds` and no position table in the file, DistilBERT uses the fixed
/// sin/cos table of transformers' `create_sinusoidal_embeddings`.
#[test]
fn sinusoidal_positions_fill_an_absent_table() {
    let Some(dir) = fixture("tiny-distilbert-classifier") else { return };
    let tmp = tempfile::tempdir().unwrap();
    rewrite_fixture(&dir, tmp.path(), |name, d, shape, data| {
        if name.ends_with("position_embeddings.weight") {
            vec![]
        } else {
            vec![(name.to_string(), d, shape.to_vec(), data.to_vec())]
        }
    });
    let mut config = read_json(&dir.join("config.json"));
    config["sinusoidal_pos_embds"] = true.into();
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    let device = Default::default();
    let (model, _, report) =
        load_classifier::<Flex>(&RepoRef::Local(tmp.path().into()), &hub(), &[], 0, &device).unwrap();
    assert_eq!(report.initialised, ["distilbert.embeddings.position_embeddings.weight"]);
    // Read the table back through an export.
    let out = tmp.path().join("export");
    let config = model.config().clone();
    export_classifier(&model, &config, &out, None).unwrap();
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let table = file.tensor("distilbert.embeddings.position_embeddings.weight").unwrap();
    assert_eq!(table.shape(), [512, 32]);
    let at = |pos: usize, j: usize| {
        let i = (pos * 32 + j) * 4;
        f32::from_le_bytes(table.data()[i..i + 4].try_into().unwrap())
    };
    let angle = |pos: f64, j: usize| pos / 10000f64.powf((2 * (j / 2)) as f64 / 32.0);
    let expected: HashMap<(usize, usize), f64> = HashMap::from([
        ((0, 0), 0.0),
        ((0, 1), 1.0),
        ((3, 0), 3f64.sin()),
        ((3, 1), 3f64.cos()),
        ((7, 10), angle(7.0, 10).sin()),
        ((7, 11), angle(7.0, 11).cos()),
    ]);
    for ((pos, j), want) in expected {
        assert!(
            (at(pos, j) as f64 - want).abs() < 1e-6,
            "position {pos}, column {j}: {} vs {want}",
            at(pos, j)
        );
    }
}
