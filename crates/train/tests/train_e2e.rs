//! End to end: fine-tune the tiny DistilBERT fixture on a handful of real IMDB reviews, check the
//! record, that `best/` reloads to the same predictions, and that a rerun is bit-identical.

use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::load_classifier;
use bertlab_train::{
    evaluate, train, EvalSettings, OptimizerKind, Padding, Precision, ProgressMode, RunRecord, RunSpec,
    RunStatus, Schedule, TrainOptions,
};
use std::path::Path;

type AB = burn::backend::Autodiff<burn::backend::Flex>;

fn spec(shared: &Path, out: &Path) -> RunSpec {
    RunSpec {
        model: shared.join("fixtures/tiny-distilbert-classifier").display().to_string(),
        source: shared.join("data/hf-imdb").display().to_string(),
        // 0.002 of 49,994 rows: a pool of 99 → 69 train, 10 val, 20 test.
        subset: 0.002,
        seed: 7,
        max_len: 64,
        lr: 1e-3,
        batch: 8,
        eval_batch: Some(16),
        epochs: 2,
        optimizer: OptimizerKind::Adamw,
        out: out.to_path_buf(),
        ..RunSpec::default()
    }
}

fn options() -> TrainOptions {
    TrainOptions {
        backend_name: "cpu (burn-flex)".into(),
        progress: ProgressMode::Quiet,
        ..TrainOptions::default()
    }
}

#[test]
fn tiny_model_trains_records_exports_and_repeats() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec(&shared, &tmp.path().join("run"));
    let record = train::<AB>(&spec, &Default::default(), &options()).unwrap();

    // The record on disk is the one returned.
    let on_disk = RunRecord::read(&spec.out.join("record.json")).unwrap();
    assert_eq!(on_disk, record);
    assert_eq!(record.schema_version, 1);
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.spec, spec);
    assert_eq!((record.data.pool, record.data.train, record.data.val, record.data.test), (99, 69, 10, 20));
    assert_eq!(record.data.class_names, vec!["neg", "pos"]);
    assert_eq!(record.data.train_padding.real_tokens, record.data.train_padding.real_tokens.min(69 * 64));
    assert!(record.data.train_padding.padded_tokens >= record.data.train_padding.real_tokens);
    // Every batch the model saw had a planned shape: training's 8 rows (69 = 8 × 8 + 5, the
    // last batch filled), evaluation's 16 (10 val rows, one batch of 10; 20 test rows, 16 + 4
    // filled), lengths of multiples of 32 up to 64.
    let shapes = record.shapes.clone().expect("the record keeps the shapes");
    assert!(
        shapes.iter().all(|s| spec.planned_shapes().contains(s) || *s == [10, 32] || *s == [10, 64]),
        "{shapes:?}"
    );
    assert!(shapes.iter().any(|s| s[0] == 8) && shapes.iter().any(|s| s[0] == 16), "{shapes:?}");
    assert_eq!(record.epochs.len(), 2);
    for (i, e) in record.epochs.iter().enumerate() {
        assert_eq!(e.epoch, i + 1);
        assert_eq!(e.steps, 9); // ceil(69 / 8)
        assert!(e.train_loss.is_finite() && e.val_loss.is_finite());
        assert!((0.0..=1.0).contains(&e.train_acc) && (0.0..=1.0).contains(&e.val_acc));
        assert!(e.train_seq_per_s > 0.0 && e.train_padded_tokens_per_s >= e.train_tokens_per_s);
        assert_eq!(e.lr, 1e-3);
    }
    let best = if record.epochs[1].val_loss < record.epochs[0].val_loss { 2 } else { 1 };
    assert_eq!(record.best_epoch, Some(best));
    assert_eq!(record.restored_epoch, Some(best));
    assert_eq!(record.val_acc_at_min_val_loss, Some(record.epochs[best - 1].val_acc));
    assert!(!record.stopped_early);
    let test = record.test.clone().unwrap();
    assert_eq!(test.n, 20);
    assert_eq!(test.confusion.iter().flatten().sum::<u64>(), 20);
    assert!(
        record.timings.elapsed_seconds > 0.0
            && record.timings.total_seconds >= record.timings.elapsed_seconds
    );
    assert_eq!(record.environment.precision, "f32");
    assert_eq!(record.environment.burn_version, "0.21.0");

    // best/ is a transformers snapshot that reloads to the same test metrics.
    let best_dir = spec.out.join("best");
    assert_eq!(record.best_dir.as_deref(), Some(best_dir.as_path()));
    for file in ["config.json", "model.safetensors", "vocab.txt", "tokenizer.json"] {
        assert!(best_dir.join(file).is_file(), "best/{file} missing");
    }
    let device = Default::default();
    let (reloaded, config, report) = load_classifier::<burn::backend::Flex>(
        &RepoRef::parse(best_dir.to_str().unwrap(), RepoKind::Model),
        &HubOptions::default(),
        &[],
        0,
        &device,
    )
    .unwrap();
    assert!(report.initialised.is_empty(), "the export holds the head: {:?}", report.initialised);
    assert_eq!(config.labels, vec!["neg", "pos"]);
    let data =
        bertlab_data::DatasetSource::parse(&spec.source).unwrap().load(&HubOptions::default()).unwrap();
    let split = bertlab_data::NotebookSplit::new(&data.labels, spec.subset, spec.seed).unwrap();
    let tokenizer = bertlab_tokenize::WordPieceTokenizer::from_dir(&best_dir).unwrap();
    let texts: Vec<&str> = split.test.iter().map(|&r| data.texts[r].as_str()).collect();
    let labels: Vec<u32> = split.test.iter().map(|&r| data.labels[r]).collect();
    let encoded = tokenizer.encode_all(&texts, spec.max_len, spec.truncation, false).unwrap();
    let eval = EvalSettings {
        batch: 16,
        padding: Padding::Bucket,
        pad_multiple: 8,
        precision: bertlab_models::Precision::F32,
        pad_id: tokenizer.pad_id(),
    };
    // Same weights (f32 round trip), same batches: the very same numbers.
    assert_eq!(evaluate(&reloaded, &encoded, &labels, &eval, &device), test);
    // …and not those of the untrained fixture: training changed the weights that were exported.
    let (untrained, _, _) = load_classifier::<burn::backend::Flex>(
        &RepoRef::parse(&spec.model, RepoKind::Model),
        &HubOptions::default(),
        &data.class_names,
        spec.seed,
        &device,
    )
    .unwrap();
    assert_ne!(evaluate(&untrained, &encoded, &labels, &eval, &device).loss, test.loss);

    // Same spec, same seed: bit-identical record (timings aside).
    let spec2 = RunSpec { out: tmp.path().join("run2"), ..spec.clone() };
    let record2 =
        train::<AB>(&spec2, &Default::default(), &TrainOptions { skip_export: true, ..options() }).unwrap();
    let (mut a, mut b) = (record.without_timings(), record2.without_timings());
    b.spec.out = a.spec.out.clone();
    (a.best_dir, b.best_dir) = (None, None);
    assert_eq!(a, b);
}

