#![doc = include_str!("../README.md")]
//!
//! Each measurement is one JSON object per line on stdout; progress and summaries go to
//! stderr. `parity` and `numerics` exit non-zero when a check fails, after printing all.

#![warn(missing_docs)]

mod env;
mod flags;
mod ids;
mod kernels;
mod models;
mod numerics;
mod numerics_inspect;
mod parity;
mod step_profile;
mod table;
mod throughput;

use std::io::Write;

use bertlab_hub::HubOptions;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `bertlab bench …`
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The backend, device and supported precisions of this build (one JSON line).
    Env(env::EnvArgs),
    /// f32 parity with the transformers fixtures (logits, hidden states, one AdamW step) and
    /// f16/bf16 error against f32.
    Parity(parity::ParityArgs),
    /// Loss curves of 200 AdamW steps in f32, f16 and bf16 from one random initialisation.
    Numerics(numerics::NumericsArgs),
    /// Training throughput of randomly initialised DistilBERT-base / BERT-base.
    TrainThroughput(throughput::ThroughputArgs),
    /// Kernels launched and device→host waits per steady-state training step, and kernels
    /// compiled, counted from CubeCL's launch and compilation logs (GPU builds).
    StepProfile(step_profile::StepProfileArgs),
    /// The ops seam's fast path (fused kernels) against the reference decomposition on this
    /// build's backend: outputs and gradients of each op on random padded shapes.
    Kernels(kernels::KernelsArgs),
    /// bertlab vs PyTorch table (seq/s, ratio, MFU) from the JSON lines of both.
    Table(table::TableArgs),
    /// Tokenize a fixed sample of IMDB train reviews into a small ids file for the benches.
    MakeIds(ids::MakeIdsArgs),
}

/// The backend the benches run on, as the binary was built: the training backend `B`, its name
/// (recorded in every result line) and how `--device` is parsed.
pub struct Runtime<B: AutodiffBackend> {
    /// e.g. `cpu (burn-flex)`, `cuda`, `wgpu`.
    pub name: &'static str,
    /// Parses `--device` (and checks the driver, for CUDA).
    pub device: fn(&str) -> anyhow::Result<B::Device>,
    /// Hub lookups (offline or not) for `make-ids` and `parity`.
    pub hub: HubOptions,
    /// How a build on CubeCL turns on its kernel logs, for `step-profile`; `None` in a build
    /// that launches no GPU kernels (the CPU build), where `step-profile` counts host waits
    /// only.
    pub kernel_log: Option<KernelLog>,
    /// Whether the build autotunes its matmuls and reductions (the `*-tuned` features).
    pub autotunes: bool,
}

/// Turns on CubeCL's launch log (`[profiling]` logger: a line per kernel launch, see
/// [`LaunchDetail`]) and compilation log (`[compilation]` at `basic`: a `[Compiling kernel]
/// <name>` line per kernel compiled), both appending to the given file. Called before the first
/// device is made (CubeCL reads its configuration once); an error when that is too late.
pub type KernelLog = fn(&std::path::Path, LaunchDetail) -> anyhow::Result<KernelLogSetup>;

/// What CubeCL's launch log says of each launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchDetail {
    /// Its name (`[profiling]` level `minimal`: `Executing <kernel>`); launches stay
    /// asynchronous.
    Names,
    /// Its name and its duration on the device (level `basic`: `| <duration> | <kernel>`).
    /// CubeCL then waits for each kernel to finish before the next one is launched, so the
    /// step's own wall time is no longer the asynchronous step's.
    Durations,
}

/// What a [`KernelLog`] set up besides the log.
#[derive(Debug, Clone, Default)]
pub struct KernelLogSetup {
    /// The persistent kernel cache, when one is on: kernels loaded from it are not compiled,
    /// so `kernels_compiled` counts only those missing from it.
    pub kernel_cache: Option<std::path::PathBuf>,
}

impl<B: AutodiffBackend> Runtime<B> {
    /// The backend this binary computes with, as the table shows it: `cuda`, `cuda+fusion`
    /// (Burn's CUDA backend wrapped in its kernel-fusion layer), `cuda+fusion+autotune`,
    /// `cpu (burn-flex)`.
    fn build_label(&self) -> String {
        let mut label = self.name.to_string();
        if std::any::type_name::<B::InnerBackend>().contains("Fusion") {
            label.push_str("+fusion");
        }
        if self.autotunes {
            label.push_str("+autotune");
        }
        // A non-default attention kernel (`BERTLAB_ATTENTION`) names itself, so rows measured
        // with it are told apart, and says so when the row kernels ran in its place.
        if let Some(attention) = bertlab_models::ops::attention_products_label() {
            label.push_str(&format!("+attention-{attention}"));
        }
        label
    }
}

/// Run `bertlab bench` on the backend `B`.
pub fn run<B: AutodiffBackend>(args: BenchArgs, rt: &Runtime<B>) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Env(a) => env::run(a, rt),
        BenchCommand::Parity(a) => parity::run(a, rt),
        BenchCommand::Numerics(a) => numerics::run(a, rt),
        BenchCommand::TrainThroughput(a) => throughput::run(a, rt),
        BenchCommand::StepProfile(a) => step_profile::run(a, rt),
        BenchCommand::Kernels(a) => kernels::run(a, rt),
        BenchCommand::Table(a) => table::run(a),
        BenchCommand::MakeIds(a) => ids::run_make_ids(a, rt),
    }
}

/// Print one result line (flushed, so a script reading the pipe sees it at once).
fn emit(value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Burn launches asynchronously on GPUs: a timing is only real after a sync.
fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).ok();
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// [`bertlab_run::write_atomic`] with the path in the error; a run's record is not replaced.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    if bertlab_run::RunRecord::is_at(path) {
        anyhow::bail!(
            "{}: it is a run's record, which this output would replace; write elsewhere",
            path.display()
        );
    }
    bertlab_run::write_atomic(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}
