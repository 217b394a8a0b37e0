//! The prepare stage of a run: the settings checked against the backend and the model, the
//! dataset loaded and split, the classes settled, and every split tokenized. The place for checks
//! that can fail a run before its data is read or tokenized.

use crate::batching::LengthBuckets;
use crate::device_fault::panic_text;
use crate::error::TrainError;
use crate::predict::EvalSettings;
use crate::readback::logits_to_vec;
use bertlab_data::{DataOptions, DatasetSource, LabeledTexts, RunSplits};
use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::{has_classifier_head, ModelConfig, ModelError, Precision};
use bertlab_run::{align_labels, ClassCounts, DataSummary, LabelAlignment, RunRecord, RunSpec};
use bertlab_tokenize::{EncodedTexts, TokenCache, TokenizeError, WordPieceTokenizer};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use std::time::Instant;

/// The three encoded splits and their labels.
pub(crate) struct Encoded {
    pub train: EncodedTexts,
    pub val: EncodedTexts,
    pub test: EncodedTexts,
    pub train_labels: Vec<u32>,
    pub val_labels: Vec<u32>,
    pub test_labels: Vec<u32>,
}

/// What the prepare stage leaves for the others: the model's reference, its tokenizer, the
/// classes and the encoded splits, and how batches are formed.
pub(crate) struct Prepared {
    /// Hub lookups (offline when the options or the spec say so).
    pub hub: HubOptions,
    /// The model the run starts from.
    pub repo: RepoRef,
    /// Its tokenizer (exported beside the weights).
    pub tokenizer: WordPieceTokenizer,
    /// Class names in the order of the model's outputs.
    pub class_names: Vec<String>,
    /// The encoded splits.
    pub encoded: Encoded,
    /// Token lengths of the train rows, in row order.
    pub train_lengths: Vec<usize>,
    /// How train batches are formed.
    pub buckets: LengthBuckets,
    /// How validation and test batches are formed and computed.
    pub eval: EvalSettings,
    /// No progress output (summaries aside).
    pub quiet: bool,
}

impl Prepared {
    /// Print `message` on stderr unless the run is quiet.
    pub fn say(&self, message: &str) {
        say(self.quiet, message);
    }
}

fn say(quiet: bool, message: &str) {
    if !quiet {
        eprintln!("{message}");
    }
}

/// What [`check_local_inputs`] could check without the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalInputs {
    /// The dataset is local and its split files are where the run will look for them.
    pub source_checked: bool,
    /// The model is a local directory and its `config.json` reads as a model configuration.
    pub model_checked: bool,
}

/// A plan's check of a run's inputs (`bertlab train --dry-run`): a local dataset's layout and
/// files (reading no row) and a local model's `config.json`, with the errors the run itself
/// would stop on. Hub references are not looked up (that needs the network or the cache): the
/// result says what was checked.
pub fn check_local_inputs(spec: &RunSpec) -> Result<LocalInputs, TrainError> {
    let source = DatasetSource::parse(&spec.source)?;
    let source_checked = source.check_local(&DataOptions::of_spec(spec))?;
    let repo = RepoRef::parse(&spec.model, RepoKind::Model);
    let model_checked = matches!(repo, RepoRef::Local(_));
    if model_checked {
        // A local repository's file is a path: no Hub lookup whatever the options.
        let hub = HubOptions { offline: true, ..HubOptions::default() };
        ModelConfig::from_file(&repo.file("config.json", &hub).map_err(ModelError::from)?)
            .map_err(ModelError::from)?;
    }
    Ok(LocalInputs { source_checked, model_checked })
}

