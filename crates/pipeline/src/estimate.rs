//! Cost estimates before training: split sizes, padded tokens and FLOPs of a planned run, and
//! the time they take at a measured (from existing records) or assumed throughput.

use crate::plan::PlannedRun;
use bertlab_model_config::ConfigSizes;
use bertlab_run::{ModelShape, Padding, RunRecord, SplitMode};
use std::path::Path;

/// Rows of the joined IMDB dataset (train + test) in the Hub's `stanfordnlp/imdb`.
pub const IMDB_ROWS: usize = 50_000;

/// Token counts of the IMDB reviews under the uncased WordPiece vocabulary, `[CLS]` and `[SEP]`
/// included, as `(percentile, tokens)`: every 5th percentile, then a finer tail (measured with
/// `tokenizers` on all 49,994 labelled reviews of `../shared/data/hf-imdb`; mean 310, median 231).
pub const IMDB_LENGTH_PERCENTILES: [(f64, f64); 27] = [
    (0.0, 10.0),
    (5.0, 84.0),
    (10.0, 121.0),
    (15.0, 146.0),
    (20.0, 157.0),
    (25.0, 167.0),
    (30.0, 177.0),
    (35.0, 188.0),
    (40.0, 201.0),
    (45.0, 215.0),
    (50.0, 231.0),
    (55.0, 251.0),
    (60.0, 274.0),
    (65.0, 302.0),
    (70.0, 336.0),
    (75.0, 377.0),
    (80.0, 431.0),
    (85.0, 504.0),
    (90.0, 609.0),
    (95.0, 796.0),
    (96.0, 855.0),
    (97.0, 938.0),
    (98.0, 1043.0),
    (99.0, 1198.0),
    (99.5, 1306.0),
    (99.9, 1474.0),
    (100.0, 3157.0),
];

/// Mean tokens of an IMDB review truncated at `max_len`, E[min(L, max_len)], with L uniform
/// between consecutive percentiles.
pub fn mean_tokens(max_len: usize) -> f64 {
    let m = max_len as f64;
    let mut sum = 0.0;
    for w in IMDB_LENGTH_PERCENTILES.windows(2) {
        let ((p0, a), (p1, b)) = (w[0], w[1]);
        let mean_in_bin = if m >= b {
            (a + b) / 2.0
        } else if m <= a {
            m
        } else {
            ((m - a) * (a + m) / 2.0 + (b - m) * m) / (b - a)
        };
        sum += (p1 - p0) / 100.0 * mean_in_bin;
    }
    sum
}

/// Rows of the notebook's split of a `total`-row dataset at `subset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    /// The stratified subset.
    pub pool: usize,
    /// Training rows (70 % of the pool).
    pub train: usize,
    /// Validation rows (10 %).
    pub val: usize,
    /// Test rows (20 %).
    pub test: usize,
}

/// The notebook's sizes: `train_test_split(train_size=subset)` (floor), then `test_size=0.2`
/// (ceil), then `test_size=0.125` (ceil).
pub fn split_sizes(total: usize, subset: f64) -> SplitSizes {
    let pool = if subset >= 1.0 { total } else { (subset * total as f64).floor() as usize };
    let test = (0.2 * pool as f64).ceil() as usize;
    let train_val = pool - test;
    let val = (0.125 * train_val as f64).ceil() as usize;
    SplitSizes { pool, train: train_val - val, val, test }
}

/// A model's cost shape ([`ModelShape`], the one FLOPs definition) and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundShape {
    /// Layers, widths.
    pub shape: ModelShape,
    /// Where the numbers come from (`config.json`, `known Hub id`, `assumed`).
    pub origin: String,
}

impl FoundShape {
    /// BERT-base: 12 × 768 × 3072.
    pub fn bert_base(origin: &str) -> FoundShape {
        FoundShape { shape: ModelShape::BERT_BASE, origin: origin.into() }
    }

