//! Load a checkpoint as a sequence classifier, export it as a `transformers` snapshot, and
//! print its logits on a small padded batch as JSON, to check the export in Python:
//!
//! ```text
//! cargo run --release -p bertlab-models --example export -- MODEL OUT_DIR [SEED] [LABEL,LABEL,...] > rust.json
//! python3 - <<'PY'
//! import json, torch
//! from transformers import AutoModelForSequenceClassification
//! rust = json.load(open("rust.json"))
//! model, info = AutoModelForSequenceClassification.from_pretrained("OUT_DIR", output_loading_info=True)
//! with torch.no_grad():
//!     logits = model.eval()(input_ids=torch.tensor(rust["input_ids"]),
//!                           attention_mask=torch.tensor(rust["attention_mask"])).logits
//! print(info, (logits - torch.tensor(rust["logits"])).abs().max().item())
//! PY
//! ```

use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_models::{export_classifier, load_classifier, Precision};
use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, out, rest @ ..] = args.as_slice() else {
        return Err("usage: export MODEL_DIR_OR_HUB_ID OUT_DIR [SEED] [LABEL,LABEL,...]".into());
    };
    let seed = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(42);
    let labels: Vec<String> =
        rest.get(1).map(|l| l.split(',').map(String::from).collect()).unwrap_or_default();
    let device = Default::default();
    let repo = RepoRef::parse(model, RepoKind::Model);
    let (classifier, config, report) =
        load_classifier::<Flex>(&repo, &HubOptions::default(), &labels, seed, &device)?;
    eprintln!("initialised: {:?}\nignored: {:?}", report.initialised, report.ignored);
    let tokenizer_dir = match &repo {
        RepoRef::Local(dir) => Some(dir.as_path()),
        RepoRef::Hub { .. } => None,
    };
    export_classifier(&classifier, &config, std::path::Path::new(out), tokenizer_dir)?;

    // [CLS] … [SEP] rows of different lengths, padded with 0.
    let rows: [&[i64]; 3] = [
        &[101, 1045, 2293, 2023, 3185, 1010, 2009, 2001, 6429, 999, 102],
        &[101, 1996, 5436, 2001, 6659, 1998, 1996, 3772, 2001, 4030, 1012, 2025, 2130, 2428, 1012, 102],
        &[101, 2919, 102],
    ];
    let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in rows {
        ids.extend(row.iter().copied().chain(std::iter::repeat_n(0, seq - row.len())));
        mask.extend((0..seq).map(|i| i64::from(i < row.len())));
    }
    let shape = [rows.len(), seq];
    let ids_t = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids.clone(), shape), &device);
    let mask_t = Tensor::<Flex, 2, Int>::from_data(TensorData::new(mask.clone(), shape), &device);
    let logits = classifier.forward(ids_t, mask_t, Precision::F32).into_data().into_vec::<f32>()?;
    let logits: Vec<&[f32]> = logits.chunks(config.num_labels()).collect();
    let as_rows = |v: &[i64]| v.chunks(seq).map(|c| c.to_vec()).collect::<Vec<_>>();
    println!(
        "{}",
        serde_json::json!({"input_ids": as_rows(&ids), "attention_mask": as_rows(&mask), "logits": logits})
    );
    Ok(())
}
