//! Reports derived from run records only: `report.md` (tables, confusion matrices, answers,
//! observations), `results.csv` (one row per run) and SVG plots.

mod plots;
pub mod svg;

use crate::estimate::format_hms;
use crate::plan::{select_best, PlanOptions, PlannedRun};
use crate::record::RunRecord;
use crate::spec::{format_lr, format_number, round_sig, PipelineError, StageKey};
use crate::store::{write_atomic, ResultsStore, StoredStage};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// One run as the report sees it: what was planned (when known) and what was recorded (when
/// anything was).
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Run id (directory name).
    pub run_id: String,
    /// The planned run.
    pub planned: Option<PlannedRun>,
    /// The record.
    pub record: Option<RunRecord>,
}

impl RunRow {
    /// `completed`, `failed` or `pending`.
    pub fn status(&self) -> &str {
        match &self.record {
            Some(r) if r.is_completed() => "completed",
            Some(_) => "failed",
            None => "pending",
        }
    }

    /// The completed record.
    pub fn completed(&self) -> Option<&RunRecord> {
        self.record.as_ref().filter(|r| r.is_completed())
    }

    /// Model role (or the model directory's name when no plan is known).
    pub fn role(&self) -> String {
        if let Some(p) = &self.planned {
            return p.role.clone();
        }
        let model = self.record.as_ref().map(|r| r.spec.model.as_str()).unwrap_or("");
        Path::new(model).file_name().and_then(|n| n.to_str()).unwrap_or(model).to_string()
    }

    /// The model reference the run used.
    pub fn model(&self) -> String {
        match (&self.record, &self.planned) {
            (Some(r), _) if !r.spec.model.is_empty() => r.spec.model.clone(),
            (_, Some(p)) => p.model.clone(),
            _ => String::new(),
        }
    }

    /// Tokens per sequence.
    pub fn max_len(&self) -> Option<usize> {
        self.record
            .as_ref()
            .and_then(|r| r.spec.max_len)
            .or(self.planned.as_ref().and_then(|p| p.settings.max_len))
    }

    /// Learning rate.
    pub fn lr(&self) -> Option<f64> {
        self.record.as_ref().and_then(|r| r.spec.lr).or(self.planned.as_ref().and_then(|p| p.settings.lr))
    }

    /// The batch the run trained with (after any out-of-memory retry).
    pub fn batch(&self) -> Option<usize> {
        self.record.as_ref().and_then(|r| r.spec.batch).or(self.planned_batch())
    }

    /// The planned batch.
    pub fn planned_batch(&self) -> Option<usize> {
        self.planned.as_ref().and_then(|p| p.settings.batch)
    }

    /// `(planned, used)` when the run was retried with a smaller batch after running out of
    /// memory.
    pub fn oom_retry(&self) -> Option<(usize, usize)> {
        let used = self.record.as_ref()?.spec.batch?;
        let planned = self.planned_batch()?;
        (used < planned).then_some((planned, used))
    }

    /// `pipeline/problem/run-id` of the run this record was trained in, when it is another one
    /// (an identical configuration of an earlier problem, whose record was reused).
    pub fn reused_from(&self) -> Option<String> {
        let out = Path::new(&self.record.as_ref()?.spec.out);
        let parts: Vec<&str> = out.iter().rev().take(3).filter_map(|p| p.to_str()).collect();
        let (id, problem, pipeline) = (parts.first()?, parts.get(1)?, parts.get(2)?);
        let planned = self.planned.as_ref()?;
        let here = (planned.stage.pipeline.as_str(), planned.stage.problem.as_str());
        (here != (*pipeline, *problem)).then(|| format!("{pipeline}/{problem}/{id}"))
    }

    /// Effective fraction of the dataset.
    pub fn subset(&self) -> Option<f64> {
        self.record
            .as_ref()
            .and_then(|r| r.spec.subset)
            .or(self.planned.as_ref().and_then(|p| p.settings.subset))
    }

    /// `(fraction of the pool, pool)`; the pool is 1 without `--subset`.
    pub fn subset_parts(&self) -> (f64, f64) {
        match &self.planned {
            Some(p) => (p.subset_fraction, p.pool),
            None => (self.subset().unwrap_or(1.0), 1.0),
        }
    }

    /// Planned maximum epochs.
    pub fn max_epochs(&self) -> Option<usize> {
        self.record
            .as_ref()
            .and_then(|r| r.spec.epochs)
            .or(self.planned.as_ref().and_then(|p| p.settings.epochs))
    }

    fn value_of(&self, key: Axis) -> Option<String> {
        match key {
            Axis::Model => Some(self.role()),
            Axis::MaxLen => self.max_len().map(|v| v.to_string()),
            Axis::Lr => self.lr().map(format_lr),
            Axis::Batch => self.planned_batch().or(self.batch()).map(|v| v.to_string()),
            Axis::Subset => Some(format_number(self.subset_parts().0)),
        }
    }
}

