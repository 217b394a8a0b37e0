//! Running the planned runs: one `bertlab train --spec` child process per run, resuming from the
//! records, retrying out-of-memory runs with half the batch, one worker per GPU.

use crate::estimate::plan_all;
use crate::Context;
use anyhow::{bail, Context as _, Result};
use bertlab_pipeline::store::{write_atomic, LOG_FILE, RECORD_FILE, SPEC_FILE};
use bertlab_pipeline::{oom_retry_batch, PlannedRun, Planner, ProblemManifest, RunRecord, SpecTarget};
use bertlab_run::format::format_duration;
use bertlab_run::shape::batch_shapes_text;
use bertlab_run::RunSpec;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Exit code of `bertlab train` when the device ran out of memory.
const EXIT_OUT_OF_MEMORY: i32 = 3;

/// Indices of [`Progress`]'s counts.
const DONE: usize = 0;
const TRAINED: usize = 1;
const REUSED: usize = 2;
const FAILED: usize = 3;

/// How often a long run reports that it is still going.
const HEARTBEAT: Duration = Duration::from_secs(120);

/// `<out>/.xtask.lock`: one `cargo xtask` per results directory at a time (an OS file lock,
/// released however the process ends).
pub struct OutLock {
    _lock: bertlab_run::lock::DirLock,
}

impl OutLock {
    /// Take the lock of `out`, or fail at once naming the process that holds it.
    pub fn acquire(out: &Path) -> Result<OutLock> {
        match bertlab_run::lock::DirLock::acquire(out, ".xtask.lock") {
            Ok(lock) => Ok(OutLock { _lock: lock }),
            Err(bertlab_run::lock::LockError::Busy { holder, .. }) => bail!(
                "another cargo xtask{} is running on {}: wait for it, or stop it first",
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                out.display()
            ),
            Err(e) => Err(anyhow::Error::new(e).context(format!("--out {}", out.display()))),
        }
    }
}

/// Progress over the whole pipeline: positions, wall time, and estimated work left.
struct Progress {
    total: usize,
    started: Instant,
    /// Estimated FLOPs of each run not finished yet, by `(stage, index)`.
    left: Mutex<BTreeMap<(String, usize), f64>>,
    /// Estimated FLOPs and wall seconds of the runs trained in this session.
    rate: Mutex<(f64, f64)>,
    /// Runs found done, trained, reused from an identical run, failed.
    counts: Mutex<[usize; 4]>,
}

impl Progress {
    fn finish(&self, run: &PlannedRun, seconds: Option<f64>) {
        let flops = self.left.lock().expect("progress lock").remove(&(run.stage.to_string(), run.index));
        if let (Some(f), Some(s)) = (flops, seconds) {
            let mut r = self.rate.lock().expect("progress lock");
            r.0 += f;
            r.1 += s;
        }
    }

    /// Replace the estimates of the runs not finished yet with those of `views`.
    fn re_estimate(&self, views: &[crate::estimate::PlanView]) {
        let mut left = self.left.lock().expect("progress lock");
        for v in views {
            for (run, e) in v.plan.runs.iter().zip(&v.estimates) {
                if let Some(flops) = left.get_mut(&(run.stage.to_string(), run.index)) {
                    *flops = e.flops;
                }
            }
        }
    }

    fn count(&self, what: usize) {
        self.counts.lock().expect("progress lock")[what] += 1;
    }

    fn summary(&self) -> String {
        let [done, trained, reused, failed] = *self.counts.lock().expect("progress lock");
        let mut parts = vec![format!("{trained} trained")];
        if done > 0 {
            parts.push(format!("{done} already done"));
        }
        if reused > 0 {
            parts.push(format!("{reused} reused from identical runs"));
        }
        if failed > 0 {
            parts.push(format!("{failed} FAILED"));
        }
        parts.join(", ")
    }

    fn eta(&self) -> String {
        let (flops, secs) = *self.rate.lock().expect("progress lock");
        let left: f64 = self.left.lock().expect("progress lock").values().sum();
        let elapsed = format_duration(self.started.elapsed().as_secs_f64());
        if flops > 0.0 && secs > 0.0 && left > 0.0 {
            format!("elapsed {elapsed}, ETA ≈ {}", format_duration(left / (flops / secs)))
        } else {
            format!("elapsed {elapsed}")
        }
    }
}

/// The outcome of one run.
enum Outcome {
    Completed,
    Failed(String),
}

/// The batch shapes this pipeline's completed runs met, per model, data and precision (what a
/// kernel depends on besides its shape). A GPU build compiled and tuned their kernels into the
/// machine's caches, so a later run's warm-up skips them (`bertlab train --warmed-shapes`): the
/// pipeline warms each shape once, not once per run. Kept for this process only (the caches may
/// be emptied between two `cargo xtask`s).
#[derive(Default)]
struct WarmedShapes(Mutex<HashMap<String, BTreeSet<[usize; 2]>>>);

