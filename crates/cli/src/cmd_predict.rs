//! `bertlab predict`: the label and its probability for each text, from a fine-tuned model.

use bertlab_models::Precision;
use bertlab_tokenize::{EncodedTexts, Truncation};
use bertlab_train::metrics::{argmax_rows, softmax_rows};
use bertlab_train::{predict_logits, EvalSettings, Padding};
use clap::Args;

use crate::backend::device;
use crate::fine_tuned::{load_fine_tuned, FineTuned};

/// `bertlab predict …`
#[derive(Args)]
pub struct PredictArgs {
    /// Fine-tuned model directory, e.g. runs/x/best.
    #[arg(long)]
    model: String,
    /// Texts to classify.
    #[arg(required = true, value_name = "TEXT")]
    texts: Vec<String>,
    /// Tokens per text, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// head, tail or head-tail.
    #[arg(long, default_value_t = Truncation::Head)]
    truncation: Truncation,
    /// f32, f16 or bf16.
    #[arg(long, default_value_t = Precision::F32)]
    precision: Precision,
    /// The build's device by default (the CPU, or GPU 0 in a CUDA build); cuda:N picks a GPU.
    #[arg(long, default_value = "default")]
    device: String,
    /// Print JSON lines: {"text", "label", "probability", "probabilities", "logits"}.
    #[arg(long)]
    json: bool,
}

/// Run `bertlab predict`.
pub fn run(args: PredictArgs, global: &crate::Global) -> anyhow::Result<()> {
    let hub = global.hub();
    let device = device(&args.device)?;
    let FineTuned { model, config, tokenizer } = load_fine_tuned(&args.model, &hub, &device)?;
    let max_len = args.max_len.min(config.max_position_embeddings);
    let encoded: EncodedTexts = tokenizer.encode_all(&args.texts, max_len, args.truncation, false)?;
    let settings = EvalSettings {
        batch: 32,
        padding: Padding::Bucket,
        pad_multiple: 8,
        precision: args.precision,
        pad_id: tokenizer.pad_id(),
    };
    let k = config.num_labels();
    let logits = predict_logits(&model, &encoded, &settings, &device);
    let probabilities = softmax_rows(&logits, k);
    let predicted = argmax_rows(&logits, k);
    for (i, text) in args.texts.iter().enumerate() {
        let label = predicted[i] as usize;
        let name = config.labels.get(label).cloned().unwrap_or_else(|| label.to_string());
        let probs = &probabilities[i * k..(i + 1) * k];
        if args.json {
            let line = serde_json::json!({
                "text": text,
                "label": name,
                "probability": probs[label],
                "probabilities": probs,
                "logits": &logits[i * k..(i + 1) * k],
            });
            println!("{line}");
        } else {
            let shown: String = text.chars().take(70).collect();
            let ellipsis = if text.chars().count() > 70 { "…" } else { "" };
            println!("{name}\t{:.4}\t{shown}{ellipsis}", probs[label]);
        }
    }
    Ok(())
}
