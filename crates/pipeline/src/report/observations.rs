//! Observations drawn from the records of a problem: context length, learning rate, data size,
//! model size, early stopping.

use super::cells::fmt_acc;
use super::rows::{Axis, RunRow, StageReport};
use super::RenderOptions;
use bertlab_run::format::{format_lr, format_number, hms};
use bertlab_run::RunRecord;

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
                hms(first.2.timings.elapsed_seconds),
                format_number(first.1.subset_parts().0),
                hms(last.2.timings.elapsed_seconds),
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
    // Class imbalance: accuracy means less when one class dominates.
    if let Some((row, r)) =
        done.iter().find(|(_, r)| r.data.class_counts.train_imbalance().is_some_and(|x| x >= 1.5))
    {
        let counts = &r.data.class_counts.train;
        let names = &r.data.class_names;
        let (max_i, min_i) = (
            (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(0),
            (0..counts.len()).min_by_key(|&i| counts[i]).unwrap_or(0),
        );
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
        out.push(format!(
            "Class imbalance ({}): the training split has {} rows of {} and {} of {}; read macro-F1 beside accuracy.",
            row.role(),
            counts[max_i],
            name(max_i),
            counts[min_i],
            name(min_i)
        ));
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
