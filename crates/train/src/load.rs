//! The load stage of a run: the model (pre-trained weights, a head for the run's classes), the
//! optimizer and its schedule, and — for a run resumed from its checkpoint — the weights,
//! moments, loss scale, early stopping and batch order of its last finished epoch.

use crate::checkpoint::{self, CheckpointError, CheckpointState};
use crate::device_fault::FaultWatch;
use crate::early_stopping::EarlyStopping;
use crate::error::TrainError;
use crate::optim::AdamSettings;
use crate::prepare::Prepared;
use crate::schedule::LrSchedule;
use crate::step::TrainStep;
use bertlab_data::rng::Pcg64;
use bertlab_models::{load_classifier, TextClassifier};
use bertlab_run::{RunRecord, RunSpec};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use std::path::PathBuf;
use std::time::Instant;

/// A checkpoint to resume from, as read from the run directory before the run starts.
pub(crate) struct Resume {
    pub state: CheckpointState,
    pub dir: PathBuf,
}

/// What carries from one epoch to the next: what the load stage leaves, each epoch advances, and
/// the finish stage ends with.
pub(crate) struct Fitting<B: AutodiffBackend> {
    /// The model, optimizer and loss scale.
    pub trainer: TrainStep<B>,
    /// Early stopping, fed every epoch's validation loss.
    pub early: EarlyStopping,
    /// The generator of the batch order.
    pub batch_rng: Pcg64,
    /// The weights of the best epoch so far.
    pub best: Option<TextClassifier<B::InnerBackend>>,
    /// The checkpoint's file of those weights, once written.
    pub best_file: Option<String>,
    /// The first epoch this process runs (0-based; after the checkpoint's epochs).
    pub first_epoch: usize,
    /// The latest epoch run (0-based).
    pub last_epoch: usize,
    /// Seconds of fitting before this process (a resumed run's earlier epochs).
    pub fit_seconds_before: f64,
    /// When this process started fitting.
    pub fit_started: Instant,
    /// Panics of backend threads since fitting started.
    pub faults: FaultWatch,
}

impl<B: AutodiffBackend> Fitting<B> {
    /// Seconds of fitting so far, a resumed run's earlier epochs included.
    pub fn fit_seconds(&self) -> f64 {
        self.fit_seconds_before + self.fit_started.elapsed().as_secs_f64()
    }
}

