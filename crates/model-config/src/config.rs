//! The model configuration, read from (and written back to) a Hugging Face `config.json`.
//!
//! BERT and DistilBERT name the same quantities differently (`hidden_size` vs `dim`,
//! `num_hidden_layers` vs `n_layers`, …). [`ModelConfig`] holds them under one set of names, and
//! keeps every original key so that an export writes back the file it read, plus the labels.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::architecture::{Activation, Architecture};
use crate::error::ConfigError;
use bertlab_run::format::abbreviate;
use bertlab_run::ModelShape;

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
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Key { path: self.origin.to_string(), key: key.to_string(), message: message.into() }
    }

    fn usize(&self, key: &str) -> Result<usize, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(self.error(key, "missing (required by the model)")),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| self.error(key, format!("expected a positive integer, found {v}"))),
        }
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.error(key, format!("expected a non-negative integer, found {v}"))),
        }
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                v.as_f64().map(Some).ok_or_else(|| self.error(key, format!("expected a number, found {v}")))
            }
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    fn probability_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let p = self.f64_or(key, default)?;
        if (0.0..1.0).contains(&p) {
            Ok(p)
        } else {
            Err(self.error(key, format!("a dropout probability must be in [0, 1), found {p}")))
        }
    }

    /// A finite number above 0 (an epsilon, a standard deviation).
    fn positive_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let x = self.f64_or(key, default)?;
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(self.error(key, format!("must be a positive number, found {x}")))
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => {
                v.as_bool().ok_or_else(|| self.error(key, format!("expected true or false, found {v}")))
            }
        }
    }

    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str, ConfigError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.error(key, format!("expected a string, found {v}"))),
        }
    }

    fn activation(&self, key: &str, default: &str) -> Result<Activation, ConfigError> {
        self.str_or(key, default)?.parse().map_err(|msg: String| self.error(key, msg))
    }

    /// A required size key within `limit`.
    fn size(&self, key: &str, limit: Limit) -> Result<usize, ConfigError> {
        let n = self.usize(key)?;
        limit.check(n).map_err(|message| self.error(key, message))
    }

    /// An optional size key within `limit`.
    fn size_or(&self, key: &str, default: usize, limit: Limit) -> Result<usize, ConfigError> {
        let n = self.usize_or(key, default)?;
        limit.check(n).map_err(|message| self.error(key, message))
    }

    /// An optional token id (default 0); whether it is in the vocabulary is checked later.
    fn token_id(&self, key: &str) -> Result<u32, ConfigError> {
        let id = self.usize_or(key, 0)?;
        u32::try_from(id).map_err(|_| self.error(key, format!("{id} is not a token id (ids are 32-bit)")))
    }

    /// `id2label` in id order, else `num_labels` generic names, else the `transformers`
    /// default of two labels; checked against `label2id` when the file has one.
    ///
    /// `transformers` turns the ids into numbers with `int(key)`, so `"0"` and `"00"` silently
    /// collapse into one class and ids with a gap leave a class without a name; here each of
    /// those is an error naming the ids.
    fn labels(&self) -> Result<Vec<String>, ConfigError> {
        let num_labels = match self.map.get("num_labels") {
            None | Some(Value::Null) => None,
            Some(_) => Some(self.size("num_labels", LABELS)?),
        };
        let labels = match self.map.get("id2label").filter(|v| !v.is_null()) {
            None => generic_labels(num_labels.unwrap_or(2)),
            Some(id2label) => {
                let labels = self.id2label(id2label)?;
                if let Some(n) = num_labels {
                    if n != labels.len() {
                        return Err(self.error(
                            "num_labels",
                            format!("is {n} but id2label has {} entries; make them agree", labels.len()),
                        ));
                    }
                }
                labels
            }
        };
        if let Some(label2id) = self.map.get("label2id").filter(|v| !v.is_null()) {
            self.check_label2id(label2id, &labels)?;
        }
        Ok(labels)
    }

    fn id2label(&self, id2label: &Value) -> Result<Vec<String>, ConfigError> {
        let bad = |message: String| self.error("id2label", message);
        let object = id2label
            .as_object()
            .ok_or_else(|| bad(format!("expected an object {{\"0\": name, …}}, found {id2label}")))?;
        if object.is_empty() {
            return Err(bad("is empty; a classifier needs at least one label".into()));
        }
        LABELS.check(object.len()).map_err(|m| bad(format!("has {} entries: {m}", object.len())))?;
        let mut by_id: BTreeMap<u64, (&str, &str)> = BTreeMap::new();
        for (key, name) in object {
            let id = parse_class_id(key).map_err(|why| bad(format!("id {key:?} {why}")))?;
            let name =
                name.as_str().ok_or_else(|| bad(format!("label {key:?} is {name}, expected a string")))?;
            if let Some((other, _)) = by_id.insert(id, (key, name)) {
                return Err(bad(format!(
                    "ids {other:?} and {key:?} both stand for class {id}; give each class exactly one id"
                )));
            }
        }
        let n = by_id.len();
        if let Some(missing) = by_id.keys().zip(0u64..).find_map(|(&id, want)| (id != want).then_some(want)) {
            let found: Vec<String> = by_id.values().map(|(key, _)| format!("{key:?}")).collect();
            return Err(bad(format!(
                "has no id {missing}: {n} classes need the ids 0 to {}, none skipped; found {}",
                n - 1,
                abbreviate(&found)
            )));
        }
        let mut ids_of_name: HashMap<&str, &str> = HashMap::new();
        for (key, name) in by_id.values() {
            if let Some(first) = ids_of_name.insert(name, key) {
                return Err(bad(format!(
                    "ids {first:?} and {key:?} are both named {name:?}; class names must differ \
                     (label2id maps each name back to one id)"
                )));
            }
        }
        Ok(by_id.into_values().map(|(_, name)| name.to_string()).collect())
    }

    /// `label2id` must be the inverse of the labels: same names, same ids.
    fn check_label2id(&self, label2id: &Value, labels: &[String]) -> Result<(), ConfigError> {
        let bad = |message: String| self.error("label2id", message);
        let object = label2id
            .as_object()
            .ok_or_else(|| bad(format!("expected an object {{name: id, …}}, found {label2id}")))?;
        let from_id2label = if self.map.get("id2label").is_some_and(|v| !v.is_null()) {
            "id2label".to_string()
        } else {
            format!("the default labels {} (the file has no id2label)", abbreviate(labels))
        };
        for (name, id) in object {
            let id_number = id.as_u64().ok_or_else(|| {
                bad(format!("maps {name:?} to {id}; ids are the integers 0..{}", labels.len() - 1))
            })?;
            match usize::try_from(id_number).ok().and_then(|i| labels.get(i)) {
                Some(label) if label == name => {}
                Some(label) => {
                    return Err(bad(format!(
                        "maps {name:?} to {id_number}, but class {id_number} is {label:?} in \
                         {from_id2label}; make the two agree (label2id is rebuilt from id2label on \
                         export, so dropping it is safe)"
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "maps {name:?} to {id_number}, but {from_id2label} has only {} classes; make the \
                         two agree",
                        labels.len()
                    )))
                }
            }
        }
        if object.len() != labels.len() {
            let missing: Vec<&String> = labels.iter().filter(|l| !object.contains_key(l.as_str())).collect();
            return Err(bad(format!(
                "has {} entries but {from_id2label} has {} classes (no entry for {}); make the two agree",
                object.len(),
                labels.len(),
                abbreviate(&missing)
            )));
        }
        Ok(())
    }
}

