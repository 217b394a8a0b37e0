//! The report's plots, chosen by what a problem varies: learning curves always; validation
//! accuracy by configuration when max_len or lr vary; accuracy and time against the data size
//! when the subset varies; accuracy against time per model when the model varies.

use super::rows::{Axis, RunRow, StageReport};
use super::svg::{Chart, Figure, LegendItem, Marker, Scale, Series};
use bertlab_run::format::{format_lr, format_number};
use bertlab_run::RunRecord;

/// `(file name, SVG)` of every plot of `stage` (none without completed runs).
pub fn stage_plots(stage: &StageReport) -> Vec<(String, String)> {
    let done: Vec<(&RunRow, &RunRecord)> =
        stage.runs.iter().filter_map(|r| r.completed().map(|c| (r, c))).collect();
    if done.is_empty() {
        return Vec::new();
    }
    let prefix = stage.key.label();
    let varying = stage.varying();
    let mut plots = vec![(format!("{prefix}-learning-curves.svg"), learning_curves(stage, &done))];
    if varying.contains(&Axis::MaxLen) || varying.contains(&Axis::Lr) {
        plots.push((format!("{prefix}-val-acc-by-config.svg"), by_config(stage, &done)));
    }
    if varying.contains(&Axis::Subset) {
        plots.push((format!("{prefix}-acc-time-vs-subset.svg"), vs_subset(stage, &done)));
    }
    if varying.contains(&Axis::Model) {
        plots.push((format!("{prefix}-acc-vs-time-by-model.svg"), by_model(stage, &done)));
    }
    plots
}

/// Alt text of a plot file.
pub fn caption(file: &str) -> &'static str {
    if file.ends_with("learning-curves.svg") {
        "Learning curves: training and validation loss and accuracy per epoch"
    } else if file.ends_with("val-acc-by-config.svg") {
        "Validation accuracy by max_len and learning rate"
    } else if file.ends_with("acc-time-vs-subset.svg") {
        "Accuracy and training time against the data size"
    } else {
        "Accuracy against time per epoch, per model"
    }
}

fn title(stage: &StageReport, what: &str) -> String {
    if stage.title.is_empty() {
        format!("{} — {what}", stage.name())
    } else {
        format!("{}: {} — {what}", stage.name(), stage.title)
    }
}