/// Check the settings the data does not decide, then load, split and tokenize the data of
/// `spec`. Takes the run's spec and the Hub options; fills `record.data` (sizes, classes,
/// files, class counts, truncated rows) and the data and tokenize timings.
pub(crate) fn prepare<B: Backend>(
    spec: &RunSpec,
    device: &B::Device,
    hub: &HubOptions,
    quiet: bool,
    record: &mut RunRecord,
) -> Result<Prepared, TrainError> {
    check_precision::<B>(device, spec.precision)?;
    let hub = HubOptions { offline: hub.offline || spec.offline, ..hub.clone() };
    let t = Instant::now();
    let (source, mut data, split) = load_data(spec, &hub)?;
    record.timings.data_seconds = t.elapsed().as_secs_f64();
    let repo = RepoRef::parse(&spec.model, RepoKind::Model);
    let model_config = ModelConfig::from_file(&repo.file("config.json", &hub).map_err(ModelError::from)?)
        .map_err(ModelError::from)?;
    settle_classes(&repo, &hub, &model_config, &mut data, quiet)?;
    record.data = summarize(&source, &data, &split);
    report_data(spec, &data, &split, record, quiet);

    let t = Instant::now();
    let tokenizer = WordPieceTokenizer::from_repo(&repo, &hub)?;
    // Before the whole dataset is tokenized: a tokenizer whose ids the model has no embedding for
    // would only fail (or, on a GPU, read garbage) at the first batch.
    bertlab_models::check_tokenizer_fits(&model_config, tokenizer.id_bound(), tokenizer.source())
        .map_err(ModelError::from)?;
    // …and a max_len beyond the model's positions (or the tokenizer's own limit) fails here, not
    // after every split is tokenized and the model loaded.
    bertlab_tokenize::check_max_len(
        &repo.display_name(),
        spec.max_len,
        Some(model_config.max_position_embeddings),
        tokenizer.model_max_length(),
    )
    .map_err(TokenizeError::from)?;
    let encoded = encode_splits(spec, &tokenizer, &data, &split, quiet)?;
    record.data.train_truncated = encoded.train.seq_lens().filter(|&l| l >= spec.max_len).count();
    record.timings.tokenize_seconds = t.elapsed().as_secs_f64();

    let eval = EvalSettings {
        batch: spec.eval_batch_size(),
        padding: spec.padding,
        pad_multiple: spec.pad_multiple,
        precision: spec.precision,
        pad_id: tokenizer.pad_id(),
    };
    Ok(Prepared {
        hub,
        repo,
        class_names: data.class_names,
        train_lengths: encoded.train.seq_lens().collect(),
        buckets: LengthBuckets::new(spec.batch, spec.padding, spec.pad_multiple, spec.max_len),
        encoded,
        tokenizer,
        eval,
        quiet,
    })
}

/// The dataset's splits, then the run's rows (the notebook's recipe on all of them joined, or
/// the dataset's own splits), as positions in the joined table; none of the three may be empty.
fn load_data(
    spec: &RunSpec,
    hub: &HubOptions,
) -> Result<(DatasetSource, LabeledTexts, RunSplits), TrainError> {
    let source = DatasetSource::parse(&spec.source)?;
    let splits = source.load_splits(&DataOptions::of_spec(spec), hub)?;
    let split = RunSplits::new(&splits, spec.splits, spec.subset, spec.seed)?;
    let data = splits.into_joined();
    for (name, rows) in [("train", &split.train), ("val", &split.val), ("test", &split.test)] {
        if rows.is_empty() {
            return Err(TrainError::EmptySplit { split: name, subset: spec.subset });
        }
    }
    // A classifier needs two classes, each with training rows: a class no training row has
    // would get a head that never learns it and a share of macro-F1.
    if data.class_names.len() < 2 {
        return Err(TrainError::TooFewClasses { data: source.to_string(), names: data.class_names });
    }
    let counts = data.class_counts_of(&split.train);
    if let Some(class) = counts.iter().position(|&n| n == 0) {
        return Err(TrainError::ClassWithoutRows {
            class: data.class_names[class].clone(),
            data: source.to_string(),
            subset: spec.subset,
        });
    }
    Ok((source, data, split))
}

/// The classes the run trains on: a checkpoint that already has a classification head keeps its
/// classes, `data`'s labels matched to them by name; one without gets a head sized from the data.
fn settle_classes(
    repo: &RepoRef,
    hub: &HubOptions,
    model_config: &ModelConfig,
    data: &mut LabeledTexts,
    quiet: bool,
) -> Result<(), TrainError> {
    let head = head_classes(repo, hub, model_config, &data.class_names)?;
    if let Some(note) = head.alignment.as_ref().and_then(|a| a.note(&head.names, &data.class_names)) {
        say(quiet, &format!("note: {note}"));
    }
    if let Some(LabelAlignment::ByName(map)) = &head.alignment {
        for label in &mut data.labels {
            *label = map[*label as usize];
        }
        data.class_names = head.names;
    }
    Ok(())
}

/// The record's description of the data: sizes, classes, files and class counts per split.
fn summarize(source: &DatasetSource, data: &LabeledTexts, split: &RunSplits) -> DataSummary {
    DataSummary {
        source: source.to_string(),
        total_rows: data.len(),
        pool: split.pool.len(),
        train: split.train.len(),
        val: split.val.len(),
        test: split.test.len(),
        class_names: data.class_names.clone(),
        files: data.sources.clone(),
        class_counts: ClassCounts {
            train: data.class_counts_of(&split.train),
            val: data.class_counts_of(&split.val),
            test: data.class_counts_of(&split.test),
        },
        ..DataSummary::default()
    }
}

