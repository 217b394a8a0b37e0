//! The ids file: a fixed sample of tokenized IMDB reviews (`bench make-ids`), so that a GPU
//! machine needs neither the dataset nor a tokenizer.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bertlab_data::rng::Pcg64;
use bertlab_data::{DatasetSource, Split};
use bertlab_hub::{RepoKind, RepoRef};
use bertlab_run::UsageError;
use bertlab_tokenize::{Truncation, WordPieceTokenizer};
use bertlab_train::BatchArrays;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{emit, round, write_atomic, Runtime};

/// A fixed sample of tokenized IMDB reviews (`bench make-ids`), truncated at `max_len` with
/// head truncation; shorter `max_len`s are cut from it the same way.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IdsFile {
    /// `bertlab-bench-ids/1`.
    pub(crate) format: String,
    /// The dataset and tokenizer it was made from, and how.
    pub(crate) source: String,
    pub(crate) tokenizer: String,
    pub(crate) split: String,
    pub(crate) seed: u64,
    pub(crate) max_len: usize,
    pub(crate) sep_id: u32,
    pub(crate) pad_id: u32,
    /// Class of each row.
    pub(crate) labels: Vec<u32>,
    /// `[CLS] … [SEP]` of each row.
    pub(crate) ids: Vec<Vec<u32>>,
}

pub(crate) const IDS_FORMAT: &str = "bertlab-bench-ids/1";

/// Rows of the ids file and the length they are padded to: one batch of a throughput plan,
/// which [`IdsFile::pack`] turns into arrays (it lives here, beside what it selects from, so
/// that the benches that pack batches need only this file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PlanBatch {
    pub(crate) len: usize,
    pub(crate) rows: Vec<usize>,
}

impl IdsFile {
    pub(crate) fn read(path: &Path) -> anyhow::Result<IdsFile> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("{}: cannot read the ids file (make one with `bertlab bench make-ids`)", path.display())
        })?;
        let file: IdsFile = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a bench ids file", path.display()))?;
        if file.format != IDS_FORMAT {
            bail!("{}: format {:?}, expected {IDS_FORMAT:?}", path.display(), file.format);
        }
        if file.ids.len() != file.labels.len() || file.ids.is_empty() {
            bail!("{}: {} rows of ids but {} labels", path.display(), file.ids.len(), file.labels.len());
        }
        Ok(file)
    }

    pub(crate) fn check_max_len(&self, max_len: usize) -> anyhow::Result<()> {
        if max_len > self.max_len || max_len < bertlab_run::MIN_MAX_LEN {
            bail!(
                "--max-len {max_len}: the ids file holds rows of at most {} tokens (and {} is the least)",
                self.max_len,
                bertlab_run::MIN_MAX_LEN
            );
        }
        Ok(())
    }

    /// Row lengths at `max_len`.
    pub(crate) fn lengths(&self, max_len: usize) -> Vec<usize> {
        self.ids.iter().map(|r| r.len().min(max_len)).collect()
    }

    /// Append `row` head-truncated to `max_len`: `[CLS]` + the first `max_len − 2` pieces + `[SEP]`.
    pub(crate) fn row_into(&self, row: usize, max_len: usize, out: &mut Vec<i64>) {
        let ids = &self.ids[row];
        if ids.len() <= max_len {
            out.extend(ids.iter().map(|&id| id as i64));
        } else {
            out.extend(ids[..max_len - 1].iter().map(|&id| id as i64));
            out.push(self.sep_id as i64);
        }
    }

    pub(crate) fn pack(&self, batch: &PlanBatch, max_len: usize) -> (BatchArrays, Vec<u32>) {
        // The plan's batches are what PyTorch runs too: no filler rows.
        let b = bertlab_train::Batch { rows: batch.rows.clone(), padded_len: batch.len, filler: 0 };
        let arrays = BatchArrays::pack(&b, self.pad_id, |r, out| self.row_into(r, max_len, out));
        let labels = batch.rows.iter().map(|&r| self.labels[r]).collect();
        (arrays, labels)
    }
}

