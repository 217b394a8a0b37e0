//! Reports from hand-made records: a three-problem chain with an out-of-memory retry, a failed
//! run and a record outside the latest plan.

use super::*;
use crate::library::PipelineLibrary;
use crate::options::PlanOptions;
use crate::plan::{PlannedRun, Planner, StagePlan};
use crate::spec::PipelineSpec;
use crate::store::ProblemManifest;
use bertlab_run::{ClassificationMetrics, DataSummary, PaddingStats, RunRecord, RunSpec, RunStatus, Timings};

const PIPELINE: &str = r#"
title = "chain"
[models]
distilbert = "distilbert/distilbert-base-uncased"
bert = "google-bert/bert-base-uncased"
[defaults]
model = "distilbert"
seed = 42
epochs = 3
patience = 2
optimizer = "adam"
[[problem]]
id = "problem1"
title = "Context length × learning rate"
answer = "a1a"
set = { subset = 0.25 }
runs = [ { max_len = 128, lr = 2e-5, batch = 32 }, { max_len = 128, lr = 1e-5, batch = 32 },
         { max_len = 256, lr = 1e-5, batch = 16 }, { max_len = 256, lr = 7.5e-6, batch = 16 } ]
[[problem]]
id = "problem2"
title = "Data size"
answer = "a2a"
from_best = "problem1"
runs = [ { subset = 0.25 }, { subset = 0.5 }, { subset = 1.0 } ]
[[problem]]
id = "problem3"
title = "Model swap"
answer = "a3a"
from_best = "problem2"
inherit = ["max_len", "lr", "batch", "subset"]
runs = [ { model = "distilbert" }, { model = "bert" } ]
"#;

/// A completed record: per-epoch `(val_loss, val_acc)`, test accuracy, seconds per epoch.
fn record(run: &PlannedRun, epochs: &[(f64, f64)], test_acc: f64, secs: f64, batch: usize) -> RunRecord {
    let s = &run.settings;
    let train = (35_000.0 * s.subset.unwrap()) as usize;
    let spec = RunSpec {
        model: run.model.clone(),
        subset: s.subset.unwrap(),
        max_len: s.max_len.unwrap(),
        lr: s.lr.unwrap(),
        batch,
        ..RunSpec::default()
    };
    let mut r = crate::testing::record(spec, epochs, secs);
    r.data = DataSummary {
        source: "hub".into(),
        total_rows: 50000,
        pool: train * 10 / 7,
        train,
        val: train / 7,
        test: train * 2 / 7,
        class_names: vec!["neg".into(), "pos".into()],
        train_truncated: 0,
        train_padding: PaddingStats { real_tokens: train as u64 * 100, padded_tokens: train as u64 * 110 },
        files: Vec::new(),
        class_counts: Default::default(),
    };
    r.test = Some(ClassificationMetrics {
        n: 100,
        accuracy: test_acc,
        f1: test_acc + 0.004,
        precision: 0.8,
        recall: 0.9,
        macro_f1: test_acc,
        weighted_f1: test_acc,
        per_class: Vec::new(),
        loss: None,
        confusion: vec![vec![1035, 215], vec![157, 1093]],
    });
    let fit = secs * epochs.len() as f64;
    r.timings = Timings {
        fit_seconds: fit,
        test_seconds: 2.0,
        elapsed_seconds: fit + 2.0,
        total_seconds: fit + 5.0,
        ..Timings::default()
    };
    r.peak_rss_bytes = Some(1_048_576_000);
    r
}

fn put(store: &ResultsStore, run: &PlannedRun, r: &RunRecord) {
    store.write_run_files(run, "# spec\n").unwrap();
    let path = store.run_dir(run).join("record.json");
    write_atomic(&path, serde_json::to_string_pretty(r).unwrap().as_bytes()).unwrap();
}

fn manifest(store: &ResultsStore, plan: &StagePlan, options: &PlanOptions) {
    store.write_manifest(&ProblemManifest::of(plan, options)).unwrap();
}

