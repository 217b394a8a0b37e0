//! Tokenize all shared IMDB reviews (49,994) at max_len 512: bertlab's fast path, the
//! `tokenizers` engine path, the token cache (miss and hit), and python `tokenizers`
//! `encode_batch` on the same texts with the same tokenizer.json, in one run.
//!
//! `cargo bench -p bertlab-tokenize --bench tokenize` (needs ../shared; python is optional).
//! `BENCH_REPEATS=n` takes the best of n timings for each row (default 1).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bertlab_tokenize::{CacheStatus, EncodedTexts, TokenCache, Truncation, WordPieceTokenizer};
use sha2::{Digest, Sha256};

const MAX_LEN: usize = 512;

/// Python side: same parquet files, same tokenizer.json, truncation at 512, no padding.
/// Prints one JSON line with timings and a hash of all ids (to prove identical output).
const PYTHON: &str = r#"
import sys, json, time, hashlib, array
import pyarrow.parquet as pq, tokenizers
shared = sys.argv[1]
texts = []
for split in ("train", "test"):
    texts += pq.read_table(f"{shared}/data/hf-imdb/plain_text/{split}-00000-of-00001.parquet").column("text").to_pylist()
tok = tokenizers.Tokenizer.from_file(f"{shared}/models/all-MiniLM-L6-v2/tokenizer.json")
tok.no_padding()
tok.enable_truncation(512)
repeats = int(sys.argv[2])
def best(f):
    out, t = None, float("inf")
    for _ in range(repeats):
        s = time.perf_counter(); out = f(); t = min(t, time.perf_counter() - s)
    return out, t
enc, t_batch = best(lambda: tok.encode_batch(texts))
ids = [e.ids for e in enc]
_, t_fast = best(lambda: tok.encode_batch_fast(texts))
h = hashlib.sha256()
for row in ids:
    h.update(len(row).to_bytes(4, "little")); h.update(array.array("I", row).tobytes())
print(json.dumps({"version": tokenizers.__version__, "rows": len(texts), "encode_batch": t_batch,
                  "encode_batch_fast": t_fast, "ids_sha256": h.hexdigest()}))
"#;

fn best_of<T>(repeats: usize, mut f: impl FnMut() -> T) -> (T, f64) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed().as_secs_f64());
        out = Some(value);
    }
    (out.expect("at least one run"), best)
}

/// The hash the python side computes: per row, u32 length then u32 ids, little-endian.
fn ids_hash(encoded: &EncodedTexts) -> String {
    let mut h = Sha256::new();
    let mut row: Vec<u32> = Vec::new();
    for i in 0..encoded.len() {
        row.clear();
        encoded.extend_row_into(i, &mut row);
        h.update((row.len() as u32).to_le_bytes());
        for id in &row {
            h.update(id.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn python(shared: &Path, repeats: usize) -> Result<serde_json::Value, String> {
    let mut child = Command::new("python3")
        .arg("-")
        .arg(shared)
        .arg(repeats.to_string())
        .env("RAYON_NUM_THREADS", std::thread::available_parallelism().map_or(2, |n| n.get()).to_string())
        .env("TOKENIZERS_PARALLELISM", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    child.stdin.take().expect("piped stdin").write_all(PYTHON.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).map_err(|e| format!("bad python output: {e}"))
}

fn main() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let repeats: usize = std::env::var("BENCH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let source = bertlab_data::DatasetSource::LocalDir(shared.join("data/hf-imdb"));
    let data = source.load(&Default::default()).expect("loading the shared IMDB parquet files");
    let texts = data.texts;
    let n = texts.len() as f64;
    let tokenizer = WordPieceTokenizer::from_dir(&shared.join("models/all-MiniLM-L6-v2"))
        .expect("MiniLM tokenizer")
        .with_max_positions(512);
    let engine = tokenizer.clone().with_fast_path(false);
    let threads = rayon::current_num_threads();
    println!(
        "tokenize {} IMDB reviews ({:.1} MB) at max_len {MAX_LEN}, all-MiniLM-L6-v2 tokenizer.json, {threads} threads",
        texts.len(),
        texts.iter().map(String::len).sum::<usize>() as f64 / 1e6
    );

    let (fast, t_fast) =
        best_of(repeats, || tokenizer.encode_all(&texts, MAX_LEN, Truncation::Head, false).unwrap());
    let (slow, t_engine) =
        best_of(repeats, || engine.encode_all(&texts, MAX_LEN, Truncation::Head, false).unwrap());
    let same = fast == slow;

    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = TokenCache::new(cache_dir.path());
    let start = Instant::now();
    let (_, status) =
        cache.encode_all_with_status(&tokenizer, &texts, MAX_LEN, Truncation::Head, false).unwrap();
    let t_miss = start.elapsed().as_secs_f64();
    assert_eq!(status, CacheStatus::Miss);
    let ((hit, status), t_hit) = best_of(repeats, || {
        cache.encode_all_with_status(&tokenizer, &texts, MAX_LEN, Truncation::Head, false).unwrap()
    });
    assert_eq!(status, CacheStatus::Hit);
    assert_eq!(hit, fast);
    let file_mb =
        std::fs::metadata(cache.path_for(&TokenCache::key(&tokenizer, &texts, MAX_LEN, Truncation::Head)))
            .map_or(0.0, |m| m.len() as f64 / 1e6);
    let (_, t_key) = best_of(repeats, || TokenCache::key(&tokenizer, &texts, MAX_LEN, Truncation::Head));

    let py = python(&shared, repeats);
    let py_best = py.as_ref().ok().and_then(|v| {
        let a = v["encode_batch"].as_f64()?;
        let b = v["encode_batch_fast"].as_f64()?;
        Some(a.min(b))
    });
    let ratio = |t: f64| py_best.map_or("-".to_string(), |p| format!("{:.2}x", p / t));

    println!("| path | seconds | reviews/s | vs python best |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, t: f64| println!("| {name} | {t:.3} | {:.0} | {} |", n / t, ratio(t));
    row("bertlab fast path (cold)", t_fast);
    row("bertlab tokenizers-engine path (cold)", t_engine);
    row("bertlab cache miss (fast path + write)", t_miss);
    row("bertlab cache hit (hash texts + load + verify)", t_hit);
    match &py {
        Ok(v) => {
            let version = v["version"].as_str().unwrap_or("?");
            for key in ["encode_batch", "encode_batch_fast"] {
                if let Some(t) = v[key].as_f64() {
                    row(&format!("python tokenizers {version} {key}"), t);
                }
            }
        }
        Err(why) => println!("| python tokenizers | skipped: {why} | | |"),
    }
    println!();
    println!("cache file {file_mb:.1} MB; of the hit, hashing the texts for the key takes {t_key:.3} s");
    println!("fast path ids == engine ids: {same}");
    if let Ok(v) = &py {
        let theirs = v["ids_sha256"].as_str().unwrap_or("");
        println!("bertlab ids == python tokenizers ids (sha256 of all rows): {}", theirs == ids_hash(&fast));
    }
    assert!(same, "the fast path disagrees with the engine");
}
