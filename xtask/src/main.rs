//! `cargo xtask`: build `bertlab` and run the experiment pipelines of `pipelines/`, one
//! `bertlab train` process per run, resumable, with reports derived from the run records.

mod build;
mod estimate;
mod exec;
mod identity;
mod rows;
mod slurm;

use anyhow::{bail, Context as _, Result};
use bertlab_pipeline::report::Report;
use bertlab_pipeline::slurm::SlurmOptions;
use bertlab_pipeline::{
    answer_line, PipelineLibrary, PipelineSpec, PlanOptions, PlannedRun, Planner, Resolver, ResultsStore,
    Stage,
};
use bertlab_run::Precision;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Build bertlab and run the experiment pipelines (one process per run, resumable, reported).
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Problem 1: context length × learning rate (6 DistilBERT runs at subset 0.25).
    Problem1(RunArgs),
    /// Problem 2: data size (subsets 0.25-1.0) with problem 1's best configuration.
    Problem2(RunArgs),
    /// Problem 3: DistilBERT vs BERT-base with the best of problems 1-2.
    Problem3(RunArgs),
    /// Problems 1, 2 and 3 chained, each best passed on from the records.
    All(RunArgs),
    /// The whole chain on the tiny shared fixtures, in under two minutes on a CPU (CI).
    Smoke(RunArgs),
    /// Any pipeline: a file name in pipelines/ (without .toml) or a path to a .toml file.
    Run {
        /// Pipeline name or file.
        pipeline: String,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Regenerate report.md, results.csv and plots/ from whatever records exist under --out.
    Report {
        /// Results directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Where a pipeline stands: per problem, runs done, failed, started and to do, and the
    /// Slurm jobs submitted for it (--submit) with their state.
    Status {
        /// Results directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// A step of a submitted pipeline (run by its Slurm jobs): plan the problems whose
    /// dependencies have finished, submit their arrays and the next step.
    #[command(hide = true)]
    SlurmNext {
        /// Results directory of the submitted pipeline.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// List the pipelines of pipelines/.
    List,
}

impl Command {
    /// A pipeline command's pipeline name and options; `None` for the other commands.
    fn as_pipeline(&self) -> Option<(&str, &RunArgs)> {
        match self {
            Command::Problem1(a) => Some(("problem1", a)),
            Command::Problem2(a) => Some(("problem2", a)),
            Command::Problem3(a) => Some(("problem3", a)),
            Command::All(a) => Some(("all", a)),
            Command::Smoke(a) => Some(("smoke", a)),
            Command::Run { pipeline, args } => Some((pipeline, args)),
            _ => None,
        }
    }
}

/// Options of a pipeline run.
#[derive(Args, Clone)]
struct RunArgs {
    /// Scale the data: the pool is F of the dataset and every subset of the pipeline is a
    /// fraction of that pool (a run's subset = F × its fraction).
    #[arg(long, value_name = "F")]
    subset: Option<f64>,
    /// Replace a model role with a Hub id or a local snapshot directory (repeatable), e.g.
    /// `--model bert=../shared/models/all-MiniLM-L6-v2`.
    #[arg(long = "model", value_name = "ROLE=MODEL")]
    models: Vec<String>,
    /// Data source of every run: `hub`, `hub:ORG/NAME[@REV]` or a directory in the Hub layout
    /// (`DIR/plain_text/*.parquet`, e.g. ../shared/data/hf-imdb).
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Backend to build and train with [default: cuda when `nvidia-smi -L` lists a GPU, else cpu].
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Compute precision of every run: f32, f16 or bf16 (parameters stay f32).
    #[arg(long)]
    precision: Option<Precision>,
    /// Maximum epochs of every run.
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Results directory [default: runs/ in the workspace].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the plan (runs, configurations, padded tokens, time estimate) and exit.
    #[arg(long)]
    dry_run: bool,
    /// Delete this pipeline's results first and start over.
    #[arg(long)]
    fresh: bool,
    /// Run independent runs concurrently, one per GPU: `--gpus 0,1,2,3`.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    gpus: Vec<usize>,
    /// Write a Slurm job-array script per problem (one task per run) instead of running.
    #[arg(long, value_enum, value_name = "KIND")]
    emit: Option<Emit>,
    /// Submit the pipeline to Slurm: the arrays of the problems that can start, and small jobs
    /// that plan and submit the next problems from the records once those end, then the report.
    #[arg(long, conflicts_with_all = ["emit", "dry_run", "gpus"])]
    submit: bool,
    /// A Slurm option for every job (repeatable): partition, account, qos, time, mem,
    /// cpus-per-task, gpus, gres, constraint, extra (an #SBATCH line), modules, setup.
    #[arg(long = "slurm", value_name = "KEY=VALUE")]
    slurm: Vec<String>,
    /// A TOML file with a [slurm] table of the same keys (flags override it).
    #[arg(long, value_name = "FILE")]
    slurm_config: Option<PathBuf>,
    /// Internal: this is a step of a submitted chain (set by the chain's jobs).
    #[arg(long, hide = true)]
    chain_step: bool,
    /// Use this bertlab binary instead of building one [env: BERTLAB_BIN].
    #[arg(long, value_name = "PATH")]
    bertlab: Option<PathBuf>,
    /// Echo each run's output (it always goes to the run's train.log).
    #[arg(long, short)]
    verbose: bool,
}

/// `--backend`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Burn's Flex CPU backend.
    Cpu,
    /// NVIDIA GPUs through CUDA.
    Cuda,
    /// Other GPUs (AMD, Intel, Apple) through wgpu: Vulkan, Metal, DirectX 12.
    Wgpu,
    /// GPUs with a Vulkan driver (AMD, Intel) through CubeCL's SPIR-V compiler: the
    /// `--features vulkan` build, which runs cooperative matrices (tensor cores) where the
    /// driver has them; WGSL, wgpu's, cannot express them.
    Vulkan,
}

impl Backend {
    /// The `--device` a run gets (each Slurm task or process sees its GPU as the default one),
    /// and the prefix of the backend name its record carries.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Wgpu => "wgpu",
            Backend::Vulkan => "vulkan",
        }
    }
}

