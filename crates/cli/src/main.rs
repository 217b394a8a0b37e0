//! `bertlab`: fine-tune and evaluate BERT-family text classifiers.
//!
//! Each subcommand lives in its own module (`cmd_*.rs`) with a clap `Args` struct and a `run`.

mod backend;
mod cmd_data;

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
}

/// Options shared by every subcommand.
pub struct Global {
    /// Offline mode requested on the command line or through HF_HUB_OFFLINE.
    pub offline: bool,
}

impl Global {
    /// Hub options for file lookups.
    pub fn hub(&self) -> bertlab_hub::HubOptions {
        bertlab_hub::HubOptions { offline: self.offline, cache_dir: None, progress: true }
    }
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTLAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let global = Global { offline: cli.offline || bertlab_hub::HubOptions::default().is_offline() };
    let result = match cli.command {
        Command::Data(args) => cmd_data::run(args, &global),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        // Exit code 3 is reserved for out-of-memory (the orchestrator retries with half the batch).
        let code = if err.chain().any(|e| e.to_string().contains("out of memory")) { 3 } else { 1 };
        std::process::exit(code);
    }
}
