//! DistilBERT (Sanh et al., 2019) as `transformers` names it: `DistilBertModel` and
//! `DistilBertForSequenceClassification`.
//!
//! The math is the shared [`Backbone`](crate::encoder::Backbone) with no token-type
//! embeddings, no pooler and no dropout after the attention projection; this file maps it
//! onto the checkpoint names. Backbone tensors carry a `distilbert.` prefix in task and
//! masked-LM checkpoints; the masked-LM head (`vocab_transform`, `vocab_layer_norm`,
//! `vocab_projector`) is not used.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::TensorData;

use crate::encoder::Backbone;
use crate::error::ModelError;
use crate::weights::{
    visit_embedding, visit_fused_linear, visit_layer_norm, visit_linear, Layout, ParamVisitor, Scope,
};

/// Visit every backbone parameter under its `DistilBertModel` name.
///
/// With `sinusoidal_pos_embds` the position table may be absent from the file: the backbone
/// then keeps the fixed sin/cos table it was built with ([`sinusoidal_positions`]).
pub(crate) fn visit_backbone<B: Backend, V: ParamVisitor<B>>(
    backbone: &mut Backbone<B>,
    sinusoidal: bool,
    v: &mut V,
) -> Result<(), ModelError> {
    let s = Scope::Backbone;
    let e = &mut backbone.embeddings;
    visit_embedding(v, "embeddings.word_embeddings", s, &mut e.word_embeddings)?;
    let positions = if sinusoidal { Scope::BackboneFixed } else { s };
    v.matrix(
        "embeddings.position_embeddings.weight",
        positions,
        Layout::Plain,
        &mut e.position_embeddings.weight,
    )?;
    visit_layer_norm(v, "embeddings.LayerNorm", s, &mut e.layer_norm)?;
    for (i, layer) in backbone.layers.iter_mut().enumerate() {
        let p = format!("transformer.layer.{i}");
        let qkv = ["q_lin", "k_lin", "v_lin"].map(|n| format!("{p}.attention.{n}"));
        visit_fused_linear(v, &qkv, s, &mut layer.qkv)?;
        visit_linear(v, &format!("{p}.attention.out_lin"), s, &mut layer.attention_output)?;
        visit_layer_norm(v, &format!("{p}.sa_layer_norm"), s, &mut layer.attention_norm)?;
        visit_linear(v, &format!("{p}.ffn.lin1"), s, &mut layer.intermediate)?;
        visit_linear(v, &format!("{p}.ffn.lin2"), s, &mut layer.output)?;
        visit_layer_norm(v, &format!("{p}.output_layer_norm"), s, &mut layer.output_norm)?;
    }
    Ok(())
}

/// The fixed position table of `sinusoidal_pos_embds` (`transformers`'
/// `create_sinusoidal_embeddings`): angle `pos / 10000^(2⌊j/2⌋/dim)`, sine on even columns,
/// cosine on odd ones.
pub(crate) fn sinusoidal_positions<B: Backend>(
    positions: usize,
    dim: usize,
    device: &B::Device,
) -> Param<burn::tensor::Tensor<B, 2>> {
    let mut values = Vec::with_capacity(positions * dim);
    for pos in 0..positions {
        for j in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            values.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Param::from_data(TensorData::new(values, [positions, dim]), device)
}