/// The settings sweeps vary, in the order labels show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Model role.
    Model,
    /// Context length.
    MaxLen,
    /// Learning rate.
    Lr,
    /// Training batch.
    Batch,
    /// Data fraction.
    Subset,
}

impl Axis {
    const ALL: [Axis; 5] = [Axis::Model, Axis::MaxLen, Axis::Lr, Axis::Batch, Axis::Subset];

    fn label(self, value: &str) -> String {
        match self {
            Axis::Model => value.to_string(),
            Axis::MaxLen => format!("len {value}"),
            Axis::Lr => format!("lr {value}"),
            Axis::Batch => format!("batch {value}"),
            Axis::Subset => format!("subset {value}"),
        }
    }
}

/// One problem's results.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// `pipeline/problem`.
    pub key: StageKey,
    /// Problem title.
    pub title: String,
    /// Pipeline title.
    pub pipeline_title: String,
    /// Graded answer name.
    pub answer: Option<String>,
    /// The run whose settings were inherited.
    pub inherited_from: Option<String>,
    /// The inherited keys.
    pub inherit: Vec<String>,
    /// The options of the latest plan.
    pub options: Option<PlanOptions>,
    /// The runs of the latest plan (every run found, without a plan).
    pub runs: Vec<RunRow>,
    /// Records in the directory that the latest plan does not include.
    pub others: Vec<RunRow>,
}

impl StageReport {
    fn from_stored(stored: StoredStage) -> StageReport {
        let mut by_id: BTreeMap<String, crate::store::StoredRun> =
            stored.runs.into_iter().map(|r| (r.run_id.clone(), r)).collect();
        let row =
            |r: crate::store::StoredRun| RunRow { run_id: r.run_id, planned: r.planned, record: r.record };
        let (runs, others) = match &stored.manifest {
            Some(m) => {
                let runs: Vec<RunRow> = m
                    .runs
                    .iter()
                    .map(|p| match by_id.remove(&p.run_id) {
                        Some(r) => RunRow {
                            run_id: r.run_id,
                            planned: Some(r.planned.unwrap_or(p.clone())),
                            record: r.record,
                        },
                        None => RunRow { run_id: p.run_id.clone(), planned: Some(p.clone()), record: None },
                    })
                    .collect();
                let mut others: Vec<RunRow> =
                    by_id.into_values().filter(|r| r.record.is_some()).map(row).collect();
                others.sort_by(|a, b| a.run_id.cmp(&b.run_id));
                (runs, others)
            }
            None => {
                let mut runs: Vec<crate::store::StoredRun> = by_id.into_values().collect();
                runs.sort_by_key(|r| (r.planned.as_ref().map_or(usize::MAX, |p| p.index), r.run_id.clone()));
                (runs.into_iter().map(row).collect(), Vec::new())
            }
        };
        let m = stored.manifest;
        StageReport {
            title: m.as_ref().map(|m| m.title.clone()).unwrap_or_default(),
            pipeline_title: m.as_ref().map(|m| m.pipeline_title.clone()).unwrap_or_default(),
            answer: m.as_ref().and_then(|m| m.answer.clone()),
            inherited_from: m.as_ref().and_then(|m| m.inherited_from.clone()),
            inherit: m.as_ref().map(|m| m.inherit.clone()).unwrap_or_default(),
            options: m.map(|m| m.options),
            key: stored.key,
            runs,
            others,
        }
    }

    /// Index (in `runs`) of the best completed run.
    pub fn best(&self) -> Option<usize> {
        let completed: Vec<(usize, &RunRecord)> =
            self.runs.iter().enumerate().filter_map(|(i, r)| r.completed().map(|c| (i, c))).collect();
        let records: Vec<&RunRecord> = completed.iter().map(|(_, r)| *r).collect();
        select_best(&records).map(|i| completed[i].0)
    }

    /// The settings that differ between the runs.
    pub fn varying(&self) -> Vec<Axis> {
        Axis::ALL
            .into_iter()
            .filter(|a| {
                let mut values: Vec<Option<String>> = self.runs.iter().map(|r| r.value_of(*a)).collect();
                values.sort();
                values.dedup();
                values.len() > 1
            })
            .collect()
    }

    /// A short label of a run made of the varying settings (the run id when nothing varies).
    pub fn label(&self, row: &RunRow) -> String {
        let varying = self.varying();
        // The notebook ties the batch to the context length; name it only when it varies alone.
        let show: Vec<Axis> = varying
            .iter()
            .copied()
            .filter(|a| *a != Axis::Batch || !varying.contains(&Axis::MaxLen))
            .collect();
        if show.is_empty() {
            return row.role();
        }
        show.iter().filter_map(|a| row.value_of(*a).map(|v| a.label(&v))).collect::<Vec<_>>().join(", ")
    }

    /// `problem1` or `smoke/problem1`.
    pub fn name(&self) -> String {
        if self.key.pipeline == self.key.problem {
            self.key.problem.clone()
        } else {
            self.key.to_string()
        }
    }

    /// Counts of completed, failed and pending runs.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s: &str| self.runs.iter().filter(|r| r.status() == s).count();
        (n("completed"), n("failed"), n("pending"))
    }
}

