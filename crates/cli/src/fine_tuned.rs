//! A fine-tuned classifier with its tokenizer, as `bertlab eval` and `bertlab predict` load it.

use anyhow::Context;
use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::{load_classifier, ModelConfig, TextClassifier};
use bertlab_run::{Inference, InferenceSettings, RunRecord, RunSpec};
use bertlab_tokenize::WordPieceTokenizer;

use crate::backend::{Backend, Device};

/// A classifier with a trained head, its config and the tokenizer saved beside it.
pub struct FineTuned {
    /// The inference module.
    pub model: TextClassifier<Backend>,
    /// Its `config.json` (labels, positions).
    pub config: ModelConfig,
    /// The tokenizer from the same directory, limited to the model's positions.
    pub tokenizer: WordPieceTokenizer,
}

/// Load `--model` (a directory such as a run's `best/`, or a Hub id). A model whose
/// classification head is missing (a plain pretrained encoder) is refused: its predictions would
/// come from a randomly initialised head.
pub fn load_fine_tuned(model: &str, hub: &HubOptions, device: &Device) -> anyhow::Result<FineTuned> {
    let repo = RepoRef::parse(model, RepoKind::Model);
    let (classifier, config, report) = load_classifier::<Backend>(&repo, hub, &[], 0, device)
        .with_context(|| format!("loading --model {model}"))?;
    if !report.initialised.is_empty() {
        anyhow::bail!(
            "--model {model}: not a fine-tuned classifier (no trained head: {}); train one with `bertlab train`",
            report.initialised.join(", ")
        );
    }
    let tokenizer = WordPieceTokenizer::from_repo(&repo, hub)
        .with_context(|| format!("loading the tokenizer of --model {model}"))?
        .with_max_positions(config.max_position_embeddings);
    bertlab_models::check_tokenizer_fits(&config, tokenizer.id_bound(), tokenizer.source())
        .with_context(|| format!("--model {model}"))?;
    Ok(FineTuned { model: classifier, config, tokenizer })
}

/// Refuse logits that are not finite: a model that outputs NaN has broken weights, and no NaN is
/// ever printed as a prediction or a metric.
pub fn check_finite_logits(logits: &[f32], num_labels: usize, model: &str) -> anyhow::Result<()> {
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "--model {model}: its output for text {} is {} (not a number): the model's weights are broken \
             (a diverged run, or a damaged model.safetensors); retrain or re-export it",
            i / num_labels.max(1) + 1,
            logits[i]
        );
    }
    Ok(())
}

/// The spec of the run that exported `model`, when it is a run's `best/` with the run's
/// `record.json` beside it; `None` for any other model (a Hub id, a directory of other origin).
/// A record beside a `best/` that cannot be read is an error: the flags not given would
/// otherwise take other values than the run's, silently.
pub fn recorded_run(model: &str) -> anyhow::Result<Option<RunSpec>> {
    let dir = std::path::Path::new(model);
    let Some(record) = bertlab_run::inference::record_beside(dir).filter(|r| r.exists()) else {
        return Ok(None);
    };
    use bertlab_run::NamesSettings;
    // Its settings are used as the run's: they must be settings a run can have.
    let read = RunRecord::read(&record).and_then(|r| {
        r.spec.validate().map(|()| r.spec).map_err(|e| bertlab_run::record::RecordError::Invalid {
            path: record.clone(),
            message: format!("its spec has {}", e.render(bertlab_run::SettingStyle::Key)),
        })
    });
    match read {
        Ok(spec) => Ok(Some(spec)),
        // Beside a directory of another name, a record.json may be anything.
        Err(_) if dir.file_name().is_none_or(|n| n != "best") => Ok(None),
        Err(e) => anyhow::bail!(
            "--model {model}: {e}: the run's settings (max_len, precision, …) are unknown; repair or move \
             that record"
        ),
    }
}

/// Check the flags that need no model (all but `max_len`'s bound, which needs the tokenizer)
/// and open the device they name: done before the model loads, so a bad flag costs no loading.
pub fn open_device(settings: &InferenceSettings, run: Option<&RunSpec>) -> anyhow::Result<Device> {
    let checked = settings.resolve(run, usize::MAX).map_err(crate::invalid_flag)?;
    crate::backend::device(&checked.device)
}

/// The longest `max_len` the tokenizer allows (the model's positions and the tokenizer's own
/// `model_max_length`), or BERT's 512 when neither says.
pub fn longest_max_len(tokenizer: &WordPieceTokenizer) -> usize {
    tokenizer.max_len_limit().map_or(512, |(n, _)| n)
}

/// The settings `model` runs with: the flags, else its run's (`run`), else the defaults, with
/// `max_len` checked against the model's bound before any text is tokenized.
pub fn resolve_inference(
    settings: &InferenceSettings,
    run: Option<&RunSpec>,
    tokenizer: &WordPieceTokenizer,
) -> anyhow::Result<Inference> {
    let inference = settings.resolve(run, longest_max_len(tokenizer)).map_err(crate::invalid_flag)?;
    tokenizer.check_max_len(inference.max_len).map_err(|e| crate::UsageError(format!("--max-len: {e}")))?;
    Ok(inference)
}
