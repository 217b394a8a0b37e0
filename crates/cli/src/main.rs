//! `bertlab`: fine-tune and evaluate BERT-family text classifiers.
//!
//! Each subcommand lives in its own module (`cmd_*.rs`) with a clap `Args` struct and a `run`.

mod backend;
mod cmd_data;
mod cmd_encode;
mod cmd_eval;
mod cmd_predict;
mod cmd_tokenize;
mod cmd_train;
mod fine_tuned;
mod kernel_cache;

use bertlab_run::{BadSource, InvalidSetting, NamesSettings, SettingStyle};
use bertlab_train::{DeviceFault, TrainError};
use clap::{Parser, Subcommand};

/// Fine-tune BERT-family text classifiers (DistilBERT, BERT) on Burn.
#[derive(Parser)]
#[command(name = "bertlab", version, about, long_about = None)]
struct Cli {
    /// Never touch the network: read Hub files from the HF cache only (same as HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    offline: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the dataset and its HF-identical splits.
    Data(cmd_data::DataArgs),
    /// Show the token ids a model sees, or the token length distribution of a dataset.
    Tokenize(cmd_tokenize::TokenizeArgs),
    /// Embed texts with a BERT/DistilBERT encoder: [CLS] hidden state, mean-pooled, pooler.
    Encode(cmd_encode::EncodeArgs),
    /// Fine-tune a classifier: `--spec run.toml` and/or flags; writes record.json and best/.
    Train(cmd_train::TrainArgs),
    /// Metrics of a fine-tuned model on a split: accuracy, F1, confusion matrix.
    Eval(cmd_eval::EvalArgs),
    /// Label and probability of each text, from a fine-tuned model.
    Predict(cmd_predict::PredictArgs),
    /// Device checks and benchmarks: parity, mixed-precision numerics, training throughput.
    Bench(bertlab_bench::BenchArgs),
}

pub use bertlab_run::UsageError;

/// A [`UsageError`] for a setting that cannot be used, worded with its flag (`--batch 0: must be
/// at least 1`).
pub fn invalid_flag(e: InvalidSetting) -> anyhow::Error {
    anyhow::Error::new(UsageError(e.render(SettingStyle::Flag)))
}

/// Options shared by every subcommand.
pub struct Global {
    /// Offline mode requested on the command line or through HF_HUB_OFFLINE.
    pub offline: bool,
}

impl Global {
    /// Hub options for file lookups.
    pub fn hub(&self) -> bertlab_hub::HubOptions {
        bertlab_hub::HubOptions { offline: self.offline, progress: true, ..Default::default() }
    }
}

fn main() {
    restore_default_sigpipe();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTLAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = backend::register_fast_paths() {
        eprintln!("error: BERTLAB_ATTENTION: {err}");
        std::process::exit(2);
    }
    let global = Global { offline: cli.offline || bertlab_hub::HubOptions::default().is_offline() };
    let result = match cli.command {
        Command::Data(args) => cmd_data::run(args, &global),
        Command::Tokenize(args) => cmd_tokenize::run(args, &global),
        Command::Encode(args) => cmd_encode::run(args, &global),
        Command::Train(args) => cmd_train::run(args, &global),
        Command::Eval(args) => cmd_eval::run(args, &global),
        Command::Predict(args) => cmd_predict::run(args, &global),
        Command::Bench(args) => {
            let runtime = bertlab_bench::Runtime::<backend::TrainBackend> {
                name: backend::BACKEND_NAME,
                device: backend::device,
                hub: global.hub(),
                kernel_log: backend::KERNEL_LOG,
                autotunes: backend::AUTOTUNES,
            };
            bertlab_bench::run(args, &runtime)
        }
    };
    if let Err(err) = result {
        eprintln!("error: {}", in_flag_words(&err));
        std::process::exit(exit_code(&err));
    }
}

/// The exit code of a failed command, chosen by the types of the errors in its chain: 3 when
/// the device ran out of memory (the orchestrator retries with half the batch): a
/// [`TrainError`] that [`is_out_of_memory`](TrainError::is_out_of_memory) from `train`, or an
/// out-of-memory [`DeviceFault`] from the commands that run the model in
/// `bertlab_train::device_fault::watched`; 2 for a [`UsageError`] (a flag's value, as clap's own
/// usage errors) and a run's setting out of range ([`TrainError::is_setting_out_of_range`]: a
/// `--max-len` above the model's); 1 for everything else.
fn exit_code(err: &anyhow::Error) -> i32 {
    let out_of_memory = err.chain().any(|e| {
        e.downcast_ref::<TrainError>().is_some_and(TrainError::is_out_of_memory)
            || e.downcast_ref::<DeviceFault>().is_some_and(DeviceFault::is_out_of_memory)
    });
    if out_of_memory {
        3
    } else if err.downcast_ref::<UsageError>().is_some()
        || err
            .chain()
            .any(|e| e.downcast_ref::<TrainError>().is_some_and(TrainError::is_setting_out_of_range))
    {
        2
    } else {
        1
    }
}