/// Say the split sizes, and note classes imbalanced enough that accuracy misleads.
fn report_data(spec: &RunSpec, data: &LabeledTexts, split: &RunSplits, record: &RunRecord, quiet: bool) {
    say(
        quiet,
        &format!(
            "Train: {}  Val: {}  Test: {}  (pool {} of {}; {} splits; {} classes)",
            split.train.len(),
            split.val.len(),
            split.test.len(),
            split.pool.len(),
            data.len(),
            spec.splits,
            data.class_names.len()
        ),
    );
    if let Some(imbalance) = record.data.class_counts.train_imbalance().filter(|&r| r >= 1.5) {
        say(
            quiet,
            &format!(
                "note: the classes are imbalanced ({imbalance:.1}:1 largest to smallest in train): \
                 compare macro-F1 with accuracy"
            ),
        );
    }
}

/// The three splits' token ids (through the token cache when the spec names one) and labels.
fn encode_splits(
    spec: &RunSpec,
    tokenizer: &WordPieceTokenizer,
    data: &LabeledTexts,
    split: &RunSplits,
    quiet: bool,
) -> Result<Encoded, TrainError> {
    let encode = |rows: &[usize]| -> Result<EncodedTexts, TokenizeError> {
        let texts: Vec<&str> = rows.iter().map(|&r| data.texts[r].as_str()).collect();
        match &spec.cache_dir {
            Some(dir) => {
                TokenCache::new(dir).encode_all(tokenizer, &texts, spec.max_len, spec.truncation, !quiet)
            }
            None => tokenizer.encode_all(&texts, spec.max_len, spec.truncation, !quiet),
        }
    };
    let labels_of = |rows: &[usize]| rows.iter().map(|&r| data.labels[r]).collect::<Vec<u32>>();
    Ok(Encoded {
        train: encode(&split.train)?,
        val: encode(&split.val)?,
        test: encode(&split.test)?,
        train_labels: labels_of(&split.train),
        val_labels: labels_of(&split.val),
        test_labels: labels_of(&split.test),
    })
}

/// Fail early, with a clear error, when `precision` is half and the backend cannot compute in
/// it: it reports no support, or a tiny cast round trip panics or returns wrong values.
pub fn check_precision<B: Backend>(device: &B::Device, precision: Precision) -> Result<(), TrainError> {
    if precision == Precision::F32 {
        return Ok(());
    }
    // The one mapping of a precision to Burn's dtypes.
    let float_dtype = bertlab_models::float_dtype(precision);
    let dtype = DType::from(float_dtype);
    let unsupported =
        |detail: String| TrainError::UnsupportedPrecision { precision, backend: B::name(device), detail };
    if !B::supports_dtype(device, dtype) {
        return Err(unsupported(format!("the backend reports no {dtype:?} support")));
    }
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let x = Tensor::<B, 2>::from_data(TensorData::new(vec![1.5f32, -2.0, 0.25, 3.0], [2, 2]), device);
        let h = x.cast(float_dtype);
        let y = h.clone().matmul(h).cast(FloatDType::F32);
        logits_to_vec(y)
    }));
    match probe {
        Ok(v) if v == [1.75, -9.0, 1.125, 8.5] => Ok(()),
        Ok(v) => Err(unsupported(format!("a {dtype:?} matmul probe returned {v:?}"))),
        Err(p) => Err(unsupported(format!("a {dtype:?} matmul probe panicked: {}", panic_text(&*p)))),
    }
}

/// The classes a run trains on.
struct HeadClasses {
    /// Class names in the order of the model's outputs.
    names: Vec<String>,
    /// How the data's labels map onto a head the checkpoint already has (`None`: it has none).
    alignment: Option<LabelAlignment>,
}

/// A checkpoint with its own classification head (a fine-tuned model) keeps its classes: the
/// data's must be the same, matched by name (or by position where one side has only generic
/// names). A checkpoint without one gets a head of the data's classes.
fn head_classes(
    repo: &RepoRef,
    hub: &HubOptions,
    config: &ModelConfig,
    data: &[String],
) -> Result<HeadClasses, TrainError> {
    if !has_classifier_head(repo, hub)? {
        return Ok(HeadClasses { names: data.to_vec(), alignment: None });
    }
    match align_labels(&config.labels, data) {
        Ok(LabelAlignment::ByName(map)) => {
            Ok(HeadClasses { names: config.labels.clone(), alignment: Some(LabelAlignment::ByName(map)) })
        }
        Ok(alignment) => Ok(HeadClasses { names: data.to_vec(), alignment: Some(alignment) }),
        Err(message) => Err(TrainError::HeadClasses { model: repo.display_name(), message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_computes_in_half_precision() {
        let device = Default::default();
        for p in [Precision::F32, Precision::F16, Precision::BF16] {
            check_precision::<burn::backend::Autodiff<burn::backend::Flex>>(&device, p).unwrap();
        }
    }
}
