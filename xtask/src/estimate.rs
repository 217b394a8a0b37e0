//! Plans with cost estimates: `--dry-run` and the CPU warning.

use crate::{Backend, Context};
use anyhow::Result;
use bertlab_pipeline::estimate::{
    estimate_run, FoundShape, KnownRows, RunEstimate, SplitSizes, Throughput, IMDB_ROWS,
};
use bertlab_pipeline::plan::{subset_text, StagePlan};
use bertlab_pipeline::{PlannedRun, Planner, StageKey};
use bertlab_run::format::{format_count, format_duration, format_lr, format_number};
use std::collections::{BTreeMap, BTreeSet};

/// A stage's plan, real or assumed (planned with the most expensive run of the problem it depends
/// on standing in for its best, which is not known yet).
pub struct PlanView {
    /// The plan.
    pub plan: StagePlan,
    /// Why the real plan is not known yet (then `plan` is assumed).
    pub waiting: Option<String>,
    /// Estimate of each run.
    pub estimates: Vec<RunEstimate>,
}

/// Estimate one run, resolving its model to find the model's shape; its rows are the ones its
/// record counted, IMDB's, or unknown (then IMDB's stand in, and the plan says so).
pub fn estimate(ctx: &Context, run: &PlannedRun) -> RunEstimate {
    let model = ctx.resolver.resolve("model", &run.model).unwrap_or_else(|_| run.model.clone());
    let recorded = match ctx.store.record(run) {
        Ok(Some(r)) if r.data.train > 0 => {
            let d = &r.data;
            Some(SplitSizes { pool: d.pool, train: d.train, val: d.val, test: d.test })
        }
        _ => None,
    };
    let known = match KnownRows::of(run, recorded) {
        // A local dataset's rows are counted before it is trained on.
        KnownRows::Unknown => {
            let mut spec = run.settings.to_spec();
            if let Some(source) = ctx.run_inputs(run).ok().and_then(|(_, source)| source) {
                spec.source = source;
            }
            ctx.rows.count(&spec).map_or(KnownRows::Unknown, KnownRows::Counted)
        }
        known => known,
    };
    estimate_run(run, &FoundShape::for_reference(&model).shape, known)
}

/// Plans of every stage, assumed where a dependency has no records yet.
pub fn plan_all(ctx: &Context, planner: &Planner<'_>) -> Result<Vec<PlanView>> {
    let mut views: Vec<PlanView> = Vec::new();
    let mut by_key: BTreeMap<StageKey, Vec<PlannedRun>> = BTreeMap::new();
    for stage in &ctx.stages {
        let plan = planner.plan(&stage.key)?;
        let (plan, waiting) = match (&plan.blocked, stage.dependency()) {
            (Some(reason), Some(dep)) => {
                let dep_runs = match by_key.get(&dep) {
                    Some(runs) => runs.clone(),
                    None => planner.plan(&dep)?.runs,
                };
                let costliest = dep_runs
                    .iter()
                    .max_by(|a, b| estimate(ctx, a).flops.total_cmp(&estimate(ctx, b).flops))
                    .cloned();
                match costliest {
                    Some(best) => (
                        planner.plan_assuming(&stage.key, &best)?,
                        Some(format!("depends on the best of {dep}: {reason}")),
                    ),
                    None => (plan.clone(), Some(reason.clone())),
                }
            }
            _ => (plan, None),
        };
        by_key.insert(stage.key.clone(), plan.runs.clone());
        let estimates = plan.runs.iter().map(|r| estimate(ctx, r)).collect();
        views.push(PlanView { plan, waiting, estimates });
    }
    Ok(views)
}

