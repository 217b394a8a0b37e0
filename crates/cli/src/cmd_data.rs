//! `bertlab data`: look at the dataset and its splits.

use std::path::PathBuf;

use anyhow::Context;
use bertlab_data::{write_parquet, DataOptions, DatasetSource, DatasetSplits, RunSplits, IMDB_CONFIG};
use bertlab_run::{DataSelection, RunSpec, SplitMode};
use clap::{Args, Subcommand};

/// `bertlab data …`
#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Pool, train, validation and test sizes with per-class counts (the notebook's summary).
    Summary(SplitArgs),
    /// The row ids of each split (row ids index train rows, then validation rows, then test
    /// rows).
    Split {
        #[command(flatten)]
        split: SplitArgs,
        /// Print JSON: {"pool": N, "train": [...], "val": [...], "test": [...]}.
        #[arg(long)]
        json: bool,
        /// Also write the rows of the splits to this file, one JSON line each: {"split":
        /// "train"|"val"|"test", "text", "label" (class id)}, train rows first: what another
        /// framework's script reads to train on the same rows (scripts/torch_finetune.py).
        #[arg(long, value_name = "FILE")]
        rows_out: Option<PathBuf>,
    },
    /// Write the pool of a subset (the rows `--subset F --seed S` trains, validates and tests
    /// on) as a small dataset in the Hub layout: OUT/plain_text/{split}-00000-of-00001.parquet
    /// with `text` and `label` columns, each row in the file of the split it came from.
    /// `--source OUT --subset 1` then splits it.
    Sample {
        #[command(flatten)]
        split: SplitArgs,
        /// Output directory (created; its two parquet files are replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Which dataset, and which split recipe (`bertlab train`'s defaults: `hub`, `text`/`label`,
/// notebook splits of the whole dataset, seed 42).
#[derive(Args)]
struct SplitArgs {
    #[command(flatten)]
    data: DataSelection,
}

/// Run `bertlab data`.
pub fn run(args: DataArgs, global: &crate::Global) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Summary(s) => {
            let (splits, split, spec) = load_and_split(&s, global)?;
            let data = splits.joined();
            let counts = |rows: &[usize]| format!("({}, {:?})", rows.len(), data.class_counts_of(rows));
            println!("Pool after SUBSET_FRAC={}: {} (of {})", spec.subset, split.pool.len(), data.len());
            println!(
                "Train: {}  Val: {}  Test: {}",
                counts(&split.train),
                counts(&split.val),
                counts(&split.test)
            );
            println!("Classes: {}", data.class_names.join(", "));
        }
        DataCommand::Split { split: s, json, rows_out } => {
            if !json {
                anyhow::bail!("`bertlab data split` prints JSON only: add --json");
            }
            let (splits, split, _) = load_and_split(&s, global)?;
            if let Some(path) = rows_out {
                let data = splits.joined();
                if let Some(input) =
                    bertlab_run::replaces_input(&path, data.sources.iter().map(|f| f.path.as_path()))
                {
                    return Err(crate::UsageError(format!(
                        "--rows-out {}: it is {}, a file of --source, which the rows would replace; choose another \
                         --rows-out",
                        path.display(),
                        input.display()
                    ))
                    .into());
                }
                write_rows(&data, &split, &path)
                    .with_context(|| format!("writing --rows-out {}", path.display()))?;
            }
            let out = serde_json::json!({
                "pool": split.pool.len(),
                "train": split.train,
                "val": split.val,
                "test": split.test,
            });
            println!("{out}");
        }
        DataCommand::Sample { split: s, out } => write_sample(&s, &out, global)?,
    }
    Ok(())
}

/// The rows of each split as JSON lines (`--rows-out`).
fn write_rows(
    data: &bertlab_data::LabeledTexts,
    split: &RunSplits,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (name, rows) in [("train", &split.train), ("val", &split.val), ("test", &split.test)] {
        for &r in rows.iter() {
            let line = serde_json::json!({"split": name, "text": data.texts[r], "label": data.labels[r]});
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn write_sample(s: &SplitArgs, out: &std::path::Path, global: &crate::Global) -> anyhow::Result<()> {
    let (splits, split, spec) = load_and_split(s, global)?;
    // Row ids index the train rows, then the validation rows, then the test rows.
    let mut pool = split.pool.clone();
    // Given splits draw the pool from train alone: validation and test rows are all used.
    if spec.splits == SplitMode::Given {
        pool.extend(split.val.iter().chain(&split.test).copied());
    }
    pool.sort_unstable();
    // A validation split carved from the pool is in it twice.
    pool.dedup();
    let data = splits.joined();
    // The sample replaces its files wholesale: never the files it is drawn from.
    for name in splits.present() {
        let path = out.join(IMDB_CONFIG).join(format!("{}-00000-of-00001.parquet", name.name()));
        if bertlab_run::replaces_input(&path, data.sources.iter().map(|f| f.path.as_path())).is_some() {
            return Err(crate::UsageError(format!(
                "--out {}: {} is a file of --source, which the sample would replace; choose another --out",
                out.display(),
                path.display()
            ))
            .into());
        }
    }
    let mut start = 0;
    let mut written = Vec::new();
    for name in splits.present() {
        let len = splits.split(name).map_or(0, |p| p.len());
        let rows: Vec<usize> = pool.iter().copied().filter(|&r| (start..start + len).contains(&r)).collect();
        start += len;
        if rows.is_empty() {
            continue;
        }
        let path = out.join(IMDB_CONFIG).join(format!("{}-00000-of-00001.parquet", name.name()));
        write_parquet(&path, &data.select(&rows))
            .with_context(|| format!("writing --out {}", out.display()))?;
        written.push(format!("{} from {}", rows.len(), name.name()));
    }
    println!(
        "{}: {} rows ({}; per class {:?}) of {} — the pool at --subset {} --seed {}",
        out.display(),
        pool.len(),
        written.join(", "),
        data.class_counts_of(&pool),
        data.len(),
        spec.subset,
        spec.seed
    );
    Ok(())
}

fn load_and_split(
    s: &SplitArgs,
    global: &crate::Global,
) -> anyhow::Result<(DatasetSplits, RunSplits, RunSpec)> {
    // Check the cheap flags before reading 40 MB of parquet.
    let spec = s.data.resolve(None).map_err(crate::invalid_flag)?;
    let source = DatasetSource::parse(&spec.source)?;
    let splits = source
        .load_splits(&DataOptions::of_spec(&spec), &global.hub())
        .with_context(|| format!("loading --source {source}"))?;
    let split = RunSplits::new(&splits, spec.splits, spec.subset, spec.seed).with_context(|| {
        format!(
            "splitting {source} at --splits {} --subset {} --seed {}",
            spec.splits, spec.subset, spec.seed
        )
    })?;
    Ok((splits, split, spec))
}
