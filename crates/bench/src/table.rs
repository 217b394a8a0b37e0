//! `bench table`: bertlab against PyTorch on the same batches — seq/s, the ratio, MFU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub(crate) struct TableArgs {
    /// bertlab results: JSON lines of `bench train-throughput` (other lines are ignored).
    #[arg(long)]
    bertlab: PathBuf,
    /// PyTorch results: JSON lines of scripts/torch_bench.py (rows without one show n/a).
    #[arg(long)]
    torch: Option<PathBuf>,
    /// GPU name as nvidia-smi prints it, to look up its dense f16/bf16 peak for MFU.
    #[arg(long)]
    gpu: Option<String>,
    /// Dense f16/bf16 peak in TFLOP/s (overrides --gpu).
    #[arg(long, value_parser = positive_tflops)]
    peak_tflops: Option<f64>,
}

/// `--peak-tflops`: a positive number (clap's usage error, exit 2, otherwise).
fn positive_tflops(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err("must be a positive number of TFLOP/s".into()),
    }
}

/// Dense (no sparsity) f16/bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets.
pub(crate) fn peak_tflops(gpu: &str) -> Option<f64> {
    let g = gpu.to_ascii_uppercase();
    let peak = if g.contains("H200") || g.contains("GH200") {
        989.0
    } else if g.contains("H100") || g.contains("H800") {
        if g.contains("PCIE") {
            756.0
        } else if g.contains("NVL") {
            835.0
        } else {
            989.0 // SXM
        }
    } else if g.contains("B200") {
        2250.0
    } else if g.contains("A100") || g.contains("A800") {
        312.0
    } else if g.contains("L40S") {
        362.0
    } else if g.contains("L4") {
        121.0
    } else {
        return None;
    };
    Some(peak)
}

fn read_records(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v["bench"] == "train-throughput")
        .collect())
}

type Key = (String, u64, u64, String, String);

fn key_of(v: &Value) -> Key {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    (s("model"), n("max_len"), n("batch"), s("padding"), s("precision"))
}

/// Achieved TFLOP/s of a record: the training FLOPs of its timed batches (bertlab's count,
/// bertlab_run::ModelShape, which scripts/torch_bench.py takes from the plan) over its time.
fn record_tflops(v: &Value) -> Option<f64> {
    match (v["train_flops"].as_f64(), v["seconds"].as_f64()) {
        (Some(flops), Some(seconds)) => Some(flops / seconds / 1e12),
        // (torch_bench.py before it wrote train_flops: its rounded rate)
        _ => v["train_tflops"].as_f64(),
    }
}

