//! The encoder families bertlab implements, their activations, and the one table of which
//! `config.json` key holds which size in each family (BERT's `hidden_size` is DistilBERT's `dim`).

use std::fmt;
use std::str::FromStr;

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

/// The `config.json` keys of the quantities BERT and DistilBERT name differently.
///
/// The one place that knows these names: the strict reader ([`crate::ModelConfig`]), the export
/// ([`crate::ModelConfig::to_classifier_json`]) and the lenient one ([`crate::ConfigSizes`]) all
/// look them up here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyKeys {
    /// Width of the hidden states: `hidden_size` / `dim`.
    pub hidden: &'static str,
    /// Encoder layers: `num_hidden_layers` / `n_layers`.
    pub layers: &'static str,
    /// Attention heads per layer: `num_attention_heads` / `n_heads`.
    pub heads: &'static str,
    /// Width of the feed-forward block: `intermediate_size` / `hidden_dim`.
    pub intermediate: &'static str,
    /// Feed-forward activation: `hidden_act` / `activation`.
    pub activation: &'static str,
    /// Dropout on embeddings and sub-layer outputs: `hidden_dropout_prob` / `dropout`.
    pub dropout: &'static str,
}

impl Architecture {
    /// Every family, BERT first (the order the lenient reader tries their keys in).
    pub const ALL: [Architecture; 2] = [Architecture::Bert, Architecture::DistilBert];

    /// The key names this family's `config.json` uses.
    pub fn keys(self) -> FamilyKeys {
        match self {
            Architecture::Bert => FamilyKeys {
                hidden: "hidden_size",
                layers: "num_hidden_layers",
                heads: "num_attention_heads",
                intermediate: "intermediate_size",
                activation: "hidden_act",
                dropout: "hidden_dropout_prob",
            },
            Architecture::DistilBert => FamilyKeys {
                hidden: "dim",
                layers: "n_layers",
                heads: "n_heads",
                intermediate: "hidden_dim",
                activation: "activation",
                dropout: "dropout",
            },
        }
    }
}