#[derive(Args)]
pub(crate) struct MakeIdsArgs {
    /// Dataset: a directory holding plain_text/{train,test}-*.parquet (e.g.
    /// ../shared/data/hf-imdb), `hub` or `hub:ORG/NAME[@REV]`.
    #[arg(long)]
    source: String,
    /// Tokenizer: a model directory or Hub id with the bert-base-uncased vocabulary (e.g.
    /// ../shared/models/all-MiniLM-L6-v2).
    #[arg(long, value_parser = bertlab_run::model_arg)]
    model: String,
    /// Reviews to sample from the train split (seeded shuffle).
    #[arg(long, default_value_t = 1024, value_parser = bertlab_run::count_arg)]
    rows: usize,
    /// Tokens per row at most, [CLS] and [SEP] included (head truncation).
    #[arg(long, default_value_t = 512, value_parser = bertlab_run::count_arg)]
    max_len: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file (JSON).
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn run_make_ids<B: AutodiffBackend>(args: MakeIdsArgs, rt: &Runtime<B>) -> anyhow::Result<()> {
    let hub = rt.hub.clone();
    let source = DatasetSource::parse(&args.source)?;
    let data = source.load_split(Split::Train, &hub)?;
    if args.rows == 0 || args.rows > data.len() {
        bail!(UsageError(format!(
            "--rows {}: must be in 1..={} (the train split's rows)",
            args.rows,
            data.len()
        )));
    }
    let mut inputs = bertlab_run::files_in(std::path::Path::new(&args.model));
    inputs.extend(data.sources.iter().map(|f| f.path.clone()));
    if let Some(input) = bertlab_run::replaces_input(&args.out, inputs.iter().map(|p| p.as_path())) {
        bail!(
            "--out {}: it is {}, which the command reads; choose another --out",
            args.out.display(),
            input.display()
        );
    }
    let rows: Vec<usize> = Pcg64::new(args.seed).permutation(data.len())[..args.rows].to_vec();
    let texts: Vec<&str> = rows.iter().map(|&r| data.texts[r].as_str()).collect();
    let tokenizer = WordPieceTokenizer::from_repo(&RepoRef::parse(&args.model, RepoKind::Model), &hub)?;
    let encoded = tokenizer.encode_all(&texts, args.max_len, Truncation::Head, false)?;
    let file = IdsFile {
        format: IDS_FORMAT.into(),
        source: source.to_string(),
        tokenizer: args.model.clone(),
        split: "train".into(),
        seed: args.seed,
        max_len: args.max_len,
        sep_id: tokenizer.sep_id(),
        pad_id: tokenizer.pad_id(),
        labels: rows.iter().map(|&r| data.labels[r]).collect(),
        ids: (0..encoded.len()).map(|r| encoded.ids(r)).collect(),
    };
    let text = serde_json::to_string(&file)?;
    write_atomic(&args.out, text.as_bytes())?;
    let lengths = file.lengths(args.max_len);
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    let over = |n: usize| lengths.iter().filter(|&&l| l > n).count() as f64 / lengths.len() as f64;
    emit(json!({
        "bench": "make-ids", "out": args.out, "rows": args.rows, "bytes": text.len(),
        "mean_len": round(mean, 1), "share_over_128": round(over(128), 3),
        "share_over_256": round(over(256), 3), "share_at_max_len": round(over(args.max_len - 1), 3),
    }));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ids_file(lengths: &[usize]) -> IdsFile {
        IdsFile {
            format: IDS_FORMAT.into(),
            source: "mem".into(),
            tokenizer: "mem".into(),
            split: "train".into(),
            seed: 0,
            max_len: 512,
            sep_id: 102,
            pad_id: 0,
            labels: (0..lengths.len()).map(|i| (i % 2) as u32).collect(),
            ids: lengths
                .iter()
                .map(|&n| {
                    let mut row = vec![101];
                    row.extend((0..n - 2).map(|i| 1000 + i as u32));
                    row.push(102);
                    row
                })
                .collect(),
        }
    }

    #[test]
    fn rows_are_head_truncated_with_sep() {
        let ids = ids_file(&[6, 3]);
        let mut out = Vec::new();
        ids.row_into(0, 4, &mut out);
        assert_eq!(out, vec![101, 1000, 1001, 102]);
        out.clear();
        ids.row_into(1, 4, &mut out);
        assert_eq!(out, vec![101, 1000, 102]);
        let (arrays, labels) = ids.pack(&PlanBatch { len: 4, rows: vec![1, 0] }, 4);
        assert_eq!(arrays.input_ids, vec![101, 1000, 102, 0, 101, 1000, 1001, 102]);
        assert_eq!(arrays.attention_mask, vec![1, 1, 1, 0, 1, 1, 1, 1]);
        assert_eq!(labels, vec![1, 0]);
    }
}