impl WarmedShapes {
    /// The shapes met so far by runs of `spec`'s kind, sorted.
    fn of(&self, spec: &RunSpec) -> Vec<[usize; 2]> {
        let warmed = self.0.lock().expect("warmed shapes lock");
        warmed.get(&spec.kernel_key()).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Count `shapes` as met by a run of `spec`'s kind.
    fn add(&self, spec: &RunSpec, shapes: &[[usize; 2]]) {
        let mut warmed = self.0.lock().expect("warmed shapes lock");
        warmed.entry(spec.kernel_key()).or_default().extend(shapes.iter().copied());
    }
}

/// Run every stage of `ctx` in order; `Ok(false)` when a run failed or a stage could not start.
pub fn run_pipeline(
    ctx: &Context,
    planner: &Planner<'_>,
    bertlab: &Path,
    gpus: &[usize],
    verbose: bool,
) -> Result<bool> {
    let views = plan_all(ctx, planner)?;
    let mut left = BTreeMap::new();
    for v in &views {
        for (run, e) in v.plan.runs.iter().zip(&v.estimates) {
            if v.waiting.is_some() || ctx.store.completed(run).is_none() {
                left.insert((run.stage.to_string(), run.index), e.flops);
            }
        }
    }
    let total: usize = ctx.stages.iter().map(|s| s.problem.runs.len()).sum();
    let progress = Progress {
        total,
        started: Instant::now(),
        left: Mutex::new(left),
        rate: Mutex::new((0.0, 0.0)),
        counts: Mutex::new([0; 4]),
    };
    let devices: Vec<String> = if gpus.is_empty() {
        vec![ctx.backend.name().into()]
    } else {
        gpus.iter().map(|g| format!("cuda:{g}")).collect()
    };
    let warmed = WarmedShapes::default();
    let mut ok = true;
    let mut offset = 0;
    for stage in &ctx.stages {
        planner.refresh();
        let plan = planner.plan(&stage.key)?;
        let position = offset;
        offset += plan.runs.len();
        if let Some(reason) = &plan.blocked {
            let dep = stage.dependency().map(|d| d.to_string()).unwrap_or_default();
            eprintln!("{}: cannot start: it needs the best run of {dep}, and {reason}", stage.key);
            ok = false;
            continue;
        }
        ctx.store.write_manifest(&ProblemManifest::of(&plan, &ctx.options))?;
        if plan.inherited.is_some() {
            // The best run depended on is known now: re-estimate what is left with it.
            progress.re_estimate(&plan_all(ctx, planner)?);
        }
        let todo: Vec<PlannedRun> =
            plan.runs.iter().filter(|r| ctx.store.completed(r).is_none()).cloned().collect();
        eprintln!(
            "\n{} — {}: {} runs, {} already done{}",
            stage.key,
            stage.problem.title,
            plan.runs.len(),
            plan.runs.len() - todo.len(),
            if todo.is_empty() { String::new() } else { format!(", {} to train", todo.len()) }
        );
        if let Some(i) = &plan.inherited {
            let s = &plan.runs[0].settings;
            let values: Vec<String> = i
                .keys
                .iter()
                .map(|k| match k.as_str() {
                    "model" => format!("model {}", plan.runs[0].role),
                    k => format!("{k} {}", s.value_text(k).unwrap_or_default()),
                })
                .collect();
            eprintln!(
                "  {} from the best run of {} ({}: val acc {:.4} at min val loss)",
                values.join(", "),
                i.from,
                i.run.run_id,
                i.record.as_ref().and_then(|r| r.val_acc_at_min_val_loss()).unwrap_or(f64::NAN)
            );
        }
        for run in plan.runs.iter().filter(|r| ctx.store.completed(r).is_some()) {
            progress.finish(run, None);
            progress.count(DONE);
        }
        let queue = Mutex::new(todo.into_iter().collect::<VecDeque<_>>());
        let failures = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for device in &devices {
                let (queue, failures, progress, warmed) = (&queue, &failures, &progress, &warmed);
                scope.spawn(move || loop {
                    let Some(run) = queue.lock().expect("queue lock").pop_front() else { break };
                    let pos = position + run.index + 1;
                    match train_run(ctx, &run, bertlab, device, pos, progress, warmed, verbose) {
                        Ok(Outcome::Completed) => {}
                        Ok(Outcome::Failed(why)) => {
                            progress.count(FAILED);
                            eprintln!(
                                "[{pos}/{}] FAILED {}/{}: {why}",
                                progress.total, run.stage, run.run_id
                            );
                            failures.lock().expect("failures lock").push(run.run_id.clone());
                        }
                        Err(e) => {
                            progress.count(FAILED);
                            eprintln!(
                                "[{pos}/{}] FAILED {}/{}: {}",
                                progress.total,
                                run.stage,
                                run.run_id,
                                bertlab_run::format::error_chain(e.chain().map(|l| l.to_string()))
                            );
                            failures.lock().expect("failures lock").push(run.run_id.clone());
                        }
                    }
                });
            }
        });
        if !failures.lock().expect("failures lock").is_empty() {
            ok = false;
        }
    }
    eprintln!("\npipeline finished: {} runs: {}; {}", progress.total, progress.summary(), progress.eta());
    Ok(ok)
}