    /// Read `config.json` (BERT or DistilBERT keys) with the lenient reader: an estimate only
    /// needs the three sizes, so a partial or unsupported config still gives its shape, and an
    /// unreadable one gives none (the caller falls back to the model's id).
    pub fn from_config(path: &Path) -> Option<FoundShape> {
        let shape = ConfigSizes::from_file(path).ok()?.shape()?;
        Some(FoundShape { shape, origin: "config.json".into() })
    }

    /// The shape of a resolved model reference: a directory's `config.json`, the HF cache's copy
    /// of a Hub id's, a known Hub id, or BERT-base.
    pub fn for_reference(reference: &str) -> FoundShape {
        let dir = Path::new(reference);
        if dir.is_dir() {
            if let Some(s) = FoundShape::from_config(&dir.join("config.json")) {
                return s;
            }
        }
        if let Some(s) = hf_cache_config(reference).and_then(|p| FoundShape::from_config(&p)) {
            return s;
        }
        let id = reference.to_ascii_lowercase();
        let known = |layers, hidden, intermediate| FoundShape {
            shape: ModelShape { layers, hidden, intermediate, head_classes: None },
            origin: "known Hub id".into(),
        };
        if id.contains("distilbert") {
            known(6, 768, 3072)
        } else if id.contains("minilm-l6") {
            known(6, 384, 1536)
        } else if id.contains("bert-large") {
            known(24, 1024, 4096)
        } else if id.contains("bert-base") {
            known(12, 768, 3072)
        } else {
            FoundShape::bert_base("assumed (BERT-base)")
        }
    }
}

/// `config.json` of a Hub id in the standard HF cache, when any snapshot holds one.
fn hf_cache_config(id: &str) -> Option<std::path::PathBuf> {
    if id.split('/').count() != 2 {
        return None;
    }
    let home = std::env::var_os("HF_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/huggingface")))?;
    let repo = home.join("hub").join(format!("models--{}", id.replace('/', "--"))).join("snapshots");
    std::fs::read_dir(repo).ok()?.flatten().map(|e| e.path().join("config.json")).find(|p| p.is_file())
}

/// What a planned run will process.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEstimate {
    /// Split sizes.
    pub rows: SplitSizes,
    /// Where the sizes come from.
    pub known: KnownRows,
    /// Mean padded length of a training sequence.
    pub padded_len: f64,
    /// Padded tokens of one training epoch.
    pub train_padded_tokens_per_epoch: f64,
    /// Padded tokens of the whole run (all epochs, validation, test).
    pub padded_tokens: f64,
    /// FLOPs of the whole run (training counted as 3× forward).
    pub flops: f64,
}

/// The rows a run will use, as far as a plan can know them before the data is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownRows {
    /// Counted: from the run's own record.
    Recorded(SplitSizes),
    /// Counted: the data read before the run (`bertlab data split` of a local dataset).
    Counted(SplitSizes),
    /// Computed: IMDB (whose size is known) under the notebook's recipe.
    Imdb,
    /// Not known until the data is read (another dataset, or its own splits): the estimate uses
    /// IMDB's sizes in their place, and says so.
    Unknown,
}

impl KnownRows {
    /// What a plan knows of `run`'s rows, given its record's sizes where it has one.
    pub fn of(run: &PlannedRun, recorded: Option<SplitSizes>) -> KnownRows {
        if let Some(rows) = recorded {
            return KnownRows::Recorded(rows);
        }
        let s = run.settings.to_spec();
        if s.splits == SplitMode::Notebook && is_imdb_reference(&s.source) {
            KnownRows::Imdb
        } else {
            KnownRows::Unknown
        }
    }

    /// The sizes an estimate uses for a run at `subset`.
    pub fn sizes(self, subset: f64) -> SplitSizes {
        match self {
            KnownRows::Recorded(rows) | KnownRows::Counted(rows) => rows,
            KnownRows::Imdb | KnownRows::Unknown => split_sizes(IMDB_ROWS, subset),
        }
    }
}

/// `hub` or `hub:stanfordnlp/imdb[@…]`: a data reference that names IMDB (a local directory may
/// hold it too, but a plan cannot tell without reading it).
fn is_imdb_reference(source: &str) -> bool {
    source == "hub"
        || source.strip_prefix("hub:").is_some_and(|id| id.split('@').next() == Some("stanfordnlp/imdb"))
}

