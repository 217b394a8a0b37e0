//! Load + join + split the shared IMDB parquet: `cargo bench -p bertlab-data`.
//!
//! Prints a table of wall times (best and median of several runs). The goal: the whole pipeline
//! for the full 49,994 rows well under 1 s in release, the data identity (reading the files
//! whole and their SHA-256, `LabeledTexts::sources`) included. The same rows written as CSV and
//! as JSON Lines show what the text formats cost against parquet.

use std::time::{Duration, Instant};

use bertlab_data::{DatasetSource, HubOptions, LabeledTexts, NotebookSplit};
use sha2::Digest;

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[runs / 2])
}

fn main() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let source = DatasetSource::LocalDir(shared.join("data/hf-imdb"));
    let hub = HubOptions::default();
    let data = source.load(&hub).expect("load shared IMDB");
    let runs = 7;
    // What the data identity costs: reading both files whole, and SHA-256 over their bytes
    // (both are part of every load, which parses the bytes it hashed).
    let contents: Vec<Vec<u8>> = data.sources.iter().map(|s| std::fs::read(&s.path).unwrap()).collect();
    let megabytes = contents.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let text_files = tempfile::tempdir().expect("a temporary folder");
    let csv = text_files.path().join("imdb.csv");
    let jsonl = text_files.path().join("imdb.jsonl");
    write_text_copies(&data, &csv, &jsonl);
    let size_mb = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64 / 1e6;
    let load_file = |p: &std::path::Path| DatasetSource::LocalFile(p.to_path_buf()).load(&hub).unwrap();
    let rows: Vec<(String, (Duration, Duration))> = vec![
        (
            format!("read both files ({megabytes:.1} MB)"),
            time(runs, || data.sources.iter().map(|s| std::fs::read(&s.path).unwrap().len()).sum::<usize>()),
        ),
        (
            format!("sha256 of both ({megabytes:.1} MB)"),
            time(runs, || contents.iter().map(sha2::Sha256::digest).collect::<Vec<_>>()),
        ),
        ("load + join (49,994 rows)".into(), time(runs, || source.load(&hub).unwrap())),
        (format!("load all as CSV ({:.1} MB)", size_mb(&csv)), time(runs, || load_file(&csv))),
        (format!("load all as JSONL ({:.1} MB)", size_mb(&jsonl)), time(runs, || load_file(&jsonl))),
        ("split, subset 0.25".into(), time(runs, || NotebookSplit::new(&data.labels, 0.25, 42).unwrap())),
        ("split, subset 1.0".into(), time(runs, || NotebookSplit::new(&data.labels, 1.0, 42).unwrap())),
        (
            "load + join + split 1.0".into(),
            time(runs, || {
                let d = source.load(&hub).unwrap();
                NotebookSplit::new(&d.labels, 1.0, 42).unwrap()
            }),
        ),
    ];
    println!("\n{:<30} {:>10} {:>10}", "step", "best ms", "median ms");
    for (name, (best, median)) in rows {
        println!("{name:<30} {:>10.1} {:>10.1}", best.as_secs_f64() * 1e3, median.as_secs_f64() * 1e3);
    }
}

/// All rows as one CSV and one JSON Lines file, labels as class names.
fn write_text_copies(data: &LabeledTexts, csv: &std::path::Path, jsonl: &std::path::Path) {
    let mut writer = csv::Writer::from_path(csv).unwrap();
    writer.write_record(["text", "label"]).unwrap();
    let mut lines = String::new();
    for (text, &label) in data.texts.iter().zip(&data.labels) {
        let name = &data.class_names[label as usize];
        writer.write_record([text, name]).unwrap();
        lines.push_str(&serde_json::json!({"text": text, "label": name}).to_string());
        lines.push('\n');
    }
    writer.flush().unwrap();
    std::fs::write(jsonl, lines).unwrap();
    let check =
        |p: &std::path::Path| DatasetSource::LocalFile(p.to_path_buf()).load(&HubOptions::default()).unwrap();
    for copy in [check(csv), check(jsonl)] {
        assert!(copy.texts == data.texts && copy.labels == data.labels, "a copy reads back as is");
    }
}
