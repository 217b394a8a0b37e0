//! The fine-tuning run, as named stages: `prepare` (settings checked, data and tokens ready) →
//! `load` (model, optimizer, checkpoint) → `warm_up` (GPU builds: kernels for every planned
//! batch shape) → `fit_epoch` for each epoch (steps, validation, early
//! stopping, checkpoint) → `finish` (restore best, test, export) → `write_record`.
//! Here: the run directory (lock, overwrite, fresh start or resume), and the device guard around
//! the stages.

use crate::checkpoint::{self, CheckpointState};
use crate::device_fault::guarded;
use crate::error::TrainError;
use crate::finish::{finish, write_record};
use crate::fit::{fit_epoch, EpochEnd};
use crate::load::{load, Resume};
use crate::prepare::prepare;
use crate::progress::ProgressMode;
use crate::warmup::{run_shapes, warm_up};
use bertlab_hub::HubOptions;
use bertlab_run::lock::{DirLock, LockError};
use bertlab_run::record::peak_rss_bytes;
use bertlab_run::{Environment, RunRecord, RunSpec, Setting, FAILED_RECORD_FILE, RECORD_FILE};
use burn::tensor::backend::AutodiffBackend;
use std::time::Instant;

/// How [`train`] reports and where it looks for files; the spec holds everything else.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Backend name for the record, e.g. `cpu (burn-flex)`; [`train`] adds a non-default
    /// attention kernel's name (`vulkan (attention: tensor-cores)`, and `, ran rows` when the
    /// row kernels ran in its place: `bertlab_models::ops::attention_products_label`).
    pub backend_name: String,
    /// Progress display.
    pub progress: ProgressMode,
    /// Hub lookups (`offline` is also switched on by `spec.offline`).
    pub hub: HubOptions,
    /// Skip exporting `best/` (tests that only need the record).
    pub skip_export: bool,
    /// Discard a checkpoint of an interrupted run in `--out` and start over (default: resume).
    pub fresh: bool,
    /// Replace a completed run in `--out` (default: refuse).
    pub overwrite: bool,
    /// Before the first step, one forward and backward pass at each planned batch shape, so a
    /// GPU build compiles and tunes its kernels up front (see `warmup.rs`).
    pub warmup: bool,
    /// Batch shapes whose kernels are compiled and tuned already (met by an earlier run on this
    /// machine; `cargo xtask` passes those its earlier runs met): the warm-up skips them.
    pub warmed_shapes: Vec<[usize; 2]>,
}

/// `backend` with a non-default attention kernel's name (`BERTLAB_ATTENTION`), so runs of
/// another attention kernel are told apart and one that fell back to the row kernels says so.
fn backend_label(backend: &str) -> String {
    match bertlab_models::ops::attention_products_label() {
        Some(attention) => format!("{backend} (attention: {attention})"),
        None => backend.to_string(),
    }
}