#[test]
fn fixed_padding_accumulation_clipping_schedule_and_half_precision() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for precision in [Precision::F32, Precision::BF16, Precision::F16] {
        let spec = RunSpec {
            epochs: 1,
            padding: Padding::Fixed,
            accum: 2,
            grad_clip: Some(1.0),
            schedule: Schedule::Linear,
            warmup_ratio: 0.2,
            precision,
            optimizer: OptimizerKind::Adam,
            ..spec(&shared, &tmp.path().join(precision.to_string()))
        };
        let opts = TrainOptions { skip_export: true, ..options() };
        let record = train::<AB>(&spec, &Default::default(), &opts).unwrap();
        let e = &record.epochs[0];
        // 9 batches in groups of 2 → 5 optimizer steps (minus f16 overflow skips).
        assert_eq!(e.steps + e.skipped_steps, 5, "{precision}");
        // 69 rows padded to 64 tokens, and 3 filler rows filling the last batch to 8 rows.
        assert_eq!(record.data.train_padding.padded_tokens, (69 + 3) * 64);
        // Fixed padding: training's 8 × 64, evaluation's 16 × 64 (test) and 10 × 64 (the 10
        // validation rows, one batch, not filled).
        assert_eq!(record.shapes.as_deref(), Some(&[[8, 64], [10, 64], [16, 64]][..]), "{precision}");
        assert!(e.train_loss.is_finite(), "{precision}: {}", e.train_loss);
        assert_eq!(record.environment.precision, precision.to_string());
        // Linear decay: 5 steps with ceil(0.2 × 5) = 1 warmup step; the last step's rate is 1/4 of the peak.
        if e.skipped_steps == 0 {
            assert!((e.lr - 1e-3 / 4.0).abs() < 1e-12, "{}", e.lr);
        }
        if precision == Precision::F16 {
            assert!(e.loss_scale >= 1.0);
        } else {
            assert_eq!(e.loss_scale, 1.0);
        }
        assert!(record.best_dir.is_none());
    }
}

