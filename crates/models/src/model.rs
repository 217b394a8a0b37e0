//! The models users hold: [`TextClassifier`] (backbone + `transformers`' sequence
//! classification head) and [`Encoder`] (backbone only), with loading and export.

use std::path::{Path, PathBuf};

use bertlab_hub::{HubOptions, RepoRef};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

use crate::encoder::{cls, linear, Backbone};
use crate::error::ModelError;
use crate::ops::{self, DropoutMask, Kernels};
use crate::precision::Precision;
use crate::weights::{visit_linear, Collector, LoadReport, Loader, ParamVisitor, Scope, WeightFile};
use crate::{bert, distilbert};
use bertlab_model_config::{Architecture, ConfigError, ModelConfig};

/// Files of a tokenizer that [`export_classifier`] copies next to the weights when present.
pub const TOKENIZER_FILES: [&str; 4] =
    ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"];

fn backbone<B: Backend>(config: &ModelConfig, with_pooler: bool, device: &B::Device) -> Backbone<B> {
    let mut backbone = Backbone::new(config, with_pooler, device);
    if config.architecture == Architecture::DistilBert && config.sinusoidal_pos_embds {
        backbone.embeddings.position_embeddings.weight =
            distilbert::sinusoidal_positions(config.max_position_embeddings, config.hidden_size, device);
    }
    backbone
}

fn visit_backbone<B: Backend, V: ParamVisitor<B>>(
    backbone: &mut Backbone<B>,
    config: &ModelConfig,
    pooler_scope: Scope,
    v: &mut V,
) -> Result<(), ModelError> {
    match config.architecture {
        Architecture::Bert => bert::visit_backbone(backbone, pooler_scope, v),
        Architecture::DistilBert => distilbert::visit_backbone(backbone, config.sinusoidal_pos_embds, v),
    }
}

/// A BERT or DistilBERT sequence classifier, equal in structure and names to `transformers`'
/// `BertForSequenceClassification` / `DistilBertForSequenceClassification`:
///
/// - BERT: pooler (dense + tanh on [CLS]) → dropout(`classifier_dropout` or
///   `hidden_dropout_prob`) → `classifier`;
/// - DistilBERT: [CLS] → `pre_classifier` → ReLU → dropout(`seq_classif_dropout`) → `classifier`.
///
/// Dropout is active only on an autodiff backend (the identity elsewhere, as Burn's
/// `Dropout`), so `model.valid()` is the model in eval mode. The config travels with the
/// module through `valid()`, `to_device()`, `fork()` and optimizer steps.
#[derive(Module, Debug)]
pub struct TextClassifier<B: Backend> {
    backbone: Backbone<B>,
    /// DistilBERT's `pre_classifier` (dim → dim); `None` for BERT.
    pre_classifier: Option<Linear<B>>,
    classifier: Linear<B>,
    dropout: Dropout,
    config: ModelConfig,
}

impl<B: Backend> TextClassifier<B> {
    /// Read weights from a `model.safetensors` (any checkpoint of `config`'s architecture:
    /// base model, pre-training, masked-LM or sequence classification). Head tensors the file
    /// lacks are initialised from `seed` and listed in the report.
    pub fn from_safetensors(
        config: ModelConfig,
        weights: &Path,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, LoadReport), ModelError> {
        let file = WeightFile::open(weights, config.architecture)?;
        let mut model = TextClassifier::shaped(config, device);
        let mut loader = Loader::new(&file, seed, model.config.initializer_range, device);
        model.visit_params(&mut loader)?;
        Ok((model, loader.finish()))
    }

    /// A classifier with fresh weights and no checkpoint (benchmarks, training from scratch):
    /// Burn's default initialisers (Kaiming-uniform linears, N(0, 1) embeddings, LayerNorm
    /// 1 and 0), drawn from the backend's RNG when a parameter is first used — call
    /// `B::seed(device, seed)` first for reproducible weights.
    pub fn random(config: ModelConfig, device: &B::Device) -> Self {
        TextClassifier::shaped(config, device)
    }

    /// Parameters shaped by the config, lazily initialised; loading replaces all of them.
    fn shaped(config: ModelConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        let is_bert = config.architecture == Architecture::Bert;
        TextClassifier {
            backbone: backbone(&config, is_bert, device),
            pre_classifier: (!is_bert).then(|| LinearConfig::new(h, h).init(device)),
            classifier: LinearConfig::new(h, config.num_labels()).init(device),
            dropout: DropoutConfig::new(config.classifier_dropout).init(),
            config,
        }
    }

    fn visit_params<V: ParamVisitor<B>>(&mut self, v: &mut V) -> Result<(), ModelError> {
        visit_backbone(&mut self.backbone, &self.config, Scope::BackboneHead, v)?;
        if let Some(pre) = self.pre_classifier.as_mut() {
            visit_linear(v, "pre_classifier", Scope::Head, pre)?;
        }
        visit_linear(v, "classifier", Scope::Head, &mut self.classifier)
    }