fn subtitle(stage: &StageReport) -> String {
    let first = &stage.runs[0];
    let varying = stage.varying();
    let mut parts = Vec::new();
    if !varying.contains(&Axis::Model) {
        parts.push(first.role());
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
    if !varying.contains(&Axis::Subset) {
        parts.push(format!("subset {}", super::cells::subset_cell(first)));
    }
    parts.join(" · ")
}

fn epoch_ticks(done: &[(&RunRow, &RunRecord)]) -> Vec<(f64, String)> {
    let max = done.iter().map(|(_, r)| r.epochs.len()).max().unwrap_or(1).max(1);
    let step = max.div_ceil(10);
    (1..=max).step_by(step).map(|e| (e as f64, e.to_string())).collect()
}

fn learning_curves(stage: &StageReport, done: &[(&RunRow, &RunRecord)]) -> String {
    let mut loss = Chart::new("Loss", "epoch", "loss (mean cross-entropy)");
    let mut acc = Chart::new("Accuracy", "epoch", "accuracy (fraction correct)");
    loss.x_ticks = epoch_ticks(done);
    acc.x_ticks = loss.x_ticks.clone();
    let mut legend = Vec::new();
    for (i, (row, r)) in done.iter().enumerate() {
        let pts = |f: fn(&bertlab_run::EpochRecord) -> f64| -> Vec<(f64, f64)> {
            r.epochs.iter().map(|e| (e.epoch as f64, f(e))).collect()
        };
        let label = stage.label(row);
        loss.series.push(Series::line("", i, pts(|e| e.train_loss)));
        loss.series.push(Series::line("", i, pts(|e| e.val_loss)).dashed().marker(Marker::HollowCircle));
        acc.series.push(Series::line("", i, pts(|e| e.train_acc)));
        acc.series.push(Series::line("", i, pts(|e| e.val_acc)).dashed().marker(Marker::HollowCircle));
        legend.push(LegendItem { label, colour: Some(i), dashed: false, line: true, marker: Marker::None });
    }
    legend.push(LegendItem {
        label: "training".into(),
        colour: None,
        dashed: false,
        line: true,
        marker: Marker::Circle,
    });
    legend.push(LegendItem {
        label: "validation".into(),
        colour: None,
        dashed: true,
        line: true,
        marker: Marker::HollowCircle,
    });
    Figure::new(title(stage, "learning curves"), subtitle(stage), vec![loss, acc], 2).legend(legend).to_svg()
}

fn by_config(stage: &StageReport, done: &[(&RunRow, &RunRecord)]) -> String {
    // Runs grouped by max_len along the x axis, one slot per learning rate, a gap between groups.
    let mut rows: Vec<&(&RunRow, &RunRecord)> = done.iter().collect();
    rows.sort_by(|a, b| {
        (a.0.max_len(), std::cmp::Reverse(ordered(a.0.lr())))
            .cmp(&(b.0.max_len(), std::cmp::Reverse(ordered(b.0.lr()))))
    });
    let mut x = 0.0;
    let mut last_len = None;
    let mut ticks = Vec::new();
    let (mut val, mut test, mut val_labels, mut test_labels) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (row, r) in rows {
        if last_len.is_some() && last_len != Some(row.max_len()) {
            x += 0.6;
        }
        last_len = Some(row.max_len());
        x += 1.0;
        let lr = row.lr().map(format_lr).unwrap_or_default();
        let len = row.max_len().map(|m| m.to_string()).unwrap_or_default();
        ticks.push((x, format!("lr {lr}\nlen {len}")));
        if let Some(a) = r.val_acc_at_min_val_loss() {
            val.push((x, a));
            val_labels.push(format!("{a:.3}"));
        }
        if let Some(t) = &r.test {
            test.push((x, t.accuracy));
            test_labels.push(String::new());
        }
    }
    let mut chart = Chart::new(
        "Validation accuracy at minimum validation loss",
        "configuration (learning rate, context length)",
        "accuracy (fraction correct)",
    );
    chart.x_ticks = ticks;
    chart
        .series
        .push(Series::scatter("validation (at min val loss)", 0, Marker::Circle, val).labels(val_labels));
    chart.series.push(Series::scatter("test", 1, Marker::HollowSquare, test).labels(test_labels));
    // Panels wide enough for one tick label per run (about 80 pixels each).
    let width = 140.0 + 80.0 * (x + 1.0);
    Figure::new(
        title(stage, "accuracy by max_len × lr"),
        subtitle(stage),
        vec![chart, time_by_config(done)],
        2,
    )
    .panel_width(width.max(500.0))
    .to_svg()
}

fn time_by_config(done: &[(&RunRow, &RunRecord)]) -> Chart {
    let mut lens: Vec<usize> = done.iter().filter_map(|(row, _)| row.max_len()).collect();
    lens.sort();
    lens.dedup();
    let mut chart = Chart::new("Time per epoch by context length", "max_len (tokens)", "time per epoch (s)");
    chart.x_ticks = lens.iter().map(|l| (*l as f64, l.to_string())).collect();
    chart.x_scale = Scale::Log2;
    chart.y_include = vec![0.0];
    let pts: Vec<(f64, f64)> =
        done.iter().filter_map(|(row, r)| Some((row.max_len()? as f64, r.seconds_per_epoch()?))).collect();
    chart.series.push(Series::scatter("time per epoch", 2, Marker::Diamond, pts));
    chart
}

fn ordered(x: Option<f64>) -> i64 {
    x.map_or(i64::MIN, |v| (v * 1e12) as i64)
}

fn vs_subset(stage: &StageReport, done: &[(&RunRow, &RunRecord)]) -> String {
    let mut rows: Vec<&(&RunRow, &RunRecord)> =
        done.iter().filter(|(row, _)| row.subset().is_some()).collect();
    rows.sort_by(|a, b| a.0.subset().unwrap_or(0.0).total_cmp(&b.0.subset().unwrap_or(0.0)));
    let pool = rows.first().map_or(1.0, |r| r.0.subset_parts().1);
    let ticks: Vec<(f64, String)> = rows
        .iter()
        .map(|(row, r)| {
            (
                row.subset().unwrap_or(1.0),
                format!("{}\n{} rows", format_number(row.subset_parts().0), r.data.train),
            )
        })
        .collect();
    let x_label = if pool == 1.0 {
        "subset (fraction of the dataset; training rows below)".to_string()
    } else {
        format!("subset (fraction of a pool of {} of the dataset)", format_number(pool))
    };
    let mut acc = Chart::new("Accuracy vs data size", x_label.clone(), "accuracy (fraction correct)");
    acc.x_scale = Scale::Log2;
    acc.x_ticks = ticks.clone();
    let pts = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|(row, r)| Some((row.subset()?, f(r)?))).collect()
    };
    let val = pts(&|r| r.val_acc_at_min_val_loss());
    let val_labels = val.iter().map(|p| format!("{:.3}", p.1)).collect();
    acc.series.push(Series::line("validation (at min val loss)", 0, val).labels(val_labels));
    acc.series.push(
        Series::line("test accuracy", 1, pts(&|r| r.test.as_ref().map(|t| t.accuracy)))
            .marker(Marker::Square),
    );
    acc.series.push(
        Series::line("test F1", 2, pts(&|r| r.test.as_ref().map(|t| t.f1)))
            .dashed()
            .marker(Marker::HollowSquare),
    );
    let mut time = Chart::new("Training time vs data size", x_label, "time (s)");
    time.x_scale = Scale::Log2;
    time.x_ticks = ticks;
    time.y_include = vec![0.0];
    time.series.push(
        Series::line("fit + test time", 3, pts(&|r| Some(r.timings.elapsed_seconds))).marker(Marker::Diamond),
    );
    time.series.push(
        Series::line("time per epoch", 4, pts(&|r| r.seconds_per_epoch()))
            .dashed()
            .marker(Marker::HollowCircle),
    );
    Figure::new(title(stage, "accuracy and time vs data size"), subtitle(stage), vec![acc, time], 2).to_svg()
}

