//! Every run setting, walked through every place it is spelled: a run spec file, `bertlab train`
//! flags, a pipeline's tables, the planned run's spec, the run record, and the report's
//! `results.csv`. A setting added to `bertlab_run::RunSpec` fails here until it reaches them all.

use std::process::Command;

use bertlab_pipeline::report::{csv_columns, Report};
use bertlab_pipeline::{PipelineLibrary, PlanOptions, Planner, ResultsStore, SpecTarget, StageKey};
use bertlab_run::{Environment, RunOverrides, RunRecord, RunSpec, RunStatus, ALL_KEYS, PLACEMENT_KEYS};

mod common;
use common::BIN;

/// A value for every key, none of them the default.
const EVERY_SETTING: &str = r#"
model = "org/some-model"
source = "hub:org/some-data@v1"
text_column = "review"
label_column = "stars"
dataset_config = "en"
splits = "given"
subset = 0.3
seed = 7
max_len = 200
truncation = "head-tail"
lr = 3e-5
batch = 12
eval_batch = 48
epochs = 5
optimizer = "adamw"
schedule = "linear"
warmup_ratio = 0.06
weight_decay = 0.02
grad_clip = 1.5
accum = 2
precision = "bf16"
padding = "fixed"
pad_multiple = 16
patience = 1
restore_best = "on-stop"
out = "runs/walk"
device = "cpu"
cache_dir = "cache/tokens"
offline = true
"#;

fn every_setting() -> RunSpec {
    RunSpec::from_toml_str(EVERY_SETTING, "every.toml".as_ref()).unwrap()
}

#[test]
fn the_walk_covers_every_key_with_a_value_that_is_not_the_default() {
    let table: toml::Table = toml::from_str(EVERY_SETTING).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut all = ALL_KEYS.to_vec();
    keys.sort();
    all.sort();
    assert_eq!(keys, all, "EVERY_SETTING must set every RunSpec key");
    let (spec, default) = (every_setting(), RunSpec::default());
    for key in ALL_KEYS {
        assert_ne!(spec.value_text(key), default.value_text(key), "{key} has its default value");
    }
    // The same values through a settings table (as pipelines read them) give the same spec.
    assert_eq!(RunOverrides::from_table(&table).unwrap().to_spec(), spec);
}