/// Estimate `run` (all its epochs, no early stop) on the rows `known` gives.
pub fn estimate_run(run: &PlannedRun, shape: &ModelShape, known: KnownRows) -> RunEstimate {
    // Unset settings take the run spec's defaults, as the run itself will.
    let s = run.settings.to_spec();
    let rows = known.sizes(s.subset);
    let epochs = s.epochs as f64;
    let padded_len = padded_len(s.max_len, s.padding, s.pad_multiple);
    let fwd = shape.forward_flops(padded_len);
    let per_epoch = rows.train as f64 * padded_len;
    let eval_tokens = (rows.val as f64 * epochs + rows.test as f64) * padded_len;
    RunEstimate {
        rows,
        known,
        padded_len,
        train_padded_tokens_per_epoch: per_epoch,
        padded_tokens: per_epoch * epochs + eval_tokens,
        flops: epochs * (3.0 * fwd * rows.train as f64 + fwd * rows.val as f64) + fwd * rows.test as f64,
    }
}

/// Mean padded length: `max_len` with fixed padding; with length buckets, the mean truncated
/// length rounded up to the pad multiple, plus a little for the longest row of each bucket.
pub fn padded_len(max_len: usize, padding: Padding, pad_multiple: usize) -> f64 {
    if padding == Padding::Fixed {
        return max_len as f64;
    }
    let m = pad_multiple.max(1) as f64;
    ((mean_tokens(max_len) + (m - 1.0) / 2.0) * 1.03).min(max_len as f64)
}

/// FLOPs a completed run spent in `fit` (training and validation), from its record.
pub fn record_fit_flops(record: &RunRecord, shape: &ModelShape) -> Option<f64> {
    let d = &record.data;
    let epochs = record.epochs.len() as f64;
    if d.train == 0 || epochs == 0.0 {
        return None;
    }
    let padded = d.train_padding.padded_tokens as f64;
    let len = if padded > 0.0 {
        padded / d.train as f64
    } else {
        padded_len(record.spec.max_len, record.spec.padding, record.spec.pad_multiple)
    };
    let fwd = shape.forward_flops(len);
    Some(epochs * (3.0 * fwd * d.train as f64 + fwd * d.val as f64))
}

/// A training throughput in FLOP/s, measured or assumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// FLOP/s.
    pub flops_per_s: f64,
    /// How it was obtained.
    pub origin: String,
}

impl Throughput {
    /// An assumed rate when no record says better: 6 GFLOP/s per CPU core for Burn's Flex
    /// backend (measured: 12.2 GFLOP/s fine-tuning all-MiniLM-L6-v2 at max_len 256 on 2 cores,
    /// where an f32 1024³ matmul reaches 108; training adds elementwise work, attention and
    /// autodiff bookkeeping); on an NVIDIA GPU 25 TFLOP/s in f32 and 60 in f16/bf16 (assumed).
    pub fn assumed(gpu: bool, precision: Option<bertlab_run::Precision>) -> Throughput {
        if gpu {
            let half = matches!(precision, Some(p) if p != bertlab_run::Precision::F32);
            let flops_per_s = if half { 60e12 } else { 25e12 };
            return Throughput { flops_per_s, origin: "assumed for an NVIDIA GPU".into() };
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) as f64;
        Throughput { flops_per_s: 6e9 * cores, origin: format!("assumed for {cores} CPU cores") }
    }

    /// The rate of completed records (FLOPs of their fits over their fit seconds), when any.
    pub fn measured<'a>(
        records: impl IntoIterator<Item = (&'a RunRecord, ModelShape)>,
    ) -> Option<Throughput> {
        let (mut flops, mut seconds, mut n) = (0.0, 0.0, 0);
        for (r, shape) in records {
            if !r.is_completed() || r.timings.fit_seconds <= 0.0 {
                continue;
            }
            if let Some(f) = record_fit_flops(r, &shape) {
                flops += f;
                seconds += r.timings.fit_seconds;
                n += 1;
            }
        }
        (n > 0 && seconds > 0.0).then(|| Throughput {
            flops_per_s: flops / seconds,
            origin: format!("measured on {n} completed run{}", if n == 1 { "" } else { "s" }),
        })
    }