/// What to include when rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// Wall-clock columns and observations (off to compare two runs of the same records).
    pub timings: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { timings: true }
    }
}

/// Everything found under a results directory.
#[derive(Debug, Clone)]
pub struct Report {
    /// Problems, sorted by pipeline then problem.
    pub stages: Vec<StageReport>,
    /// Files that could not be read.
    pub warnings: Vec<String>,
}

/// What [`Report::write`] produced.
#[derive(Debug, Clone)]
pub struct WrittenReport {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `results.csv`.
    pub csv: PathBuf,
    /// The SVG plots.
    pub plots: Vec<PathBuf>,
}

impl Report {
    /// Read every record (and plan) under `store`.
    pub fn from_store(store: &ResultsStore) -> Report {
        let mut warnings = Vec::new();
        let stages = store.scan(&mut warnings).into_iter().map(StageReport::from_stored).collect();
        Report { stages, warnings }
    }

    /// The graded answers, `(name, stage, value)`, in stage order.
    pub fn answers(&self) -> Vec<(String, StageKey, f64)> {
        self.stages
            .iter()
            .filter_map(|s| {
                let name = s.answer.clone()?;
                let best = &s.runs[s.best()?];
                Some((name, s.key.clone(), best.completed()?.val_acc_at_min_val_loss()?))
            })
            .collect()
    }

    /// Write `report.md`, `results.csv` and `plots/*.svg` under `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<WrittenReport, PipelineError> {
        let mut plots = Vec::new();
        for (name, svg) in self.plots() {
            let path = dir.join("plots").join(&name);
            write_atomic(&path, svg.as_bytes())?;
            plots.push(path);
        }
        let markdown = dir.join("report.md");
        write_atomic(&markdown, self.markdown(RenderOptions::default()).as_bytes())?;
        let csv = dir.join("results.csv");
        write_atomic(&csv, self.csv().as_bytes())?;
        Ok(WrittenReport { markdown, csv, plots })
    }

    /// The plots: `(file name, SVG)`.
    pub fn plots(&self) -> Vec<(String, String)> {
        self.stages.iter().flat_map(plots::stage_plots).collect()
    }

    /// `report.md`.
    pub fn markdown(&self, options: RenderOptions) -> String {
        let mut md = String::new();
        let records: Vec<&RunRecord> = self
            .stages
            .iter()
            .flat_map(|s| s.runs.iter().chain(&s.others))
            .filter_map(|r| r.record.as_ref())
            .collect();
        let completed = records.iter().filter(|r| r.is_completed()).count();
        let pending: usize = self.stages.iter().map(|s| s.counts().2).sum();
        let _ = writeln!(md, "# bertlab report\n");
        let _ = writeln!(
            md,
            "Derived from the run records under this directory only: {} record{} ({completed} completed, {} failed){}. \
             Regenerate with `cargo xtask report --out <this directory>`.\n",
            records.len(),
            plural(records.len()),
            records.len() - completed,
            if pending > 0 { format!("; {pending} planned run{} not run yet", plural(pending)) } else { String::new() }
        );
        if let Some(env) = environment_line(&records) {
            let _ = writeln!(md, "{env}\n");
        }
        let answers = self.answers();
        if !answers.is_empty() {
            let _ = writeln!(md, "## Answers\n");
            let _ = writeln!(md, "Validation accuracy at minimum validation loss of each problem's best run, printed as the notebook prints it.\n");
            let _ = writeln!(md, "```");
            // Name the problem only where two problems give the same answer name (e.g. the
            // smoke pipeline's next to the real one's).
            let repeated = |name: &str| answers.iter().filter(|a| a.0 == name).count() > 1;
            for (name, key, value) in &answers {
                if repeated(name) {
                    let _ = writeln!(md, "{}   # {key}", answer_line(name, *value));
                } else {
                    let _ = writeln!(md, "{}", answer_line(name, *value));
                }
            }
            let _ = writeln!(md, "```\n");
        }
        for stage in &self.stages {
            stage_markdown(&mut md, stage, options);
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(md, "## Warnings\n");
            for w in &self.warnings {
                let _ = writeln!(md, "- {w}");
            }
            md.push('\n');
        }
        md
    }

    /// `results.csv`: one row per run (planned runs without a record included, status
    /// `pending`).
    pub fn csv(&self) -> String {
        let mut out = CSV_COLUMNS.join(",");
        out.push('\n');
        for stage in &self.stages {
            let best = stage.best();
            for (i, row) in stage.runs.iter().enumerate() {
                out.push_str(&csv_row(stage, row, true, best == Some(i)));
            }
            for row in &stage.others {
                out.push_str(&csv_row(stage, row, false, false));
            }
        }
        out
    }
}

