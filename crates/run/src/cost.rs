//! The FLOPs of BERT-family encoders: one definition for the benchmarks' MFU, the pipeline's
//! time estimates and the PyTorch baseline's table rows.
//!
//! Per token and layer, the Q, K, V and output projections are 4·d² multiply-adds and the
//! feed-forward 2·d·i: the encoder's matmul parameters are N = L·(4d² + 2d·i). A forward pass
//! costs 2N FLOPs per token plus attention's two products (QKᵀ and P·V), 2·2·L·d·s per token at
//! sequence length s; backward costs twice the forward, so training costs 6N per token plus
//! 12·L·d·s. Embedding lookups do no matmul. A classification head (BERT's pooler or
//! DistilBERT's pre-classifier, d², and the classifier, d·k) is counted per token too when the
//! shape has one, as the "6N" convention of MFU tables does; time estimates leave it out (it
//! is under 1.5 % of DistilBERT-base's work).

use serde::{Deserialize, Serialize};

/// The dimensions that set an encoder's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Transformer layers.
    pub layers: usize,
    /// Hidden width d.
    pub hidden: usize,
    /// Feed-forward width i.
    pub intermediate: usize,
    /// Classes of a classification head counted in N, if any.
    #[serde(default)]
    pub head_classes: Option<usize>,
}

impl ModelShape {
    /// BERT-base: 12 × 768 × 3072.
    pub const BERT_BASE: ModelShape =
        ModelShape { layers: 12, hidden: 768, intermediate: 3072, head_classes: None };
    /// DistilBERT-base: 6 × 768 × 3072.
    pub const DISTILBERT_BASE: ModelShape =
        ModelShape { layers: 6, hidden: 768, intermediate: 3072, head_classes: None };

    /// The same shape with a head of `classes` counted.
    pub fn with_head(self, classes: usize) -> ModelShape {
        ModelShape { head_classes: Some(classes), ..self }
    }

    /// N: multiply-adds per token of the matrix products, L·(4d² + 2d·i), plus d² + d·k for a
    /// head of k classes.
    pub fn matmul_params(&self) -> u64 {
        let (l, d, i) = (self.layers as u64, self.hidden as u64, self.intermediate as u64);
        let head = self.head_classes.map_or(0, |k| d * d + d * k as u64);
        l * (4 * d * d + 2 * d * i) + head
    }

    /// Forward FLOPs of one token in a sequence of `len` tokens: 2N + 4·L·d·len.
    pub fn forward_flops_per_token(&self, len: f64) -> f64 {
        2.0 * self.matmul_params() as f64 + 4.0 * self.layers as f64 * self.hidden as f64 * len
    }

    /// Forward FLOPs of one sequence of `len` tokens.
    pub fn forward_flops(&self, len: f64) -> f64 {
        len * self.forward_flops_per_token(len)
    }

    /// Training FLOPs (forward + backward = 3 × forward) of batches holding `padded_tokens`
    /// tokens in all and `attn_sq_tokens` = Σ rows × len² (what attention scales with).
    pub fn train_flops(&self, padded_tokens: u64, attn_sq_tokens: u64) -> f64 {
        6.0 * self.matmul_params() as f64 * padded_tokens as f64
            + 12.0 * self.layers as f64 * self.hidden as f64 * attn_sq_tokens as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_base_costs() {
        // 12 layers × 128 tokens × (8·768² + 4·768·3072 + 4·128·768) = 22.35 GFLOP.
        assert_eq!(ModelShape::BERT_BASE.forward_flops(128.0), 22_347_251_712.0);
        assert_eq!(ModelShape::BERT_BASE.matmul_params(), 84_934_656);
        // Training is three forwards: one row of 128 tokens.
        let train = ModelShape::BERT_BASE.train_flops(128, 128 * 128);
        assert_eq!(train, 3.0 * ModelShape::BERT_BASE.forward_flops(128.0));
        // Reading a config.json's shape is bertlab-model-config's (ModelConfig::shape, and
        // ConfigSizes::shape for partial files; tested there).
        // DistilBERT-base with its 2-class head: pre_classifier 768² + classifier 768·2.
        let d = ModelShape::DISTILBERT_BASE.with_head(2);
        assert_eq!(d.matmul_params(), 6 * (4 * 589_824 + 2 * 2_359_296) + 589_824 + 1536);
    }
}