fn by_model(stage: &StageReport, done: &[(&RunRow, &RunRecord)]) -> String {
    let mut chart =
        Chart::new("Accuracy vs time per epoch", "time per epoch (s)", "accuracy (fraction correct)");
    chart.x_include = vec![0.0];
    let rows: Vec<(String, f64, &RunRecord)> =
        done.iter().filter_map(|(row, r)| Some((row.role(), r.seconds_per_epoch()?, *r))).collect();
    let val: Vec<(f64, f64)> =
        rows.iter().filter_map(|(_, t, r)| Some((*t, r.val_acc_at_min_val_loss()?))).collect();
    let val_labels = rows
        .iter()
        .filter(|(_, _, r)| r.val_acc_at_min_val_loss().is_some())
        .map(|(m, _, _)| m.clone())
        .collect();
    let test: Vec<(f64, f64)> =
        rows.iter().filter_map(|(_, t, r)| Some((*t, r.test.as_ref()?.accuracy))).collect();
    let f1: Vec<(f64, f64)> = rows.iter().filter_map(|(_, t, r)| Some((*t, r.test.as_ref()?.f1))).collect();
    chart
        .series
        .push(Series::scatter("validation (at min val loss)", 0, Marker::Circle, val).labels(val_labels));
    chart.series.push(Series::scatter("test accuracy", 1, Marker::Square, test));
    chart.series.push(Series::scatter("test F1", 2, Marker::HollowSquare, f1));

    // Time per epoch of each model, labelled with its slowdown relative to the fastest.
    let mut speed = Chart::new("Time per epoch by model", "model", "time per epoch (s)");
    speed.y_include = vec![0.0];
    let fastest = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    speed.x_ticks = rows.iter().enumerate().map(|(i, (m, _, _))| (i as f64 + 1.0, m.clone())).collect();
    speed.x_include = vec![0.5, rows.len() as f64 + 0.5];
    let pts: Vec<(f64, f64)> = rows.iter().enumerate().map(|(i, (_, t, _))| (i as f64 + 1.0, *t)).collect();
    let labels = rows.iter().map(|(_, t, _)| format!("{t:.1} s ({:.2}×)", t / fastest)).collect();
    speed
        .series
        .push(Series::scatter("time per epoch (× the fastest)", 3, Marker::Diamond, pts).labels(labels));
    Figure::new(title(stage, "accuracy vs time per model"), subtitle(stage), vec![chart, speed], 2).to_svg()
}
