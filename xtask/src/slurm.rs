//! Slurm: `--emit slurm` writes the job arrays of the problems that can start; `--submit`
//! submits a whole pipeline — the arrays that can start, then a small job that waits for them
//! (`--dependency=afterany`), plans the problems that build on their best runs from the
//! records, submits their arrays and another such job, and so on to a last job that writes the
//! report. `cargo xtask status` shows where a submitted pipeline stands.
//!
//! What a chain needs is kept in `<out>/slurm/`: `chain.json` (the command to continue with, its
//! directory and the xtask binary) and `jobs.jsonl` (every job submitted, one JSON line each).

use crate::{Backend, Context};
use anyhow::{bail, Context as _, Result};
use bertlab_pipeline::slurm::{ChainJob, SlurmArray, SlurmOptions};
use bertlab_pipeline::store::write_atomic;
use bertlab_pipeline::{Planner, ProblemManifest, SpecTarget, StageKey, StagePlan};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The command a submitted pipeline continues with, as the first submission ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chain {
    /// The directory it was submitted from (relative paths resolve from it).
    pub cwd: PathBuf,
    /// Its arguments (`xtask <pipeline> … --submit --chain-step`), without `--fresh`.
    pub argv: Vec<String>,
    /// The xtask binary the chain's jobs run.
    pub xtask: PathBuf,
}

/// One submitted job, as `jobs.jsonl` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobLine {
    /// `array`, `next` or `report`.
    pub kind: String,
    /// The problem of an array.
    pub stage: Option<String>,
    /// Slurm's job id.
    pub job: String,
    /// Array tasks.
    pub tasks: usize,
    /// The jobs it waits for.
    pub after: Vec<String>,
    /// When it was submitted (UTC).
    pub at: String,
}

fn slurm_dir(out: &Path) -> PathBuf {
    out.join("slurm")
}

impl Chain {
    /// The chain of this process: its directory, its arguments (`--fresh` left out: a later step
    /// must not delete what the first one's jobs wrote) with `--bertlab` set, and its binary.
    pub fn of_this_process(bertlab: &Path) -> Result<Chain> {
        let mut argv: Vec<String> = std::env::args().filter(|a| a != "--fresh").collect();
        if !argv.iter().any(|a| a == "--bertlab" || a.starts_with("--bertlab=")) {
            argv.push("--bertlab".into());
            argv.push(bertlab.display().to_string());
        }
        argv.push("--chain-step".into());
        Ok(Chain {
            cwd: std::env::current_dir().context("current directory")?,
            argv,
            xtask: std::env::current_exe().context("the xtask binary's path")?,
        })
    }

    /// Write `<out>/slurm/chain.json`.
    pub fn save(&self, out: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_atomic(&slurm_dir(out).join("chain.json"), &json)?;
        Ok(())
    }