    /// Seconds for `flops`.
    pub fn seconds(&self, flops: f64) -> f64 {
        flops / self.flops_per_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_truncated_lengths_match_the_measured_ones() {
        // Measured on the 49,994 reviews: E[min(L, m)] for m = 128, 256, 512, and the mean.
        for (m, measured) in [(128, 123.55), (256, 207.04), (512, 273.26), (4096, 310.33)] {
            let est = mean_tokens(m);
            assert!((est / measured - 1.0).abs() < 0.02, "max_len {m}: {est} vs {measured}");
        }
        assert!((mean_tokens(8) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn split_sizes_are_the_notebooks() {
        // The notebook's printout at 1.0 (50,000 rows) and 0.25.
        assert_eq!(
            split_sizes(50_000, 1.0),
            SplitSizes { pool: 50_000, train: 35_000, val: 5_000, test: 10_000 }
        );
        assert_eq!(
            split_sizes(50_000, 0.25),
            SplitSizes { pool: 12_500, train: 8_750, val: 1_250, test: 2_500 }
        );
        // bertlab's README at 0.25 of the 49,994-row copy: 8748 / 1250 / 2500.
        assert_eq!(
            split_sizes(49_994, 0.25),
            SplitSizes { pool: 12_498, train: 8_748, val: 1_250, test: 2_500 }
        );
    }

    #[test]
    fn only_imdb_references_have_known_sizes() {
        assert!(is_imdb_reference("hub"));
        assert!(is_imdb_reference("hub:stanfordnlp/imdb"));
        assert!(is_imdb_reference("hub:stanfordnlp/imdb@e6281661ce1c48d982bc483cf8a173c1bbeb5d31"));
        assert!(!is_imdb_reference("hub:fancyzhx/ag_news"));
        assert!(!is_imdb_reference("hub:stanfordnlp/imdb-x"));
        assert!(!is_imdb_reference("../shared/data/hf-imdb"));
        let recorded = SplitSizes { pool: 160, train: 112, val: 16, test: 32 };
        assert_eq!(KnownRows::Recorded(recorded).sizes(0.5), recorded);
        assert_eq!(KnownRows::Counted(recorded).sizes(0.5), recorded);
        assert_eq!(KnownRows::Unknown.sizes(0.25), split_sizes(IMDB_ROWS, 0.25));
    }

    #[test]
    fn shapes_from_config_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"dim": 32, "n_layers": 2, "hidden_dim": 64}"#)
            .unwrap();
        let s = FoundShape::for_reference(&dir.path().display().to_string());
        assert_eq!(
            (s.shape.layers, s.shape.hidden, s.shape.intermediate, s.origin.as_str()),
            (2, 32, 64, "config.json")
        );
        assert_eq!(FoundShape::for_reference("google-bert/bert-base-uncased").shape.layers, 12);
        assert_eq!(FoundShape::for_reference("someone/else").origin, "assumed (BERT-base)");
        // 12 layers × 128 tokens × (8·768² + 4·768·3072 + 4·128·768) = 22.35 GFLOP.
        assert_eq!(FoundShape::bert_base("x").shape.forward_flops(128.0), 22_347_251_712.0);
    }

    #[test]
    fn formatting() {
        use bertlab_run::format::{format_count, format_duration, hms};
        assert_eq!(format_duration(3725.0), "1h 02m");
        assert_eq!(format_duration(200.0), "3m 20s");
        assert_eq!(format_duration(12.4), "12s");
        assert_eq!(hms(167.0), "00:02:47");
        assert_eq!(format_count(1.26e9), "1.3G");
        assert_eq!(format_count(512.0), "512");
    }

    #[test]
    fn padded_lengths() {
        assert_eq!(padded_len(512, Padding::Fixed, 8), 512.0);
        let b = padded_len(128, Padding::Bucket, 8);
        assert!(b > 123.0 && b <= 128.0, "{b}");
    }
}