/// `--emit`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Emit {
    /// A Slurm job array per problem.
    Slurm,
}

/// The workspace root: the nearest folder at or above the current one that holds `Cargo.toml`,
/// `xtask/` and `pipelines/`, else the one this binary was compiled in.
///
/// Looked up at run time because a compiled-in path goes stale when the binary is reused from
/// a target directory shared between checkouts (cargo considers the build fresh when only the
/// checkout's path changed).
pub fn workspace_root() -> PathBuf {
    let is_root =
        |d: &Path| d.join("Cargo.toml").is_file() && d.join("xtask").is_dir() && d.join("pipelines").is_dir();
    if let Some(found) = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|d| is_root(d)).map(Path::to_path_buf))
    {
        return found;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// The folder that pipelines' `shared:REL` and `${BERTLAB_SHARED}` references name:
/// `$BERTLAB_SHARED` (empty counts as unset), else `../shared` beside the workspace; `None` when
/// it is not there, and a pipeline that uses such a reference is then refused by the resolver.
/// A feature of `cargo xtask`, not the tests' fixture lookup (`bertlab_test_support::shared_dir`,
/// which also has CI's `BERTLAB_REQUIRE_SHARED`): DESIGN.md, Layout.
fn shared_reference_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BERTLAB_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("../shared"),
    };
    dir.is_dir().then(|| dir.canonicalize().unwrap_or(dir))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