    /// Read `<out>/slurm/chain.json`.
    pub fn load(out: &Path) -> Result<Chain> {
        let path = slurm_dir(out).join("chain.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{}: no submitted pipeline here (submit one with --submit)", path.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a chain file", path.display()))
    }
}

/// Every job submitted for `out`, oldest first.
pub fn jobs(out: &Path) -> Vec<JobLine> {
    let text = std::fs::read_to_string(slurm_dir(out).join("jobs.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `sbatch --parsable [--dependency=afterany:…] script`; the job id, recorded in `jobs.jsonl`.
fn submit(
    out: &Path,
    script: &Path,
    kind: &str,
    stage: Option<&StageKey>,
    tasks: usize,
    after: &[String],
) -> Result<String> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable");
    if !after.is_empty() {
        cmd.arg(format!("--dependency=afterany:{}", after.join(":")));
    }
    let output = cmd.arg(script).output().map_err(|e| {
        anyhow::anyhow!(
            "running sbatch: {e}; --submit needs Slurm's client commands (run it on a login node)"
        )
    })?;
    if !output.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let job = text.trim().split(';').next().unwrap_or("").to_string();
    if job.is_empty() {
        bail!("sbatch {} printed no job id", script.display());
    }
    let line = JobLine {
        kind: kind.into(),
        stage: stage.map(|s| s.to_string()),
        job: job.clone(),
        tasks,
        after: after.to_vec(),
        at: bertlab_run::record::utc_now_rfc3339(),
    };
    let path = slurm_dir(out).join("jobs.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(&line)?)?;
    Ok(job)
}

/// Write the run specs and the array script of a ready problem; `None` when all its runs are
/// done already. With `reuse`, a configuration already trained in another problem takes that
/// run's record instead of a task (the local runner's rule; `--emit` only writes scripts).
fn write_array(
    ctx: &Context,
    plan: &StagePlan,
    bertlab: &Path,
    options: &SlurmOptions,
    reuse: bool,
) -> Result<Option<(PathBuf, usize)>> {
    let stage = &plan.stage;
    ctx.store.write_manifest(&ProblemManifest::of(plan, &ctx.options))?;
    let cache = ctx.token_cache();
    // Each array task sees the GPU Slurm gave it as device 0.
    let device = ctx.backend.name();
    let mut dirs = Vec::new();
    for run in &plan.runs {
        if ctx.store.completed(run).is_some() {
            continue;
        }
        let (model, source) = ctx.run_inputs(run)?;
        let dir = ctx.store.run_dir(run);
        let target = SpecTarget {
            model: &model,
            source: source.as_deref(),
            out: &dir,
            device,
            cache_dir: Some(&cache),
        };
        let spec = run.spec_toml(&target, None)?;
        // The same rule as the local runner: a configuration done in another problem is reused.
        let reused = if reuse {
            crate::exec::reuse_identical(ctx, run, &spec, &format!("{}:", stage.key))?
        } else {
            None
        };
        if let Some(origin) = reused {
            eprintln!(
                "{}: reused {} (the same configuration, trained as {})",
                stage.key,
                run.run_id,
                origin.display()
            );
            continue;
        }
        // Only the spec and the plan: what an interrupted task left stays for it to resume.
        ctx.store.write_run_files(run, &spec)?;
        dirs.push(dir);
    }
    if dirs.is_empty() {
        return Ok(None);
    }
    let stage_dir = ctx.store.stage_dir(&stage.key);
    let array = SlurmArray {
        job_name: format!("bertlab-{}", stage.key.label()),
        bertlab: bertlab.to_path_buf(),
        run_dirs: dirs,
        log_dir: stage_dir.join("slurm-logs"),
        gpu: ctx.backend != Backend::Cpu,
        options: options.clone(),
    };
    std::fs::create_dir_all(&array.log_dir)?;
    let path = ctx
        .store
        .root()
        .join(&stage.key.pipeline)
        .join("slurm")
        .join(format!("{}.sbatch", stage.key.problem));
    write_atomic(&path, array.script().as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(Some((path, array.run_dirs.len())))
}

/// `--emit slurm`: the arrays of the problems whose inputs are known, not submitted.
pub fn emit(
    ctx: &Context,
    planner: &Planner<'_>,
    bertlab: &Path,
    pipeline: &str,
    options: &SlurmOptions,
) -> Result<()> {
    let mut scripts = Vec::new();
    for stage in &ctx.stages {
        planner.refresh();
        let plan = planner.plan(&stage.key)?;
        if let Some(reason) = &plan.blocked {
            let dep = stage.dependency().map(|d| d.to_string()).unwrap_or_default();
            eprintln!(
                "{}: not emitted yet: it needs the best run of {dep} ({reason}). When those jobs have finished, \
                 run this command again to emit it (or submit the whole pipeline with --submit).",
                stage.key
            );
            continue;
        }
        match write_array(ctx, &plan, bertlab, options, false)? {
            Some((path, tasks)) => {
                eprintln!("{}: {tasks} array tasks → {}", stage.key, path.display());
                scripts.push(path);
            }
            None => eprintln!("{}: all {} runs already have records", stage.key, plan.runs.len()),
        }
    }
    if !scripts.is_empty() {
        eprintln!("\nSubmit:");
        for s in &scripts {
            eprintln!("  sbatch {}", s.display());
        }
        eprintln!(
            "Then `cargo xtask {pipeline} --emit slurm` again for the problems that wait on these, and \
             `cargo xtask report --out {}` for the report — or let `--submit` chain them.",
            ctx.store.root().display()
        );
    }
    Ok(())
}

/// Submit what can run now: the arrays of the problems whose inputs are known, up to the first
/// one that waits for a problem submitted in this step; then a job that continues the chain
/// after them, or the report job. `Ok(false)` when a problem cannot start because a run it
/// depends on failed (the others go on).
pub fn advance(
    ctx: &Context,
    planner: &Planner<'_>,
    bertlab: &Path,
    chain: &Chain,
    options: &SlurmOptions,
) -> Result<bool> {
    let out = ctx.store.root();
    let logs = slurm_dir(out).join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut in_flight: Vec<(StageKey, String)> = Vec::new();
    let mut waiting = false;
    let mut ok = true;
    for stage in &ctx.stages {
        if stage.dependency().is_some_and(|d| in_flight.iter().any(|(k, _)| *k == d)) {
            waiting = true;
            break;
        }
        planner.refresh();
        let plan = planner.plan(&stage.key)?;
        if let Some(reason) = &plan.blocked {
            let dep = stage.dependency().map(|d| d.to_string()).unwrap_or_default();
            eprintln!("{}: cannot start: it needs the best run of {dep}, and {reason}", stage.key);
            ok = false;
            continue;
        }
        if let Some((script, tasks)) = write_array(ctx, &plan, bertlab, options, true)? {
            let job = submit(out, &script, "array", Some(&stage.key), tasks, &[])?;
            eprintln!("{}: submitted job array {job} ({tasks} runs)", stage.key);
            in_flight.push((stage.key.clone(), job));
        } else {
            eprintln!("{}: all {} runs already have records", stage.key, plan.runs.len());
        }
    }
    let after: Vec<String> = in_flight.iter().map(|(_, j)| j.clone()).collect();
    let step = |name: &str, args: Vec<String>| -> Result<PathBuf> {
        let job = ChainJob {
            job_name: format!("bertlab-{name}"),
            xtask: chain.xtask.clone(),
            args,
            cwd: chain.cwd.clone(),
            log_dir: logs.clone(),
            options: options.clone(),
        };
        let path = slurm_dir(out).join(format!("{name}.sbatch"));
        write_atomic(&path, job.script().as_bytes())?;
        Ok(path)
    };
    let out_arg = out.display().to_string();
    if waiting {
        let script = step("next", vec!["slurm-next".into(), "--out".into(), out_arg])?;
        let job = submit(out, &script, "next", None, 0, &after)?;
        eprintln!("submitted job {job}: plans and submits the next problems once {} end", after.join(", "));
    } else if !after.is_empty() {
        let script = step("report", vec!["report".into(), "--out".into(), out_arg])?;
        let job = submit(out, &script, "report", None, 0, &after)?;
        eprintln!("submitted job {job}: writes the report once {} end", after.join(", "));
    } else {
        crate::report(out)?;
    }
    eprintln!("`cargo xtask status --out {}` shows where the pipeline stands.", out.display());
    Ok(ok)
}

/// The state of submitted jobs as `squeue` knows them (`job id → state`); finished jobs are
/// not listed. Empty when `squeue` is not available.
/// The queue's state of each job still in it; `Err` (why) when the queue cannot be asked, so
/// that a job is not called finished for want of an answer.
fn queue_states(jobs: &[JobLine]) -> Result<std::collections::BTreeMap<String, String>, String> {
    let ids: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let output = Command::new("squeue")
        .args(["-h", "-o", "%i %T", "-j", &ids.join(",")])
        .output()
        .map_err(|e| format!("squeue could not run: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // squeue exits 1 for job ids it no longer knows (all finished) too: that says so on stderr.
    if !output.status.success() && !stderr.contains("Invalid job id") {
        return Err(format!("squeue failed: {}", stderr.lines().next().unwrap_or("no message").trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(id, state)| (id.to_string(), state.to_string())))
        .collect())
}

/// `cargo xtask status --out DIR`: per problem, its runs done, failed, in progress and to do,
/// and the Slurm jobs submitted for it, with their state.
pub fn status(out: &Path) -> Result<()> {
    let store = bertlab_pipeline::ResultsStore::new(out);
    let mut warnings = Vec::new();
    let stages = store.scan(&mut warnings);
    let jobs = jobs(out);
    let states = queue_states(&jobs);
    let state_of = |job: &str| -> String {
        let states = match &states {
            Ok(states) => states,
            Err(why) => return format!("unknown ({why})"),
        };
        // Array tasks show as `<id>_<i>`; the array is in the queue while any task is.
        let mut found: Vec<&String> = states
            .iter()
            .filter(|(id, _)| *id == job || id.starts_with(&format!("{job}_")))
            .map(|(_, s)| s)
            .collect();
        found.sort();
        found.dedup();
        if found.is_empty() {
            "finished".into()
        } else {
            found.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("/")
        }
    };
    if stages.is_empty() && jobs.is_empty() {
        bail!("nothing under {}: no run records, plans or submitted jobs", out.display());
    }
    for stage in &stages {
        let (mut done, mut failed, mut started, mut todo) = (0, 0, 0, 0);
        let planned: Vec<String> = stage.manifest.as_ref().map_or_else(
            || stage.runs.iter().map(|r| r.run_id.clone()).collect(),
            |m| m.runs.iter().map(|r| r.run_id.clone()).collect(),
        );
        for id in &planned {
            match stage.runs.iter().find(|r| r.run_id == *id) {
                Some(r) if r.record.as_ref().is_some_and(|r| r.is_completed()) => done += 1,
                Some(r) if r.record.is_some() => failed += 1,
                Some(r) if r.dir.join("checkpoint").exists() || r.dir.join("train.log").exists() => {
                    started += 1
                }
                _ => todo += 1,
            }
        }
        let mut line = format!("{:<28} {} runs: {done} done", stage.key.to_string(), planned.len());
        for (n, what) in [(failed, "failed"), (started, "started"), (todo, "not started")] {
            if n > 0 {
                line.push_str(&format!(", {n} {what}"));
            }
        }
        let key = stage.key.to_string();
        if let Some(j) = jobs.iter().rev().find(|j| j.stage.as_deref() == Some(key.as_str())) {
            line.push_str(&format!("   (array {}: {})", j.job, state_of(&j.job)));
        }
        println!("{line}");
    }
    for j in jobs.iter().filter(|j| j.kind != "array") {
        println!("{} job {}: {} (after {})", j.kind, j.job, state_of(&j.job), j.after.join(", "));
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
