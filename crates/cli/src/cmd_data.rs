//! `bertlab data`: look at the dataset and its splits.

use std::path::PathBuf;

use anyhow::Context;
use bertlab_data::{class_counts, write_parquet, DatasetSource, NotebookSplit, Split, IMDB_CONFIG};
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
    /// The row ids of each split (row ids index train rows then test rows).
    Split {
        #[command(flatten)]
        split: SplitArgs,
        /// Print JSON: {"pool": N, "train": [...], "val": [...], "test": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Write the pool of a subset (the rows `--subset F --seed S` trains, validates and tests
    /// on) as a small dataset in the Hub layout: OUT/plain_text/{train,test}-00000-of-00001.parquet,
    /// each row in the file of the split it came from. `--source OUT --subset 1` then splits it.
    Sample {
        #[command(flatten)]
        split: SplitArgs,
        /// Output directory (created; its two parquet files are replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct SplitArgs {
    /// `hub` (stanfordnlp/imdb at the pinned parquet revision), `hub:ORG/NAME[@REV]`, or a
    /// directory holding plain_text/{train,test}-*.parquet (e.g. ../shared/data/hf-imdb).
    #[arg(long, default_value = "hub")]
    source: String,
    /// Fraction of the whole dataset to use, in (0, 1] (stratified).
    #[arg(long, default_value_t = 1.0)]
    subset: f64,
    /// Seed of the splits (numpy default_rng, as HF datasets).
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Run `bertlab data`.
pub fn run(args: DataArgs, global: &crate::Global) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Summary(s) => {
            let (data, split) = load_and_split(&s, global)?;
            let counts = |rows: &[usize]| {
                let labels: Vec<u32> = rows.iter().map(|&r| data.labels[r]).collect();
                format!("({}, {:?})", rows.len(), class_counts(&labels, data.class_names.len()))
            };
            println!("Pool after SUBSET_FRAC={}: {} (of {})", s.subset, split.pool.len(), data.len());
            println!(
                "Train: {}  Val: {}  Test: {}",
                counts(&split.train),
                counts(&split.val),
                counts(&split.test)
            );
            println!("Classes: {}", data.class_names.join(", "));
        }
        DataCommand::Split { split: s, json } => {
            let (_, split) = load_and_split(&s, global)?;
            if !json {
                anyhow::bail!("`bertlab data split` prints JSON only: add --json");
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

fn write_sample(s: &SplitArgs, out: &std::path::Path, global: &crate::Global) -> anyhow::Result<()> {
    let (data, split) = load_and_split(s, global)?;
    // Row ids index the train rows, then the test rows: the first `train_rows` are train rows.
    let source = DatasetSource::parse(&s.source)?;
    let train_rows = source.load_split(Split::Train, &global.hub())?.len();
    let mut pool = split.pool.clone();
    pool.sort_unstable();
    let (from_train, from_test) = pool.split_at(pool.partition_point(|&row| row < train_rows));
    for (name, rows) in [(Split::Train, from_train), (Split::Test, from_test)] {
        let path = out.join(IMDB_CONFIG).join(format!("{}-00000-of-00001.parquet", name.name()));
        write_parquet(&path, &data.select(rows))
            .with_context(|| format!("writing --out {}", out.display()))?;
    }
    let pooled = data.select(&pool);
    println!(
        "{}: {} rows ({} from train, {} from test; per class {:?}) of {} — the pool at --subset {} --seed {}",
        out.display(),
        pool.len(),
        from_train.len(),
        from_test.len(),
        pooled.class_counts(),
        data.len(),
        s.subset,
        s.seed
    );
    Ok(())
}

fn load_and_split(
    s: &SplitArgs,
    global: &crate::Global,
) -> anyhow::Result<(bertlab_data::LabeledTexts, NotebookSplit)> {
    // Check the cheap flag before reading 40 MB of parquet.
    if !(s.subset > 0.0 && s.subset <= 1.0) {
        crate::usage!("--subset {}: must be a fraction in (0, 1]", s.subset);
    }
    let source = DatasetSource::parse(&s.source)?;
    let data = source.load(&global.hub()).with_context(|| format!("loading --source {source}"))?;
    let split = NotebookSplit::new(&data.labels, s.subset, s.seed)
        .with_context(|| format!("splitting {source} at --subset {} --seed {}", s.subset, s.seed))?;
    Ok((data, split))
}