#[test]
fn diverging_f32_run_stops_with_epoch_and_step() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // One Adam step moves every weight by about lr: 1e30 overflows the next forward pass.
    let spec = RunSpec { lr: 1e30, epochs: 1, ..spec(&shared, &tmp.path().join("diverged")) };
    let err = train::<AB>(&spec, &Default::default(), &options()).unwrap_err();
    let message = err.to_string();
    // The first step starts from the pretrained weights (finite loss); a later one overflows.
    let bertlab_train::TrainError::NonFiniteLoss { epoch: 1, step, .. } = err else { panic!("{message}") };
    assert!(step >= 2, "{message}");
    assert!(message.contains(&format!("at epoch 1, step {step} (lr 1e30)")), "{message}");
    // No record.json (the orchestrator would take the run as done), a failed record instead.
    assert!(!spec.out.join("record.json").exists());
    let failed = RunRecord::read(&spec.out.join("failed-record.json")).unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some(message.as_str()));
    assert!(failed.epochs.is_empty());
}

#[test]
fn a_max_len_beyond_the_models_positions_fails_before_anything_is_tokenized() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The fixture without the tokenizer's own limit (model_max_length 512), which would have
    // stopped the tokenizer anyway: only the model's 512 positions bound max_len now.
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(shared.join("fixtures/tiny-distilbert-classifier")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let config = model.join("tokenizer_config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("model_max_length");
    std::fs::write(&config, json.to_string()).unwrap();

    let cache = tmp.path().join("token-cache");
    let spec = RunSpec {
        model: model.display().to_string(),
        max_len: 600,
        cache_dir: Some(cache.clone()),
        ..spec(&shared, &tmp.path().join("run"))
    };
    let message = train::<AB>(&spec, &Default::default(), &options()).unwrap_err().to_string();
    assert!(message.starts_with("max_len 600 is out of range for "), "{message}");
    assert!(message.contains("model"), "{message}");
    assert!(message.ends_with(": above 512, the model's max_position_embeddings"), "{message}");
    // Checked before tokenizing: the token cache holds nothing.
    assert!(std::fs::read_dir(&cache).map_or(true, |mut d| d.next().is_none()), "{message}");
}

#[test]
fn a_warm_up_changes_nothing_but_the_time() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, warmup: bool, warmed_shapes: Vec<[usize; 2]>| {
        let spec = RunSpec { epochs: 1, ..spec(&shared, &tmp.path().join(name)) };
        let opts = TrainOptions { skip_export: true, warmup, warmed_shapes, ..options() };
        train::<AB>(&spec, &Default::default(), &opts).unwrap()
    };
    let (cold, warm) = (run("cold", false, vec![]), run("warm", true, vec![[1, 1]]));
    assert_eq!((cold.timings.warmup_seconds, cold.timings.warmup_shapes), (None, None));
    assert!(warm.timings.warmup_seconds.is_some_and(|s| s > 0.0), "{:?}", warm.timings);
    // It ran every shape the run then met, and no other.
    let met = warm.shapes.clone().unwrap();
    assert!(met.len() >= 2, "{met:?}");
    assert_eq!(warm.timings.warmup_shapes, Some(met.len()));
    // A later run that is told which shapes were met before warms only the others.
    let later = run("later", true, met[1..].to_vec());
    assert_eq!(later.timings.warmup_shapes, Some(1), "{:?}", later.timings);
    assert_eq!(run("last", true, met.clone()).timings.warmup_shapes, Some(0));
    // The same weights, batches, losses and metrics: the warm-up's passes leave no trace.
    let (mut a, b) = (cold.without_timings(), warm.without_timings());
    a.spec.out = b.spec.out.clone();
    a.best_dir = b.best_dir.clone();
    assert_eq!(a, b);
}