/// Train `run` on `device`, retrying with half the batch after an out-of-memory exit; its
/// warm-up skips the shapes `warmed` holds, and the shapes it met join them.
#[allow(clippy::too_many_arguments)]
fn train_run(
    ctx: &Context,
    run: &PlannedRun,
    bertlab: &Path,
    device: &str,
    pos: usize,
    progress: &Progress,
    warmed: &WarmedShapes,
    verbose: bool,
) -> Result<Outcome> {
    let (model, source) = ctx.run_inputs(run)?;
    let cache = ctx.token_cache();
    let dir = ctx.store.run_dir(run);
    let target =
        SpecTarget { model: &model, source: source.as_deref(), out: &dir, device, cache_dir: Some(&cache) };
    let planned = run.batch();
    let mut batch = planned;
    let tag = format!("[{pos}/{}]", progress.total);
    if let Some(origin) = reuse_identical(ctx, run, &run.spec_toml(&target, batch)?, &tag)? {
        progress.finish(run, None);
        progress.count(REUSED);
        eprintln!(
            "{tag} reused {}/{}: the same configuration was trained as {} · {}",
            run.stage,
            run.run_id,
            origin.strip_prefix(ctx.store.root()).unwrap_or(&origin).display(),
            progress.eta()
        );
        return Ok(Outcome::Completed);
    }
    // An interrupted attempt resumes from its checkpoint, at the batch it ran with (smaller than
    // planned when it had run out of memory before).
    if let Some(b) = checkpoint_batch(&dir).filter(|b| batch.is_some_and(|p| *b < p)) {
        batch = Some(b);
    }
    let mut fresh = false;
    loop {
        let spec = run.spec(&target, batch);
        prepare(ctx, run, &run.spec_file(&spec)?, &tag)?;
        let warmed_before = warmed.of(&spec);
        let retry = match (batch, planned) {
            (Some(b), Some(p)) if b < p => format!(" (batch {b} after running out of memory at {p})"),
            _ => String::new(),
        };
        eprintln!("{tag} training {}/{} on {device}: {}{retry}", run.stage, run.run_id, run.describe());
        let started = Instant::now();
        let status = spawn_train(bertlab, &dir, verbose, &tag, fresh, &warmed_before)?;
        let seconds = started.elapsed().as_secs_f64();
        match status.code() {
            Some(0) => {
                let record = ctx.store.record(run)?;
                let Some(record) = record.filter(RunRecord::is_completed) else {
                    progress.finish(run, None);
                    return Ok(Outcome::Failed(format!(
                        "bertlab exited 0 but wrote no completed record in {}",
                        dir.display()
                    )));
                };
                warmed.add(&spec, record.shapes.as_deref().unwrap_or_default());
                progress.finish(run, Some(seconds));
                progress.count(TRAINED);
                let test = record.test.as_ref();
                eprintln!(
                    "{tag} done in {}: val acc {:.4} at min val loss (epoch {} of {}), test acc {}, F1 {} · {}",
                    format_duration(seconds),
                    record.val_acc_at_min_val_loss().unwrap_or(f64::NAN),
                    record.best_epoch.map_or("-".into(), |e| e.to_string()),
                    record.epochs.len(),
                    test.map_or("-".into(), |t| format!("{:.4}", t.accuracy)),
                    test.map_or("-".into(), |t| format!("{:.4}", t.f1)),
                    progress.eta()
                );
                return Ok(Outcome::Completed);
            }
            Some(EXIT_OUT_OF_MEMORY) => match batch.and_then(oom_retry_batch) {
                Some(half) => {
                    eprintln!(
                        "{tag} out of memory at batch {}: retrying with batch {half}",
                        batch.unwrap_or_default()
                    );
                    batch = Some(half);
                    // A checkpoint of the larger batch is another run's: start over.
                    fresh = true;
                }
                None => {
                    progress.finish(run, None);
                    return Ok(Outcome::Failed(format!(
                        "out of memory even at batch {}; see {}",
                        batch.unwrap_or_default(),
                        dir.join(LOG_FILE).display()
                    )));
                }
            },
            _ => {
                progress.finish(run, None);
                let error = ctx.store.record(run).ok().flatten().and_then(|r| r.error);
                return Ok(Outcome::Failed(match error {
                    Some(e) => format!("bertlab train {status}: {e} (log: {})", dir.join(LOG_FILE).display()),
                    None => format!(
                        "bertlab train {status}; last lines of {}:\n{}",
                        dir.join(LOG_FILE).display(),
                        tail(&dir.join(LOG_FILE), 15)
                    ),
                }));
            }
        }
    }
}

