//! `--emit slurm`: write run specs and one job-array script per problem instead of running.

use crate::{Backend, Context};
use anyhow::Result;
use bertlab_pipeline::slurm::SlurmArray;
use bertlab_pipeline::store::write_atomic;
use bertlab_pipeline::{Planner, ProblemManifest, SpecTarget};
use std::path::Path;

/// Emit the scripts of every stage whose inputs are known; stages waiting for another problem's
/// best run are emitted by running the same command again once that problem's jobs are done.
pub fn emit(ctx: &Context, planner: &Planner<'_>, bertlab: &Path, pipeline: &str) -> Result<()> {
    let cache = ctx.token_cache();
    // Each array task sees the GPU Slurm gave it as device 0.
    let device = ctx.backend.name();
    let mut scripts = Vec::new();
    for stage in &ctx.stages {
        planner.refresh();
        let plan = planner.plan(&stage.key)?;
        if let Some(reason) = &plan.blocked {
            let dep = stage.dependency().map(|d| d.to_string()).unwrap_or_default();
            eprintln!(
                "{}: not emitted yet: it needs the best run of {dep} ({reason}). When those jobs have finished, \
                 run this command again to emit it.",
                stage.key
            );
            continue;
        }
        ctx.store.write_manifest(&ProblemManifest::of(&plan, &ctx.options))?;
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
            // Only the spec and the plan: a task of an earlier submission may still be running
            // in this directory (the script clears leftovers when a task starts).
            ctx.store.write_run_files(run, &run.spec_toml(&target, None)?)?;
            dirs.push(dir);
        }
        if dirs.is_empty() {
            eprintln!("{}: all {} runs already have records", stage.key, plan.runs.len());
            continue;
        }
        let stage_dir = ctx.store.stage_dir(&stage.key);
        let array = SlurmArray {
            job_name: format!("bertlab-{}", stage.key.label()),
            bertlab: bertlab.to_path_buf(),
            run_dirs: dirs,
            log_dir: stage_dir.join("slurm-logs"),
            gpus: usize::from(ctx.backend != Backend::Cpu),
            cpus: 8,
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
        eprintln!("{}: {} array tasks → {}", stage.key, array.run_dirs.len(), path.display());
        scripts.push(path);
    }
    if !scripts.is_empty() {
        eprintln!("\nSubmit:");
        for s in &scripts {
            eprintln!("  sbatch {}", s.display());
        }
        eprintln!(
            "Then `cargo xtask {pipeline} --emit slurm` again for the problems that wait on these, and \
             `cargo xtask report --out {}` for the report.",
            ctx.store.root().display()
        );
    }
    Ok(())
}
