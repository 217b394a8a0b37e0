//! `bertlab bench` and scripts/device-check.sh on the CPU build, with the tiny fixture models
//! and a few steps (the GPU run uses the same code paths with base-size models).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{shared, BIN};

/// A fresh directory under the target's temporary folder.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench(args: &[&str]) -> Output {
    Command::new(BIN).arg("bench").args(args).output().expect("run bertlab")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn make_ids(shared: &Path, dir: &Path) -> PathBuf {
    let ids = dir.join("ids.json");
    let out = bench(&[
        "make-ids",
        "--source",
        shared.join("data/hf-imdb").to_str().unwrap(),
        "--model",
        shared.join("models/all-MiniLM-L6-v2").to_str().unwrap(),
        "--rows",
        "64",
        "--max-len",
        "128",
        "--out",
        ids.to_str().unwrap(),
    ]);
    ok(&out, "make-ids");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&ids).unwrap()).unwrap();
    let rows = file["ids"].as_array().unwrap();
    assert_eq!(rows.len(), 64);
    assert_eq!(file["labels"].as_array().unwrap().len(), 64);
    for row in rows {
        let row: Vec<u64> = row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert!(row.len() <= 128 && row[0] == 101 && *row.last().unwrap() == 102, "{row:?}");
    }
    ids
}