/// Train, validate, test and export one run described by `spec` on `device`.
///
/// Writes `<spec.out>/record.json` and `<spec.out>/best/` on success; on failure writes
/// `<spec.out>/failed-record.json` (the same schema, `status: failed`, the epochs done so far)
/// and returns the error. Panics of the backend are caught and returned as errors (an
/// out-of-memory panic as [`TrainError::OutOfMemory`]).
pub fn train<B: AutodiffBackend>(
    spec: &RunSpec,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<RunRecord, TrainError> {
    spec.validate()?;
    check_out(spec, options)?;
    let _lock = lock_out(spec)?;
    let (resume, replaces_run) = open_out(spec, options)?;
    let environment = Environment::capture(
        &backend_label(&options.backend_name),
        &format!("{device:?}"),
        &spec.precision.to_string(),
        spec.seed,
    );
    let mut record = RunRecord::new(spec.clone(), environment);
    let started = Instant::now();
    let outcome = guarded(|| run_stages::<B>(spec, device, options, &mut record, resume, replaces_run))
        .unwrap_or_else(|failure| Err(TrainError::of_failure(spec, failure)));
    // Again now that attention has run: the chosen kernels may have fallen back to the rows.
    record.environment.backend = backend_label(&options.backend_name);
    record.timings.total_seconds = started.elapsed().as_secs_f64();
    record.peak_rss_bytes = peak_rss_bytes();
    write_record(spec, record, outcome)
}

/// What a run may write over in `spec.out` is its own: `out` is not the filesystem's root; the
/// model it starts from is not inside `out/best` or `out/checkpoint` (the export and the
/// checkpoint would replace it); a `best/` is a bertlab run's (there is a record, a failed
/// run's record, an unreadable record moved aside, or a checkpoint beside it) or `overwrite`
/// says to replace it; a `checkpoint/` has its `state.json` or `fresh` says to discard it. The
/// run removes both wholesale, so nothing of a user's is there.
fn check_out(spec: &RunSpec, options: &TrainOptions) -> Result<(), TrainError> {
    let out = &spec.out;
    let refuse = |why: String, remedy| Err(TrainError::OutNotARunDir { out: out.clone(), why, remedy });
    // (an `out` that is a file passes here: its lock says so, `lock_out`)
    let canonical = |p: &std::path::Path| p.canonicalize().ok();
    if canonical(out).is_some_and(|c| c.parent().is_none()) {
        return refuse("it is the filesystem's root".into(), None);
    }
    let best = out.join("best");
    let checkpoint_dir = checkpoint::checkpoint_dir(out);
    if let Some(model) = canonical(std::path::Path::new(&spec.model)) {
        for inner in [&best, &checkpoint_dir] {
            if canonical(inner).is_some_and(|inner| model.starts_with(inner)) {
                return refuse(
                    format!(
                        "the model it starts from ({}) is inside {}, which the run replaces",
                        spec.model,
                        inner.display()
                    ),
                    None,
                );
            }
        }
    }
    if checkpoint_dir.exists() && !checkpoint_dir.is_dir() {
        return refuse(
            format!("{} is a file, where the run keeps its checkpoint", checkpoint_dir.display()),
            None,
        );
    }
    let has_state = checkpoint_dir.join("state.json").is_file();
    if let Some(stranger) = foreign_checkpoint_file(&checkpoint_dir).filter(|_| !options.fresh) {
        return refuse(
            format!(
                "{} holds {stranger}, which no bertlab checkpoint writes, and a run replaces that folder",
                checkpoint_dir.display()
            ),
            Some((Setting::fresh, "to discard it")),
        );
    }
    let run_was_here = has_state
        || out.join(RECORD_FILE).exists()
        || out.join(FAILED_RECORD_FILE).exists()
        || std::fs::read_dir(out).into_iter().flatten().flatten().any(|entry| {
            bertlab_run::record::is_unreadable_record_name(&entry.file_name().to_string_lossy())
        });
    if best.exists() && !run_was_here && !options.overwrite {
        return refuse(
            format!(
                "{} is there but no bertlab run is (no record.json, failed-record.json or \
                 checkpoint), and the run replaces that folder with its model",
                best.display()
            ),
            Some((Setting::overwrite, "to replace it")),
        );
    }
    Ok(())
}

/// The first entry of a checkpoint folder that a checkpoint does not write (its `state.json`,
/// `state-<E>.json`, tensor files `*.bin`, and the hidden temporary files of atomic writes a
/// kill may leave), if any: a kill while the first checkpoint is written leaves tensor files
/// without a `state.json`, and that folder is still the run's.
fn foreign_checkpoint_file(dir: &std::path::Path) -> Option<String> {
    let entries = std::fs::read_dir(dir).ok()?;
    // `model-3.bin`, `state-3.json`, `state.json`, and `.model-3.bin.tmp-<pid>-<n>`.
    let numbered = |name: &str, prefix: &str, suffix: &str| {
        name.strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let written = |name: &str| {
        name == "state.json"
            || numbered(name, "state-", ".json")
            || ["model-", "optimizer-", "best-"].iter().any(|p| numbered(name, p, ".bin"))
    };
    entries.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.path().is_file())).find_map(
        |(name, is_file)| {
            let temporary = bertlab_run::temporary_for(&name).is_some_and(written);
            (!is_file || !(written(&name) || temporary)).then_some(name)
        },
    )
}

/// One `bertlab train` per run directory at a time: the lock of `spec.out`, held until dropped.
fn lock_out(spec: &RunSpec) -> Result<DirLock, TrainError> {
    DirLock::acquire(&spec.out, ".lock").map_err(|e| match e {
        LockError::Busy { holder, .. } => TrainError::OutBusy {
            out: spec.out.clone(),
            holder: holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        },
        LockError::Io { path, source } => TrainError::Io { path, source },
        LockError::NotADirectory { .. } => TrainError::OutNotARunDir {
            out: spec.out.clone(),
            why: "it is a file, not a directory".into(),
            remedy: None,
        },
    })
}

