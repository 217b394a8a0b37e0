//! The GPU code path end to end: the `wgpu` build of `bertlab` (Burn's CubeCL backend with
//! kernel fusion and bertlab's kernels, the path the default CUDA build takes; on Mesa's
//! lavapipe in CI) and the default CPU build each `train`, `eval` and `predict` the same run,
//! and must agree.
//!
//! The wgpu binary comes from `BERTLAB_WGPU_BIN` (`.ci/run` builds it with `cargo build --release
//! -p bertlab --no-default-features --features wgpu` and sets it); without it these tests skip
//! with a printed reason. The CPU build is this package's own binary. The last two tests run
//! the `vulkan` build (`BERTLAB_VULKAN_BIN`) under Mesa 26's lavapipe (`BERTLAB_LAVAPIPE_26`,
//! the runner scripts/lavapipe-26.sh prints), where the tensor-core attention's `cmma`
//! products run: its op checks, and a whole f16 run on it against the CPU build's.
//!
//! The model is the shared `tiny-distilbert-classifier` fixture: it has a classification head
//! and every dropout at 0, so both builds follow the same trajectory. (A fresh head or dropout
//! masks come from each backend's own random generator, which the seed does not make equal
//! across backends.) On 349 reviews for one epoch this 32-wide random model does not learn
//! sentiment (loss stays near ln 2, as it does in the CPU build); what is tested is that every
//! step of training, evaluation, export and prediction computes the same numbers on both paths,
//! while Adam moves the weights far more than the tolerances (checked below).
//!
//! Measured gaps between the builds (lavapipe, Mesa 22.3; subset 0.01, max_len 64, lr 1e-3):
//! see the constants' comments.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{shared, BIN};

/// Reviews the exported models label in both builds.
const TEXTS: [&str; 4] = [
    "A wonderful film, moving and funny from the first scene to the last.",
    "Two hours I will never get back. The plot made no sense and the acting was wooden.",
    "It was fine.",
    "not bad at all",
];

/// How closely the two builds must agree, per precision.
struct Tolerances {
    /// Per-epoch train/val loss, test loss and eval loss (means over 50–349 reviews).
    loss: f64,
    /// Every exported weight.
    weight: f64,
    /// `predict` logits (the bound).
    logit: f64,
}

// Measured: losses ≤ 1.4e-9, weights ≤ 2.4e-7, logits ≤ 2.6e-8. Both builds run the same f32
// operations with different kernels (summation order, fused element-wise chains), so they
// differ by f32 rounding (unit roundoff 6e-8) compounded over 22 Adam steps; the bounds leave
// 300–10000× room for other drivers and kernel choices. The weights, which carry every
// gradient of every step, are the sharp check: in the CPU build a 1 % larger learning rate
// moves them by 9.9e-4 (10× the bound) but the train loss of this near-constant model by only
// 8e-6.
const F32: Tolerances = Tolerances { loss: 1e-5, weight: 1e-4, logit: 1e-3 };
// Measured: losses ≤ 1.0e-8, weights ≤ 9.8e-6, logits ≤ 1.9e-7 (4.5e-5 and 6.3e-7 while the GPU
// builds' GELU gradient was Burn's tanh approximation's). Both builds round the same
// f32 values to f16 (unit roundoff 4.9e-4) before each matmul, so they mostly agree as in f32;
// where an f32 difference flips an f16 rounding, the gap jumps by up to an f16 ulp of the
// value, hence 10× the f32 bounds (the weight bound is then what a 1 % change of the learning
// rate does).
const F16: Tolerances = Tolerances { loss: 1e-4, weight: 1e-3, logit: 1e-3 };

/// `BERTLAB_WGPU_BIN`, or `None` after printing why the test skips.
fn wgpu_bin() -> Option<PathBuf> {
    let path = env_file("BERTLAB_WGPU_BIN");
    if path.is_none() {
        eprintln!(
            "skipping: BERTLAB_WGPU_BIN is not set (the path of a bertlab built with \
             `cargo build --release -p bertlab --no-default-features --features wgpu`; .ci/run sets it)"
        );
    }
    path
}

/// One of the two builds under comparison.
struct Build {
    name: &'static str,
    bin: PathBuf,
    /// `environment.backend` its records must name (so that a mixed-up binary fails).
    backend: &'static str,
    /// A program that runs the binary (its first argument) under another Vulkan driver:
    /// scripts/lavapipe-26.sh's wrapper.
    runner: Option<PathBuf>,
}

/// What one build's run left: its record, `eval --json`, `predict --json` logits and weights.
struct Outcome {
    record: Value,
    eval: Value,
    logits: Vec<Vec<f64>>,
    weights: HashMap<String, Vec<f32>>,
}