#[test]
fn every_flag_sets_its_key() {
    let spec = every_setting();
    let mut args: Vec<String> = vec!["train".into(), "--print-spec".into(), "--offline".into()];
    for key in ALL_KEYS.iter().filter(|k| **k != "offline") {
        args.push(format!("--{}", key.replace('_', "-")));
        args.push(spec.value_text(key).unwrap());
    }
    let out = Command::new(BIN).args(&args).env_remove("HF_HUB_OFFLINE").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = RunSpec::from_toml_str(&String::from_utf8(out.stdout).unwrap(), "stdout".as_ref()).unwrap();
    assert_eq!(printed, spec);
    // A flag overrides the spec file; the file's other keys stay.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(&file, EVERY_SETTING).unwrap();
    let out = Command::new(BIN)
        .args(["train", "--print-spec", "--spec", file.to_str().unwrap(), "--lr", "0.001"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = RunSpec::from_toml_str(&String::from_utf8(out.stdout).unwrap(), "stdout".as_ref()).unwrap();
    assert_eq!(printed, RunSpec { lr: 0.001, ..spec });
}

#[test]
fn a_pipeline_plans_every_setting_into_the_run_spec_the_record_and_the_report() {
    let spec = every_setting();
    let dir = tempfile::tempdir().unwrap();
    // Every setting but where the run goes (xtask's) and the model (a role in a pipeline).
    let mut defaults = String::new();
    for key in ALL_KEYS.iter().filter(|k| !PLACEMENT_KEYS.contains(k) && **k != "model") {
        let value = toml::Table::try_from(&spec).unwrap()[*key].clone();
        defaults.push_str(&format!("{key} = {value}\n"));
    }
    let pipeline = format!(
        "[models]\nm = \"org/some-model\"\n[defaults]\nmodel = \"m\"\n{defaults}[[problem]]\nid = \"p\"\nruns = [{{}}]\n"
    );
    std::fs::write(dir.path().join("walk.toml"), pipeline).unwrap();
    let lib = PipelineLibrary::new(dir.path());
    let stages = lib.stages(&lib.load("walk").unwrap()).unwrap();
    let store = ResultsStore::new(dir.path().join("runs"));
    let options = PlanOptions::default();
    let planner = Planner::new(&lib, stages, &options, &store).unwrap();
    let plan = planner.plan(&StageKey::parse("walk/p", "")).unwrap();
    let run = &plan.runs[0];

    // The run spec xtask writes for the run: the pipeline's values plus where it runs.
    let target = SpecTarget {
        model: "org/some-model",
        source: Some("hub:org/some-data@v1"),
        out: &spec.out,
        device: &spec.device,
        cache_dir: spec.cache_dir.as_deref(),
    };
    let written =
        RunSpec::from_toml_str(&run.spec_toml(&target, None).unwrap(), "run.toml".as_ref()).unwrap();
    assert_eq!(written, RunSpec { offline: false, ..spec.clone() });

    // The record of that run, read back by the report: every setting is a column of
    // results.csv with the value the run recorded.
    let mut record = RunRecord::new(written, Environment::capture("cpu (burn-flex)", "Cpu", "bf16", 7));
    record.status = RunStatus::Completed;
    store.write_run_files(run, &run.spec_toml(&target, None).unwrap()).unwrap();
    record.write_atomic(&store.run_dir(run).join("record.json")).unwrap();
    let csv = Report::from_store(&store).csv().unwrap();
    let columns = csv_columns();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row.len(), columns.len(), "{csv}");
    for key in ALL_KEYS.iter().filter(|k| !PLACEMENT_KEYS.contains(k)) {
        let column = match *key {
            "epochs" => "epochs_max",
            k => k,
        };
        let at = columns.iter().position(|c| c == column).unwrap_or_else(|| panic!("no column for {key}"));
        assert_eq!(row[at], spec.value_text(key).unwrap(), "{key}");
    }
}

/// The plan checks what the run would stop on at once where no network is needed: a local
/// dataset's files and a local model's `config.json`, with the run's own errors.
#[test]
fn dry_run_checks_a_local_source_and_model() {
    let dir = std::env::temp_dir().join(format!("bertlab-dry-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("model")).unwrap();
    let data = dir.join("reviews.csv");
    let model = dir.join("model");
    let dry_run = |source: &std::path::Path, model: &std::path::Path| {
        let (source, model) = (source.to_str().unwrap(), model.to_str().unwrap());
        let out = Command::new(BIN)
            .args(["train", "--dry-run", "--source", source, "--model", model, "--out", "r"])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    // A missing data file: the run's own error, naming the file.
    let (ok, _, err) = dry_run(&data, &model);
    assert!(!ok && err.contains("training run r") && err.contains(&*data.to_string_lossy()), "{err}");
    // A missing directory.
    let (ok, _, err) = dry_run(&dir.join("nowhere"), &model);
    assert!(!ok && err.contains("nowhere") && err.contains("no such directory"), "{err}");
    // The data is there, the model directory has no config.json.
    std::fs::write(&data, "text,label\ngood,1\nbad,0\n").unwrap();
    let (ok, _, err) = dry_run(&data, &model);
    assert!(!ok && err.contains("config.json"), "{err}");
    // Both there: the plan says what it found.
    let config = r#"{"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}"#;
    std::fs::write(model.join("config.json"), config).unwrap();
    let (ok, out, err) = dry_run(&data, &model);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("data {} found; model {} found", data.display(), model.display())),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dry_run_lists_the_planned_shapes_and_a_bad_warmed_shape_names_its_flag() {
    let out = Command::new(BIN)
        .args(["train", "--dry-run", "--max-len", "96", "--batch", "16", "--eval-batch", "64", "--out", "r"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("r: at most 6 batch shapes (rows × length): 16×32 16×64 16×96 64×32 64×64 64×96 —"),
        "{text}"
    );
    // The data and model are not local: nothing to look up without the network.
    assert!(text.contains("\nr: data hub on the Hub, not looked up; model distilbert/distilbert-base-uncased on the Hub, not looked up\n"), "{text}");
    let out =
        Command::new(BIN).args(["train", "--dry-run", "--warmed-shapes", "32x128,32y96"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--warmed-shapes") && err.contains("'32y96' is not a batch shape ROWSxLENGTH"),
        "{err}"
    );
}

/// `BERTLAB_ATTENTION` (which kernels multiply in a GPU build's attention) is checked on every
/// build before any command runs: an unknown name is a usage error that names the variable and
/// the names it takes; a known one is accepted (the CPU build has one attention and ignores it).
#[test]
fn an_unknown_attention_kernel_is_a_usage_error_that_names_the_variable() {
    // A dry run of Hub inputs: it plans without looking anything up.
    let run = |value: &str| {
        Command::new(BIN)
            .args(["train", "--dry-run", "--out", "r"])
            .env("BERTLAB_ATTENTION", value)
            .output()
            .unwrap()
    };
    let bad = run("cmma");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("BERTLAB_ATTENTION: unknown attention products \"cmma\": expected one of rows, tiles, tensor-cores"),
        "{stderr}"
    );
    for good in ["rows", "tiles", "tensor-cores"] {
        let out = run(good);
        assert!(out.status.success(), "{good}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn an_empty_model_or_column_is_a_usage_error_in_every_command() {
    // Refused while the arguments are read: nothing is looked up (the spec's rule, one wording).
    let cases: [&[&str]; 7] = [
        &["predict", "--model", "", "a text"],
        &["eval", "--model", " "],
        &["encode", "--model", "", "--text", "a text"],
        &["tokenize", "--model", "", "--text", "a text"],
        &["tokenize", "stats", "--model", ""],
        &["bench", "make-ids", "--model", "", "--out", "ids.json"],
        &["predict", "--model", "m", "--file", "x.csv", "--text-column", ""],
    ];
    for args in cases {
        let out = Command::new(BIN).args(args).env("HF_HUB_OFFLINE", "1").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let want = if args.contains(&"--text-column") {
            "for '--text-column <TEXT_COLUMN>': needs a column name"
        } else {
            "for '--model <MODEL>': needs a Hub id or a directory"
        };
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn predicts_file_flags_without_a_file_are_usage_errors() {
    // `-o` and `--format` say where and how the predictions of --file go; with texts on the
    // command line they were ignored (the table went to the terminal, no file was written).
    for args in [
        &["predict", "--model", "m", "a text", "--output", "out.jsonl"][..],
        &["predict", "--model", "m", "a text", "--format", "csv"],
        &["predict", "--model", "m", "a text", "--input-format", "csv"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("{} is for --file", args[4])), "{args:?}: {stderr}");
    }
}

#[test]
fn a_spec_files_value_that_cannot_be_used_is_a_usage_error_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "lr = nan\n").unwrap();
    let out =
        Command::new(BIN).args(["train", "--print-spec", "--spec", file.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("run.toml: lr = NaN: must be a positive number"), "{stderr}");
}