/// The answer exactly as the notebook prints it: `print(f'a1a = {a1a:.4f}')`.
pub fn answer_line(name: &str, value: f64) -> String {
    format!("{name} = {value:.4}")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn environment_line(records: &[&RunRecord]) -> Option<String> {
    let mut envs: Vec<String> = records
        .iter()
        .filter(|r| !r.environment.backend.is_empty())
        .map(|r| {
            let e = &r.environment;
            let mut s = format!("backend {}", e.backend);
            if !e.device.is_empty() {
                s.push_str(&format!(", device {}", e.device));
            }
            if let Some(h) = &e.hostname {
                s.push_str(&format!(", host {h}"));
            }
            if let Some(t) = e.host_threads {
                s.push_str(&format!(" ({t} threads)"));
            }
            if !e.bertlab_version.is_empty() {
                s.push_str(&format!(", bertlab {}", e.bertlab_version));
            }
            s
        })
        .collect();
    envs.sort();
    envs.dedup();
    (!envs.is_empty()).then(|| format!("Ran on: {}.", envs.join("; ")))
}

fn fmt_acc(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.4}"))
}

fn subset_cell(row: &RunRow) -> String {
    let (fraction, pool) = row.subset_parts();
    if pool == 1.0 {
        format_number(fraction)
    } else {
        format!(
            "{} × {} = {}",
            format_number(fraction),
            format_number(pool),
            format_number(round_sig(fraction * pool, 12))
        )
    }
}

fn batch_cell(row: &RunRow) -> String {
    match (row.oom_retry(), row.batch()) {
        (Some((planned, used)), _) => format!("{used} (OOM at {planned})"),
        (None, Some(b)) => b.to_string(),
        (None, None) => "–".into(),
    }
}

fn stage_markdown(md: &mut String, stage: &StageReport, options: RenderOptions) {
    let title = if stage.title.is_empty() { String::new() } else { format!(" — {}", stage.title) };
    let _ = writeln!(md, "## {}{title}\n", stage.name());
    let (completed, failed, pending) = stage.counts();
    let mut intro = format!("{} run{}: {completed} completed", stage.runs.len(), plural(stage.runs.len()));
    if failed > 0 {
        intro.push_str(&format!(", {failed} failed"));
    }
    if pending > 0 {
        intro.push_str(&format!(", {pending} not run yet"));
    }
    intro.push('.');
    if let Some(from) = &stage.inherited_from {
        intro.push_str(&format!(
            " `{}` taken from the best run of the problem it builds on, as recorded (`{from}`).",
            stage.inherit.join("`, `")
        ));
    }
    if let Some(o) = stage.options.as_ref().filter(|o| o.pool != 1.0) {
        intro.push_str(&format!(
            " Data scaled with `--subset {}`: each subset is a fraction of a pool of {} of the dataset.",
            format_number(o.pool),
            format_number(o.pool)
        ));
    }
    let _ = writeln!(md, "{intro}\n");
    if let Some(shared) = shared_settings(stage) {
        let _ = writeln!(md, "Shared by every run: {shared}.\n");
    }

    let mut header = vec![
        "#",
        "model",
        "max_len",
        "lr",
        "batch",
        "subset",
        "best epoch of run",
        "val acc @ min val loss",
        "test acc",
        "test F1",
    ];
    if options.timings {
        header.extend(["time/epoch", "elapsed (fit+test)", "train seq/s"]);
    }
    header.push("run");
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let align: Vec<&str> = header
        .iter()
        .map(|h| {
            if matches!(*h, "model" | "run" | "subset" | "batch" | "best epoch of run") {
                "---"
            } else {
                "---:"
            }
        })
        .collect();
    let _ = writeln!(md, "|{}|", align.join("|"));
    let best = stage.best();
    for (i, row) in stage.runs.iter().enumerate() {
        table_row(md, i + 1, row, best == Some(i), options);
    }
    md.push('\n');
    let mut notes = Vec::new();
    for row in &stage.runs {
        if let Some(r) = row.record.as_ref().filter(|r| !r.is_completed()) {
            notes.push(format!(
                "- `{}` failed: {}",
                row.run_id,
                r.error.as_deref().unwrap_or("no error message")
            ));
        }
        if let Some((planned, used)) = row.oom_retry() {
            notes.push(format!(
                "- `{}` ran out of memory at batch {planned} and was retried at batch {used} (the notebook's rule: halve the batch).",
                row.run_id
            ));
        }
        if let Some(origin) = row.reused_from() {
            notes.push(format!(
                "- `{}`: the same configuration as `{origin}`, trained once (its record is reused).",
                row.run_id
            ));
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(md, "{}\n", notes.join("\n"));
    }
    if let Some(b) = best {
        let row = &stage.runs[b];
        let acc = row.completed().and_then(|r| r.val_acc_at_min_val_loss()).unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "Best run: **#{} {}** (`{}`), validation accuracy {acc:.4} at its minimum validation loss{}.\n",
            b + 1,
            describe(row),
            row.run_id,
            if completed < stage.runs.len() { " (provisional: not every run has completed)" } else { "" }
        );
        if let Some(name) = &stage.answer {
            let _ = writeln!(md, "```\n{}\n```\n", answer_line(name, acc));
        }
    }

    let matrices: Vec<(usize, &RunRow, &RunRecord)> =
        stage.runs.iter().enumerate().filter_map(|(i, r)| r.completed().map(|c| (i + 1, r, c))).collect();
    if matrices.iter().any(|(_, _, r)| r.test.as_ref().is_some_and(|t| !t.confusion.is_empty())) {
        let classes = matrices
            .iter()
            .find_map(|(_, _, r)| (!r.data.class_names.is_empty()).then(|| r.data.class_names.join(", ")));
        let _ = writeln!(
            md,
            "Test-set confusion matrices (rows = true class, columns = predicted{}):\n",
            classes.map(|c| format!("; classes {c}")).unwrap_or_default()
        );
        let _ = writeln!(md, "| # | run | confusion | test n |");
        let _ = writeln!(md, "|---|---|---|---:|");
        for (n, row, r) in &matrices {
            if let Some(t) = &r.test {
                let _ = writeln!(
                    md,
                    "| {n} | {} | `{}` | {} |",
                    stage.label(row),
                    confusion_text(&t.confusion),
                    t.n
                );
            }
        }
        md.push('\n');
    }

    let obs = observations(stage, options);
    if !obs.is_empty() {
        let _ = writeln!(md, "Observations (generated from the records):\n");
        for o in obs {
            let _ = writeln!(md, "- {o}");
        }
        md.push('\n');
    }
    let plots = plots::stage_plots(stage);
    for (file, _) in &plots {
        let _ = writeln!(md, "![{}](plots/{file})\n", plots::caption(file));
    }
    if !stage.others.is_empty() {
        let _ = writeln!(
            md,
            "Other records in this problem's directory, not part of its latest plan (other `--subset`, `--model` or `--epochs`; not used above):\n"
        );
        for row in &stage.others {
            let acc = row.completed().and_then(|r| r.val_acc_at_min_val_loss());
            let _ =
                writeln!(md, "- `{}`: {}, val acc @ min val loss {}", row.run_id, row.status(), fmt_acc(acc));
        }
        md.push('\n');
    }
}

