//! `report.md`: per problem a table of its runs, notes, the best run and its graded answer,
//! confusion matrices, observations and plots.

use super::cells::{fmt_acc, subset_cell};
use super::observations::observations;
use super::rows::{Axis, RunRow, StageReport};
use super::{answer_line, plots, plural, RenderOptions, Report};
use bertlab_run::format::{format_lr, format_number, hms};
use bertlab_run::RunRecord;
use std::fmt::Write;

/// `report.md` of `report`.
pub(crate) fn render(report: &Report, options: RenderOptions) -> String {
    let mut md = String::new();
    let records: Vec<&RunRecord> = report
        .stages
        .iter()
        .flat_map(|s| s.runs.iter().chain(&s.others))
        .filter_map(|r| r.record.as_ref())
        .collect();
    let completed = records.iter().filter(|r| r.is_completed()).count();
    let pending: usize = report.stages.iter().map(|s| s.counts().2).sum();
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
    let answers = report.answers();
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
    for stage in &report.stages {
        stage_markdown(&mut md, stage, options);
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(md, "## Warnings\n");
        for w in &report.warnings {
            let _ = writeln!(md, "- {w}");
        }
        md.push('\n');
    }
    md
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
            s.push_str(&format!(" ({} threads)", e.host_threads));
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

fn batch_cell(row: &RunRow) -> String {
    match (row.oom_retry(), row.batch()) {
        (Some((planned, used)), _) => format!("{used} (OOM at {planned})"),
        (None, Some(b)) => b.to_string(),
        (None, None) => "–".into(),
    }
}

pub(crate) fn stage_markdown(md: &mut String, stage: &StageReport, options: RenderOptions) {
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
        // The positive class's F1 for two classes (the notebook's); the macro average for more.
        if multi_class(stage) { "test macro F1" } else { "test F1" },
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

    if let Some(table) = per_class_table(stage) {
        md.push_str(&table);
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
    // What the runs computed with: the record's spec, else the plan over the spec's defaults.
    let recorded = first.record.as_ref().map(|r| &r.spec);
    let spec = recorded
        .cloned()
        .unwrap_or_else(|| first.planned.as_ref().map(|p| p.settings.to_spec()).unwrap_or_default());
    parts.push(format!("at most {} epoch{}", spec.epochs, plural(spec.epochs)));
    parts.push(format!("early-stopping patience {}", spec.patience));
    parts.push(format!("seed {}", spec.seed));
    parts.push(format!("optimizer {}", spec.optimizer));
    parts.push(format!("precision {}", spec.precision));
    parts.push(format!("padding {}", spec.padding));
    if let Some(spec) = recorded {
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
        cells.push(c.map_or("–".into(), |r| hms(r.timings.elapsed_seconds)));
        cells.push(c.and_then(|r| r.train_seq_per_s()).map_or("–".into(), |s| format!("{s:.1}")));
    }
    cells.push(format!("`{}`", row.run_id));
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

/// Whether the problem's runs have more than two classes.
fn multi_class(stage: &StageReport) -> bool {
    stage.runs.iter().filter_map(|r| r.completed()).any(|r| r.data.class_names.len() > 2)
}

/// Per-class test scores of the best run, for more than two classes.
fn per_class_table(stage: &StageReport) -> Option<String> {
    if !multi_class(stage) {
        return None;
    }
    let best = stage.runs.get(stage.best()?)?.completed()?;
    let t = best.test.as_ref().filter(|t| !t.per_class.is_empty())?;
    let mut md = String::new();
    let _ = writeln!(md, "Per-class test scores of the best run:\n");
    let _ = writeln!(md, "| class | precision | recall | F1 | support |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (i, c) in t.per_class.iter().enumerate() {
        let name = best.data.class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let _ =
            writeln!(md, "| {name} | {:.4} | {:.4} | {:.4} | {} |", c.precision, c.recall, c.f1, c.support);
    }
    let _ = writeln!(
        md,
        "| *macro average* | {:.4} | {:.4} | {:.4} | {} |",
        t.precision, t.recall, t.macro_f1, t.n
    );
    let _ = writeln!(md, "| *weighted average* | | | {:.4} | {} |\n", t.weighted_f1, t.n);
    Some(md)
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
