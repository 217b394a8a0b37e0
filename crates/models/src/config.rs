//! The model configuration, read from (and written back to) a Hugging Face `config.json`.
//!
//! BERT and DistilBERT name the same quantities differently (`hidden_size` vs `dim`,
//! `num_hidden_layers` vs `n_layers`, …). [`ModelConfig`] holds them under one set of names, and
//! keeps every original key so that an export writes back the file it read, plus the labels.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::error::ModelError;

/// The encoder families bertlab implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// BERT (`model_type: "bert"`): word + position + token-type embeddings, a pooler.
    Bert,
    /// DistilBERT (`model_type: "distilbert"`): word + position embeddings, no pooler.
    DistilBert,
}

impl Architecture {
    /// The `model_type` string of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::DistilBert => "distilbert",
        }
    }

    /// The `transformers` class of a sequence classifier of this family (written to
    /// `architectures` on export).
    pub fn classifier_class(self) -> &'static str {
        match self {
            Architecture::Bert => "BertForSequenceClassification",
            Architecture::DistilBert => "DistilBertForSequenceClassification",
        }
    }

    /// The prefix `transformers` puts before backbone weights in task checkpoints
    /// (`bert.embeddings…`, `distilbert.transformer…`).
    pub fn weight_prefix(self) -> &'static str {
        self.model_type()
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

/// The feed-forward activation (`hidden_act` / `activation`), named as `transformers` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact, erf-based GELU (what BERT and DistilBERT checkpoints use).
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// The `transformers` name written back on export.
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_new",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
        }
    }
}

impl FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(format!(
                "unsupported activation {other:?} (bertlab implements gelu, gelu_new, \
                 gelu_pytorch_tanh, relu, silu)"
            )),
        }
    }
}

/// Everything the modules need to know about a checkpoint, under architecture-neutral names.
///
/// Parsed from `config.json` by [`ModelConfig::from_file`]. Structural sizes are required (an
/// error names the missing key); hyper-parameters `transformers` gives defaults to
/// (`layer_norm_eps`, dropouts, `type_vocab_size`, …) take the same defaults here.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// BERT or DistilBERT.
    pub architecture: Architecture,
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Width of the hidden states (`hidden_size`, DistilBERT `dim`).
    pub hidden_size: usize,
    /// Encoder layers (`num_hidden_layers`, DistilBERT `n_layers`).
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`num_attention_heads`, DistilBERT `n_heads`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block (`intermediate_size`, DistilBERT `hidden_dim`).
    pub intermediate_size: usize,
    /// Longest sequence the position table covers.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (BERT; 0 for DistilBERT, which has none).
    pub type_vocab_size: usize,
    /// Feed-forward activation (`hidden_act`, DistilBERT `activation`).
    pub hidden_act: Activation,
    /// LayerNorm epsilon (BERT `layer_norm_eps`; DistilBERT hard-codes 1e-12).
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and sub-layer outputs (`hidden_dropout_prob`, DistilBERT `dropout`).
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (`attention_probs_dropout_prob` / `attention_dropout`).
    pub attention_probs_dropout_prob: f64,
    /// Dropout before the classifier: BERT `classifier_dropout`, else `hidden_dropout_prob`;
    /// DistilBERT `seq_classif_dropout`.
    pub classifier_dropout: f64,
    /// Standard deviation of the normal init of new (head) weights.
    pub initializer_range: f64,
    /// DistilBERT `sinusoidal_pos_embds`: fixed sin/cos positions when the file has none.
    pub sinusoidal_pos_embds: bool,
    /// The padding token id (`pad_token_id`, 0 for the uncased vocabularies).
    pub pad_token_id: u32,
    /// Class names in id order (`id2label`); its length is the number of labels.
    pub labels: Vec<String>,
    /// Every key of the file as read, written back on export.
    raw: Map<String, Value>,
    /// Where the config came from, for error messages.
    origin: String,
}

/// Reads keys from the JSON object, with errors that name the file and the key.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a str,
}