    /// Class logits.
    ///
    /// `input_ids` `[batch, seq]`, `attention_mask` `[batch, seq]` (1 = token, 0 = padding)
    /// → logits `[batch, num_labels]` in f32. `precision` picks the matmul dtype (see
    /// [`Precision`]). Panics when `seq` exceeds `max_position_embeddings`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        precision: Precision,
    ) -> Tensor<B, 2> {
        let hidden = self.backbone.forward(input_ids, attention_mask, precision); // [batch, seq, hidden]

        // The head multiplies in f32 whatever `precision` (two small products a batch). In
        // f16 its weight gradient sums a batch of features times loss-scaled logit gradients:
        // under PyTorch's autocast that product is f16 and overflows at the scale 65536 at
        // step 1 on most DistilBERT-base initialisations, so GradScaler skips the update
        // (issue 22, BENCHMARKS.md); here every update is applied, as in f32.
        let features = match &self.pre_classifier {
            // DistilBERT: [CLS] → pre_classifier → ReLU.
            Some(pre) => relu(linear(pre, cls(hidden), FloatDType::F32)),
            // BERT: the pooler.
            None => self.backbone.pool(hidden).expect("a BERT classifier is built with a pooler"),
        }; // [batch, hidden]
           // The seam's hash-mask dropout, as every other dropout of the model: reproducible under
           // `ops::seed_dropout`, and on a GPU one kernel that draws no random numbers (Burn's
           // `Dropout` draws a Bernoulli tensor: two launches and a kernel more to compile).
        let mask = DropoutMask::draw::<B>(self.dropout.prob, &features.device());
        linear(&self.classifier, ops::dropout(features, mask), FloatDType::F32)
    }

    /// The configuration the model was built from (labels included).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Choose the fused ops or Burn's plain decomposition (default [`Kernels::Fused`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.backbone.set_kernels(kernels);
        self
    }
}

/// Load a classifier from a local snapshot directory or a Hub id (`config.json` +
/// `model.safetensors`).
///
/// `labels` are the class names in id order (e.g. `["neg", "pos"]`): they set `num_labels`,
/// `id2label` and `label2id`. An empty slice keeps the labels of the config (for a model that
/// was already fine-tuned). Head tensors absent from the file are initialised from `seed`
/// (N(0, `initializer_range`) weights, zero biases) and named in [`LoadReport::initialised`];
/// a head present with another number of labels is a shape error.
pub fn load_classifier<B: Backend>(
    repo: &RepoRef,
    hub: &HubOptions,
    labels: &[String],
    seed: u64,
    device: &B::Device,
) -> Result<(TextClassifier<B>, ModelConfig, LoadReport), ModelError> {
    let mut config = ModelConfig::from_file(&repo.file("config.json", hub)?)?;
    if !labels.is_empty() {
        config = config.with_labels(labels);
    }
    let weights = repo.file("model.safetensors", hub)?;
    let (model, report) = TextClassifier::from_safetensors(config.clone(), &weights, seed, device)?;
    Ok((model, config, report))
}