/// Make `spec.out` ready for the run: refuse a completed run there (with `overwrite`, say that
/// it is to be replaced: [`replace_completed_run`], once the run's inputs have loaded), drop
/// the checkpoint with `fresh`, and read the checkpoint to resume from.
fn open_out(spec: &RunSpec, options: &TrainOptions) -> Result<(Option<Resume>, bool), TrainError> {
    let record_path = spec.out.join(RECORD_FILE);
    let replaces_run = record_path.exists();
    if replaces_run && !options.overwrite {
        // Say what is there: a completed run's record, or a file that is none.
        if let Err(e) = RunRecord::read(&record_path) {
            return Err(TrainError::OutNotARunDir {
                out: spec.out.clone(),
                why: format!("{e}: it is no completed run's record, and a run replaces it"),
                remedy: Some((Setting::overwrite, "to replace it")),
            });
        }
        return Err(TrainError::OutHoldsRun { path: record_path, out: spec.out.clone() });
    }
    remove_stale_temporaries(&spec.out);
    let checkpoint_dir = checkpoint::checkpoint_dir(&spec.out);
    if options.fresh && checkpoint_dir.exists() {
        std::fs::remove_dir_all(&checkpoint_dir)
            .map_err(|source| TrainError::Io { path: checkpoint_dir.clone(), source })?;
    }
    let resume = CheckpointState::read(&checkpoint_dir)?.map(|state| Resume { state, dir: checkpoint_dir });
    Ok((resume, replaces_run))
}

/// Removes what a killed run's atomic writes left (`.record.json.tmp-<pid>-<n>`, and the same
/// of its checkpoint's files): only a `bertlab train` holding `out`'s lock writes those names,
/// and this one holds it, so none is being written.
fn remove_stale_temporaries(out: &std::path::Path) {
    let remove_in = |dir: &std::path::Path, written_here: &dyn Fn(&str) -> bool| {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if bertlab_run::temporary_for(&name).is_some_and(written_here) && entry.path().is_file() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    };
    remove_in(out, &|file| file == RECORD_FILE || file == FAILED_RECORD_FILE);
    remove_in(&checkpoint::checkpoint_dir(out), &|_| true);
}

/// Removes the completed run in `out` that an `overwrite` run replaces: only once the new run's
/// data, tokenizer and model have loaded, so that a run that cannot start (a wrong column, a
/// broken model) leaves the completed one as it was. Its record goes first, so that no moment
/// shows the old record beside new weights, then its model, so that a replacement that fails
/// later leaves no model without the record that says how it ran.
fn replace_completed_run(out: &std::path::Path) -> Result<(), TrainError> {
    let record_path = out.join(RECORD_FILE);
    std::fs::remove_file(&record_path).map_err(|source| TrainError::Io { path: record_path, source })?;
    let best = out.join("best");
    if best.is_dir() {
        std::fs::remove_dir_all(&best).map_err(|source| TrainError::Io { path: best, source })?;
    }
    Ok(())
}

/// The run's stages, in order; each fills its part of `record`.
fn run_stages<B: AutodiffBackend>(
    spec: &RunSpec,
    device: &B::Device,
    options: &TrainOptions,
    record: &mut RunRecord,
    resume: Option<Resume>,
    replaces_run: bool,
) -> Result<(), TrainError> {
    let quiet = options.progress == ProgressMode::Quiet;
    let prepared = prepare::<B>(spec, device, &options.hub, quiet, record)?;
    let mut fitting = load::<B>(spec, &prepared, device, record, resume)?;
    if replaces_run {
        replace_completed_run(&spec.out)?;
    }
    if options.warmup {
        let (warmed, shapes): (Vec<[usize; 2]>, Vec<[usize; 2]>) = run_shapes(spec, &prepared, &fitting)
            .into_iter()
            .partition(|s| options.warmed_shapes.contains(s));
        let pad_id = prepared.tokenizer.pad_id();
        record.timings.warmup_seconds =
            Some(warm_up(spec, &shapes, warmed.len(), fitting.trainer.model(), pad_id, device, quiet));
        record.timings.warmup_shapes = Some(shapes.len());
    }
    for epoch in fitting.first_epoch..spec.epochs {
        if fit_epoch(spec, &prepared, device, options.progress, &mut fitting, epoch, record)?
            == EpochEnd::Stop
        {
            break;
        }
    }
    finish(spec, &prepared, device, fitting, record, options.skip_export)
}