fn default_out(out: Option<PathBuf>) -> PathBuf {
    absolute(&out.unwrap_or_else(|| workspace_root().join("runs")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command.as_pipeline(), &cli.command) {
        (Some((name, args)), _) => pipeline(name, args.clone()),
        (None, Command::Report { out }) => report(&default_out(out.clone())).map(|_| true),
        (None, Command::Status { out }) => slurm::status(&default_out(out.clone())).map(|_| true),
        (None, Command::SlurmNext { out }) => slurm_next(out),
        (None, Command::List) => list().map(|_| true),
        (None, _) => unreachable!("as_pipeline names every pipeline command"),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", bertlab_run::format::error_chain(e.chain().map(|l| l.to_string())));
            // A flag's value that cannot apply is a usage error, as bertlab's and clap's own: 2.
            let usage = e.chain().any(|l| {
                matches!(
                    l.downcast_ref::<bertlab_pipeline::PipelineError>(),
                    Some(bertlab_pipeline::PipelineError::BadOption { .. })
                )
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// `xtask slurm-next --out DIR`: continue a submitted pipeline with the command it was
/// submitted with, from the directory it was submitted from.
fn slurm_next(out: &Path) -> Result<bool> {
    let chain = slurm::Chain::load(out)?;
    std::env::set_current_dir(&chain.cwd).with_context(|| format!("entering {}", chain.cwd.display()))?;
    let cli = Cli::try_parse_from(&chain.argv).with_context(|| {
        format!("{}: the chain's command no longer parses", out.join("slurm/chain.json").display())
    })?;
    match cli.command.as_pipeline() {
        Some((name, args)) => pipeline(name, args.clone()),
        None => bail!("{}: the chain's command is not a pipeline", out.join("slurm/chain.json").display()),
    }
}

/// The pipelines of the workspace, which must be there: a prebuilt xtask started outside a
/// checkout would otherwise list no pipeline and start its runs in a folder that is not.
fn library() -> Result<PipelineLibrary> {
    let root = workspace_root();
    if !root.join("pipelines").is_dir() {
        bail!(
            "no bertlab checkout here: no folder at or above {} holds Cargo.toml, xtask/ and pipelines/, \
             and {} (where this xtask was built) has none; run `cargo xtask` inside a checkout",
            std::env::current_dir().unwrap_or_default().display(),
            root.display()
        );
    }
    Ok(PipelineLibrary::new(root.join("pipelines")))
}

fn list() -> Result<()> {
    let lib = library()?;
    for name in lib.names() {
        match lib.load(&name) {
            Ok(spec) => {
                let stages = lib.stages(&spec)?;
                let runs: usize = stages.iter().map(|s| s.problem.runs.len()).sum();
                let problems: Vec<String> = stages.iter().map(|s| s.key.to_string()).collect();
                println!("{name:<10} {:<58} {runs:>2} runs: {}", spec.title, problems.join(", "));
            }
            Err(e) => println!("{name:<10} error: {e}"),
        }
    }
    Ok(())
}

/// Write the report of everything under `out` and print the answers.
pub(crate) fn report(out: &Path) -> Result<()> {
    let store = ResultsStore::new(out);
    let report = Report::from_store(&store);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.stages.is_empty() {
        bail!(
            "no run records or plans under {}: run a pipeline first (e.g. `cargo xtask smoke`)",
            out.display()
        );
    }
    let written = report.write(out)?;
    eprintln!(
        "report: {} ({} plots), {}",
        written.markdown.display(),
        written.plots.len(),
        written.csv.display()
    );
    for (name, key, value) in report.answers() {
        eprintln!("  {}   ({key})", answer_line(&name, value));
    }
    Ok(())
}

/// Everything a pipeline command needs, resolved from the flags.
pub struct Context {
    /// Stages of the pipeline, in order.
    pub stages: Vec<Stage>,
    /// Plan options.
    pub options: PlanOptions,
    /// Results.
    pub store: ResultsStore,
    /// Reference resolution.
    pub resolver: Resolver,
    /// Backend.
    pub backend: Backend,
    /// Whether the backend was chosen because no GPU was found.
    pub gpu_visible: bool,
    /// Split sizes of local datasets, for the estimates (counted once the binary is known).
    pub rows: rows::RowCounter,
}

impl Context {
    /// The run's model and data references as its spec gets them (`${VAR}` and `shared:`
    /// resolved; `None`: the spec's default source).
    pub fn run_inputs(&self, run: &PlannedRun) -> Result<(String, Option<String>)> {
        let model = self.resolver.resolve(&format!("model role {}", run.role), &run.model)?;
        let source = match &run.settings.source {
            Some(s) => Some(self.resolver.resolve_source("source", s)?),
            None => None,
        };
        Ok((model, source))
    }

    /// The token cache the runs of this results directory share.
    pub fn token_cache(&self) -> PathBuf {
        self.store.root().join("cache").join("tokens")
    }
}

fn pipeline(name: &str, args: RunArgs) -> Result<bool> {
    let lib = library()?;
    let spec: PipelineSpec = lib.load(name)?;
    let stages = lib.stages(&spec)?;
    let mut options = PlanOptions {
        pool: args.subset.unwrap_or(1.0),
        source: args.source.clone(),
        epochs: args.epochs,
        precision: args.precision,
        ..PlanOptions::default()
    };
    for m in &args.models {
        let (role, model) = PlanOptions::parse_model_flag(m)?;
        options.models.insert(role, model);
    }
    let out = default_out(args.out.clone());
    let store = ResultsStore::new(&out);
    let cwd = std::env::current_dir().context("current directory")?;
    let resolver = Resolver { shared_dir: shared_reference_dir(), base_dir: cwd };
    let gpu_visible = build::gpu_visible();
    let for_slurm = args.emit == Some(Emit::Slurm) || args.submit;
    let backend = match (args.backend, for_slurm) {
        (Some(b), _) => b,
        // A login node has no GPU; the compute nodes a Slurm script targets usually do.
        (None, true) => Backend::Cuda,
        (None, false) if gpu_visible => Backend::Cuda,
        (None, false) => Backend::Cpu,
    };
    if !args.gpus.is_empty() && backend != Backend::Cuda {
        bail!("--gpus {:?}: needs the cuda backend (drop --backend cpu)", args.gpus);
    }
    let ctx = Context { stages, options, store, resolver, backend, gpu_visible, rows: Default::default() };
    let given = args
        .bertlab
        .clone()
        .or_else(|| std::env::var_os("BERTLAB_BIN").filter(|v| !v.is_empty()).map(PathBuf::from));
    // A plan counts the rows of local data with the binary when one is given (a dry run builds
    // none); a run, with the one it trains with.
    if let Some(p) = &given {
        ctx.rows.use_bertlab(&absolute(p));
    }
    let identity = identity::ContentIdentity::new(&ctx.resolver);
    let planner = Planner::new(&lib, ctx.stages.clone(), &ctx.options, &ctx.store)?.with_identity(&identity);
    // Check every model and data reference up front: a typo should not surface after an hour.
    for stage in &ctx.stages {
        for (role, reference) in &stage.models {
            let reference = ctx.options.models.get(role).unwrap_or(reference);
            ctx.resolver.resolve(&format!("model role {role}"), reference)?;
        }
    }
    if let Some(source) = &ctx.options.source {
        ctx.resolver.resolve_source("--source", source)?;
    }
    for stage in &ctx.stages {
        if let Some(source) = &stage.defaults.source {
            ctx.resolver.resolve_source(&format!("source of {}", stage.key.label()), source)?;
        }
    }

    if args.dry_run {
        estimate::print_plan(&ctx, &planner, args.fresh)?;
        return Ok(true);
    }
    let _lock = exec::OutLock::acquire(ctx.store.root())?;
    let mut slurm_options = match &args.slurm_config {
        Some(path) => SlurmOptions::from_file(path)?,
        None => SlurmOptions::default(),
    };
    for flag in &args.slurm {
        slurm_options.set(flag)?;
    }
    if args.fresh {
        for stage in &ctx.stages {
            ctx.store.remove_stage(&stage.key)?;
        }
        planner.refresh();
        eprintln!("--fresh: removed the results of {} under {}", name, ctx.store.root().display());
    }
    if backend == Backend::Cpu && !gpu_visible && !for_slurm {
        estimate::warn_cpu(&ctx, &planner)?;
    }
    let bertlab = match &given {
        Some(p) => absolute(p),
        None => build::build_bertlab(backend)?,
    };
    build::check_bertlab(&bertlab)?;
    ctx.rows.use_bertlab(&bertlab);
    if args.emit == Some(Emit::Slurm) {
        slurm::emit(&ctx, &planner, &bertlab, name, &slurm_options)?;
        return Ok(true);
    }
    if args.submit {
        let chain = if args.chain_step {
            slurm::Chain::load(ctx.store.root())?
        } else {
            let chain = slurm::Chain::of_this_process(&bertlab)?;
            chain.save(ctx.store.root())?;
            chain
        };
        return slurm::advance(&ctx, &planner, &bertlab, &chain, &slurm_options);
    }
    let ok = exec::run_pipeline(&ctx, &planner, &bertlab, &args.gpus, args.verbose)?;
    report(ctx.store.root())?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "xtask",
            "all",
            "--subset",
            "0.02",
            "--model",
            "distilbert=/m",
            "--model",
            "bert=/n",
            "--epochs",
            "1",
            "--gpus",
            "0,1,3",
            "--precision",
            "bf16",
            "--dry-run",
        ])
        .unwrap();
        let Command::All(args) = cli.command else { panic!("not `all`") };
        assert_eq!(args.subset, Some(0.02));
        assert_eq!(args.models, vec!["distilbert=/m", "bert=/n"]);
        assert_eq!(args.gpus, vec![0, 1, 3]);
        assert!(args.dry_run && args.precision == Some(Precision::BF16));
        assert!(Cli::try_parse_from(["xtask", "smoke", "--backend", "tpu"]).is_err());
        for (flag, backend) in [
            ("cpu", Backend::Cpu),
            ("cuda", Backend::Cuda),
            ("wgpu", Backend::Wgpu),
            ("vulkan", Backend::Vulkan),
        ] {
            let cli = Cli::try_parse_from(["xtask", "smoke", "--backend", flag]).unwrap();
            let Command::Smoke(args) = cli.command else { panic!("not `smoke`") };
            // The flag, the build's feature and the `--device` the runs get are one name.
            assert!(args.backend == Some(backend) && backend.name() == flag, "{flag}");
        }
        let cli = Cli::try_parse_from(["xtask", "run", "pipelines/smoke.toml", "--emit", "slurm"]).unwrap();
        assert!(
            matches!(cli.command, Command::Run { ref pipeline, .. } if pipeline == "pipelines/smoke.toml")
        );
    }

    #[test]
    fn every_pipeline_file_loads_and_plans() {
        let lib = library().unwrap();
        assert_eq!(lib.names(), vec!["all", "news", "problem1", "problem2", "problem3", "smoke"]);
        let dir = std::env::temp_dir().join(format!("xtask-plan-{}", std::process::id()));
        let store = ResultsStore::new(&dir);
        for name in lib.names() {
            let spec = lib.load(&name).unwrap();
            let stages = lib.stages(&spec).unwrap();
            let options = PlanOptions::default();
            let planner = Planner::new(&lib, stages.clone(), &options, &store).unwrap();
            let first = planner.plan(&stages[0].key).unwrap();
            assert!(first.blocked.is_none() == stages[0].dependency().is_none(), "{name}");
        }
        let all = lib.stages(&lib.load("all").unwrap()).unwrap();
        let runs: Vec<usize> = all.iter().map(|s| s.problem.runs.len()).collect();
        assert_eq!(runs, vec![6, 4, 2]);
    }
}