/// The message of a failed command as `{err:#}` writes it (each error of the chain, joined by
/// `: `), except that the library errors that name settings ([`NamesSettings`]) name them by
/// their flags (`--batch 32`), not by their run-spec keys (`batch = 32`): a user of `bertlab`
/// set them as flags. An error that wraps another transparently (a `TrainError` holding a
/// `DataError`) is one link of the chain and renders what it wraps; one with a `#[source]`
/// is followed by it, unless the message already quotes it.
fn in_flag_words(err: &anyhow::Error) -> String {
    let words = |e: &(dyn std::error::Error + 'static)| -> String {
        let names: Option<&dyn NamesSettings> = if let Some(e) = e.downcast_ref::<TrainError>() {
            Some(e)
        } else if let Some(e) = e.downcast_ref::<bertlab_data::DataError>() {
            Some(e)
        } else if let Some(e) = e.downcast_ref::<BadSource>() {
            Some(e)
        } else if let Some(e) = e.downcast_ref::<InvalidSetting>() {
            Some(e)
        } else {
            None
        };
        names.map_or_else(|| e.to_string(), |n| n.render(SettingStyle::Flag))
    };
    bertlab_run::format::error_chain(err.chain().map(words))
}

/// `bertlab … | head` must end quietly when `head` closes the pipe. Rust ignores SIGPIPE, so a
/// write to a closed pipe is an error that `println!` turns into a panic; with the signal's
/// default action the process ends at once, as command-line tools do.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_codes_follow_the_error_types() {
        let oom =
            TrainError::OutOfMemory { batch: 32, max_len: 512, half: 16, accum2: 2, detail: "x".into() };
        let err = Err::<(), _>(oom).context("training run runs/a").unwrap_err();
        assert_eq!(exit_code(&err), 3);
        let device_oom = DeviceFault {
            thread: "DSD-0-0".into(),
            message: "can't allocate buffer of size: 1024".into(),
            count: 3,
        };
        assert_eq!(exit_code(&anyhow::Error::new(device_oom)), 3);
        let other = DeviceFault { thread: "DSD-0-0".into(), message: "index out of bounds".into(), count: 1 };
        assert_eq!(exit_code(&anyhow::Error::new(other)), 1);
        let diverged = TrainError::NonFiniteValidation { epoch: 1, value: f64::NAN };
        assert_eq!(exit_code(&anyhow::Error::new(diverged)), 1);
        assert_eq!(exit_code(&anyhow::Error::new(UsageError("--batch 0: must be at least 1".into()))), 2);
        // A max_len beyond the model's, found once the run has read its config: a usage error too.
        let limit = bertlab_tokenize::MaxLenLimit {
            tokens: 512,
            source: bertlab_tokenize::LimitSource::ModelPositions,
        };
        let too_long = bertlab_tokenize::MaxLenError {
            model: "m".into(),
            max_len: 600,
            bound: bertlab_tokenize::MaxLenBound::TooLong(limit),
        };
        let err = TrainError::from(bertlab_tokenize::TokenizeError::from(too_long));
        assert_eq!(exit_code(&Err::<(), _>(err).context("training run runs/a").unwrap_err()), 2);
        // By type, not by text: an error that only says so is not the device's.
        assert_eq!(exit_code(&anyhow::anyhow!("the host is out of memory")), 1);
    }

    #[test]
    fn errors_name_settings_by_their_flags_and_read_as_before_otherwise() {
        // Deep in the chain, under context, and wrapped in a TrainError.
        let oom =
            TrainError::OutOfMemory { batch: 32, max_len: 512, half: 16, accum2: 2, detail: "x".into() };
        let err = Err::<(), _>(oom).context("training run runs/a").unwrap_err();
        assert_eq!(
            in_flag_words(&err),
            "training run runs/a: out of memory at --batch 32 --max-len 512 (x); retry with --batch 16 (and \
             --accum 2 to keep the effective batch)"
        );
        assert!(format!("{err:#}").contains("out of memory at batch = 32, max_len = 512"), "{err:#}");
        let data = bertlab_data::DataError::EmptyColumnName { setting: bertlab_run::Setting::label_column };
        let err = Err::<(), _>(TrainError::from(data)).context("training run runs/b").unwrap_err();
        assert_eq!(
            in_flag_words(&err),
            "training run runs/b: --label-column is empty: name a column of the data files"
        );
        let err = anyhow::Error::new(BadSource("hub:x".into()));
        assert!(in_flag_words(&err).starts_with("--source \"hub:x\": expected"), "{err}");
        let bad = InvalidSetting { key: "max_len", value: "2".into(), why: "too short".into() };
        assert_eq!(in_flag_words(&anyhow::Error::new(bad)), "--max-len 2: too short");
        // A #[source] the message already quotes is not written again (`{:#}` writes it twice).
        let io =
            TrainError::Io { path: "runs/a/record.json".into(), source: std::io::Error::other("disk full") };
        let err = Err::<(), _>(io).context("training run runs/a").unwrap_err();
        assert_eq!(format!("{err:#}"), "training run runs/a: runs/a/record.json: disk full: disk full");
        assert_eq!(in_flag_words(&err), "training run runs/a: runs/a/record.json: disk full");
        let err = anyhow::anyhow!("plain").context("outer");
        assert_eq!(in_flag_words(&err), "outer: plain");
        // A message that quotes its source, or repeats it after advice: written once.
        #[derive(Debug, thiserror::Error)]
        #[error("{path}: cannot read it: {source}")]
        struct Quotes {
            path: String,
            #[source]
            source: std::io::Error,
        }
        let quoted = Quotes { path: "a.csv".into(), source: std::io::Error::other("no such file") };
        let err = anyhow::Error::new(quoted).context("loading --source a.csv");
        assert_eq!(in_flag_words(&err), "loading --source a.csv: a.csv: cannot read it: no such file");
    }
}