/// The throughput of completed records on this backend, else an assumed one.
pub fn throughput(ctx: &Context) -> Throughput {
    let mut warnings = Vec::new();
    let stages = ctx.store.scan(&mut warnings);
    let records: Vec<_> = stages
        .iter()
        .flat_map(|s| s.runs.iter())
        .filter_map(|r| r.record.as_ref())
        .filter(|r| r.is_completed() && r.environment.backend.starts_with(ctx.backend.name()))
        .collect();
    let measured =
        Throughput::measured(records.iter().map(|r| (*r, FoundShape::for_reference(&r.spec.model).shape)));
    // Without records, a wgpu GPU is assumed to be as fast as a CUDA one (it is said so).
    let gpu = ctx.backend != Backend::Cpu;
    measured.unwrap_or_else(|| Throughput::assumed(gpu, ctx.options.precision))
}

/// Totals of the runs still to do: `(runs, padded tokens, FLOPs, any assumed)`.
fn remaining(ctx: &Context, views: &[PlanView]) -> (usize, f64, f64, bool) {
    let (mut n, mut tokens, mut flops, mut assumed) = (0, 0.0, 0.0, false);
    for v in views {
        for (run, e) in v.plan.runs.iter().zip(&v.estimates) {
            if v.waiting.is_none() && ctx.store.completed(run).is_some() {
                continue;
            }
            n += 1;
            tokens += e.padded_tokens;
            flops += e.flops;
            assumed |= v.waiting.is_some();
        }
    }
    (n, tokens, flops, assumed)
}

/// Print the plan for `--dry-run`.
pub fn print_plan(ctx: &Context, planner: &Planner<'_>, fresh: bool) -> Result<()> {
    let views = plan_all(ctx, planner)?;
    let rate = throughput(ctx);
    let backend = ctx.backend.name();
    println!(
        "Plan → {} (backend {backend}{}){}",
        ctx.store.root().display(),
        if ctx.gpu_visible { "" } else { "; no NVIDIA GPU visible" },
        if fresh { "; --fresh: existing results would be deleted" } else { "" }
    );
    if ctx.options.pool != 1.0 {
        println!(
            "Data: --subset {} → every subset below is a fraction of a pool of {} of the dataset",
            format_number(ctx.options.pool),
            format_number(ctx.options.pool)
        );
    }
    for v in &views {
        let s = &v.plan.stage;
        println!("\n{} — {} ({} runs)", s.key, s.problem.title, v.plan.runs.len());
        if let Some(why) = &v.waiting {
            let keys = s.problem.inherited_keys().join(", ");
            println!("  {why}");
            println!("  {keys}: from that best run once it exists; estimated here with its costliest configuration");
        } else if let Some(i) = &v.plan.inherited {
            println!("  {} from {} (its best run, as recorded)", i.keys.join(", "), i.run_path());
        }
        println!(
            "  {:>2}  {:<9} {:<11} {:>7} {:>7} {:>5}  {:<26} {:>17} {:>13} {:>10}  run id",
            "#",
            "status",
            "model",
            "max_len",
            "lr",
            "batch",
            "subset",
            "train/val/test",
            "padded tok.",
            "est. time"
        );
        for (run, e) in v.plan.runs.iter().zip(&v.estimates) {
            let status = if v.waiting.is_some() {
                "waiting"
            } else {
                match ctx.store.record(run) {
                    Ok(Some(r)) if r.is_completed() && !fresh => "done",
                    Ok(Some(_)) if !fresh => "failed",
                    _ => "to run",
                }
            };
            let st = &run.settings;
            let id = if v.waiting.is_some() { "(provisional)".to_string() } else { run.run_id.clone() };
            println!(
                "  {:>2}  {:<9} {:<11} {:>7} {:>7} {:>5}  {:<26} {:>17} {:>13} {:>10}  {id}",
                run.index + 1,
                status,
                run.role,
                st.max_len.map_or("-".into(), |m| m.to_string()),
                st.lr.map_or("-".into(), format_lr),
                st.batch.map_or("-".into(), |b| b.to_string()),
                subset_text(run.subset_fraction, run.pool).trim_start_matches("subset "),
                match e.known {
                    KnownRows::Unknown => "?".to_string(),
                    _ => format!("{}/{}/{}", e.rows.train, e.rows.val, e.rows.test),
                },
                format!(
                    "{}{}",
                    format_count(e.padded_tokens),
                    if e.known == KnownRows::Unknown { "*" } else { "" }
                ),
                format!(
                    "≈{}{}",
                    format_duration(rate.seconds(e.flops)),
                    if e.known == KnownRows::Unknown { "*" } else { "" }
                ),
            );
        }
    }
    let (n, tokens, flops, assumed) = remaining(ctx, &views);
    if views.iter().flat_map(|v| &v.estimates).any(|e| e.known == KnownRows::Unknown) {
        println!(
            "\n* rows not known before the data is read (a dataset other than IMDB, or its own splits): \
             tokens and times assume IMDB's {} rows under the notebook's recipe",
            format_count(IMDB_ROWS as f64)
        );
    }
    println!(
        "\nTo run: {n} run{} · {} padded tokens · {} FLOP · ≈ {}{} at {} FLOP/s ({}; every epoch counted, early stopping ignored)",
        if n == 1 { "" } else { "s" },
        format_count(tokens),
        format_count(flops),
        if assumed { "up to " } else { "" },
        format_duration(rate.seconds(flops)),
        format_count(rate.flops_per_s),
        rate.origin
    );
    if ctx.backend != Backend::Cpu {
        let shapes = planned_shapes(&views);
        println!(
            "Batch shapes (rows × length) the GPU build compiles and tunes kernels for, each once for the \
             pipeline (a run's warm-up skips those earlier runs met){}:",
            if assumed { ", at most" } else { "" }
        );
        for (name, set) in &shapes {
            let text: Vec<String> = set.iter().map(|[rows, len]| format!("{rows}×{len}")).collect();
            println!("  {name}: {} — {}", set.len(), text.join(" "));
        }
    }
    Ok(())
}