/// Write the run's spec and plan (keeping what an interrupted attempt left) and report what was
/// moved aside.
fn prepare(ctx: &Context, run: &PlannedRun, spec_toml: &str, tag: &str) -> Result<()> {
    let (_, warnings) = ctx.store.prepare_run(run, spec_toml)?;
    for w in warnings {
        eprintln!("{tag} warning: {w}");
    }
    Ok(())
}

/// The batch of the checkpoint an interrupted `bertlab train` left in `dir`, if any.
fn checkpoint_batch(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("checkpoint").join("state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state["spec"]["batch"].as_u64().map(|b| b as usize)
}

/// When a run with the same id (the same configuration and inputs) completed in another problem
/// of the results directory, take its record (and link its model) instead of training again —
/// the notebook retrains, e.g., problem 1's best as problem 2's first subset. The run it came
/// from, or `None`.
pub fn reuse_identical(
    ctx: &Context,
    run: &PlannedRun,
    spec_toml: &str,
    tag: &str,
) -> Result<Option<PathBuf>> {
    let Some(origin) = identical_run(ctx, run) else { return Ok(None) };
    let dir = ctx.store.run_dir(run);
    prepare(ctx, run, spec_toml, tag)?;
    let record =
        std::fs::read(origin.join(RECORD_FILE)).with_context(|| format!("reading {}", origin.display()))?;
    write_atomic(&dir.join(RECORD_FILE), &record)?;
    #[cfg(unix)]
    if origin.join("best").is_dir() {
        let _ = std::os::unix::fs::symlink(origin.join("best"), dir.join("best"));
    }
    Ok(Some(origin))
}

/// The directory of a completed run with the same id (the same configuration) in another problem
/// of the results directory.
fn identical_run(ctx: &Context, run: &PlannedRun) -> Option<PathBuf> {
    let root = ctx.store.root();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
        .map(|q| q.path().join(&run.run_id))
        .filter(|d| *d != ctx.store.run_dir(run))
        .collect();
    dirs.sort();
    dirs.into_iter().find(|d| {
        let record = d.join(RECORD_FILE);
        record.is_file() && RunRecord::read(&record).is_ok_and(|r| r.is_completed())
    })
}

/// The last `n` lines of a file (progress redraws split on `\r` too).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.split(['\n', '\r']).map(str::trim_end).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// `bertlab train --spec <dir>/run.toml [--warmed-shapes …]`, output to `<dir>/train.log` (and
/// to stderr when verbose); the child dies with this process (Linux: PR_SET_PDEATHSIG), so a
/// killed sweep leaves no orphan training.
fn spawn_train(
    bertlab: &Path,
    dir: &Path,
    verbose: bool,
    tag: &str,
    fresh: bool,
    warmed_shapes: &[[usize; 2]],
) -> Result<ExitStatus> {
    let log_path = dir.join(LOG_FILE);
    // Appended: a resumed or retried run keeps the log of its earlier attempts.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(bertlab);
    cmd.arg("train")
        .arg("--spec")
        .arg(dir.join(SPEC_FILE))
        .args(fresh.then_some("--fresh"))
        .args(if warmed_shapes.is_empty() {
            vec![]
        } else {
            vec!["--warmed-shapes".to_string(), batch_shapes_text(warmed_shapes)]
        })
        .stdin(Stdio::null())
        .current_dir(crate::workspace_root());
    if verbose {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log.try_clone()?));
    }
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("starting {}", bertlab.display()))?;
    let log = Mutex::new(log);
    std::thread::scope(|scope| -> Result<ExitStatus> {
        if verbose {
            let out = child.stdout.take().expect("piped stdout");
            let err = child.stderr.take().expect("piped stderr");
            for pipe in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
                let log = &log;
                scope.spawn(move || {
                    for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                        let line = String::from_utf8_lossy(&line);
                        let _ = writeln!(log.lock().expect("log lock"), "{line}");
                        eprintln!("    {line}");
                    }
                });
            }
        }
        let started = Instant::now();
        let mut next_beat = HEARTBEAT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if !verbose && started.elapsed() >= next_beat {
                next_beat += HEARTBEAT;
                let last = tail(&log_path, 1);
                eprintln!(
                    "{tag} still training ({}): {}",
                    format_duration(started.elapsed().as_secs_f64()),
                    last.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are made (getppid, prctl,
    // _exit), with no allocation.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
