//! `bertlab encode`: hidden-state embeddings of texts from a BERT or DistilBERT checkpoint —
//! the [CLS] hidden state, the mask-weighted mean of the last hidden states
//! (sentence-transformers pooling) and, for BERT checkpoints with one, the pooler output.

use anyhow::Context;
use bertlab_hub::{RepoKind, RepoRef};
use bertlab_models::{cls, load_encoder, mean_pool};
use bertlab_run::{Inference, InferenceSettings};
use bertlab_tokenize::WordPieceTokenizer;
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;

use crate::backend::Backend;
use crate::fine_tuned::{open_device, recorded_run, resolve_inference};

/// `bertlab encode …`
#[derive(Args)]
pub struct EncodeArgs {
    /// Model: a local snapshot directory or a Hub id (e.g. ../shared/models/all-MiniLM-L6-v2,
    /// distilbert/distilbert-base-uncased).
    #[arg(long, value_parser = bertlab_run::model_arg)]
    model: String,
    /// A text to encode (repeat the flag for several).
    #[arg(long = "text", value_name = "TEXT", required = true)]
    texts: Vec<String>,
    /// --precision is the matmuls' (LayerNorm and softmax stay f32).
    #[command(flatten)]
    inference: InferenceSettings,
    /// Print JSON: {"model", "max_len", "precision", "embeddings": [{"text", "input_ids",
    /// "cls_hidden", "mean_pooled", "pooler_output"?}, …]} in the order the texts were given.
    #[arg(long)]
    json: bool,
}

/// The embeddings of one text.
#[derive(Debug, Clone, serde::Serialize)]
struct TextEmbedding {
    text: String,
    input_ids: Vec<u32>,
    cls_hidden: Vec<f32>,
    mean_pooled: Vec<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pooler_output: Option<Vec<f32>>,
}

fn rows(t: Tensor<Backend, 2>) -> anyhow::Result<Vec<Vec<f32>>> {
    let [_, width] = t.dims();
    let values = t.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(values.chunks(width).map(<[f32]>::to_vec).collect())
}

/// Tokenize and encode the texts of `args`, with the settings they ran with.
fn embed(args: &EncodeArgs, global: &crate::Global) -> anyhow::Result<(Vec<TextEmbedding>, Inference)> {
    let run = recorded_run(&args.model)?;
    let device = open_device(&args.inference, run.as_ref())?;
    let hub = global.hub();
    let repo = RepoRef::parse(&args.model, RepoKind::Model);
    let (encoder, config, _) = load_encoder::<Backend>(&repo, &hub, &device)
        .with_context(|| format!("loading the encoder of --model {}", args.model))?;
    let tokenizer = WordPieceTokenizer::from_repo(&repo, &hub)
        .with_context(|| format!("loading the tokenizer of --model {}", args.model))?
        .with_max_positions(config.max_position_embeddings);
    bertlab_models::check_tokenizer_fits(&config, tokenizer.id_bound(), tokenizer.source())
        .with_context(|| format!("--model {}", args.model))?;
    let inference = resolve_inference(&args.inference, run.as_ref(), &tokenizer)?;
    let Inference { max_len, truncation, batch, precision, .. } = inference;
    let pad = i64::from(tokenizer.pad_id());

    let mut out = Vec::with_capacity(args.texts.len());
    // Batches bound memory for long lists of texts.
    for texts in args.texts.chunks(batch) {
        let ids: Vec<Vec<u32>> =
            texts.iter().map(|t| tokenizer.encode(t, max_len, truncation)).collect::<Result<_, _>>()?;
        // Pad to the longest text of the batch; padded positions are masked out.
        let seq = ids.iter().map(Vec::len).max().unwrap_or(2);
        let mut flat_ids = Vec::with_capacity(texts.len() * seq);
        let mut flat_mask = Vec::with_capacity(texts.len() * seq);
        for row in &ids {
            flat_ids.extend(row.iter().map(|&id| i64::from(id)));
            flat_ids.extend(std::iter::repeat_n(pad, seq - row.len()));
            flat_mask.extend((0..seq).map(|i| i64::from(i < row.len())));
        }
        let shape = [texts.len(), seq];
        let input_ids = Tensor::<Backend, 2, Int>::from_data(TensorData::new(flat_ids, shape), &device);
        let mask = Tensor::<Backend, 2, Int>::from_data(TensorData::new(flat_mask, shape), &device);
        let output = encoder.forward(input_ids, mask.clone(), precision);
        let cls_rows = rows(cls(output.last_hidden_state.clone()))?;
        let mean_rows = rows(mean_pool(output.last_hidden_state, mask))?;
        let pooler_rows = output.pooler_output.map(rows).transpose()?;
        // A NaN or infinity is no embedding: the model's numbers are broken.
        let non_finite = cls_rows
            .iter()
            .chain(&mean_rows)
            .chain(pooler_rows.iter().flatten())
            .any(|r| r.iter().any(|v| !v.is_finite()));
        if non_finite {
            anyhow::bail!(
                "--model {}: its output for these texts is not finite (NaN or infinite): the model's weights \
                 or its config.json are broken",
                args.model
            );
        }
        for (i, ((text, input_ids), (cls_hidden, mean_pooled))) in
            texts.iter().zip(ids).zip(cls_rows.into_iter().zip(mean_rows)).enumerate()
        {
            out.push(TextEmbedding {
                text: text.clone(),
                input_ids,
                cls_hidden,
                mean_pooled,
                pooler_output: pooler_rows.as_ref().map(|p| p[i].clone()),
            });
        }
    }
    Ok((out, inference))
}