/// The batch shapes every run of the plan may meet ([`RunSpec::planned_shapes`]), grouped as
/// the pipeline's warm-ups share them ([`RunSpec::kernel_key`]), each group named by its model
/// role and precision.
fn planned_shapes(views: &[PlanView]) -> Vec<(String, BTreeSet<[usize; 2]>)> {
    let mut groups: BTreeMap<String, (String, BTreeSet<[usize; 2]>)> = BTreeMap::new();
    for run in views.iter().flat_map(|v| &v.plan.runs) {
        let spec = run.settings.to_spec();
        let name = || format!("{} {}", run.role, spec.precision);
        groups
            .entry(spec.kernel_key())
            .or_insert_with(|| (name(), BTreeSet::new()))
            .1
            .extend(spec.planned_shapes());
    }
    let mut shapes: Vec<_> = groups.into_values().collect();
    shapes.sort();
    shapes
}

/// Warn that training runs on the CPU, with the time it will take.
pub fn warn_cpu(ctx: &Context, planner: &Planner<'_>) -> Result<()> {
    let views = plan_all(ctx, planner)?;
    let rate = throughput(ctx);
    let (n, tokens, flops, assumed) = remaining(ctx, &views);
    let rows_assumed = views.iter().flat_map(|v| &v.estimates).any(|e| e.known == KnownRows::Unknown);
    eprintln!(
        "warning: no NVIDIA GPU visible (`nvidia-smi -L` lists none): training on the CPU.\n\
         warning: {n} run{} to do, {} padded tokens, {} FLOP: ≈ {}{} at {} FLOP/s ({}{}).\n\
         warning: shrink the data with --subset, or use a machine with a GPU (--backend cuda).",
        if n == 1 { "" } else { "s" },
        format_count(tokens),
        format_count(flops),
        if assumed { "up to " } else { "" },
        format_duration(rate.seconds(flops)),
        format_count(rate.flops_per_s),
        rate.origin,
        if rows_assumed { "; rows not known before the data is read: IMDB's assumed" } else { "" }
    );
    Ok(())
}