impl Fields<'_> {
    fn error(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::Config { path: self.origin.to_string(), key: key.to_string(), message: message.into() }
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(self.error(key, "missing (required by the model)")),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| self.error(key, format!("expected a positive integer, found {v}"))),
        }
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.error(key, format!("expected a non-negative integer, found {v}"))),
        }
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                v.as_f64().map(Some).ok_or_else(|| self.error(key, format!("expected a number, found {v}")))
            }
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    fn probability_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        let p = self.f64_or(key, default)?;
        if (0.0..1.0).contains(&p) {
            Ok(p)
        } else {
            Err(self.error(key, format!("a dropout probability must be in [0, 1), found {p}")))
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => {
                v.as_bool().ok_or_else(|| self.error(key, format!("expected true or false, found {v}")))
            }
        }
    }

    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.error(key, format!("expected a string, found {v}"))),
        }
    }

    fn activation(&self, key: &str, default: &str) -> Result<Activation, ModelError> {
        self.str_or(key, default)?.parse().map_err(|msg: String| self.error(key, msg))
    }

    /// `id2label` in id order, else `num_labels` generic names, else the `transformers`
    /// default of two labels.
    fn labels(&self) -> Result<Vec<String>, ModelError> {
        let num_labels = match self.map.get("num_labels") {
            None | Some(Value::Null) => None,
            Some(_) => Some(self.usize("num_labels")?),
        };
        let Some(id2label) = self.map.get("id2label").filter(|v| !v.is_null()) else {
            return Ok(generic_labels(num_labels.unwrap_or(2)));
        };
        let object = id2label.as_object().ok_or_else(|| {
            self.error("id2label", format!("expected an object {{\"0\": name, …}}, found {id2label}"))
        })?;
        let mut labels = vec![None; object.len()];
        for (id, name) in object {
            let index = id.parse::<usize>().ok().filter(|&i| i < object.len()).ok_or_else(|| {
                self.error("id2label", format!("ids must be 0..{}, found {id:?}", object.len()))
            })?;
            let name = name.as_str().ok_or_else(|| {
                self.error("id2label", format!("label {id:?} is {name}, expected a string"))
            })?;
            labels[index] = Some(name.to_string());
        }
        let labels: Vec<String> =
            labels.into_iter().map(|l| l.expect("ids are distinct and in range")).collect();
        if labels.is_empty() {
            return Err(self.error("id2label", "is empty; a classifier needs at least one label"));
        }
        if let Some(n) = num_labels {
            if n != labels.len() {
                return Err(self.error(
                    "num_labels",
                    format!("is {n} but id2label has {} entries; make them agree", labels.len()),
                ));
            }
        }
        Ok(labels)
    }
}

fn generic_labels(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("LABEL_{i}")).collect()
}