#[test]
fn parity_passes_on_the_fixtures_and_fails_at_zero_tolerance() {
    let Some(shared) = shared() else { return };
    let fixtures = shared.join("fixtures");
    let out = bench(&["parity", "--fixtures", fixtures.to_str().unwrap()]);
    ok(&out, "parity");
    let lines = json_lines(&out);
    let f32_lines: Vec<&Value> = lines.iter().filter(|v| v["reference"] == "transformers").collect();
    // 4 fixtures × 2 kernels, + the BERT pooler × 2.
    assert_eq!(f32_lines.len(), 10, "{lines:#?}");
    for v in &f32_lines {
        assert!(v["max_abs"].as_f64().unwrap() <= 1e-4, "{v}");
    }
    let halves: Vec<&Value> = lines.iter().filter(|v| v["reference"] == "f32").collect();
    assert_eq!(halves.len(), 16, "f16 and bf16 of 4 fixtures × 2 kernels");
    for v in &halves {
        assert_eq!(v["pass"], true, "{v}");
        assert!(v["rel_l2"].as_f64().unwrap() > 0.0, "half precision must differ from f32: {v}");
    }
    let adamw = lines.iter().find(|v| v["output"] == "adamw_step").expect("the AdamW step check");
    assert!(adamw["logits_after_max_abs"].as_f64().unwrap() <= 1e-6, "{adamw}");

    let strict =
        bench(&["parity", "--fixtures", fixtures.to_str().unwrap(), "--tolerance", "0", "--half", "f16"]);
    assert!(!strict.status.success(), "f32 rounding differs from PyTorch's, so tolerance 0 must fail");
    assert!(String::from_utf8_lossy(&strict.stderr).contains("parity check(s) failed"));
    assert!(json_lines(&strict).iter().any(|v| v["pass"] == false));

    let missing = bench(&["parity", "--fixtures", "/nonexistent"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("none of the fixtures"));
}

#[test]
fn numerics_throughput_and_table_on_a_tiny_model() {
    let Some(shared) = shared() else { return };
    let dir = scratch("tiny");
    let ids = make_ids(&shared, &dir);
    let ids = ids.to_str().unwrap();
    let tiny = shared.join("fixtures/tiny-distilbert");
    let tiny = tiny.to_str().unwrap();

    let args =
        ["numerics", "--arch", tiny, "--ids-file", ids, "--steps", "12", "--batch", "4", "--max-len", "32"];
    let out = bench(&[&args[..], &["--batches", "3"]].concat());
    ok(&out, "numerics");
    let lines = json_lines(&out);
    let curves: Vec<&Value> = lines.iter().filter(|v| v["bench"] == "numerics").collect();
    assert_eq!(curves.len(), 3);
    for c in &curves {
        let losses = c["losses"].as_array().unwrap();
        assert_eq!(losses.len(), 12);
        assert!(losses.iter().all(|l| l.as_f64().unwrap().is_finite()));
    }
    // Progress on stderr every 10 steps and at the end, with each curve's latest loss.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f32_losses = curves.iter().find(|c| c["precision"] == "f32").unwrap()["losses"].as_array().unwrap();
    for step in [10, 12] {
        let f32_loss = f32_losses[step - 1].as_f64().unwrap();
        let line = stderr.lines().find(|l| l.starts_with(&format!("numerics: step {step}/12 ")));
        let line = line.unwrap_or_else(|| panic!("no progress line for step {step}:\n{stderr}"));
        let (_, tail) = line.split_once("): ").unwrap_or_else(|| panic!("{line}"));
        let shown: Vec<(&str, f64)> = tail
            .split(", ")
            .map(|p| p.split_once(' ').unwrap())
            .map(|(n, l)| (n, l.parse().unwrap()))
            .collect();
        assert_eq!(shown.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["f32", "f16", "bf16"], "{line}");
        // Printed to 4 decimals: within half a unit of the last of them (fails on NaN).
        assert!((shown[0].1 - f32_loss).abs() <= 0.51e-4, "{line} vs {f32_loss}");
    }
    let f16 = curves.iter().find(|c| c["precision"] == "f16").unwrap();
    assert_eq!(f16["final_loss_scale"], 65536.0, "f16 runs with loss scaling");
    let summary = lines.iter().find(|v| v["bench"] == "numerics-summary").unwrap();
    assert_eq!(summary["pass"], true, "{summary}");
    assert!(summary["precisions"]["bf16"]["max_gap"].as_f64().unwrap() > 0.0);
    // The control (f32, each batch's rows reversed) and the inspection of step 5: per-parameter
    // gradients at the f32 run's weights, the weights exported for scripts/torch_numerics.py.
    let export = dir.join("export");
    let out = bench(
        &[
            &args[..],
            &["--batches", "3", "--control", "--inspect-at", "5", "--export-dir", export.to_str().unwrap()],
        ]
        .concat(),
    );
    ok(&out, "numerics --control --inspect-at");
    let lines = json_lines(&out);
    let summary = lines.iter().find(|v| v["bench"] == "numerics-summary").unwrap();
    let control = &summary["precisions"]["f32-rows-reversed"];
    assert_eq!(control["control"], true, "{summary}");
    // Same mathematics, other rounding: the f32 curves agree to rounding on a tiny model.
    let gap = control["smoothed_max_gap"].as_f64().unwrap();
    assert!(gap < 1e-3, "{control}");
    let worst = |precision: &str| -> f64 {
        let s = lines
            .iter()
            .find(|v| v["bench"] == "numerics-inspect-summary" && v["precision"] == precision)
            .unwrap_or_else(|| panic!("no {precision} inspection: {lines:#?}"));
        assert_eq!(s["step"], 5);
        // key.bias has no true gradient (softmax ignores a shift shared by all keys): its
        // relative error is rounding noise over ~0.
        s["by_kind"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| !k["kind"].as_str().unwrap().ends_with("key.bias"))
            .map(|k| k["max_rel_l2"].as_f64().unwrap())
            .fold(0.0, |m: f64, x| if x.is_nan() { f64::INFINITY } else { m.max(x) })
    };
    let (f16, bf16) = (worst("f16"), worst("bf16"));
    assert!(f16 > 0.0 && f16 < 5e-3, "f16 gradient error at the f32 weights: {f16}");
    assert!(
        f16 * 5.0 < bf16,
        "f16 (11-bit mantissa) must be well under bf16's (8-bit) error: {f16} vs {bf16}"
    );
    for sub in ["init", "step-5", "step-5-f16"] {
        for file in ["config.json", "model.safetensors"] {
            assert!(export.join(sub).join(file).is_file(), "{sub}/{file} exported");
        }
    }

    // A zero gap tolerance must fail (bf16 rounding moves the curve).
    let strict =
        bench(&[&args[..], &["--batches", "3", "--precision", "f32,bf16", "--gap-tolerance", "0"]].concat());
    assert!(!strict.status.success());

    let plan = dir.join("plan.jsonl");
    let common = [
        "train-throughput",
        "--ids-file",
        ids,
        "--max-len",
        "32,64",
        "--batch",
        "4",
        "--padding",
        "fixed,bucket",
        "--steps",
        "2",
        "--warmup",
        "1",
    ];
    let out = bench(&[&common[..], &["--plan-out", plan.to_str().unwrap(), "--plan-only"]].concat());
    ok(&out, "plan");
    let plans: Vec<Value> =
        std::fs::read_to_string(&plan).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(plans.len(), 4);
    for p in &plans {
        let batches = p["batches"].as_array().unwrap();
        assert_eq!(batches.len() - p["untimed"].as_u64().unwrap() as usize, 2);
    }

    let bert = shared.join("fixtures/tiny-bert");
    let arch = format!("{tiny},{}", bert.display());
    let out = bench(&[&common[..], &["--arch", &arch, "--precision", "f32,bf16", "--profile"]].concat());
    ok(&out, "train-throughput");
    let records = json_lines(&out);
    assert_eq!(records.len(), 2 * 2 * 4, "models × precisions × plans");
    for r in &records {
        assert!(r.get("error").is_none(), "{r}");
        assert!(r["seq_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["steps"], 2);
        assert!(r["profile_ms_per_step"]["forward"].as_f64().unwrap() > 0.0, "{r}");
        if r["padding"] == "fixed" {
            assert_eq!(r["padded_tokens"].as_u64().unwrap(), 2 * 4 * r["max_len"].as_u64().unwrap());
        }
    }
    let results = dir.join("bertlab.jsonl");
    std::fs::write(&results, &out.stdout).unwrap();
    let table = Command::new(BIN)
        .args(["bench", "table", "--bertlab", results.to_str().unwrap(), "--peak-tflops", "1"])
        .output()
        .unwrap();
    ok(&table, "table");
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("| tiny-")).count(), 16, "{text}");
    assert!(text.contains("| tiny-bert | 64 | 4 | bucket | bf16 |"), "{text}");
    assert!(text.contains('%'), "MFU with a given peak: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn device_check_script_runs_in_quick_cpu_mode() {
    let Some(shared) = shared() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("scripts/device-check.sh");
    let syntax = Command::new("bash").arg("-n").arg(&script).output();
    let Ok(syntax) = syntax else {
        eprintln!("skipping: no bash");
        return;
    };
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    let out_dir = scratch("device-check");
    let out = Command::new("bash")
        .arg(&script)
        .env("DEVICE_CHECK_QUICK", "1")
        .env("DEVICE_CHECK_TORCH", "0")
        .env("DEVICE_CHECK_MODE", "cpu")
        // Every stage, the opt-in ones too: this rehearses the whole script.
        .env("DEVICE_CHECK_EXTRA", "all")
        .env("BERTLAB_BIN", BIN)
        .env("BERTLAB_SHARED", &shared)
        .env("BERTLAB_IDS", "/nonexistent/ids.json")
        .env("OUT", &out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "device-check.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mode cpu, quick"), "{stdout}");
    assert!(stdout.contains(" failed") && stdout.contains("passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("| tiny-distilbert | 64 | 8 | fixed | f16 |"), "{stdout}");
    assert!(!stdout.contains("FAILED") && !stdout.contains("TIMED OUT"), "{stdout}");
    // Throughput first, then parity (issue 24's order), then the opt-in stages.
    let at = |stage: &str| stdout.find(stage).unwrap_or_else(|| panic!("no {stage:?} in {stdout}"));
    assert!(
        at("==> throughput ") < at("==> parity (limit")
            && at("==> parity (limit") < at("==> numerics (limit")
    );
    // The step profile, plain and with kernel times (none to take on the CPU build).
    assert!(at("==> step profile tiny-distilbert (limit") < at("==> kernel times tiny-distilbert (limit"));
    // The end-to-end and pipeline stages run where python3 has torch and transformers, else
    // say why they skip.
    for stage in ["end-to-end", "pipeline"] {
        assert!(
            stdout.contains(&format!("==> {stage} (limit"))
                || stdout.contains(&format!("==> {stage}: skipped (it needs python3")),
            "{stdout}"
        );
    }
    // Everything printed is in the results file, and the device tool brings back 8 files at most.
    let log = std::fs::read_to_string(out_dir.join("device-check.txt")).unwrap();
    assert!(log.contains("==> summary") && log.contains("\"bench\":\"numerics-summary\""));
    let files: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(files.len() <= 8, "{files:?}");
    for name in ["parity.jsonl", "numerics.jsonl", "throughput-bertlab.jsonl", "plan.jsonl", "table.md"] {
        assert!(out_dir.join(name).is_file(), "{name} missing");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// The CPU build has no kernel launches to count: `step-profile` says so and counts the host
/// waits of its steps (none) and of reading the logits.
#[test]
fn step_profile_on_the_cpu_build_counts_host_waits_only() {
    #[rustfmt::skip]
    let out = bench(&[
        "step-profile", "--arch", "distilbert", "--hidden", "32", "--layers", "2", "--max-len", "16",
        "--batch", "2", "--warmup", "1", "--steps", "2", "--precision", "f32,f16",
    ]);
    ok(&out, "step-profile");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, precision) in lines.iter().zip(["f32", "f16"]) {
        assert_eq!(line["arch"], "distilbert", "{line}");
        assert_eq!(line["precision"], precision, "{line}");
        assert_eq!((line["layers"].as_u64(), line["hidden"].as_u64()), (Some(2), Some(32)), "{line}");
        assert!(line["launches_per_step"].is_null() && line["kernels_compiled"].is_null(), "{line}");
        assert!(line["launches_counted_by"].as_str().unwrap().starts_with("not applicable"), "{line}");
        assert_eq!(line["steps_measured"], 4, "{line}");
    }
    // Dropout seeds come from a host-side sequence (no read-back), and the f16 overflow check
    // is decided on the device: no wait in a step, in either precision; the f16 step state
    // (scale, steps applied and skipped) is read with the logits, one more wait there.
    assert_eq!(lines[0]["host_waits_per_step"].as_f64(), Some(0.0), "{}", lines[0]);
    assert_eq!(lines[1]["host_waits_per_step"].as_f64(), Some(0.0), "{}", lines[1]);
    assert_eq!(lines[1]["logits_read"]["host_waits"].as_u64(), Some(2), "{}", lines[1]);
    assert_eq!(lines[0]["logits_read"]["host_waits"].as_u64(), Some(1), "{}", lines[0]);
}

#[test]
fn counts_and_rates_that_cannot_be_meant_are_usage_errors_naming_the_flag() {
    // Refused while the arguments are read, before any file is opened.
    let cases: [(&[&str], &str); 11] = [
        (&["numerics", "--ids-file", "x", "--batch", "0"], "--batch <BATCH>"),
        (&["numerics", "--ids-file", "x", "--batches", "0"], "--batches <BATCHES>"),
        (&["numerics", "--ids-file", "x", "--lr", "nan"], "--lr <LR>"),
        (&["numerics", "--ids-file", "x", "--gap-tolerance=-1"], "--gap-tolerance <GAP_TOLERANCE>"),
        (&["numerics", "--ids-file", "x", "--max-seconds", "inf"], "--max-seconds <MAX_SECONDS>"),
        (&["train-throughput", "--ids-file", "x", "--steps", "0"], "--steps <STEPS>"),
        (&["train-throughput", "--ids-file", "x", "--pad-multiple", "0"], "--pad-multiple <PAD_MULTIPLE>"),
        (&["step-profile", "--lr", "0"], "--lr <LR>"),
        (&["step-profile", "--hidden", "0"], "--hidden <HIDDEN>"),
        (&["step-profile", "--layers", "0"], "--layers <LAYERS>"),
        (&["make-ids", "--out", "x", "--max-len", "0"], "--max-len <MAX_LEN>"),
    ];
    for (args, flag) in cases {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // Refused by the command before it makes a model or a device: the same exit code.
    let cases: [(&[&str], &str); 2] = [
        (&["step-profile", "--hidden", "100"], "--hidden 100: must be a multiple of 64"),
        (&["step-profile", "--max-len", "600"], "--max-len 600: distilbert-base takes 3 to 512 tokens"),
    ];
    for (args, needle) in cases {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn numerics_refuses_a_precision_twice_and_an_inspection_after_the_last_step() {
    let Some(shared) = shared() else { return };
    let dir = scratch("numerics-flags");
    let ids = make_ids(&shared, &dir);
    let arch = shared.join("fixtures/tiny-distilbert/config.json");
    let run = |extra: &[&str]| {
        let mut args =
            vec!["numerics", "--arch", arch.to_str().unwrap(), "--ids-file", ids.to_str().unwrap()];
        args.extend_from_slice(&["--max-len", "32", "--batch", "2", "--batches", "2", "--steps", "3"]);
        args.extend_from_slice(extra);
        bench(&args)
    };
    for (extra, needle) in [
        (&["--precision", "f32,f16,f32"][..], "--precision: f32 is listed twice (item 3)"),
        (&["--precision", "f16,bf16"][..], "--precision: f32 is the reference curve"),
        (&["--inspect-at", "3"][..], "--inspect-at 3: the run has steps 0 to 2 (--steps 3)"),
    ] {
        let out = run(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A flag's value that cannot be used exits 2, as clap's own refusals.
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