/// Plan, "train" (write records) and plan the next problem, as xtask does.
fn chain(dir: &Path, options: &PlanOptions, timing_scale: f64) -> ResultsStore {
    let spec = PipelineSpec::from_toml_str(PIPELINE, &dir.join("chain.toml")).unwrap();
    let lib = PipelineLibrary::new(dir);
    let store = ResultsStore::new(dir.join("runs"));
    let planner = Planner::new(&lib, lib.stages(&spec).unwrap(), options, &store).unwrap();
    let key = |p: &str| StageKey::parse(p, "chain");

    let p1 = planner.plan(&key("problem1")).unwrap();
    manifest(&store, &p1, options);
    let curves = [
        [(0.3367, 0.8512), (0.3884, 0.8440), (0.3729, 0.8520)],
        [(0.3400, 0.8560), (0.3300, 0.8600), (0.3500, 0.8610)],
        [(0.3200, 0.8620), (0.3100, 0.8640), (0.3300, 0.8700)],
        [(0.3100, 0.8680), (0.3150, 0.8700), (0.3300, 0.8720)],
    ];
    for (i, run) in p1.runs.iter().enumerate() {
        // The last run ran out of memory at 16 and was retried at 8.
        let batch = if i == 3 { 8 } else { run.batch().unwrap() };
        let secs = if run.settings.max_len == Some(256) { 20.0 } else { 10.0 } * timing_scale;
        put(&store, run, &record(run, &curves[i], 0.85 + i as f64 / 200.0, secs, batch));
    }
    planner.refresh();
    let p2 = planner.plan(&key("problem2")).unwrap();
    manifest(&store, &p2, options);
    for (i, run) in p2.runs.iter().enumerate() {
        let acc = [0.8680, 0.8840, 0.8960][i];
        let secs = [20.0, 40.0, 80.0][i] * timing_scale;
        put(
            &store,
            run,
            &record(run, &[(0.32 - i as f64 / 100.0, acc)], acc - 0.01, secs, run.batch().unwrap()),
        );
    }
    planner.refresh();
    let p3 = planner.plan(&key("problem3")).unwrap();
    manifest(&store, &p3, options);
    put(&store, &p3.runs[0], &record(&p3.runs[0], &[(0.28, 0.8960)], 0.865, 37.0 * timing_scale, 8));
    put(&store, &p3.runs[1], &record(&p3.runs[1], &[(0.25, 0.9000)], 0.894, 70.0 * timing_scale, 8));
    store
}

#[test]
fn answers_tables_and_observations_come_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = chain(dir.path(), &PlanOptions::default(), 1.0);
    let report = Report::from_store(&store);
    assert_eq!(report.stages.len(), 3);
    let answers: Vec<String> = report.answers().iter().map(|(n, _, v)| answer_line(n, *v)).collect();
    assert_eq!(answers, vec!["a1a = 0.8680", "a2a = 0.8960", "a3a = 0.9000"]);

    let md = report.markdown(RenderOptions::default());
    assert!(md.contains("```\na1a = 0.8680\na2a = 0.8960\na3a = 0.9000\n```"), "{md}");
    assert!(md.contains("## chain/problem1 — Context length × learning rate"), "{md}");
    // The OOM retry shows the batch used and the planned one, in the table and as a note.
    assert!(md.contains("| 8 (OOM at 16) |"), "{md}");
    assert!(md.contains("ran out of memory at batch 16 and was retried at batch 8"), "{md}");
    // Problem 2 inherited batch 8 from the record of problem 1's best run.
    let p2 = &report.stages[1];
    assert!(p2
        .runs
        .iter()
        .all(|r| r.batch() == Some(8) && r.max_len() == Some(256) && r.lr() == Some(7.5e-6)));
    assert!(md.contains("`max_len`, `lr`, `batch` taken from the best run"), "{md}");
    // Problem 3 ran at problem 2's best subset (1.0).
    assert!(report.stages[2].runs.iter().all(|r| r.subset() == Some(1.0)));
    // Best-epoch column: 1-based, with epochs run and planned.
    assert!(md.contains("| 1 of 3 | 0.8512 |"), "{md}");
    assert!(md.contains("| **0.8680** |"), "{md}");
    assert!(md.contains("`[[1035  215] [ 157 1093]]`"), "{md}");
    assert!(md.contains("Context length 128 → 256: best validation accuracy 0.8600 → 0.8680; each step up in context helped"), "{md}");
    assert!(md.contains("Learning rate moved validation accuracy by up to 0.9 points"), "{md}");
    assert!(md.contains("per doubling of the data"), "{md}");
    // log2 slope through (−2, 0.868), (−1, 0.884), (0, 0.896) = 1.4 points per doubling.
    assert!(md.contains("Data size: +1.4 points of validation accuracy per doubling"), "{md}");
    assert!(
        md.contains(
            "Speed: distilbert is the fastest per epoch, 1.89× faster than bert (37.0 s vs 70.0 s per epoch)"
        ),
        "{md}"
    );
    assert!(md.contains("Best test accuracy: bert"), "{md}");
    assert!(md.contains("![Learning curves: training and validation loss and accuracy per epoch](plots/chain-problem1-learning-curves.svg)"), "{md}");
    assert!(
        md.contains("Ran on: backend cpu (burn-flex), device Cpu, host box (2 threads), bertlab 0.1.0."),
        "{md}"
    );
}

