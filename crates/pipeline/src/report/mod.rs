//! Reports derived from run records only: `report.md` (tables, confusion matrices, answers,
//! observations), `results.csv` (one row per run) and SVG plots.

mod cells;
mod csv;
mod markdown;
mod observations;
mod plots;
mod rows;
pub mod svg;

use crate::error::PipelineError;
use crate::library::StageKey;
use crate::store::{write_atomic, ResultsStore};
use std::path::{Path, PathBuf};

pub use csv::{csv_columns, ResultRow};
pub use markdown::confusion_text;
pub use observations::observations;
pub use rows::{Axis, RunRow, StageReport};

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
        let plots_dir = dir.join("plots");
        // (creating a plot under a file named `plots` would fail with a bare "File exists")
        if plots_dir.exists() && !plots_dir.is_dir() {
            return Err(PipelineError::Io {
                path: plots_dir,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "is a file, where the report writes its plots (a folder); move it away",
                ),
            });
        }
        let mut plots = Vec::new();
        for (name, svg) in self.plots() {
            let path = plots_dir.join(&name);
            write_atomic(&path, svg.as_bytes())?;
            plots.push(path);
        }
        let markdown = dir.join("report.md");
        write_atomic(&markdown, self.markdown(RenderOptions::default()).as_bytes())?;
        let csv = dir.join("results.csv");
        write_atomic(&csv, self.csv()?.as_bytes())?;
        Ok(WrittenReport { markdown, csv, plots })
    }

    /// The plots: `(file name, SVG)`.
    pub fn plots(&self) -> Vec<(String, String)> {
        self.stages.iter().flat_map(plots::stage_plots).collect()
    }

    /// `report.md`.
    pub fn markdown(&self, options: RenderOptions) -> String {
        markdown::render(self, options)
    }

    /// `results.csv`: one row per run (planned runs without a record included, status
    /// `pending`).
    pub fn csv(&self) -> Result<String, PipelineError> {
        csv::render(self)
    }
}

/// The answer exactly as the notebook prints it: `print(f'a1a = {a1a:.4f}')`.
pub fn answer_line(name: &str, value: f64) -> String {
    format!("{name} = {value:.4}")
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests;