/// A class id written as a JSON object key: decimal digits only.
fn parse_class_id(key: &str) -> Result<u64, &'static str> {
    if let Some(rest) = key.strip_prefix('-') {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err("is negative; class ids are 0, 1, 2, …");
        }
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a class id; ids are the integers 0, 1, 2, … written as strings");
    }
    key.parse().map_err(|_| "is too large to be a class id")
}

/// The largest value a size key may take, and why: checked when the config is read, before
/// any table is sized by it.
#[derive(Debug, Clone, Copy)]
struct Limit {
    max: usize,
    why: &'static str,
}

impl Limit {
    fn check(self, n: usize) -> Result<usize, String> {
        if n <= self.max {
            Ok(n)
        } else {
            Err(format!("{n} is above the limit of {} ({}); check config.json", self.max, self.why))
        }
    }
}

// Each bound is several times the largest BERT-family checkpoint published, so no real model is
// refused, while a typo or a hostile file cannot make the loader ask for terabytes (and abort).
const VOCAB: Limit =
    Limit { max: 1 << 20, why: "the largest BERT-family vocabularies hold about 250,000 tokens" };
const HIDDEN: Limit = Limit { max: 16_384, why: "BERT-large is 1,024 wide, the widest encoders 4,096" };
const INTERMEDIATE: Limit =
    Limit { max: 65_536, why: "feed-forward blocks are 4 times the width, which is at most 16,384" };