/// `max_len 256, lr 7.5e-6, batch 16, subset 0.25` of a run.
fn describe(row: &RunRow) -> String {
    let mut parts = vec![row.role()];
    if let Some(m) = row.max_len() {
        parts.push(format!("max_len {m}"));
    }
    if let Some(lr) = row.lr() {
        parts.push(format!("lr {}", format_lr(lr)));
    }
    parts.push(format!("batch {}", batch_cell(row)));
    parts.push(format!("subset {}", subset_cell(row)));
    parts.join(", ")
}

fn shared_settings(stage: &StageReport) -> Option<String> {
    let first = stage.runs.iter().find(|r| r.planned.is_some() || r.record.is_some())?;
    let varying = stage.varying();
    let mut parts = Vec::new();
    if !varying.contains(&Axis::Model) {
        parts.push(format!("model {} (`{}`)", first.role(), first.model()));
    }
    if !varying.contains(&Axis::MaxLen) {
        if let Some(m) = first.max_len() {
            parts.push(format!("max_len {m}"));
        }
    }
    if !varying.contains(&Axis::Lr) {
        if let Some(lr) = first.lr() {
            parts.push(format!("lr {}", format_lr(lr)));
        }
    }
    if !varying.contains(&Axis::Batch) {
        if let Some(b) = first.planned_batch().or(first.batch()) {
            parts.push(format!("batch {b}"));
        }
    }
    if !varying.contains(&Axis::Subset) {
        parts.push(format!("subset {}", subset_cell(first)));
    }
    let s = first.planned.as_ref().map(|p| p.settings.clone()).unwrap_or_default();
    let spec = first.record.as_ref().map(|r| r.spec.clone()).unwrap_or_default();
    if let Some(e) = spec.epochs.or(s.epochs) {
        parts.push(format!("at most {e} epoch{}", plural(e)));
    }
    if let Some(p) = spec.patience.or(s.patience) {
        parts.push(format!("early-stopping patience {p}"));
    }
    if let Some(seed) = spec.seed.or(s.seed) {
        parts.push(format!("seed {seed}"));
    }
    if let Some(o) = spec.optimizer.or(s.optimizer) {
        parts.push(format!("optimizer {o}"));
    }
    if let Some(p) = spec.precision.or(s.precision) {
        parts.push(format!("precision {p}"));
    }
    if let Some(p) = spec.padding.or(s.padding) {
        parts.push(format!("padding {p}"));
    }
    if !spec.source.is_empty() {
        parts.push(format!("data `{}`", spec.source));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn table_row(md: &mut String, n: usize, row: &RunRow, is_best: bool, options: RenderOptions) {
    let c = row.completed();
    let best_epoch = match c {
        Some(rec) => {
            let ran = rec.epochs.len();
            let early = if rec.stopped_early { ", stopped early" } else { "" };
            rec.best_epoch.map_or("–".into(), |b| format!("{b} of {ran}{early}"))
        }
        None => row.status().to_string(),
    };
    let val = fmt_acc(c.and_then(|r| r.val_acc_at_min_val_loss()));
    let val = if is_best { format!("**{val}**") } else { val };
    let test = c.and_then(|r| r.test.as_ref());
    let mut cells = vec![
        n.to_string(),
        row.role(),
        row.max_len().map_or("–".into(), |v| v.to_string()),
        row.lr().map_or("–".into(), format_lr),
        batch_cell(row),
        subset_cell(row),
        best_epoch,
        val,
        fmt_acc(test.map(|t| t.accuracy)),
        fmt_acc(test.map(|t| t.f1)),
    ];
    if options.timings {
        cells.push(c.and_then(|r| r.seconds_per_epoch()).map_or("–".into(), |s| format!("{s:.1} s")));
        cells.push(c.map_or("–".into(), |r| format_hms(r.timings.elapsed_seconds)));
        cells.push(c.and_then(|r| r.train_seq_per_s()).map_or("–".into(), |s| format!("{s:.1}")));
    }
    cells.push(format!("`{}`", row.run_id));
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

/// `[[1035 215] [157 1093]]`, as numpy prints a matrix on one line.
pub fn confusion_text(m: &[Vec<u64>]) -> String {
    let width = m.iter().flatten().map(|v| v.to_string().len()).max().unwrap_or(1);
    let rows: Vec<String> = m
        .iter()
        .map(|row| format!("[{}]", row.iter().map(|v| format!("{v:>width$}")).collect::<Vec<_>>().join(" ")))
        .collect();
    format!("[{}]", rows.join(" "))
}

/// Least-squares slope of `y` on `x`.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// A difference of fractions in percentage points, signed: `+1.4 points`, `±0.0 points`.
fn points(v: f64) -> String {
    let p = (v * 1000.0).round() / 10.0;
    if p == 0.0 {
        "±0.0 points".into()
    } else {
        format!("{p:+.1} points")
    }
}

/// Observations drawn from the records: context length, learning rate, data size, model size,
/// early stopping.
pub fn observations(stage: &StageReport, options: RenderOptions) -> Vec<String> {
    let mut out = Vec::new();
    let done: Vec<(&RunRow, &RunRecord)> =
        stage.runs.iter().filter_map(|r| r.completed().map(|c| (r, c))).collect();
    if done.len() < 2 {
        return out;
    }
    let varying = stage.varying();
    let acc = |r: &RunRecord| r.val_acc_at_min_val_loss().unwrap_or(f64::NAN);

    if varying.contains(&Axis::MaxLen) {
        let mut lens: Vec<usize> = done.iter().filter_map(|(row, _)| row.max_len()).collect();
        lens.sort();
        lens.dedup();
        let best_at: Vec<(usize, f64)> = lens
            .iter()
            .map(|l| {
                let best = done
                    .iter()
                    .filter(|(row, _)| row.max_len() == Some(*l))
                    .map(|(_, r)| acc(r))
                    .fold(f64::NAN, f64::max);
                (*l, best)
            })
            .collect();
        let chain = best_at.iter().map(|(l, _)| l.to_string()).collect::<Vec<_>>().join(" → ");
        let values = best_at.iter().map(|(_, a)| format!("{a:.4}")).collect::<Vec<_>>().join(" → ");
        let rising = best_at.windows(2).all(|w| w[1].1 > w[0].1);
        let falling = best_at.windows(2).all(|w| w[1].1 <= w[0].1);
        let peak = best_at.iter().copied().fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
        let verdict = if rising {
            "each step up in context helped".to_string()
        } else if falling {
            "more context did not help".to_string()
        } else {
            format!("more context did not consistently help (best at max_len {})", peak.0)
        };
        out.push(format!(
            "Context length {chain}: best validation accuracy {values}; {verdict}; spread {} over context lengths.",
            points(best_at.iter().map(|b| b.1).fold(f64::NEG_INFINITY, f64::max) - best_at.iter().map(|b| b.1).fold(f64::INFINITY, f64::min))
                .trim_start_matches('+')
        ));
        if options.timings {
            let time_at = |l: usize| {
                let t: Vec<f64> = done
                    .iter()
                    .filter(|(row, _)| row.max_len() == Some(l))
                    .filter_map(|(_, r)| r.seconds_per_epoch())
                    .collect();
                (!t.is_empty()).then(|| t.iter().sum::<f64>() / t.len() as f64)
            };
            if let (Some(lo), Some(hi)) = (time_at(lens[0]), time_at(*lens.last().expect("two lengths"))) {
                out.push(format!(
                    "Cost of context: an epoch at max_len {} took {:.1}× as long as at {} ({hi:.1} s vs {lo:.1} s, batches shrinking with the length).",
                    lens.last().expect("two lengths"),
                    hi / lo,
                    lens[0]
                ));
            }
        }
    }
    if varying.contains(&Axis::Lr) {
        // The learning-rate effect within each context length (or overall when it does not vary).
        let groups: Vec<Option<usize>> = {
            let mut g: Vec<Option<usize>> = done.iter().map(|(row, _)| row.max_len()).collect();
            g.sort();
            g.dedup();
            g
        };
        let mut effects = Vec::new();
        for g in groups {
            let mut at: Vec<(f64, f64)> = done
                .iter()
                .filter(|(row, _)| row.max_len() == g)
                .filter_map(|(row, r)| row.lr().map(|lr| (lr, acc(r))))
                .collect();
            if at.len() < 2 {
                continue;
            }
            at.sort_by(|a, b| b.0.total_cmp(&a.0));
            let spread = at.iter().map(|a| a.1).fold(f64::NEG_INFINITY, f64::max)
                - at.iter().map(|a| a.1).fold(f64::INFINITY, f64::min);
            let detail = at
                .iter()
                .map(|(lr, a)| format!("lr {} {a:.4}", format_lr(*lr)))
                .collect::<Vec<_>>()
                .join(" vs ");
            let ctx = g.map(|l| format!("max_len {l}: ")).unwrap_or_default();
            effects.push((spread, format!("{ctx}{detail}")));
        }
        if !effects.is_empty() {
            let max = effects.iter().map(|e| e.0).fold(0.0, f64::max);
            out.push(format!(
                "Learning rate moved validation accuracy by up to {} ({}).",
                points(max).trim_start_matches('+'),
                effects.into_iter().map(|e| e.1).collect::<Vec<_>>().join("; ")
            ));
        }
    }
    if varying.contains(&Axis::Subset) {
        let mut by_subset: Vec<(f64, &RunRow, &RunRecord)> =
            done.iter().filter_map(|(row, r)| row.subset().map(|s| (s, *row, *r))).collect();
        by_subset.sort_by(|a, b| a.0.total_cmp(&b.0));
        let val: Vec<(f64, f64)> = by_subset.iter().map(|(s, _, r)| (s.log2(), acc(r))).collect();
        let test: Vec<(f64, f64)> = by_subset
            .iter()
            .filter_map(|(s, _, r)| r.test.as_ref().map(|t| (s.log2(), t.accuracy)))
            .collect();
        let (first, last) = (by_subset.first().expect("two runs"), by_subset.last().expect("two runs"));
        if let Some(sv) = slope(&val) {
            let mut s = format!(
                "Data size: {} of validation accuracy per doubling of the data (least squares over {} runs; {:.4} with {} training rows → {:.4} with {})",
                points(sv),
                val.len(),
                acc(first.2),
                first.2.data.train,
                acc(last.2),
                last.2.data.train
            );
            if let Some(st) = slope(&test) {
                s.push_str(&format!("; test accuracy {} per doubling", points(st)));
            }
            s.push('.');
            out.push(s);
        }
        let n_val = last.2.data.val;
        if n_val > 0 {
            let p = acc(last.2);
            let se = (p * (1.0 - p) / n_val as f64).sqrt();
            out.push(format!(
                "Noise: validation accuracy on {n_val} rows has a standard error of ±{se:.4} (±{:.1} points), so differences smaller than about {:.1} points are within noise.",
                se * 100.0,
                2.0 * se * 100.0 * std::f64::consts::SQRT_2
            ));
        }
        if options.timings && first.2.timings.elapsed_seconds > 0.0 {
            let ratio = last.2.timings.elapsed_seconds / first.2.timings.elapsed_seconds;
            let rows = last.2.data.train as f64 / first.2.data.train.max(1) as f64;
            out.push(format!(
                "Time: fit + test took {} with {} of the data and {} with {} (×{ratio:.1} the time for ×{rows:.1} the training rows).",
                format_hms(first.2.timings.elapsed_seconds),
                format_number(first.1.subset_parts().0),
                format_hms(last.2.timings.elapsed_seconds),
                format_number(last.1.subset_parts().0),
            ));
        }
    }
    if varying.contains(&Axis::Model) {
        let models: Vec<(String, &RunRecord)> = done.iter().map(|(row, r)| (row.role(), *r)).collect();
        let best_acc =
            models.iter().max_by(|a, b| test_acc(a.1).total_cmp(&test_acc(b.1))).expect("two runs");
        let tied = models.iter().all(|m| test_acc(m.1) == test_acc(best_acc.1));
        let summary = models
            .iter()
            .map(|(m, r)| {
                let t = r.test.as_ref();
                format!(
                    "{m}: val {:.4}, test {}, F1 {}",
                    acc(r),
                    fmt_acc(t.map(|t| t.accuracy)),
                    fmt_acc(t.map(|t| t.f1))
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if tied {
            out.push(format!("Every model reached the same test accuracy ({summary})."));
        } else {
            out.push(format!("Best test accuracy: {} ({summary}).", best_acc.0));
        }
        if options.timings {
            let timed: Vec<(&String, f64)> =
                models.iter().filter_map(|(m, r)| r.seconds_per_epoch().map(|s| (m, s))).collect();
            if timed.len() >= 2 {
                let fast = timed.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("two");
                let slow = timed.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("two");
                out.push(format!(
                    "Speed: {} is the fastest per epoch, {:.2}× faster than {} ({:.1} s vs {:.1} s per epoch).",
                    fast.0,
                    slow.1 / fast.1,
                    slow.0,
                    fast.1,
                    slow.1
                ));
            }
        }
    }
    let early = done.iter().filter(|(_, r)| r.stopped_early).count();
    let best_not_last = done.iter().filter(|(_, r)| r.best_epoch.is_some_and(|b| b < r.epochs.len())).count();
    if best_not_last > 0 {
        out.push(format!(
            "Overfitting: {best_not_last} of {} runs reached their minimum validation loss before their last epoch{}.",
            done.len(),
            if early > 0 { format!(" ({early} stopped early)") } else { String::new() }
        ));
    }
    out
}

fn test_acc(r: &RunRecord) -> f64 {
    r.test.as_ref().map_or(f64::NEG_INFINITY, |t| t.accuracy)
}

/// Columns of `results.csv`.
pub const CSV_COLUMNS: &[&str] = &[
    "pipeline",
    "problem",
    "run_id",
    "in_latest_plan",
    "status",
    "is_best",
    "model_role",
    "model",
    "max_len",
    "lr",
    "batch",
    "planned_batch",
    "oom_retry",
    "subset_fraction",
    "pool",
    "subset",
    "epochs_max",
    "epochs_run",
    "best_epoch",
    "stopped_early",
    "min_val_loss",
    "val_acc_at_min_val_loss",
    "test_accuracy",
    "test_f1",
    "test_precision",
    "test_recall",
    "test_loss",
    "confusion",
    "train_rows",
    "val_rows",
    "test_rows",
    "optimizer",
    "precision",
    "seed",
    "backend",
    "seconds_per_epoch",
    "fit_seconds",
    "elapsed_seconds",
    "total_seconds",
    "train_seq_per_s",
    "train_padded_tokens_per_s",
    "peak_rss_mb",
    "error",
];

/// Quote a CSV field when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_row(stage: &StageReport, row: &RunRow, in_plan: bool, is_best: bool) -> String {
    let c = row.completed();
    let rec = row.record.as_ref();
    let test = c.and_then(|r| r.test.as_ref());
    let opt = |v: Option<String>| v.unwrap_or_default();
    let num = |v: Option<f64>| v.map(|x| format!("{}", round_sig(x, 10))).unwrap_or_default();
    let (fraction, pool) = row.subset_parts();
    let fields: Vec<String> = vec![
        stage.key.pipeline.clone(),
        stage.key.problem.clone(),
        row.run_id.clone(),
        in_plan.to_string(),
        row.status().into(),
        is_best.to_string(),
        row.role(),
        row.model(),
        opt(row.max_len().map(|v| v.to_string())),
        opt(row.lr().map(format_lr)),
        opt(row.batch().map(|v| v.to_string())),
        opt(row.planned_batch().map(|v| v.to_string())),
        row.oom_retry().is_some().to_string(),
        format_number(fraction),
        format_number(pool),
        opt(row.subset().map(format_number)),
        opt(row.max_epochs().map(|v| v.to_string())),
        opt(rec.map(|r| r.epochs.len().to_string())),
        opt(c.and_then(|r| r.best_epoch).map(|v| v.to_string())),
        opt(c.map(|r| r.stopped_early.to_string())),
        num(c.and_then(|r| r.min_val_loss())),
        num(c.and_then(|r| r.val_acc_at_min_val_loss())),
        num(test.map(|t| t.accuracy)),
        num(test.map(|t| t.f1)),
        num(test.map(|t| t.precision)),
        num(test.map(|t| t.recall)),
        num(test.and_then(|t| t.loss)),
        opt(test.map(|t| confusion_text(&t.confusion))),
        opt(c.map(|r| r.data.train.to_string())),
        opt(c.map(|r| r.data.val.to_string())),
        opt(c.map(|r| r.data.test.to_string())),
        opt(rec
            .and_then(|r| r.spec.optimizer.clone())
            .or(row.planned.as_ref().and_then(|p| p.settings.optimizer.clone()))),
        opt(rec.map(|r| r.environment.precision.clone()).filter(|p| !p.is_empty())),
        opt(rec.and_then(|r| r.spec.seed).map(|v| v.to_string())),
        opt(rec.map(|r| r.environment.backend.clone())),
        num(c.and_then(|r| r.seconds_per_epoch())),
        num(c.map(|r| r.timings.fit_seconds)),
        num(c.map(|r| r.timings.elapsed_seconds)),
        num(c.map(|r| r.timings.total_seconds)),
        num(c.and_then(|r| r.train_seq_per_s())),
        num(c.and_then(|r| r.train_padded_tokens_per_s())),
        num(rec.and_then(|r| r.peak_rss_bytes).map(|b| b as f64 / 1_048_576.0)),
        opt(rec.and_then(|r| r.error.clone())),
    ];
    debug_assert_eq!(fields.len(), CSV_COLUMNS.len());
    let mut line = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests;