fn run(build: &Build, cwd: &Path, args: &[&str]) -> Output {
    run_with(build, cwd, args, &[])
}

/// [`run`], with these environment variables set.
fn run_with(build: &Build, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = match &build.runner {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(&build.bin);
            c
        }
        None => Command::new(&build.bin),
    };
    command.args(args).current_dir(cwd).env("HF_HUB_OFFLINE", "1").envs(env.iter().copied());
    // The Vulkan loader warns without a runtime dir; lavapipe needs nothing else.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        command.env("XDG_RUNTIME_DIR", cwd);
    }
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", build.bin.display()));
    assert!(
        out.status.success(),
        "{} build: `bertlab {}` failed ({}):\n{}",
        build.name,
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_weights(path: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{}: {name}", path.display());
            let values =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (name, values)
        })
        .collect()
}

/// `train` of `model`, then `eval` and `predict` on the run's `best/`, all with `build` and
/// the environment variables `env`.
fn train_eval_predict(
    build: &Build,
    shared: &Path,
    model: &Path,
    precision: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> Outcome {
    let out = dir.join(build.name);
    // Its own working directory: CubeCL reads cubecl.toml from there and keeps its autotune
    // results beside it (by default it would write them under the nearest Cargo.toml's target/).
    let cwd = dir.join(format!("{}-cwd", build.name));
    std::fs::create_dir_all(&cwd).unwrap();
    // Autotuning at its "minimal" level still picks kernels by timing them (the same machinery
    // as the default level), at half the time on lavapipe, where it dominates a run.
    let toml = format!("[autotune]\nlevel = \"minimal\"\ncache = {{ file = {:?} }}\n", cwd);
    std::fs::write(cwd.join("cubecl.toml"), toml).unwrap();
    let source = shared.join("data/hf-imdb");
    let (model, source) = (model.to_str().unwrap(), source.to_str().unwrap());
    #[rustfmt::skip]
    run_with(build, &cwd, &[
        "train", "--model", model, "--source", source, "--subset", "0.01", "--seed", "42",
        "--epochs", "1", "--lr", "1e-3", "--batch", "16", "--max-len", "64", "--precision", precision,
        "--out", out.to_str().unwrap(), "--cache-dir", dir.join("token-cache").to_str().unwrap(), "--quiet",
    ], env);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("record.json")).unwrap()).unwrap();
    assert_eq!(
        record["environment"]["backend"],
        build.backend,
        "{} build: {}",
        build.name,
        build.bin.display()
    );
    assert_eq!(record["environment"]["precision"], precision);

    let best = out.join("best");
    let best = best.to_str().unwrap();
    let eval = run_with(
        build,
        &cwd,
        &["eval", "--model", best, "--source", source, "--precision", precision, "--json"],
        env,
    );
    let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();

    let mut args = vec!["predict", "--model", best, "--precision", precision, "--max-len", "64", "--json"];
    args.extend(TEXTS);
    let predict = run_with(build, &cwd, &args, env);
    let logits = String::from_utf8(predict.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            line["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
        })
        .collect();
    Outcome { record, eval, logits, weights: read_weights(&Path::new(best).join("model.safetensors")) }
}

/// Largest |a − b|; NaN when either side has one, so that `gap <= tol` fails on NaN.
fn max_gap(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| {
        if d.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(d)
        }
    })
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {v}"))
}

fn compare_builds(precision: &str, tol: &Tolerances) {
    let Some(shared) = shared() else { return };
    let Some(wgpu) = wgpu_bin() else { return };
    let gpu = Build { name: "wgpu", bin: wgpu, backend: "wgpu", runner: None };
    let model = shared.join("fixtures/tiny-distilbert-classifier");
    compare_with_cpu(&gpu, &[], &shared, &model, precision, tol);
}

