//! The models the benches train: DistilBERT-base and BERT-base built from their published
//! configs, or any `config.json`, randomly initialised.

use std::path::Path;
use std::str::FromStr;

use bertlab_models::{ModelConfig, TextClassifier};
use bertlab_run::ModelShape;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

/// A model to benchmark: a base architecture built in code, or any `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct ModelChoice {
    /// `distilbert-base`, `bert-base`, or the config's directory name.
    pub(crate) name: String,
    pub(crate) config: ModelConfig,
}

/// `distilbert-base-uncased`'s config.json (the sizes of the notebook's model).
const DISTILBERT_BASE: &str = r#"{"model_type": "distilbert", "vocab_size": 30522, "dim": 768,
    "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "max_position_embeddings": 512,
    "activation": "gelu", "dropout": 0.1, "attention_dropout": 0.1, "seq_classif_dropout": 0.2,
    "initializer_range": 0.02, "sinusoidal_pos_embds": false, "pad_token_id": 0}"#;

/// `bert-base-uncased`'s config.json.
const BERT_BASE: &str = r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12,
    "initializer_range": 0.02, "pad_token_id": 0}"#;

impl FromStr for ModelChoice {
    type Err = String;
    fn from_str(spec: &str) -> Result<Self, String> {
        let builtin = |name: &str, json: &str| ModelChoice {
            name: name.to_string(),
            config: ModelConfig::from_json(json, name).expect("the built-in configs are valid"),
        };
        match spec {
            "distilbert" | "distilbert-base" => Ok(builtin("distilbert-base", DISTILBERT_BASE)),
            "bert" | "bert-base" => Ok(builtin("bert-base", BERT_BASE)),
            path => {
                let path = Path::new(path);
                let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
                if !file.is_file() {
                    return Err(format!(
                        "{spec:?}: expected distilbert, bert, or the path of a config.json (or its directory)"
                    ));
                }
                let config = ModelConfig::from_file(&file).map_err(|e| e.to_string())?;
                let name = file
                    .parent()
                    .and_then(Path::file_name)
                    .map_or_else(|| spec.to_string(), |n| n.to_string_lossy().into_owned());
                Ok(ModelChoice { name, config })
            }
        }
    }
}

impl ModelChoice {
    /// The cost shape of the model with its classification head (MFU's "6N" convention).
    pub(crate) fn shape(&self) -> ModelShape {
        shape_of(&self.config)
    }
}

/// The cost shape of a classifier config, head included.
pub(crate) fn shape_of(c: &ModelConfig) -> ModelShape {
    c.shape().with_head(c.num_labels())
}

/// Forces the lazy initialisation of every parameter, so that clones of the module share one
/// set of weights (a clone of an uninitialised parameter would draw its own).
struct Materialize;

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// A randomly initialised classifier, every weight drawn now from `seed`.
pub(crate) fn random_classifier<B: AutodiffBackend>(
    config: &ModelConfig,
    seed: u64,
    device: &B::Device,
) -> TextClassifier<B> {
    B::seed(device, seed);
    bertlab_models::ops::seed_dropout(seed);
    let model = TextClassifier::<B>::random(config.clone(), device);
    model.visit(&mut Materialize);
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use bertlab_models::Architecture;

    #[test]
    fn base_configs_have_the_published_sizes() {
        let d: ModelChoice = "distilbert".parse().unwrap();
        let b: ModelChoice = "bert".parse().unwrap();
        assert_eq!(d.config.architecture, Architecture::DistilBert);
        assert_eq!(
            (d.config.hidden_size, d.config.num_hidden_layers, d.config.intermediate_size),
            (768, 6, 3072)
        );
        assert_eq!(
            (b.config.num_hidden_layers, b.config.type_vocab_size, b.config.vocab_size),
            (12, 2, 30522)
        );
        // 6 layers × (4·768² + 2·768·3072) + pre_classifier 768² + classifier 768·2.
        assert_eq!(d.shape().matmul_params(), 6 * (4 * 589_824 + 2 * 2_359_296) + 589_824 + 1536);
        assert_eq!(b.shape().matmul_params(), 12 * (4 * 589_824 + 2 * 2_359_296) + 589_824 + 1536);
        assert!("gpt2".parse::<ModelChoice>().unwrap_err().contains("config.json"));
    }

    #[test]
    fn flops_formula() {
        let d: ModelChoice = "distilbert".parse().unwrap();
        // One row of 128 tokens: 6N·128 + 12·6·768·128².
        let want = 6.0 * d.shape().matmul_params() as f64 * 128.0 + 12.0 * 6.0 * 768.0 * 128.0 * 128.0;
        assert_eq!(d.shape().train_flops(128, 128 * 128), want);
    }
}
