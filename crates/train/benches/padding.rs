//! Padded-token overhead of fixed padding (the notebook: every batch padded to max_len) versus
//! length bucketing (dynamic padding, rows grouped by length) on the whole shared IMDB
//! (49,994 reviews, bert-base-uncased WordPiece via MiniLM's identical vocabulary).
//!
//! `cargo bench -p bertlab-train --bench padding`. Padded tokens are what the encoder computes
//! on, so `bucket / fixed` is the fraction of encoder FLOPs left (attention, quadratic in the
//! length, saves more).

use bertlab_data::rng::Pcg64;
use bertlab_data::DatasetSource;
use bertlab_hub::HubOptions;
use bertlab_tokenize::WordPieceTokenizer;
use bertlab_train::{padding_stats, LengthBuckets, Padding};
use std::time::Instant;

fn main() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let data = DatasetSource::parse(shared.join("data/hf-imdb").to_str().unwrap())
        .unwrap()
        .load(&HubOptions::default())
        .unwrap();
    let tokenizer = WordPieceTokenizer::from_dir(&shared.join("models/all-MiniLM-L6-v2")).unwrap();
    let t = Instant::now();
    let full = tokenizer.token_lengths(&data.texts, false).unwrap();
    eprintln!("tokenized {} reviews in {:.1} s", full.len(), t.elapsed().as_secs_f64());

    println!("| max_len | batch | real tokens | fixed padded | bucket padded | fixed / real | bucket / real | bucket / fixed | quadratic (Σ len²) bucket / fixed |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for max_len in [128usize, 256, 512] {
        let lengths: Vec<usize> = full.iter().map(|&l| l.min(max_len)).collect();
        for batch in [8usize, 16, 32] {
            let stats = |padding| {
                let batches =
                    LengthBuckets::new(batch, padding, 8, max_len).epoch(&lengths, &mut Pcg64::new(42));
                let quadratic: u64 =
                    batches.iter().map(|b| (b.shape()[0] * b.padded_len * b.padded_len) as u64).sum();
                (padding_stats(&batches, &lengths), quadratic)
            };
            let (fixed, fixed_q) = stats(Padding::Fixed);
            let (bucket, bucket_q) = stats(Padding::Bucket);
            println!(
                "| {max_len} | {batch} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                fixed.real_tokens,
                fixed.padded_tokens,
                bucket.padded_tokens,
                fixed.padding_factor(),
                bucket.padding_factor(),
                bucket.padded_tokens as f64 / fixed.padded_tokens as f64,
                bucket_q as f64 / fixed_q as f64
            );
        }
    }

    // Shape churn: every distinct (rows, padded length) is a new tensor shape for the kernels
    // (JIT-compiled kernels, autotune keys). Rounding lengths up to a coarser multiple means
    // fewer shapes for more padding.
    println!();
    println!(
        "| max_len | batch | pad_multiple | distinct batch shapes | bucket padded / real | bucket / fixed |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (max_len, batch) in [(128usize, 32usize), (256, 16), (512, 8)] {
        let lengths: Vec<usize> = full.iter().map(|&l| l.min(max_len)).collect();
        let fixed =
            LengthBuckets::new(batch, Padding::Fixed, 8, max_len).epoch(&lengths, &mut Pcg64::new(42));
        let fixed = padding_stats(&fixed, &lengths);
        for multiple in [1usize, 8, 16, 32, 64] {
            let batches = LengthBuckets::new(batch, Padding::Bucket, multiple, max_len)
                .epoch(&lengths, &mut Pcg64::new(42));
            let shapes: std::collections::BTreeSet<[usize; 2]> = batches.iter().map(|b| b.shape()).collect();
            let stats = padding_stats(&batches, &lengths);
            println!(
                "| {max_len} | {batch} | {multiple} | {} | {:.3} | {:.3} |",
                shapes.len(),
                stats.padding_factor(),
                stats.padded_tokens as f64 / fixed.padded_tokens as f64
            );
        }
    }
}