impl ModelConfig {
    /// Read and parse a `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        ModelConfig::from_json(&text, &path.display().to_string())
    }

    /// Parse the text of a `config.json`; `origin` (usually the path) is named in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<ModelConfig, ModelError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|source| ModelError::Json { path: PathBuf::from(origin), source })?;
        let Value::Object(raw) = value else {
            return Err(ModelError::Config {
                path: origin.to_string(),
                key: "(top level)".into(),
                message: "expected a JSON object".into(),
            });
        };
        let f = Fields { map: &raw, origin };
        let model_type = match raw.get("model_type") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(f.error("model_type", format!("expected a string, found {other}"))),
            None => return Err(f.error("model_type", "missing; expected \"bert\" or \"distilbert\"")),
        };
        let config = match model_type {
            "bert" => {
                if let Some(kind) = raw.get("position_embedding_type").and_then(Value::as_str) {
                    if kind != "absolute" {
                        return Err(f.error(
                            "position_embedding_type",
                            format!("{kind:?} is not supported (bertlab implements \"absolute\")"),
                        ));
                    }
                }
                let hidden_dropout_prob = f.probability_or("hidden_dropout_prob", 0.1)?;
                ModelConfig {
                    architecture: Architecture::Bert,
                    vocab_size: f.usize("vocab_size")?,
                    hidden_size: f.usize("hidden_size")?,
                    num_hidden_layers: f.usize("num_hidden_layers")?,
                    num_attention_heads: f.usize("num_attention_heads")?,
                    intermediate_size: f.usize("intermediate_size")?,
                    max_position_embeddings: f.usize("max_position_embeddings")?,
                    type_vocab_size: f.usize_or("type_vocab_size", 2)?,
                    hidden_act: f.activation("hidden_act", "gelu")?,
                    layer_norm_eps: f.f64_or("layer_norm_eps", 1e-12)?,
                    hidden_dropout_prob,
                    attention_probs_dropout_prob: f.probability_or("attention_probs_dropout_prob", 0.1)?,
                    classifier_dropout: f.probability_or("classifier_dropout", hidden_dropout_prob)?,
                    initializer_range: f.f64_or("initializer_range", 0.02)?,
                    sinusoidal_pos_embds: false,
                    pad_token_id: f.usize_or("pad_token_id", 0)? as u32,
                    labels: f.labels()?,
                    raw: raw.clone(),
                    origin: origin.to_string(),
                }
            }
            "distilbert" => ModelConfig {
                architecture: Architecture::DistilBert,
                vocab_size: f.usize("vocab_size")?,
                hidden_size: f.usize("dim")?,
                num_hidden_layers: f.usize("n_layers")?,
                num_attention_heads: f.usize("n_heads")?,
                intermediate_size: f.usize("hidden_dim")?,
                max_position_embeddings: f.usize("max_position_embeddings")?,
                type_vocab_size: 0,
                hidden_act: f.activation("activation", "gelu")?,
                // transformers hard-codes DistilBERT's LayerNorm epsilon.
                layer_norm_eps: 1e-12,
                hidden_dropout_prob: f.probability_or("dropout", 0.1)?,
                attention_probs_dropout_prob: f.probability_or("attention_dropout", 0.1)?,
                classifier_dropout: f.probability_or("seq_classif_dropout", 0.2)?,
                initializer_range: f.f64_or("initializer_range", 0.02)?,
                sinusoidal_pos_embds: f.bool_or("sinusoidal_pos_embds", false)?,
                pad_token_id: f.usize_or("pad_token_id", 0)? as u32,
                labels: f.labels()?,
                raw: raw.clone(),
                origin: origin.to_string(),
            },
            other => {
                return Err(ModelError::UnknownModelType {
                    path: origin.to_string(),
                    model_type: other.to_string(),
                })
            }
        };
        if config.hidden_size % config.num_attention_heads != 0 {
            let (h, n) = match config.architecture {
                Architecture::Bert => ("hidden_size", "num_attention_heads"),
                Architecture::DistilBert => ("dim", "n_heads"),
            };
            return Err(f.error(
                n,
                format!("{h} {} is not a multiple of {n} {}", config.hidden_size, config.num_attention_heads),
            ));
        }
        Ok(config)
    }

    /// Number of classes of a classifier built from this config.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Where the config was read from (a path, or the `origin` given to [`Self::from_json`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The same config with these class names (sets `num_labels`, `id2label`, `label2id`).
    ///
    /// # Panics
    /// When `labels` is empty: a classifier needs at least one class.
    pub fn with_labels<S: AsRef<str>>(mut self, labels: &[S]) -> ModelConfig {
        assert!(!labels.is_empty(), "a classifier needs at least one label");
        self.labels = labels.iter().map(|l| l.as_ref().to_string()).collect();
        self
    }

    /// The `config.json` of a sequence classifier with this config: every key read, with
    /// `architectures`, `model_type`, `num_labels`, `id2label` and `label2id` set.
    pub fn to_classifier_json(&self) -> Value {
        let mut map = self.raw.clone();
        map.insert("architectures".into(), Value::from(vec![self.architecture.classifier_class()]));
        map.insert("model_type".into(), Value::from(self.architecture.model_type()));
        let id2label: Map<String, Value> =
            self.labels.iter().enumerate().map(|(i, l)| (i.to_string(), Value::from(l.as_str()))).collect();
        let label2id: Map<String, Value> =
            self.labels.iter().enumerate().map(|(i, l)| (l.clone(), Value::from(i))).collect();
        map.insert("num_labels".into(), Value::from(self.labels.len()));
        map.insert("id2label".into(), Value::Object(id2label));
        map.insert("label2id".into(), Value::Object(label2id));
        // Keep the fields the modules use in sync with what was read (they are public and may
        // have been changed by the caller), under this architecture's key names.
        let sizes: [(&str, Value); 6] = match self.architecture {
            Architecture::Bert => [
                ("hidden_size", self.hidden_size.into()),
                ("num_hidden_layers", self.num_hidden_layers.into()),
                ("num_attention_heads", self.num_attention_heads.into()),
                ("intermediate_size", self.intermediate_size.into()),
                ("hidden_act", self.hidden_act.as_str().into()),
                ("hidden_dropout_prob", self.hidden_dropout_prob.into()),
            ],
            Architecture::DistilBert => [
                ("dim", self.hidden_size.into()),
                ("n_layers", self.num_hidden_layers.into()),
                ("n_heads", self.num_attention_heads.into()),
                ("hidden_dim", self.intermediate_size.into()),
                ("activation", self.hidden_act.as_str().into()),
                ("dropout", self.hidden_dropout_prob.into()),
            ],
        };
        for (key, value) in sizes {
            map.insert(key.into(), value);
        }
        map.insert("vocab_size".into(), self.vocab_size.into());
        map.insert("max_position_embeddings".into(), self.max_position_embeddings.into());
        match self.architecture {
            Architecture::Bert => {
                map.insert("type_vocab_size".into(), self.type_vocab_size.into());
                map.insert("layer_norm_eps".into(), self.layer_norm_eps.into());
                map.insert("attention_probs_dropout_prob".into(), self.attention_probs_dropout_prob.into());
                // Written explicitly so that the exported head's dropout is the one trained with.
                map.insert("classifier_dropout".into(), self.classifier_dropout.into());
            }
            Architecture::DistilBert => {
                map.insert("attention_dropout".into(), self.attention_probs_dropout_prob.into());
                map.insert("seq_classif_dropout".into(), self.classifier_dropout.into());
                map.insert("sinusoidal_pos_embds".into(), self.sinusoidal_pos_embds.into());
            }
        }
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: &str = r#"{"model_type": "bert", "vocab_size": 100, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 64, "custom_key": [1, 2]}"#;

    #[test]
    fn bert_defaults_follow_transformers() {
        let c = ModelConfig::from_json(BERT, "mem.json").unwrap();
        assert_eq!(c.architecture, Architecture::Bert);
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.classifier_dropout, 0.1);
        assert_eq!(c.hidden_act, Activation::Gelu);
        assert_eq!(c.labels, ["LABEL_0", "LABEL_1"]);
        assert_eq!(c.head_dim(), 8);
    }

    #[test]
    fn distilbert_keys_are_mapped() {
        let text = r#"{"model_type": "distilbert", "vocab_size": 100, "dim": 32, "n_layers": 3,
            "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 64, "activation": "gelu",
            "dropout": 0.05, "attention_dropout": 0.0, "seq_classif_dropout": 0.2,
            "id2label": {"1": "pos", "0": "neg"}}"#;
        let c = ModelConfig::from_json(text, "mem.json").unwrap();
        assert_eq!(c.architecture, Architecture::DistilBert);
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.intermediate_size), (32, 3, 64));
        assert_eq!(c.type_vocab_size, 0);
        assert_eq!((c.hidden_dropout_prob, c.classifier_dropout), (0.05, 0.2));
        assert_eq!(c.labels, ["neg", "pos"]);
    }

    #[test]
    fn unknown_model_type_is_an_error_naming_it() {
        let err = ModelConfig::from_json(r#"{"model_type": "roberta"}"#, "x/config.json").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelError::UnknownModelType { .. }), "{msg}");
        assert!(msg.contains("roberta") && msg.contains("x/config.json"), "{msg}");
    }

    #[test]
    fn missing_and_invalid_fields_name_the_key() {
        let text = BERT.replace("\"intermediate_size\": 64,", "");
        let msg = ModelConfig::from_json(&text, "c.json").unwrap_err().to_string();
        assert!(msg.contains("intermediate_size") && msg.contains("c.json"), "{msg}");
        let text = BERT.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5");
        let msg = ModelConfig::from_json(&text, "c.json").unwrap_err().to_string();
        assert!(msg.contains("num_attention_heads"), "{msg}");
        let text =
            BERT.replace("\"model_type\": \"bert\",", "\"hidden_act\": \"mish\", \"model_type\": \"bert\",");
        let msg = ModelConfig::from_json(&text, "c.json").unwrap_err().to_string();
        assert!(msg.contains("hidden_act") && msg.contains("mish"), "{msg}");
        let text = BERT.replace("}", r#", "num_labels": 3, "id2label": {"0": "a", "1": "b"}}"#);
        let msg = ModelConfig::from_json(&text, "c.json").unwrap_err().to_string();
        assert!(msg.contains("num_labels") && msg.contains("id2label"), "{msg}");
    }

    #[test]
    fn classifier_json_keeps_keys_and_sets_labels() {
        let c = ModelConfig::from_json(BERT, "mem.json").unwrap().with_labels(&["neg", "pos", "mixed"]);
        let json = c.to_classifier_json();
        assert_eq!(json["custom_key"], serde_json::json!([1, 2]));
        assert_eq!(json["architectures"], serde_json::json!(["BertForSequenceClassification"]));
        assert_eq!(json["num_labels"], 3);
        assert_eq!(json["id2label"]["2"], "mixed");
        assert_eq!(json["label2id"]["pos"], 1);
        let back = ModelConfig::from_json(&json.to_string(), "again").unwrap();
        assert_eq!(back.labels, c.labels);
        assert_eq!(back.hidden_size, c.hidden_size);
    }
}
