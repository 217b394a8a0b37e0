//! BERT (Devlin et al., 2019) as `transformers` names it: `BertModel` and
//! `BertForSequenceClassification`.
//!
//! The math is the shared [`Backbone`](crate::encoder::Backbone); this file maps it onto the
//! checkpoint names. Backbone tensors carry a `bert.` prefix in task and pre-training
//! checkpoints and none in a bare `BertModel` file (e.g. all-MiniLM-L6-v2); LayerNorms are
//! `LayerNorm.weight/bias` or, in the original uploads, `LayerNorm.gamma/beta`. The
//! pre-training heads (`cls.predictions.*`, `cls.seq_relationship.*`) are not used.

use burn::tensor::backend::Backend;

use crate::encoder::Backbone;
use crate::error::ModelError;
use crate::weights::{
    visit_embedding, visit_fused_linear, visit_layer_norm, visit_linear, ParamVisitor, Scope,
};

/// Visit every backbone parameter under its `BertModel` name; the pooler (when the backbone
/// has one) in `pooler_scope`.
pub(crate) fn visit_backbone<B: Backend, V: ParamVisitor<B>>(
    backbone: &mut Backbone<B>,
    pooler_scope: Scope,
    v: &mut V,
) -> Result<(), ModelError> {
    let s = Scope::Backbone;
    let e = &mut backbone.embeddings;
    visit_embedding(v, "embeddings.word_embeddings", s, &mut e.word_embeddings)?;
    visit_embedding(v, "embeddings.position_embeddings", s, &mut e.position_embeddings)?;
    if let Some(types) = e.token_type_embeddings.as_mut() {
        visit_embedding(v, "embeddings.token_type_embeddings", s, types)?;
    }
    visit_layer_norm(v, "embeddings.LayerNorm", s, &mut e.layer_norm)?;
    for (i, layer) in backbone.layers.iter_mut().enumerate() {
        let p = format!("encoder.layer.{i}");
        let qkv = ["query", "key", "value"].map(|n| format!("{p}.attention.self.{n}"));
        visit_fused_linear(v, &qkv, s, &mut layer.qkv)?;
        visit_linear(v, &format!("{p}.attention.output.dense"), s, &mut layer.attention_output)?;
        visit_layer_norm(v, &format!("{p}.attention.output.LayerNorm"), s, &mut layer.attention_norm)?;
        visit_linear(v, &format!("{p}.intermediate.dense"), s, &mut layer.intermediate)?;
        visit_linear(v, &format!("{p}.output.dense"), s, &mut layer.output)?;
        visit_layer_norm(v, &format!("{p}.output.LayerNorm"), s, &mut layer.output_norm)?;
    }
    if let Some(pooler) = backbone.pooler.as_mut() {
        visit_linear(v, "pooler.dense", pooler_scope, pooler)?;
    }
    Ok(())
}

/// The name of the pooler weight, to decide whether an encoder file has one.
pub(crate) const POOLER_WEIGHT: &str = "pooler.dense.weight";
