//! The report's view of a problem: its runs, planned and recorded, the settings that vary
//! between them, and the best run.

use crate::library::StageKey;
use crate::options::PlanOptions;
use crate::plan::{select_best, PlannedRun};
use crate::store::{StoredRun, StoredStage};
use bertlab_run::format::{format_lr, format_number};
use bertlab_run::RunRecord;
use std::collections::BTreeMap;
use std::path::Path;

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
            .map(|r| r.spec.max_len)
            .or(self.planned.as_ref().and_then(|p| p.settings.max_len))
    }

    /// Learning rate.
    pub fn lr(&self) -> Option<f64> {
        self.record.as_ref().map(|r| r.spec.lr).or(self.planned.as_ref().and_then(|p| p.settings.lr))
    }

    /// The batch the run trained with (after any out-of-memory retry).
    pub fn batch(&self) -> Option<usize> {
        self.record.as_ref().map(|r| r.spec.batch).or(self.planned_batch())
    }

    /// The planned batch.
    pub fn planned_batch(&self) -> Option<usize> {
        self.planned.as_ref().and_then(|p| p.settings.batch)
    }

    /// `(planned, used)` when the run was retried with a smaller batch after running out of
    /// memory.
    pub fn oom_retry(&self) -> Option<(usize, usize)> {
        let used = self.record.as_ref()?.spec.batch;
        let planned = self.planned_batch()?;
        (used < planned).then_some((planned, used))
    }

    /// `pipeline/problem/run-id` of the run this record was trained in, when it is another one
    /// (an identical configuration of an earlier problem, whose record was reused).
    pub fn reused_from(&self) -> Option<String> {
        let out: &Path = &self.record.as_ref()?.spec.out;
        let parts: Vec<&str> = out.iter().rev().take(3).filter_map(|p| p.to_str()).collect();
        let (id, problem, pipeline) = (parts.first()?, parts.get(1)?, parts.get(2)?);
        let planned = self.planned.as_ref()?;
        let here = (planned.stage.pipeline.as_str(), planned.stage.problem.as_str());
        (here != (*pipeline, *problem)).then(|| format!("{pipeline}/{problem}/{id}"))
    }

    /// Effective fraction of the dataset.
    pub fn subset(&self) -> Option<f64> {
        self.record.as_ref().map(|r| r.spec.subset).or(self.planned.as_ref().and_then(|p| p.settings.subset))
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
        self.record.as_ref().map(|r| r.spec.epochs).or(self.planned.as_ref().and_then(|p| p.settings.epochs))
    }

    pub(crate) fn value_of(&self, key: Axis) -> Option<String> {
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
    pub(crate) const ALL: [Axis; 5] = [Axis::Model, Axis::MaxLen, Axis::Lr, Axis::Batch, Axis::Subset];

    pub(crate) fn label(self, value: &str) -> String {
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
    pub(crate) fn from_stored(stored: StoredStage) -> StageReport {
        let mut by_id: BTreeMap<String, StoredRun> =
            stored.runs.into_iter().map(|r| (r.run_id.clone(), r)).collect();
        let row = |r: StoredRun| RunRow { run_id: r.run_id, planned: r.planned, record: r.record };
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
                let mut runs: Vec<StoredRun> = by_id.into_values().collect();
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