/// Whether the snapshot's `model.safetensors` holds a classification head (`classifier.weight`,
/// as a fine-tuned `…ForSequenceClassification` saves it), read from the file's header alone:
/// a fine-tuned head keeps its classes, a pre-trained checkpoint gets a head sized from the data.
pub fn has_classifier_head(repo: &RepoRef, hub: &HubOptions) -> Result<bool, ModelError> {
    use std::io::Read;
    let path = repo.file("model.safetensors", hub)?;
    let bad = |message: String| ModelError::Safetensors { path: path.clone(), message };
    let io = |source| ModelError::Io { path: path.clone(), source };
    let mut file = std::fs::File::open(&path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let len = u64::from_le_bytes(len);
    // safetensors' own limit on the header.
    if len > 100_000_000 {
        return Err(bad(format!("a header of {len} bytes is over the format's limit of 100 MB")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| bad(format!("truncated inside its {len}-byte header")))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("its header is not a JSON object: {e}")))?;
    Ok(header.contains_key("classifier.weight"))
}

/// Write `model` as a `transformers` snapshot in `out_dir`: `config.json` (from `config`, with
/// `architectures`, `model_type`, `num_labels`, `id2label`, `label2id`), `model.safetensors`
/// (f32, `transformers` key names with the `bert.`/`distilbert.` prefix), and the tokenizer
/// files of `tokenizer_dir` that exist ([`TOKENIZER_FILES`]).
///
/// `AutoModelForSequenceClassification.from_pretrained(out_dir)` loads the result with no
/// missing or unexpected keys. The directory is written next to `out_dir` under a temporary
/// name and renamed into place, so a reader never sees half an export; an existing `out_dir`
/// is replaced.
pub fn export_classifier<B: Backend>(
    model: &TextClassifier<B>,
    config: &ModelConfig,
    out_dir: &Path,
    tokenizer_dir: Option<&Path>,
) -> Result<(), ModelError> {
    check_export_config(model.config(), config)?;
    let mut collector = Collector::new(config.architecture);
    model.clone().visit_params(&mut collector)?;

    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    let name = out_dir
        .file_name()
        .ok_or_else(|| ModelError::Io {
            path: out_dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the export directory needs a name",
            ),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let written = (|| {
        let config_path = tmp.join("config.json");
        let mut text = serde_json::to_string_pretty(&config.to_classifier_json())
            .expect("a JSON value always serialises");
        text.push('\n');
        std::fs::write(&config_path, text).map_err(io(&config_path))?;
        collector.write(&tmp.join("model.safetensors"))?;
        if let Some(dir) = tokenizer_dir {
            for file in TOKENIZER_FILES {
                let from = dir.join(file);
                if from.is_file() {
                    std::fs::copy(&from, tmp.join(file)).map_err(io(&from))?;
                }
            }
        }
        Ok(())
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err);
    }
    // Swap the finished directory in: park the old one, rename, then delete the old one.
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = out_dir.exists();
    if had_old {
        std::fs::rename(out_dir, &old).map_err(io(out_dir))?;
    }
    if let Err(source) = std::fs::rename(&tmp, out_dir) {
        if had_old {
            let _ = std::fs::rename(&old, out_dir);
        }
        return Err(ModelError::Io { path: out_dir.to_path_buf(), source });
    }
    if had_old {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// The config written must describe the weights written.
fn check_export_config(model: &ModelConfig, given: &ModelConfig) -> Result<(), ModelError> {
    let mismatch = |key: &str, model_value: String, given_value: String| {
        ModelError::Config(ConfigError::Key {
            path: given.origin().to_string(),
            key: key.to_string(),
            message: format!(
                "is {given_value} in the config passed to export but {model_value} in the model; \
                 export with the model's config (TextClassifier::config)"
            ),
        })
    };
    if model.architecture != given.architecture {
        return Err(mismatch("model_type", model.architecture.to_string(), given.architecture.to_string()));
    }
    let pairs = [
        ("hidden_size", model.hidden_size, given.hidden_size),
        ("num_hidden_layers", model.num_hidden_layers, given.num_hidden_layers),
        ("num_attention_heads", model.num_attention_heads, given.num_attention_heads),
        ("intermediate_size", model.intermediate_size, given.intermediate_size),
        ("vocab_size", model.vocab_size, given.vocab_size),
        ("max_position_embeddings", model.max_position_embeddings, given.max_position_embeddings),
        ("type_vocab_size", model.type_vocab_size, given.type_vocab_size),
        ("num_labels", model.num_labels(), given.num_labels()),
    ];
    for (key, m, g) in pairs {
        if m != g {
            return Err(mismatch(key, m.to_string(), g.to_string()));
        }
    }
    Ok(())
}

/// The backbone alone, for embeddings (`bertlab encode`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    backbone: Backbone<B>,
    config: ModelConfig,
}

/// What [`Encoder::forward`] returns (f32).
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, hidden]`: BERT's pooler (tanh dense on [CLS]), when the checkpoint has one.
    pub pooler_output: Option<Tensor<B, 2>>,
}

impl<B: Backend> Encoder<B> {
    /// Read the backbone weights of any checkpoint of `config`'s architecture. A BERT pooler
    /// is loaded when the file has one; task and pre-training heads are ignored.
    pub fn from_safetensors(
        config: ModelConfig,
        weights: &Path,
        device: &B::Device,
    ) -> Result<(Self, LoadReport), ModelError> {
        let file = WeightFile::open(weights, config.architecture)?;
        let with_pooler = config.architecture == Architecture::Bert && file.contains(bert::POOLER_WEIGHT);
        let mut backbone = backbone(&config, with_pooler, device);
        let mut loader = Loader::new(&file, 0, config.initializer_range, device);
        visit_backbone(&mut backbone, &config, Scope::Backbone, &mut loader)?;
        Ok((Encoder { backbone, config }, loader.finish()))
    }

    /// `input_ids`, `attention_mask` `[batch, seq]` → hidden states (and pooler output).
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        precision: Precision,
    ) -> EncoderOutput<B> {
        let last_hidden_state = self.backbone.forward(input_ids, attention_mask, precision);
        let pooler_output = self.backbone.pool(last_hidden_state.clone());
        EncoderOutput { last_hidden_state, pooler_output }
    }

    /// The configuration the encoder was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Choose the fused ops or Burn's plain decomposition (default [`Kernels::Fused`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.backbone.set_kernels(kernels);
        self
    }
}

/// Load an [`Encoder`] from a local snapshot directory or a Hub id.
pub fn load_encoder<B: Backend>(
    repo: &RepoRef,
    hub: &HubOptions,
    device: &B::Device,
) -> Result<(Encoder<B>, ModelConfig, LoadReport), ModelError> {
    let config = ModelConfig::from_file(&repo.file("config.json", hub)?)?;
    let weights = repo.file("model.safetensors", hub)?;
    let (encoder, report) = Encoder::from_safetensors(config.clone(), &weights, device)?;
    Ok((encoder, config, report))
}