fn preview(values: &[f32]) -> String {
    let head: Vec<String> = values.iter().take(6).map(|v| format!("{v:+.4}")).collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    format!("[{}, …] (dim {}, L2 norm {norm:.4})", head.join(", "), values.len())
}

/// Run `bertlab encode`.
pub fn run(args: EncodeArgs, global: &crate::Global) -> anyhow::Result<()> {
    let (embeddings, inference) = embed(&args, global)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model,
                "max_len": inference.max_len,
                "precision": inference.precision.to_string(),
                "embeddings": embeddings,
            })
        );
        return Ok(());
    }
    for (i, e) in embeddings.iter().enumerate() {
        let text: String = e.text.chars().take(60).collect();
        let ellipsis = if e.text.chars().count() > 60 { "…" } else { "" };
        println!("text {} ({} tokens): {text:?}{ellipsis}", i + 1, e.input_ids.len());
        println!("  cls_hidden    {}", preview(&e.cls_hidden));
        println!("  mean_pooled   {}", preview(&e.mean_pooled));
        if let Some(p) = &e.pooler_output {
            println!("  pooler_output {}", preview(p));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bertlab_run::{ComputeSettings, DeviceSetting, Precision, TokenSettings, Truncation};

    fn max_abs_diff(a: &[f32], b: &serde_json::Value) -> f32 {
        let b: Vec<f32> = b.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        bertlab_run::metrics::max_abs_diff(a, &b)
    }

    /// The real all-MiniLM-L6-v2 through tokenizer + encoder: the ids, [CLS] hidden state and
    /// mean-pooled embedding of transformers (max abs error ≤ 1e-4).
    #[test]
    fn minilm_embeddings_match_transformers() {
        let Some(shared) = bertlab_test_support::shared_dir() else {
            eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
            return;
        };
        let text = std::fs::read_to_string(shared.join("fixtures/minilm-expected.json")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        let args = EncodeArgs {
            model: shared.join("models/all-MiniLM-L6-v2").display().to_string(),
            texts: expected["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
            inference: InferenceSettings {
                tokens: TokenSettings {
                    max_len: Some(expected["max_length"].as_u64().unwrap() as usize),
                    truncation: Some(Truncation::Head),
                },
                compute: ComputeSettings {
                    precision: Some(Precision::F32),
                    device: DeviceSetting { name: Some("cpu".into()) },
                    ..Default::default()
                },
            },
            json: true,
        };
        let (embeddings, _) = embed(&args, &crate::Global { offline: true }).unwrap();
        assert_eq!(embeddings.len(), 4);
        for (i, e) in embeddings.iter().enumerate() {
            let mask = expected["attention_mask"][i].as_array().unwrap();
            let n = mask.iter().filter(|m| m.as_i64() == Some(1)).count();
            let want: Vec<u32> = expected["input_ids"][i].as_array().unwrap()[..n]
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(e.input_ids, want, "text {i}: token ids");
            let err = max_abs_diff(&e.cls_hidden, &expected["cls_hidden"][i]);
            assert!(err <= 1e-4, "text {i}: cls_hidden max abs error {err}");
            let err = max_abs_diff(&e.mean_pooled, &expected["mean_pooled"][i]);
            assert!(err <= 1e-4, "text {i}: mean_pooled max abs error {err}");
            assert_eq!(e.pooler_output.as_ref().map(Vec::len), Some(384), "MiniLM has a pooler");
        }
    }
}