/// The CPU build and `gpu` (run with `env`) each train `model`, evaluate and predict, and
/// must agree within `tol`.
fn compare_with_cpu(
    gpu: &Build,
    env: &[(&str, &str)],
    shared: &Path,
    model: &Path,
    precision: &str,
    tol: &Tolerances,
) {
    let name = gpu.name;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-vs-cpu-{precision}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cpu = Build { name: "cpu", bin: PathBuf::from(BIN), backend: "cpu (burn-flex)", runner: None };
    let a = train_eval_predict(&cpu, shared, model, precision, &dir, &[]);
    let b = train_eval_predict(gpu, shared, model, precision, &dir, env);
    let mut report = Vec::new();
    let mut check = |what: String, gap: f64, bound: f64| {
        assert!(gap <= bound, "{precision}: {name} vs cpu {what} differ by {gap:e} > {bound:e}");
        report.push(format!("{what}: {gap:.3e} (bound {bound:.0e})"));
    };

    // Training: the per-epoch losses, and the steps actually taken.
    let (ea, eb) = (&a.record["epochs"], &b.record["epochs"]);
    assert_eq!(ea.as_array().unwrap().len(), 1);
    assert_eq!(eb.as_array().unwrap().len(), 1);
    for key in ["train_loss", "val_loss"] {
        let (x, y) = (number(&ea[0][key], key), number(&eb[0][key], key));
        assert!((0.5..1.0).contains(&x), "{precision}: cpu {key} {x} is not near ln 2");
        check(format!("epoch 1 {key}"), (x - y).abs(), tol.loss);
    }
    for key in ["train_acc", "val_acc", "steps", "skipped_steps", "loss_scale"] {
        assert_eq!(ea[0][key], eb[0][key], "{precision}: epoch 1 {key}");
    }
    assert_eq!(ea[0]["steps"], 22, "349 training reviews in batches of 16");
    assert_eq!(ea[0]["skipped_steps"], 0, "{precision}: no step may overflow");

    // Test metrics from `train`, and `eval` of the exported `best/` (the same rows and weights,
    // so `eval` must also repeat the record's test loss in each build).
    let (ta, tb) = (&a.record["test"], &b.record["test"]);
    assert_eq!(ta["n"], 100);
    check("test loss".into(), (number(&ta["loss"], "loss") - number(&tb["loss"], "loss")).abs(), tol.loss);
    for key in ["accuracy", "f1", "confusion"] {
        // Decision margins here are ≥ 1e-2, far above the logit gaps: no prediction may flip.
        assert_eq!(ta[key], tb[key], "{precision}: test {key}");
    }
    for (build, outcome) in [("cpu", &a), (name, &b)] {
        assert_eq!(outcome.eval["n"], 100, "{build}");
        assert_eq!(outcome.eval["confusion"], outcome.record["test"]["confusion"], "{build}");
        let gap = (number(&outcome.eval["loss"], "eval loss")
            - number(&outcome.record["test"]["loss"], "loss"))
        .abs();
        check(format!("{build} eval loss vs its record's test loss"), gap, tol.loss);
    }
    check(
        "eval loss".into(),
        (number(&a.eval["loss"], "loss") - number(&b.eval["loss"], "loss")).abs(),
        tol.loss,
    );

    // Export: every weight, and the logits `predict` prints.
    let initial = read_weights(&model.join("model.safetensors"));
    let mut names: Vec<&String> = a.weights.keys().collect();
    names.sort();
    assert_eq!(names.len(), b.weights.len());
    let (mut weight_gap, mut moved) = (0.0f64, 0.0f64);
    for weight in names {
        let (wa, wb) = (&a.weights[weight], &b.weights[weight]);
        assert_eq!(wa.len(), wb.len(), "{weight}");
        let gap = max_gap(wa.iter().map(|&v| v as f64), wb.iter().map(|&v| v as f64));
        weight_gap = if gap.is_nan() { gap } else { weight_gap.max(gap) };
        let start = initial.get(weight).unwrap_or_else(|| panic!("{weight} is not in the fixture"));
        moved = moved.max(max_gap(wa.iter().map(|&v| v as f64), start.iter().map(|&v| v as f64)));
    }
    check("weights".into(), weight_gap, tol.weight);
    assert_eq!(a.logits.len(), TEXTS.len());
    assert_eq!(b.logits.len(), TEXTS.len());
    let logit_gap = max_gap(a.logits.iter().flatten().copied(), b.logits.iter().flatten().copied());
    check("predict logits".into(), logit_gap, tol.logit);
    // The agreement means something only if training moved the weights well past the bound.
    assert!(moved >= 5.0 * tol.weight, "{precision}: training moved no weight by more than {moved:e}");
    report.push(format!("largest weight change in training: {moved:.3e}"));
    eprintln!("{precision}, {name} vs cpu:\n  {}", report.join("\n  "));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wgpu_build_trains_evaluates_and_predicts_like_the_cpu_build_in_f32() {
    compare_builds("f32", &F32);
}

#[test]
fn wgpu_build_trains_evaluates_and_predicts_like_the_cpu_build_in_f16() {
    compare_builds("f16", &F16);
}

/// `bench step-profile` on the GPU code path: a line for DistilBERT's layer structure (cut to a
/// tiny width) whose counts come from CubeCL's launch and compilation logs, and a steady state
/// (both counted blocks the same, nothing compiled in them).
#[test]
fn wgpu_build_profiles_a_training_step() {
    let Some(wgpu) = wgpu_bin() else { return };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wgpu-step-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!("[autotune]\nlevel = \"minimal\"\ncache = {{ file = {:?} }}\n", dir);
    std::fs::write(dir.join("cubecl.toml"), toml).unwrap();
    let build = Build { name: "wgpu", bin: wgpu, backend: "wgpu", runner: None };
    #[rustfmt::skip]
    let args = [
        "bench", "step-profile", "--arch", "distilbert", "--hidden", "32", "--layers", "2",
        "--max-len", "32", "--batch", "4", "--warmup", "2", "--steps", "2", "--precision", "f16",
    ];
    // No kernel cache: every kernel the run needs is compiled, so the count cannot be 0.
    let out = run_with(&build, &dir, &args, &[("BERTLAB_KERNEL_CACHE", "off")]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert_eq!(line["arch"], "distilbert", "{line}");
    assert_eq!(line["backend"], "wgpu", "{line}");
    assert_eq!(
        (line["layers"].as_u64(), line["batch"].as_u64(), line["max_len"].as_u64()),
        (Some(2), Some(4), Some(32))
    );
    // (`number` fails on null, which is how serde_json writes NaN)
    let launches = number(&line["launches_per_step"], "launches_per_step");
    // At least a few kernels per layer in each of forward, backward and the optimizer.
    assert!(launches > 10.0 * 2.0, "{line}");
    let blocks = &line["launches_per_step_blocks"];
    assert_eq!(blocks[0], blocks[1], "the two counted blocks differ: not a steady state: {line}");
    let by_kernel: f64 =
        line["launches_per_step_by_kernel"].as_object().unwrap().values().map(|v| number(v, "kind")).sum();
    assert!((by_kernel - launches).abs() < 0.05, "{by_kernel} vs {launches}: {line}");
    // The f16 step's overflow check, clipping and loss scale are decided on the device: no host
    // wait inside a step (the state is read with the logits, outside the counted steps).
    assert_eq!(number(&line["host_waits_per_step"], "host_waits_per_step"), 0.0, "{line}");
    assert!(number(&line["kernels_compiled"], "kernels_compiled") > 0.0, "{line}");
    assert_eq!(number(&line["kernels_compiled_in_measured_steps"], "compiled in steps"), 0.0, "{line}");
    // Dropout runs bertlab's CubeCL kernel (the mask hashed on the device), also in f16.
    let kinds = line["launches_per_step_by_kernel"].as_object().unwrap();
    let is_dropout = |k: &String| k.to_lowercase().replace('_', "").contains("hashdropout");
    assert!(kinds.keys().any(is_dropout), "no hash_dropout_kernel launch: {line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench kernels` on the GPU code path: the build routes the ops to its fast path (CubeCL
/// kernels where there are some, the decomposition with hand-derived backward passes for the
/// rest) and every op's output and gradients match the reference decomposition on the same
/// device; dropout's kernel gives the host's mask bit for bit.
#[test]
fn wgpu_build_kernels_match_the_reference() {
    let Some(wgpu) = wgpu_bin() else { return };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wgpu-kernels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let build = Build { name: "wgpu", bin: wgpu, backend: "wgpu", runner: None };
    // Lavapipe (Mesa 22.3) has no cooperative matrices: `tensor-cores` falls back to the rows.
    kernels_match_the_reference(&build, &dir, "rows");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same on the SPIR-V build (`--features vulkan`) under Mesa 26's lavapipe, whose
/// cooperative matrices (8 × 8 × 8, f16 into f32, planes of 8) run the tensor-core attention
/// kernels' `cmma` products: the one place without a GPU where that code path computes.
#[test]
fn vulkan_build_runs_the_tensor_core_attention_on_cooperative_matrices() {
    let (Some(bin), Some(runner)) = (env_file("BERTLAB_VULKAN_BIN"), env_file("BERTLAB_LAVAPIPE_26")) else {
        eprintln!(
            "skipping: BERTLAB_VULKAN_BIN (a bertlab built with `--no-default-features --features \
             vulkan`) and BERTLAB_LAVAPIPE_26 (the runner scripts/lavapipe-26.sh prints) are not both set; \
             .ci/run sets them"
        );
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vulkan-kernels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let build = Build { name: "vulkan", bin, backend: "vulkan", runner: Some(runner) };
    kernels_match_the_reference(&build, &dir, "tensor-cores");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A whole f16 run on the tensor-core attention: the `vulkan` build under Mesa 26's lavapipe
/// with `BERTLAB_ATTENTION=tensor-cores` trains, evaluates and predicts as the CPU build does.
/// The fixture's heads are 8 wide, which the tile kernels do not take (they would fall back to
/// the rows); the same weights as 2 heads of 16, the narrowest they take, are another valid
/// model, and the record must say the tensor-core kernels ran (`, ran rows` otherwise).
#[test]
fn vulkan_build_trains_on_the_tensor_core_attention_like_the_cpu_build_in_f16() {
    let Some(shared) = shared() else { return };
    let (Some(bin), Some(runner)) = (env_file("BERTLAB_VULKAN_BIN"), env_file("BERTLAB_LAVAPIPE_26")) else {
        eprintln!("skipping: BERTLAB_VULKAN_BIN and BERTLAB_LAVAPIPE_26 are not both set; .ci/run sets them");
        return;
    };
    let fixture = shared.join("fixtures/tiny-distilbert-classifier");
    let model = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("heads-of-16-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&model);
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["dim"].as_u64(), config["n_heads"].as_u64()),
        (Some(32), Some(4)),
        "the fixture changed"
    );
    config["n_heads"] = 2.into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let gpu =
        Build { name: "vulkan", bin, backend: "vulkan (attention: tensor-cores)", runner: Some(runner) };
    compare_with_cpu(&gpu, &[("BERTLAB_ATTENTION", "tensor-cores")], &shared, &model, "f16", &F16);
    let _ = std::fs::remove_dir_all(&model);
}

/// `var`'s path, which must be a file, or `None` when unset.
fn env_file(var: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var)?);
    assert!(path.is_file(), "{var}={} is not a file: build it or unset the variable", path.display());
    Some(path)
}

/// `bench kernels --seed 3` on `build`, its device named as `cargo xtask --backend` names it
/// (`--device wgpu`, `--device vulkan`): every check on the fast path and passing, the copies
/// bit for bit, and attention's `tensor-cores` choice running `tensor_cores_ran`.
fn kernels_match_the_reference(build: &Build, dir: &Path, tensor_cores_ran: &str) {
    let out = run(build, dir, &["bench", "kernels", "--seed", "3", "--device", build.backend]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 35, "one line per op and case: {text}");
    for line in &lines {
        assert_eq!(
            line["fast_path"], true,
            "the {} build must route the ops to its fast path: {line}",
            build.name
        );
        assert!(line["build"].as_str().unwrap().starts_with(build.backend), "{line}");
        assert_eq!(line["passed"], true, "{line}");
        assert!(number(&line["max_error"], "max_error") <= number(&line["tolerance"], "tolerance"), "{line}");
    }
    // The AdamW kernel writes the f16 copies of the parameters whose gradients came in f16,
    // bit for bit the cast of the new parameter (the check's error covers them).
    let f16_grads = lines
        .iter()
        .find(|l| l["case"].as_str().is_some_and(|c| c.starts_with("7 tensors, gradients in f16")))
        .expect("the AdamW case with f16 gradients");
    assert!(f16_grads["case"].as_str().unwrap().ends_with(": 7 copies written"), "{f16_grads}");
    // The LayerNorm kernel's f16 copy of its output (an f16 step's product input) is bit for
    // bit the output's cast, in training and in inference.
    let copies: Vec<&Value> = lines
        .iter()
        .filter(|l| l["case"].as_str().is_some_and(|c| c.contains("copy is the output's cast")))
        .collect();
    assert_eq!(copies.len(), 2, "{text}");
    for copy in copies {
        assert_eq!(number(&copy["max_error"], "copy error"), 0.0, "{copy}");
    }
    // Attention in f16 under each `BERTLAB_ATTENTION` choice, three cases each: the tile
    // kernels ran for `tiles` (their products in plain code) and, for `tensor-cores`, what the
    // device allows (the row kernels where it has no `cmma`, and the case says so).
    let ran = |products: &str| -> Vec<String> {
        let prefix = format!("products {products}, ran ");
        lines
            .iter()
            .filter_map(|l| l["case"].as_str()?.strip_prefix(prefix.as_str()))
            .map(|rest| rest.split(':').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(ran("rows"), ["rows"; 3], "{text}");
    assert_eq!(ran("tiles"), ["tiles"; 3], "{text}");
    assert_eq!(ran("tensor-cores"), [tensor_cores_ran; 3], "{text}");
    let dropout = lines.iter().find(|l| l["op"] == "dropout").expect("a dropout line");
    assert_eq!(number(&dropout["max_error"], "dropout error"), 0.0, "{dropout}");
}