/// Load the model of `prepared` with a head of its classes, build the optimizer and, when
/// `resume` holds a checkpoint of this run, restore its last finished epoch. Fills the model
/// load timing, and for a resumed run its epoch records and train padding; leaves the fitting
/// at its first epoch to run.
pub(crate) fn load<B: AutodiffBackend>(
    spec: &RunSpec,
    prepared: &Prepared,
    device: &B::Device,
    record: &mut RunRecord,
    resume: Option<Resume>,
) -> Result<Fitting<B>, TrainError> {
    // Burn's RNG (dropout) and the head initialisation both come from the seed.
    let t = Instant::now();
    B::seed(device, spec.seed);
    let (model, _, report) =
        load_classifier::<B>(&prepared.repo, &prepared.hub, &prepared.class_names, spec.seed, device)?;
    if !report.initialised.is_empty() {
        prepared.say(&format!("Initialised from seed {}: {}", spec.seed, report.initialised.join(", ")));
    }
    record.timings.model_load_seconds = t.elapsed().as_secs_f64();

    if let Some(r) = &resume {
        check_resumable(spec, record, r)?;
        // Said even with --quiet: what the run's record will hold depends on it.
        eprintln!(
            "Resuming after epoch {} of {} from {}",
            r.state.epochs.len(),
            spec.epochs,
            r.dir.display()
        );
    }

    let batches_per_epoch = prepared.train_lengths.len().div_ceil(spec.batch);
    let steps_per_epoch = batches_per_epoch.div_ceil(spec.accum) as u64;
    let schedule =
        LrSchedule::new(spec.schedule, spec.lr, steps_per_epoch * spec.epochs as u64, spec.warmup_ratio);
    let optimizer = AdamSettings::for_kind(spec.optimizer, spec.weight_decay);
    let mut early = EarlyStopping::new(spec.patience);
    let Some(Resume { state, dir }) = resume else {
        return Ok(Fitting {
            trainer: TrainStep::new(model, optimizer, schedule, spec.grad_clip, spec.precision),
            early,
            batch_rng: Pcg64::new(spec.seed),
            best: None,
            best_file: None,
            first_epoch: 0,
            last_epoch: 0,
            fit_seconds_before: 0.0,
            fit_started: Instant::now(),
            faults: FaultWatch::start(),
        });
    };
    let model = checkpoint::load_weights(model, &dir.join(&state.model_file), device)?;
    let mut trainer = TrainStep::new(model, optimizer, schedule, spec.grad_clip, spec.precision);
    let moments = checkpoint::load_moments(&dir.join(&state.optimizer_file))?;
    trainer
        .restore(state.optimizer_steps, moments, state.scaler.clone(), device)
        .map_err(|message| CheckpointError { path: dir.join(&state.optimizer_file), message })?;
    let best = match &state.best_file {
        Some(file) => Some(checkpoint::load_weights(trainer.model().valid(), &dir.join(file), device)?),
        None => None,
    };
    // Early stopping is a function of the validation losses: replaying them restores it.
    for e in &state.epochs {
        early.observe(e.val_loss);
    }
    let first_epoch = state.epochs.len();
    record.epochs = state.epochs;
    record.shapes = state.shapes;
    // Counted in the first epoch, which this process did not run.
    record.data.train_padding = state.data.train_padding;
    Ok(Fitting {
        trainer,
        early,
        batch_rng: state.batch_rng,
        best,
        best_file: state.best_file,
        first_epoch,
        last_epoch: first_epoch.saturating_sub(1),
        fit_seconds_before: state.fit_seconds,
        fit_started: Instant::now(),
        faults: FaultWatch::start(),
    })
}

/// The checkpoint in `resume` was written by this very run: the same settings and the same
/// data (split sizes and classes).
fn check_resumable(spec: &RunSpec, record: &RunRecord, resume: &Resume) -> Result<(), TrainError> {
    let path = resume.dir.join("state.json");
    let mismatch = |message: String| {
        TrainError::Checkpoint(CheckpointError {
            path: path.clone(),
            message: format!("was written by another run ({message})"),
        })
    };
    if let Some(difference) = checkpoint::spec_difference(spec, &resume.state.spec) {
        return Err(mismatch(difference));
    }
    let (d, c) = (&record.data, &resume.state.data);
    if (d.total_rows, d.train, d.val, d.test, d.class_names.len())
        != (c.total_rows, c.train, c.val, c.test, c.class_names.len())
    {
        return Err(mismatch(format!(
            "the data gives {} train / {} val / {} test rows of {} classes, the checkpoint's {} / {} / {} of {}",
            d.train,
            d.val,
            d.test,
            d.class_names.len(),
            c.train,
            c.val,
            c.test,
            c.class_names.len()
        )));
    }
    if d.class_names != c.class_names {
        return Err(mismatch(format!(
            "the data's classes are {}, the checkpoint's {}",
            d.class_names.join(", "),
            c.class_names.join(", ")
        )));
    }
    // The same files with the same content: rows of the same count can hold other texts or
    // labels (a file replaced while the run was down).
    if !d.files.iter().map(|f| &f.sha256).eq(c.files.iter().map(|f| &f.sha256)) {
        let changed = d.files.iter().zip(&c.files).find(|(a, b)| a.sha256 != b.sha256);
        return Err(mismatch(match changed {
            Some((now, then)) => format!(
                "{} holds other content than when the checkpoint was written (SHA-256 {}… now, {}… then)",
                now.path.display(),
                &now.sha256[..12.min(now.sha256.len())],
                &then.sha256[..12.min(then.sha256.len())]
            ),
            None => format!("the data is read from {} files now, from {} then", d.files.len(), c.files.len()),
        }));
    }
    if resume.state.epochs.len() >= spec.epochs {
        return Err(mismatch(format!("it has {} epochs done of {}", resume.state.epochs.len(), spec.epochs)));
    }
    Ok(())
}