#[test]
fn rendering_without_timings_ignores_wall_clock_differences() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ra = Report::from_store(&chain(a.path(), &PlanOptions::default(), 1.0));
    let rb = Report::from_store(&chain(b.path(), &PlanOptions::default(), 1.7));
    let quiet = RenderOptions { timings: false };
    assert_eq!(ra.markdown(quiet), rb.markdown(quiet));
    assert_ne!(ra.markdown(RenderOptions::default()), rb.markdown(RenderOptions::default()));
    assert!(!ra.markdown(quiet).contains("time/epoch"));
}

#[test]
fn csv_has_one_row_per_run_with_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let options = PlanOptions { pool: 0.5, ..PlanOptions::default() };
    let store = chain(dir.path(), &options, 1.0);
    let csv = Report::from_store(&store).csv().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    #[allow(non_snake_case)]
    let CSV_COLUMNS = csv_columns();
    assert_eq!(lines[0], CSV_COLUMNS.join(","));
    assert_eq!(lines.len(), 1 + 4 + 3 + 2);
    let col = |name: &str| CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
    let row: Vec<&str> = lines[4].split(',').collect();
    assert_eq!(row.len(), CSV_COLUMNS.len(), "{}", lines[4]);
    assert_eq!(row[col("problem")], "problem1");
    assert_eq!(row[col("batch")], "8");
    assert_eq!(row[col("planned_batch")], "16");
    assert_eq!(row[col("oom_retry")], "true");
    assert_eq!(row[col("is_best")], "true");
    assert_eq!(row[col("subset_fraction")], "0.25");
    assert_eq!(row[col("pool")], "0.5");
    assert_eq!(row[col("subset")], "0.125");
    assert_eq!(row[col("val_acc_at_min_val_loss")], "0.868");
    assert_eq!(row[col("confusion")], "[[1035  215] [ 157 1093]]");
    assert_eq!(row[col("lr")], "7.5e-6");
    // Problem 2's fractions apply to the pool: 0.5 × {0.25, 0.5, 1.0}.
    let subsets: Vec<&str> = lines[5..8].iter().map(|l| l.split(',').nth(col("subset")).unwrap()).collect();
    assert_eq!(subsets, vec!["0.125", "0.25", "0.5"]);
    let md = Report::from_store(&store).markdown(RenderOptions::default());
    assert!(md.contains("| 0.25 × 0.5 = 0.125 |"), "{md}");
    assert!(md.contains("Data scaled with `--subset 0.5`"), "{md}");
}