pub(crate) fn run(args: TableArgs) -> anyhow::Result<()> {
    let ours = read_records(&args.bertlab)?;
    if ours.is_empty() {
        anyhow::bail!(
            "--bertlab {}: no `\"bench\": \"train-throughput\"` JSON lines in it (`bertlab bench throughput` \
             writes them)",
            args.bertlab.display()
        );
    }
    let theirs: BTreeMap<Key, Value> = match &args.torch {
        Some(p) if p.is_file() => read_records(p)?.into_iter().map(|v| (key_of(&v), v)).collect(),
        _ => BTreeMap::new(),
    };
    let peak = args.peak_tflops.or_else(|| args.gpu.as_deref().and_then(peak_tflops));
    let mfu = |v: &Value, precision: &str| -> String {
        match (peak, record_tflops(v)) {
            (Some(peak), Some(t)) if precision != "f32" => format!("{:.1}%", 100.0 * t / peak),
            _ => "n/a".into(),
        }
    };
    let seq = |v: &Value| -> Option<f64> { v["seq_per_s"].as_f64().filter(|_| v.get("error").is_none()) };
    let cell = |v: Option<&Value>| -> String {
        match v {
            None => "n/a".into(),
            Some(v) => match seq(v) {
                Some(s) => format!("{s:.1}"),
                None if v["out_of_memory"] == true => "OOM".into(),
                None => "error".into(),
            },
        }
    };
    println!(
        "| model | max_len | batch | padding | precision | bertlab build | bertlab seq/s | torch seq/s | bertlab/torch | bertlab MFU | torch MFU |"
    );
    println!("|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|");
    // Ratios per bertlab build (a results file may hold several builds' rows).
    let mut ratios: BTreeMap<String, Vec<(Key, f64)>> = BTreeMap::new();
    // A precision the backend cannot compute in is one line under the table, not a row per shape.
    // (Older files lack the flag: such a record has an error and no shape.)
    let (unsupported, ours): (Vec<&Value>, Vec<&Value>) = ours
        .iter()
        .partition(|v| v["unsupported"] == true || (v.get("max_len").is_none() && v.get("error").is_some()));
    for v in ours {
        let key = key_of(v);
        let build = v["build"].as_str().or(v["backend"].as_str()).unwrap_or("?").to_string();
        let t = theirs.get(&key);
        let ratio = match (seq(v), t.and_then(seq)) {
            (Some(a), Some(b)) if b > 0.0 => {
                ratios.entry(build.clone()).or_default().push((key.clone(), a / b));
                format!("{:.2}×", a / b)
            }
            _ => "n/a".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            key.0,
            key.1,
            key.2,
            key.3,
            key.4,
            build,
            cell(Some(v)),
            cell(t),
            ratio,
            if seq(v).is_some() { mfu(v, &key.4) } else { "n/a".into() },
            t.filter(|t| seq(t).is_some()).map_or("n/a".into(), |t| mfu(t, &key.4)),
        );
        if let Some(e) = v["error"].as_str() {
            eprintln!("bertlab {build} {key:?}: {e}");
        }
        if let Some(e) = t.and_then(|t| t["error"].as_str()) {
            eprintln!("torch {key:?}: {e}");
        }
    }
    for v in unsupported {
        println!(
            "\n{} {}: not measured: {}",
            v["model"].as_str().unwrap_or("?"),
            v["precision"].as_str().unwrap_or("?"),
            v["error"].as_str().unwrap_or("unsupported")
        );
    }
    match peak {
        Some(p) => println!(
            "\nMFU: training FLOPs (6N + 12·L·d·s per padded token) / time / {p} TFLOP/s dense f16/bf16 peak."
        ),
        None => println!("\nMFU: n/a (no known GPU peak; pass --gpu NAME or --peak-tflops)."),
    }
    for (build, ratios) in &ratios {
        let geo = (ratios.iter().map(|(_, r)| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        let (worst, r) = ratios.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("not empty");
        println!(
            "bertlab ({build}) / torch: geometric mean {geo:.2}× over {} rows; lowest {r:.2}× ({} {} {} {}).",
            ratios.len(),
            worst.0,
            worst.1,
            worst.3,
            worst.4
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks() {
        assert_eq!(peak_tflops("NVIDIA H100 80GB HBM3"), Some(989.0));
        assert_eq!(peak_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(peak_tflops("NVIDIA H200"), Some(989.0));
        assert_eq!(peak_tflops("Tesla T4"), None);
    }

    #[test]
    fn achieved_tflops_of_both_kinds_of_record() {
        // Rows of the H200 run (BENCHMARKS.md): bertlab's and, from before torch_bench.py wrote
        // train_flops, PyTorch's with only its rounded rate.
        let ours =
            serde_json::json!({"train_flops": 10872013455360.0, "seconds": 0.7373, "train_tflops": 14.746});
        let torch = serde_json::json!({"seconds": 0.1669, "train_tflops": 65.156});
        assert!((record_tflops(&ours).unwrap() - 14.7457).abs() < 1e-3);
        assert_eq!(record_tflops(&torch), Some(65.156));
        assert_eq!(record_tflops(&serde_json::json!({"seconds": 1.0})), None);
    }
}
