//! `bertlab tokenize`: the ids a model sees for given texts or dataset rows, and the token
//! length distribution of a dataset (to choose `max_len`).

use anyhow::Context;
use bertlab_data::{DatasetSource, LabeledTexts, Split};
use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::ConfigSizes;
use bertlab_run::{Inference, InferenceSettings, TokenSettings};
use bertlab_tokenize::{LengthStats, WordPieceTokenizer};
use clap::{Args, Subcommand};

use crate::fine_tuned::{recorded_run, resolve_inference};

/// `bertlab tokenize …`
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenizeArgs {
    #[command(subcommand)]
    command: Option<TokenizeCommand>,
    #[command(flatten)]
    encode: EncodeArgs,
}

#[derive(Subcommand)]
enum TokenizeCommand {
    /// Token length distribution of a dataset: untruncated lengths, [CLS] and [SEP] included.
    Stats(StatsArgs),
}

/// Print the packed ids (`[CLS] … [SEP]`, truncated, unpadded) of texts or dataset rows.
#[derive(Args)]
struct EncodeArgs {
    /// Model whose tokenizer to use: a local snapshot directory or a Hub id
    /// (e.g. distilbert/distilbert-base-uncased, ../shared/models/all-MiniLM-L6-v2).
    #[arg(long, required = true, value_parser = bertlab_run::model_arg)]
    model: Option<String>,
    #[command(flatten)]
    tokens: TokenSettings,
    /// A text to tokenize (repeat the flag for several).
    #[arg(long = "text", value_name = "TEXT", required_unless_present = "source", conflicts_with = "source")]
    texts: Vec<String>,
    /// Take the texts from a dataset: `hub`, `hub:ORG/NAME[@REV]` or a directory holding
    /// plain_text/{train,test}-*.parquet (e.g. ../shared/data/hf-imdb).
    #[arg(long, requires_all = ["split", "rows"])]
    source: Option<String>,
    /// The split the rows index (with --source).
    #[arg(long, requires = "source")]
    split: Option<Split>,
    /// Row numbers within the split, comma-separated (with --source), e.g. 7,132.
    #[arg(long, value_delimiter = ',', requires = "source")]
    rows: Vec<usize>,
    /// Print JSON: {"ids": [[...], ...]}, one list per text, in the order given.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StatsArgs {
    /// Model whose tokenizer to use (directory or Hub id).
    #[arg(long, value_parser = bertlab_run::model_arg)]
    model: String,
    /// Dataset: `hub`, `hub:ORG/NAME[@REV]` or a directory holding plain_text/*.parquet.
    #[arg(long, default_value = "hub")]
    source: String,
    /// Only this split (default: train and test together).
    #[arg(long)]
    split: Option<Split>,
    /// Also report the share of texts longer than this (truncated at this max_len).
    #[arg(long, value_parser = bertlab_run::max_len_arg)]
    max_len: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run `bertlab tokenize`.
pub fn run(args: TokenizeArgs, global: &crate::Global) -> anyhow::Result<()> {
    match args.command {
        Some(TokenizeCommand::Stats(stats)) => run_stats(stats, global),
        None => run_encode(args.encode, global),
    }
}

/// The model's tokenizer, limited to the model's `max_position_embeddings` when its config.json says.
fn load_tokenizer(model: &str, hub: &HubOptions) -> anyhow::Result<WordPieceTokenizer> {
    let repo = RepoRef::parse(model, RepoKind::Model);
    let tokenizer = WordPieceTokenizer::from_repo(&repo, hub)
        .with_context(|| format!("loading the tokenizer of --model {model}"))?;
    // config.json is optional here (a tokenizer-only directory is fine, and so is a model
    // bertlab cannot build): the lenient reader takes its position limit when it has one.
    let positions = match repo.file("config.json", hub) {
        Ok(config) => ConfigSizes::from_file(&config)?.max_position_embeddings,
        Err(_) => None,
    };
    Ok(match positions {
        Some(n) => tokenizer.with_max_positions(n),
        None => tokenizer,
    })
}

fn load_texts(source: &str, split: Option<Split>, hub: &HubOptions) -> anyhow::Result<LabeledTexts> {
    let parsed = DatasetSource::parse(source)?;
    let what = split.map_or("train and test splits".to_string(), |s| format!("{s} split"));
    let data = match split {
        Some(split) => parsed.load_split(split, hub),
        None => parsed.load(hub),
    };
    data.with_context(|| format!("loading the {what} of --source {source}"))
}

/// The tokenizer, the packed ids of the texts `args` names, in order, and the settings they were
/// packed with (`max_len`, `truncation`).
fn encode_rows(
    args: &EncodeArgs,
    hub: &HubOptions,
) -> anyhow::Result<(WordPieceTokenizer, Vec<Vec<u32>>, Inference)> {
    let model = args.model.as_deref().context("--model is required")?;
    let tokenizer = load_tokenizer(model, hub)?;
    let settings = InferenceSettings { tokens: args.tokens.clone(), ..Default::default() };
    let packed = resolve_inference(&settings, recorded_run(model)?.as_ref(), &tokenizer)?;
    let texts: Vec<String> = match (&args.source, args.split) {
        (Some(source), Some(split)) => {
            let data = load_texts(source, Some(split), hub)?;
            args.rows
                .iter()
                .map(|&row| {
                    data.texts.get(row).cloned().with_context(|| {
                        format!(
                            "--rows: row {row} is out of range, the {split} split has {} rows",
                            data.len()
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?
        }
        _ => args.texts.clone(),
    };
    let encoded = tokenizer.encode_all(&texts, packed.max_len, packed.truncation, false)?;
    let ids = (0..encoded.len()).map(|i| encoded.ids(i)).collect();
    Ok((tokenizer, ids, packed))
}

fn run_encode(args: EncodeArgs, global: &crate::Global) -> anyhow::Result<()> {
    let (tokenizer, ids, packed) = encode_rows(&args, &global.hub())?;
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids }));
        return Ok(());
    }
    for (i, row) in ids.iter().enumerate() {
        let label = match args.source {
            Some(_) => format!("row {}", args.rows[i]),
            None => format!("text {}", i + 1),
        };
        let tokens: Vec<String> =
            row.iter().map(|&id| tokenizer.id_to_token(id).unwrap_or_else(|| format!("<{id}>"))).collect();
        println!("{label}: {} ids (max_len {}, {})", row.len(), packed.max_len, packed.truncation);
        println!("  ids:    {}", row.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
        println!("  tokens: {}", tokens.join(" "));
    }
    Ok(())
}

fn run_stats(args: StatsArgs, global: &crate::Global) -> anyhow::Result<()> {
    let hub = global.hub();
    let tokenizer = load_tokenizer(&args.model, &hub)?;
    let data = load_texts(&args.source, args.split, &hub)?;
    let lengths = tokenizer.token_lengths(&data.texts, true)?;
    let stats = LengthStats::from_lengths(&lengths).context("the dataset has no texts")?;
    let mut limits = vec![128, 256, 512];
    if let Some(n) = args.max_len {
        if !limits.contains(&n) {
            limits.push(n);
            limits.sort_unstable();
        }
    }
    if args.json {
        let over: serde_json::Map<String, serde_json::Value> =
            limits.iter().map(|&n| (n.to_string(), stats.share_over(n).into())).collect();
        let out = serde_json::json!({
            "texts": stats.count(),
            "mean": stats.mean(),
            "median": stats.median(),
            "p90": stats.percentile(90.0),
            "p99": stats.percentile(99.0),
            "min": stats.min(),
            "max": stats.max(),
            "share_over": over,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "token lengths of {} texts ({}, {}; untruncated, [CLS] and [SEP] included)",
        stats.count(),
        args.model,
        args.split.map_or("train + test".to_string(), |s| s.to_string()),
    );
    println!("  mean    {:8.1}", stats.mean());
    println!("  median  {:8.1}", stats.median());
    println!("  p90     {:8.1}", stats.percentile(90.0));
    println!("  p99     {:8.1}", stats.percentile(99.0));
    println!("  max     {:8}", stats.max());
    for n in limits {
        println!("  over {n:<4} {:6.2} %  (truncated at max_len {n})", 100.0 * stats.share_over(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bertlab_tokenize::Truncation;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TokenizeArgs,
    }

    fn parse(args: &[&str]) -> Result<TokenizeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("tokenize").chain(args.iter().copied())).map(|c| c.args)
    }

    fn encode_args(args: &[&str]) -> EncodeArgs {
        let parsed = parse(args).unwrap();
        assert!(parsed.command.is_none());
        parsed.encode
    }

    #[test]
    fn flags_parse_and_conflict_as_documented() {
        let a = encode_args(&["--model", "m", "--text", "a", "--text", "b", "--truncation", "head-tail"]);
        // No --max-len: the model's longest, found when it loads (512 for MiniLM, below).
        assert_eq!(
            (a.texts.len(), a.tokens.truncation, a.tokens.max_len),
            (2, Some(Truncation::HeadTail), None)
        );
        let a =
            encode_args(&["--model", "m", "--source", "s", "--split", "test", "--rows", "7,132", "--json"]);
        assert_eq!((a.rows, a.split, a.json), (vec![7, 132], Some(Split::Test), true));
        assert!(parse(&["--model", "m", "--text", "a", "--source", "s", "--split", "test", "--rows", "1"])
            .is_err());
        assert!(parse(&["--model", "m", "--source", "s", "--split", "test"]).is_err(), "--rows is required");
        assert!(parse(&["--model", "m"]).is_err(), "--text or --source is required");
        assert!(parse(&["--text", "a"]).is_err(), "--model is required");
        assert!(parse(&["--model", "m", "--text", "a", "--truncation", "middle"]).is_err());
        let s = parse(&["stats", "--model", "m", "--source", "s", "--max-len", "384"]).unwrap();
        assert!(matches!(s.command, Some(TokenizeCommand::Stats(StatsArgs { max_len: Some(384), .. }))));
    }

    #[test]
    fn texts_and_dataset_rows_give_hf_ids() {
        let Some(shared) = bertlab_test_support::shared_dir() else {
            eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
            return;
        };
        let model = shared.join("models/all-MiniLM-L6-v2");
        let model = model.to_str().unwrap();
        let hub = HubOptions::default();
        let (_, ids, tokens) = encode_rows(
            &encode_args(&["--model", model, "--text", "This movie was great!", "--text", ""]),
            &hub,
        )
        .unwrap();
        assert_eq!(ids, vec![vec![101, 2023, 3185, 2001, 2307, 999, 102], vec![101, 102]]);
        assert_eq!((tokens.max_len, tokens.truncation), (512, Truncation::Head));
        // Test rows 7 and 132 at 12, as python transformers tokenizes them.
        let data = shared.join("data/hf-imdb");
        let args =
            ["--model", model, "--max-len", "12", "--source", data.to_str().unwrap(), "--split", "test"];
        let rows = encode_args(&[&args[..], &["--rows", "7,132"]].concat());
        let (_, ids, _) = encode_rows(&rows, &hub).unwrap();
        assert_eq!(ids[0], [101, 2108, 1037, 2146, 1011, 2051, 5470, 1997, 2887, 2143, 1010, 102]);
        assert_eq!(ids[1], [101, 2034, 1997, 2035, 1010, 1045, 2428, 2064, 1005, 1056, 3305, 102]);
        let err = encode_rows(&encode_args(&[&args[..], &["--rows", "24996"]].concat()), &hub).unwrap_err();
        assert!(format!("{err:#}").contains("row 24996 is out of range"), "{err:#}");
        // The model's max_position_embeddings (512, from config.json) bounds --max-len.
        let err = encode_rows(&encode_args(&["--model", model, "--max-len", "513", "--text", "x"]), &hub)
            .unwrap_err();
        assert!(format!("{err:#}").contains("512"), "{err:#}");
    }
}