const LAYERS: Limit = Limit { max: 256, why: "BERT-large has 24 layers, the deepest encoders 48" };
const HEADS: Limit = Limit { max: 16_384, why: "heads divide the width, at most 16,384" };
const POSITIONS: Limit = Limit { max: 65_536, why: "long-context BERT-family models cover 8,192 positions" };
const TOKEN_TYPES: Limit = Limit { max: 1_024, why: "BERT has 2 token types" };
const LABELS: Limit = Limit {
    max: bertlab_run::MAX_CLASSES,
    why: "bertlab_run::MAX_CLASSES, sized for k × k confusion matrices",
};

/// The most values one parameter table may hold (2³¹, 8 GiB in f32): two sizes each within
/// their bound can still multiply into a table no machine holds.
const MAX_TABLE_VALUES: usize = 1 << 31;

fn generic_labels(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("LABEL_{i}")).collect()
}

impl ModelConfig {
    /// Read and parse a `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        ModelConfig::from_json(&text, &path.display().to_string())
    }

    /// Parse the text of a `config.json`; `origin` (usually the path) is named in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<ModelConfig, ConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|source| ConfigError::Json { path: PathBuf::from(origin), source })?;
        let Value::Object(raw) = value else {
            return Err(ConfigError::Key {
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
                let k = Architecture::Bert.keys();
                let hidden_dropout_prob = f.probability_or(k.dropout, 0.1)?;
                ModelConfig {
                    architecture: Architecture::Bert,
                    vocab_size: f.size("vocab_size", VOCAB)?,
                    hidden_size: f.size(k.hidden, HIDDEN)?,
                    num_hidden_layers: f.size(k.layers, LAYERS)?,
                    num_attention_heads: f.size(k.heads, HEADS)?,
                    intermediate_size: f.size(k.intermediate, INTERMEDIATE)?,
                    max_position_embeddings: f.size("max_position_embeddings", POSITIONS)?,
                    type_vocab_size: f.size_or("type_vocab_size", 2, TOKEN_TYPES)?,
                    hidden_act: f.activation(k.activation, "gelu")?,
                    layer_norm_eps: f.positive_or("layer_norm_eps", 1e-12)?,
                    hidden_dropout_prob,
                    attention_probs_dropout_prob: f.probability_or("attention_probs_dropout_prob", 0.1)?,
                    classifier_dropout: f.probability_or("classifier_dropout", hidden_dropout_prob)?,
                    initializer_range: f.f64_or("initializer_range", 0.02)?,
                    sinusoidal_pos_embds: false,
                    pad_token_id: f.token_id("pad_token_id")?,
                    labels: f.labels()?,
                    raw: raw.clone(),
                    origin: origin.to_string(),
                }
            }
            "distilbert" => {
                let k = Architecture::DistilBert.keys();
                ModelConfig {
                    architecture: Architecture::DistilBert,
                    vocab_size: f.size("vocab_size", VOCAB)?,
                    hidden_size: f.size(k.hidden, HIDDEN)?,
                    num_hidden_layers: f.size(k.layers, LAYERS)?,
                    num_attention_heads: f.size(k.heads, HEADS)?,
                    intermediate_size: f.size(k.intermediate, INTERMEDIATE)?,
                    max_position_embeddings: f.size("max_position_embeddings", POSITIONS)?,
                    type_vocab_size: 0,
                    hidden_act: f.activation(k.activation, "gelu")?,
                    // transformers hard-codes DistilBERT's LayerNorm epsilon.
                    layer_norm_eps: 1e-12,
                    hidden_dropout_prob: f.probability_or(k.dropout, 0.1)?,
                    attention_probs_dropout_prob: f.probability_or("attention_dropout", 0.1)?,
                    classifier_dropout: f.probability_or("seq_classif_dropout", 0.2)?,
                    initializer_range: f.f64_or("initializer_range", 0.02)?,
                    sinusoidal_pos_embds: f.bool_or("sinusoidal_pos_embds", false)?,
                    pad_token_id: f.token_id("pad_token_id")?,
                    labels: f.labels()?,
                    raw: raw.clone(),
                    origin: origin.to_string(),
                }
            }
            other => {
                return Err(ConfigError::UnknownModelType {
                    path: origin.to_string(),
                    model_type: other.to_string(),
                })
            }
        };
        config.check_consistency(&f)?;
        Ok(config)
    }

    /// What no single key can say: heads divide the width, the padding id is a token, BERT has
    /// a token type 0, and no table is absurdly large.
    fn check_consistency(&self, f: &Fields<'_>) -> Result<(), ConfigError> {
        let bert = self.architecture == Architecture::Bert;
        let keys = self.architecture.keys();
        let (hidden, heads, intermediate) = (keys.hidden, keys.heads, keys.intermediate);
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(f.error(
                heads,
                format!(
                    "{hidden} {} is not a multiple of {heads} {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(f.error(
                "pad_token_id",
                format!(
                    "{} is not a token of a vocabulary of vocab_size {} (ids 0..{})",
                    self.pad_token_id,
                    self.vocab_size,
                    self.vocab_size - 1
                ),
            ));
        }
        if bert && self.type_vocab_size == 0 {
            return Err(f.error(
                "type_vocab_size",
                "is 0, but BERT adds the embedding of token type 0 to every token; use 1 or more \
                 (transformers fails on 0 too)",
            ));
        }
        let tables = [
            ("vocab_size", self.vocab_size, "embeddings.word_embeddings"),
            ("max_position_embeddings", self.max_position_embeddings, "embeddings.position_embeddings"),
            (intermediate, self.intermediate_size, "the feed-forward weights"),
        ];
        for (key, rows, table) in tables {
            let values = rows.saturating_mul(self.hidden_size);
            if values > MAX_TABLE_VALUES {
                return Err(f.error(
                    key,
                    format!(
                        "{key} {rows} × {hidden} {} = {values} values in {table}, above the limit of \
                         2^31 (8 GiB of f32) for one table; check config.json",
                        self.hidden_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of classes of a classifier built from this config.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// The dimensions that set this encoder's cost (no classification head counted; add one
    /// with [`ModelShape::with_head`]).
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            layers: self.num_hidden_layers,
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            head_classes: None,
        }
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
        let k = self.architecture.keys();
        let sizes: [(&str, Value); 6] = [
            (k.hidden, self.hidden_size.into()),
            (k.layers, self.num_hidden_layers.into()),
            (k.heads, self.num_attention_heads.into()),
            (k.intermediate, self.intermediate_size.into()),
            (k.activation, self.hidden_act.as_str().into()),
            (k.dropout, self.hidden_dropout_prob.into()),
        ];
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

/// Check that a tokenizer fits the model of `config`: every id it can produce has a row in the
/// word-embedding table.
///
/// `tokenizer_id_bound` is one more than the largest id the tokenizer produces, added tokens
/// included (`bertlab_tokenize::WordPieceTokenizer::id_bound`); `tokenizer_file` is the file it
/// was built from (`WordPieceTokenizer::source`), named in the error. A tokenizer whose ids
/// reach past `vocab_size` belongs to another model: on the CPU its first such token would
/// panic in the embedding lookup, on a GPU it would read whatever memory follows the table.
/// Call this wherever a model and a tokenizer are loaded together, before encoding anything.
pub fn check_tokenizer_fits(
    config: &ModelConfig,
    tokenizer_id_bound: usize,
    tokenizer_file: &Path,
) -> Result<(), ConfigError> {
    if tokenizer_id_bound > config.vocab_size {
        return Err(ConfigError::TokenizerDoesNotFit {
            tokenizer: tokenizer_file.to_path_buf(),
            id_bound: tokenizer_id_bound,
            config: config.origin.clone(),
            vocab_size: config.vocab_size,
        });
    }
    Ok(())
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
        assert!(matches!(err, ConfigError::UnknownModelType { .. }), "{msg}");
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
        // An epsilon that would make every LayerNorm NaN (√ of a negative variance + ε).
        for eps in ["-1.0", "0.0"] {
            let text = BERT.replace('}', &format!(", \"layer_norm_eps\": {eps}}}"));
            let msg = ModelConfig::from_json(&text, "c.json").unwrap_err().to_string();
            assert!(
                msg.contains("c.json") && msg.contains("`layer_norm_eps`") && msg.contains("positive"),
                "{msg}"
            );
        }
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

    /// The error for `BERT` with `extra` keys added (`"key": value, …`).
    fn error_with(extra: &str) -> String {
        let text = BERT.replace('}', &format!(", {extra}}}"));
        let err = ModelConfig::from_json(&text, "m/config.json").expect_err(extra);
        assert!(matches!(err, ConfigError::Key { .. }), "{err}");
        err.to_string()
    }

    #[test]
    fn id2label_ids_that_collapse_skip_or_are_not_numbers_are_errors() {
        let cases = [
            (r#""id2label": {"0": "neg", "00": "pos"}"#, r#"ids "0" and "00" both stand for class 0"#),
            (r#""id2label": {"0": "neg", "+1": "pos"}"#, r#"id "+1" is not a class id"#),
            (r#""id2label": {"0": "neg", "one": "pos"}"#, r#"id "one" is not a class id"#),
            (r#""id2label": {"0": "neg", " 1": "pos"}"#, r#"id " 1" is not a class id"#),
            (r#""id2label": {"0": "neg", "-1": "pos"}"#, r#"id "-1" is negative"#),
            (
                r#""id2label": {"0": "neg", "2": "pos"}"#,
                r#"has no id 1: 2 classes need the ids 0 to 1, none skipped; found "0", "2""#,
            ),
            (r#""id2label": {"1000000000000": "x"}"#, "has no id 0"),
            (r#""id2label": {"0": "neg", "99999999999999999999999": "pos"}"#, "too large"),
            (r#""id2label": {"0": "same", "1": "same"}"#, r#"ids "0" and "1" are both named "same""#),
            (r#""id2label": {"0": "neg", "1": 1}"#, r#"label "1" is 1, expected a string"#),
            (r#""id2label": {}"#, "is empty"),
            (r#""id2label": ["neg", "pos"]"#, "expected an object"),
        ];
        for (extra, want) in cases {
            let msg = error_with(extra);
            assert!(msg.starts_with("m/config.json: key `id2label`: "), "{extra}: {msg}");
            assert!(msg.contains(want), "{extra}: {msg}");
        }
    }

    #[test]
    fn label2id_must_invert_the_labels() {
        let id2label = r#""id2label": {"0": "neg", "1": "pos"}"#;
        let ok = BERT.replace('}', &format!(r#", {id2label}, "label2id": {{"pos": 1, "neg": 0}}}}"#));
        assert_eq!(ModelConfig::from_json(&ok, "m").unwrap().labels, ["neg", "pos"]);
        // The default labels with the label2id transformers writes for them.
        let ok = BERT.replace('}', r#", "label2id": {"LABEL_0": 0, "LABEL_1": 1}}"#);
        assert_eq!(ModelConfig::from_json(&ok, "m").unwrap().labels, ["LABEL_0", "LABEL_1"]);

        let cases = [
            (
                format!(r#"{id2label}, "label2id": {{"neg": 1, "pos": 0}}"#),
                r#"maps "neg" to 1, but class 1 is "pos" in id2label; make the two agree"#,
            ),
            (
                format!(r#"{id2label}, "label2id": {{"neg": 0}}"#),
                "has 1 entries but id2label has 2 classes (no entry for pos)",
            ),
            (format!(r#"{id2label}, "label2id": {{"neg": 0, "pos": 1, "mixed": 2}}"#), "has only 2 classes"),
            (
                format!(r#"{id2label}, "label2id": {{"neg": "0", "pos": 1}}"#),
                r#"maps "neg" to "0"; ids are the integers 0..1"#,
            ),
            (
                r#""label2id": {"neg": 0, "pos": 1}"#.to_string(),
                r#"maps "neg" to 0, but class 0 is "LABEL_0" in the default labels LABEL_0, LABEL_1 (the file has no id2label)"#,
            ),
        ];
        for (extra, want) in cases {
            let msg = error_with(&extra);
            assert!(msg.starts_with("m/config.json: key `label2id`: "), "{extra}: {msg}");
            assert!(msg.contains(want), "{extra}: {msg}");
        }
    }

    #[test]
    fn label_counts_are_bounded_before_anything_is_allocated() {
        let msg = error_with(r#""num_labels": 1000000000000"#);
        assert!(msg.contains("key `num_labels`: 1000000000000 is above the limit of 10000"), "{msg}");
        let many: Vec<String> = (0..=bertlab_run::MAX_CLASSES).map(|i| format!(r#""{i}": "c{i}""#)).collect();
        let msg = error_with(&format!(r#""id2label": {{{}}}"#, many.join(", ")));
        assert!(
            msg.contains("key `id2label`: has 10001 entries: 10001 is above the limit of 10000"),
            "{msg}"
        );
        let c = ModelConfig::from_json(&BERT.replace('}', r#", "num_labels": 10000}"#), "m").unwrap();
        assert_eq!((c.num_labels(), c.labels[9_999].as_str()), (10_000, "LABEL_9999"));
    }

    #[test]
    fn every_size_key_is_bounded_and_named() {
        let distilbert = r#"{"model_type": "distilbert", "vocab_size": 100, "dim": 32, "n_layers": 2,
            "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 64}"#;
        assert!(ModelConfig::from_json(distilbert, "d").is_ok());
        let keys = [
            (BERT, "vocab_size", "100"),
            (BERT, "hidden_size", "32"),
            (BERT, "num_hidden_layers", "2"),
            (BERT, "num_attention_heads", "4"),
            (BERT, "intermediate_size", "64"),
            (BERT, "max_position_embeddings", "64"),
            (distilbert, "vocab_size", "100"),
            (distilbert, "dim", "32"),
            (distilbert, "n_layers", "2"),
            (distilbert, "n_heads", "4"),
            (distilbert, "hidden_dim", "64"),
            (distilbert, "max_position_embeddings", "64"),
        ];
        for (base, key, value) in keys {
            let from = format!("\"{key}\": {value}");
            assert!(base.contains(&from), "{key}");
            let text = base.replace(&from, &format!("\"{key}\": 1000000000000"));
            let msg = ModelConfig::from_json(&text, "x.json").unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("x.json: key `{key}`: 1000000000000 is above the limit of ")),
                "{key}: {msg}"
            );
        }
        let msg = error_with(r#""type_vocab_size": 1000000000000"#);
        assert!(msg.contains("key `type_vocab_size`: 1000000000000 is above the limit of 1024"), "{msg}");
    }

    #[test]
    fn sizes_within_bounds_that_multiply_into_an_absurd_table_are_errors() {
        let text = BERT
            .replace("\"vocab_size\": 100", "\"vocab_size\": 1000000")
            .replace("\"hidden_size\": 32", "\"hidden_size\": 16384");
        let msg = ModelConfig::from_json(&text, "x.json").unwrap_err().to_string();
        assert!(
            msg.contains(
                "key `vocab_size`: vocab_size 1000000 × hidden_size 16384 = 16384000000 values in \
                          embeddings.word_embeddings, above the limit of 2^31"
            ),
            "{msg}"
        );
    }

    #[test]
    fn pad_token_type_vocab_and_heads_must_fit_the_model() {
        let msg = error_with(r#""pad_token_id": 100"#);
        assert!(
            msg.contains("key `pad_token_id`: 100 is not a token of a vocabulary of vocab_size 100"),
            "{msg}"
        );
        let msg = error_with(r#""pad_token_id": 1099511627776"#);
        assert!(msg.contains("key `pad_token_id`: 1099511627776 is not a token id"), "{msg}");
        let msg = error_with(r#""type_vocab_size": 0"#);
        assert!(msg.contains("key `type_vocab_size`: is 0"), "{msg}");
        let text = BERT.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 64");
        let msg = ModelConfig::from_json(&text, "x.json").unwrap_err().to_string();
        assert!(msg.contains("key `num_attention_heads`: hidden_size 32 is not a multiple of"), "{msg}");
    }

    #[test]
    fn a_tokenizer_with_ids_past_vocab_size_does_not_fit() {
        let c = ModelConfig::from_json(BERT, "model/config.json").unwrap();
        let tokenizer = Path::new("tok/tokenizer.json");
        check_tokenizer_fits(&c, 100, tokenizer).unwrap();
        check_tokenizer_fits(&c, 90, tokenizer).unwrap();
        let err = check_tokenizer_fits(&c, 30_522, tokenizer).unwrap_err();
        assert!(matches!(err, ConfigError::TokenizerDoesNotFit { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "tok/tokenizer.json: the tokenizer's ids reach 30521, but model/config.json has vocab_size \
             100 (ids 0..99); the tokenizer does not belong to this model: use the tokenizer saved with \
             the model, or a model whose vocabulary covers this tokenizer"
        );
    }
}