#[test]
fn failed_pending_and_stray_runs_are_shown_but_never_best() {
    let dir = tempfile::tempdir().unwrap();
    let store = chain(dir.path(), &PlanOptions::default(), 1.0);
    let report = Report::from_store(&store);
    let p1 = &report.stages[0];
    let best_run = p1.runs[p1.best().unwrap()].planned.clone().unwrap();
    let mut failed = record(&best_run, &[], 0.0, 1.0, 8);
    failed.status = RunStatus::Failed;
    failed.error = Some("CUDA error: launch failed".into());
    failed.test = None;
    write_atomic(
        &store.run_dir(&best_run).join("record.json"),
        serde_json::to_string(&failed).unwrap().as_bytes(),
    )
    .unwrap();
    // A record from another plan (say, another --epochs) in the same directory.
    let mut stray = p1.runs[0].planned.clone().unwrap();
    stray.run_id = "distilbert-len128-lr2e-5-b32-sub0.25-00000000".into();
    put(&store, &stray, &record(&stray, &[(0.1, 0.99)], 0.99, 1.0, 32));
    // A planned run not started yet.
    std::fs::remove_dir_all(store.run_dir(p1.runs[0].planned.as_ref().unwrap())).unwrap();

    let report = Report::from_store(&store);
    let p1 = &report.stages[0];
    assert_eq!(p1.counts(), (2, 1, 1));
    assert_eq!(p1.others.len(), 1);
    let best = &p1.runs[p1.best().unwrap()];
    assert_eq!(best.completed().unwrap().val_acc_at_min_val_loss(), Some(0.8640));
    let md = report.markdown(RenderOptions::default());
    assert!(md.contains("failed: CUDA error: launch failed"), "{md}");
    assert!(md.contains("| pending |"), "{md}");
    assert!(md.contains("(provisional: not every run has completed)"), "{md}");
    assert!(md.contains("`distilbert-len128-lr2e-5-b32-sub0.25-00000000`: completed"), "{md}");
    assert!(md.contains("a1a = 0.8640"), "{md}");
    let csv = report.csv().unwrap();
    assert!(csv.lines().any(|l| l.contains(",false,completed,") && l.contains("00000000")), "{csv}");
    assert!(
        csv.contains("\"CUDA error: launch failed\"") || csv.contains(",CUDA error: launch failed\n"),
        "{csv}"
    );
}

#[test]
fn plots_are_written_atomically_with_titles_axes_and_legends() {
    let dir = tempfile::tempdir().unwrap();
    let store = chain(dir.path(), &PlanOptions::default(), 1.0);
    let out = dir.path().join("runs");
    let written = Report::from_store(&store).write(&out).unwrap();
    let names: Vec<String> =
        written.plots.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        vec![
            "chain-problem1-learning-curves.svg",
            "chain-problem1-val-acc-by-config.svg",
            "chain-problem2-learning-curves.svg",
            "chain-problem2-acc-time-vs-subset.svg",
            "chain-problem3-learning-curves.svg",
            "chain-problem3-acc-vs-time-by-model.svg",
        ]
    );
    let curves = std::fs::read_to_string(&written.plots[0]).unwrap();
    for needle in [
        ">Loss<",
        ">Accuracy<",
        ">epoch<",
        "loss (mean cross-entropy)",
        ">len 128, lr 2e-5<",
        ">validation<",
        ">training<",
    ] {
        assert!(curves.contains(needle), "{needle} missing");
    }
    let subset = std::fs::read_to_string(&written.plots[3]).unwrap();
    for needle in ["Accuracy vs data size", "time (s)", "test F1", ">0.25<", "8750 rows"] {
        assert!(subset.contains(needle), "{needle} missing");
    }
    let model = std::fs::read_to_string(&written.plots[5]).unwrap();
    assert!(
        model.contains("time per epoch (s)") && model.contains(">bert<") && model.contains(">distilbert<")
    );
    assert!(written.markdown.is_file() && written.csv.is_file());
    let leftovers: Vec<_> = std::fs::read_dir(out.join("plots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_file_where_the_plots_go_is_named_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = chain(dir.path(), &PlanOptions::default(), 1.0);
    let out = dir.path().join("runs");
    std::fs::write(out.join("plots"), "mine").unwrap();
    let e = Report::from_store(&store).write(&out).unwrap_err().to_string();
    assert!(e.contains("runs/plots: is a file, where the report writes its plots"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("plots")).unwrap(), "mine");
    assert!(!out.join("report.md").exists(), "nothing written before the error");
}

#[test]
fn confusion_text_is_numpy_like() {
    assert_eq!(confusion_text(&[vec![4061, 939], vec![411, 4589]]), "[[4061  939] [ 411 4589]]");
    assert_eq!(confusion_text(&[vec![1, 0], vec![0, 1]]), "[[1 0] [0 1]]");
    assert_eq!(answer_line("a1a", 0.868), "a1a = 0.8680");
    assert_eq!(answer_line("a3a", 0.90004999), "a3a = 0.9000");
}
