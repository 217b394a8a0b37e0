//! Bad input, faults and interrupted work, through the binaries as a user meets them. Every case
//! must end in one clear line on stderr that names the file, key, row or flag at fault, with exit
//! code 1 (2 for a flag's value), without a panic, an abort or a hang, and leave what was written
//! before it intact.
#![cfg(unix)]

use bertlab_tests::{build_binaries, workspace_root, HUB_ENV};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The binaries, built once for every test of this file.
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINARIES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINARIES.get_or_init(build_binaries)
}

fn bertlab() -> &'static Path {
    &binaries().1
}

fn xtask() -> &'static Path {
    &binaries().0
}

fn shared() -> Option<PathBuf> {
    let dir = bertlab_test_support::shared_dir();
    if dir.is_none() {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
    }
    dir
}

/// Run `cmd` with a guard: a process still running after `limit` is a hang and fails the test.
fn run_with_limit(cmd: Command, limit: Duration) -> Output {
    run_with_input(cmd, Stdio::null(), limit)
}

/// [`run_with_limit`] with `stdin` as standard input.
fn run_with_input(mut cmd: Command, stdin: Stdio, limit: Duration) -> Output {
    cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start the command");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?} (a hang):\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn cmd(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args).current_dir(workspace_root());
    c
}

/// Assert the command failed with `code` and one line on stderr (notes aside) holding every
/// `needle`; returns that line.
fn fails(out: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "exit status {} (want {code}):\n{stderr}", out.status);
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "a panic:\n{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note:") && !l.starts_with("warning:"))
        .collect();
    assert_eq!(lines.len(), 1, "want one line:\n{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from: {}", lines[0]);
    }
    lines[0].to_string()
}

fn tiny_train(shared: &Path, out: &Path, extra: &[&str]) -> Command {
    let model = shared.join("fixtures/tiny-distilbert-classifier");
    let data = shared.join("data/hf-imdb");
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--source",
        data.to_str().unwrap(),
        "--subset",
        "0.02",
        "--max-len",
        "32",
        "--batch",
        "8",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut c = cmd(bertlab(), &args);
    c.env("HF_HUB_OFFLINE", "1");
    c
}

/// Copy a fixture directory (its files) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn flags_with_values_that_cannot_be_used_exit_2_naming_the_flag() {
    let Some(shared) = shared() else { return };
    let model = shared.join("fixtures/tiny-distilbert-classifier");
    let data = shared.join("data/hf-imdb");
    let out = run_with_limit(
        cmd(
            bertlab(),
            &["eval", "--model", model.to_str().unwrap(), "--source", data.to_str().unwrap(), "--batch", "0"],
        ),
        Duration::from_secs(60),
    );
    fails(&out, 2, &["--batch 0", "at least 1"]);
    let out = run_with_limit(
        cmd(bertlab(), &["train", "--print-spec", "--grad-clip", "0"]),
        Duration::from_secs(30),
    );
    fails(&out, 2, &["--grad-clip 0", "positive"]);
    let out = run_with_limit(
        cmd(bertlab(), &["train", "--print-spec", "--subset", "1.5"]),
        Duration::from_secs(30),
    );
    fails(&out, 2, &["--subset 1.5"]);
    // A --out that is not UTF-8 (run specs and records are text).
    use std::os::unix::ffi::OsStrExt;
    let mut c = Command::new(bertlab());
    c.args(["train", "--print-spec", "--out"]).arg(std::ffi::OsStr::from_bytes(b"runs/\xff"));
    fails(&run_with_limit(c, Duration::from_secs(30)), 2, &["--out", "UTF-8"]);
    // No device of any build; and settings that contradict each other.
    let out = run_with_limit(
        cmd(bertlab(), &["predict", "--model", model.to_str().unwrap(), "--device", "banana", "hi"]),
        Duration::from_secs(30),
    );
    fails(&out, 2, &["--device \"banana\"", "expected"]);
    let out = run_with_limit(
        cmd(bertlab(), &["train", "--print-spec", "--warmup-ratio", "0.1", "--schedule", "constant"]),
        Duration::from_secs(30),
    );
    fails(&out, 2, &["--warmup-ratio 0.1", "constant schedule"]);
    // xtask's flags exit 2 as bertlab's do.
    let out = run_with_limit(cmd(xtask(), &["smoke", "--dry-run", "--subset", "0"]), Duration::from_secs(60));
    fails(&out, 2, &["--subset 0", "(0, 1]"]);
}

#[test]
fn a_run_whose_f16_steps_all_overflow_fails_naming_epoch_and_step() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    let out = run_with_limit(
        tiny_train(&shared, &out_dir, &["--precision", "f16", "--lr", "1e6"]),
        Duration::from_secs(300),
    );
    let line = fails(&out, 1, &["diverged at epoch 1, step", "overflowed"]);
    assert!(line.contains(&out_dir.display().to_string()), "{line}");
    assert!(!out_dir.join("record.json").exists(), "a diverged run is never recorded as completed");
    let failed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("failed-record.json")).unwrap()).unwrap();
    assert_eq!(failed["status"], "failed");
}

#[test]
fn an_error_from_deep_in_the_trainer_names_the_flag_and_its_record_names_the_key() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    // The data are read within the run: the error comes from bertlab-data through the trainer.
    let out =
        run_with_limit(tiny_train(&shared, &out_dir, &["--label-column", "stars"]), Duration::from_secs(120));
    let line = fails(&out, 1, &["no `stars` column", "name the label column with --label-column"]);
    assert!(!line.contains("label_column"), "{line}");
    // What a pipeline reads (failed-record.json's `error`): the run-spec key.
    let failed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("failed-record.json")).unwrap()).unwrap();
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("no `stars` column") && error.ends_with("name the label column with `label_column`"),
        "{error}"
    );
    assert!(!error.contains("--"), "{error}");
}

#[test]
fn a_finished_run_is_not_overwritten_and_its_outputs_stay_intact() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    let first = run_with_limit(tiny_train(&shared, &out_dir, &[]), Duration::from_secs(300));
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let record = std::fs::read(out_dir.join("record.json")).unwrap();
    let weights = std::fs::read(out_dir.join("best/model.safetensors")).unwrap();
    let again = run_with_limit(tiny_train(&shared, &out_dir, &["--lr", "5e-5"]), Duration::from_secs(120));
    fails(&again, 1, &["record.json", "already holds a completed run", "--overwrite"]);
    assert_eq!(std::fs::read(out_dir.join("record.json")).unwrap(), record);
    assert_eq!(std::fs::read(out_dir.join("best/model.safetensors")).unwrap(), weights);
    // A replacement whose inputs do not load (no such column) leaves the completed run as it
    // was, without a failed record beside it.
    let cannot_start = run_with_limit(
        tiny_train(&shared, &out_dir, &["--overwrite", "--label-column", "stars"]),
        Duration::from_secs(120),
    );
    fails(&cannot_start, 1, &["stars"]);
    assert_eq!(std::fs::read(out_dir.join("record.json")).unwrap(), record);
    assert_eq!(std::fs::read(out_dir.join("best/model.safetensors")).unwrap(), weights);
    assert!(!out_dir.join("failed-record.json").exists());
    let replaced = run_with_limit(
        tiny_train(&shared, &out_dir, &["--lr", "5e-5", "--overwrite"]),
        Duration::from_secs(300),
    );
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    assert_ne!(std::fs::read(out_dir.join("record.json")).unwrap(), record);
}

/// A classifier whose classifier weights are NaN (a diverged export): predict and eval refuse.
#[test]
fn predictions_and_metrics_are_never_nan() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("nan-model");
    copy_dir(&shared.join("fixtures/tiny-bert-classifier"), &model);
    // Overwrite every f32 of the classifier's weight with NaN, in place in the safetensors file.
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let entry = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("classifier") && k.ends_with("weight"))
        .map(|(_, v)| v.clone())
        .expect("a classifier weight");
    let (start, end) = (
        entry["data_offsets"][0].as_u64().unwrap() as usize,
        entry["data_offsets"][1].as_u64().unwrap() as usize,
    );
    for chunk in bytes[8 + header_len + start..8 + header_len + end].chunks_exact_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    let out = run_with_limit(
        cmd(bertlab(), &["predict", "--model", model.to_str().unwrap(), "good film"]),
        Duration::from_secs(60),
    );
    let line = fails(&out, 1, &["nan-model"]);
    assert!(line.contains("not a number") || line.contains("not finite") || line.contains("NaN"), "{line}");
    let data = shared.join("data/hf-imdb");
    let out = run_with_limit(
        cmd(
            bertlab(),
            &[
                "eval",
                "--model",
                model.to_str().unwrap(),
                "--source",
                data.to_str().unwrap(),
                "--subset",
                "0.01",
            ],
        ),
        Duration::from_secs(120),
    );
    fails(&out, 1, &["nan-model"]);
}

#[test]
fn a_model_whose_classes_differ_from_the_data_is_refused_or_matched_by_name() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = shared.join("data/hf-imdb");
    let eval = |model: &Path| {
        run_with_limit(
            cmd(
                bertlab(),
                &[
                    "eval",
                    "--model",
                    model.to_str().unwrap(),
                    "--source",
                    data.to_str().unwrap(),
                    "--subset",
                    "0.01",
                    "--json",
                ],
            ),
            Duration::from_secs(120),
        )
    };
    let relabel = |name: &str, labels: serde_json::Value| {
        let model = tmp.path().join(name);
        copy_dir(&shared.join("fixtures/tiny-distilbert-classifier"), &model);
        let path = model.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config["id2label"] = labels.clone();
        config["label2id"] = serde_json::Value::Object(
            labels
                .as_object()
                .unwrap()
                .iter()
                .map(|(id, name)| {
                    (name.as_str().unwrap().to_string(), serde_json::json!(id.parse::<u64>().unwrap()))
                })
                .collect(),
        );
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        model
    };
    let base = eval(&relabel("same", serde_json::json!({"0": "neg", "1": "pos"})));
    assert!(base.status.success(), "{}", String::from_utf8_lossy(&base.stderr));
    // The same classes in the other order: matched by name, said so, and the same metrics
    // come out once the model's outputs are read in its own order.
    let swapped = eval(&relabel("swapped", serde_json::json!({"0": "pos", "1": "neg"})));
    assert!(swapped.status.success(), "{}", String::from_utf8_lossy(&swapped.stderr));
    assert!(String::from_utf8_lossy(&swapped.stderr).contains("matched by name"));
    // Other classes: refused, naming both lists.
    let other = eval(&relabel("topics", serde_json::json!({"0": "sports", "1": "world"})));
    fails(&other, 1, &["sports, world", "neg, pos"]);

    // Fine-tuning a model that already has a head: it keeps its classes, matched to the data's
    // by name, or is refused when they are other classes.
    let train = |model: &Path, out: &Path| {
        let args = [
            "train",
            "--model",
            model.to_str().unwrap(),
            "--source",
            data.to_str().unwrap(),
            "--subset",
            "0.01",
            "--max-len",
            "16",
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        let mut c = cmd(bertlab(), &args);
        c.env("HF_HUB_OFFLINE", "1");
        run_with_limit(c, Duration::from_secs(120))
    };
    let out = tmp.path().join("train-topics");
    let model = tmp.path().join("topics");
    fails(
        &train(&model, &out),
        1,
        &[model.to_str().unwrap(), "already has a classification head", "sports, world"],
    );
    assert!(!out.join("record.json").exists());
    let out = tmp.path().join("train-swapped");
    let trained = train(&tmp.path().join("swapped"), &out);
    let stderr = String::from_utf8_lossy(&trained.stderr);
    assert!(trained.status.success(), "{stderr}");
    assert!(stderr.contains("matched by name"), "{stderr}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("record.json")).unwrap()).unwrap();
    assert_eq!(record["data"]["class_names"], serde_json::json!(["pos", "neg"]), "the head's order");
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("best/config.json")).unwrap()).unwrap();
    assert_eq!(exported["id2label"], serde_json::json!({"0": "pos", "1": "neg"}));
}

#[test]
fn a_silent_hub_ends_in_a_timeout_not_a_hang() {
    let hub = bertlab_hub_standin::HubStandin::start().unwrap();
    hub.inject(bertlab_hub_standin::Fault::Silent, 100);
    let home = tempfile::tempdir().unwrap();
    let mut c = cmd(bertlab(), &["predict", "--model", "org/some-model", "good"]);
    for var in HUB_ENV {
        c.env_remove(var);
    }
    c.env("HF_ENDPOINT", hub.url())
        .env("HF_HOME", home.path())
        .env("BERTLAB_HUB_TIMEOUT_SECS", "1")
        .env("BERTLAB_HUB_RETRIES", "1");
    let out = run_with_limit(c, Duration::from_secs(60));
    fails(&out, 1, &["org/some-model", "config.json", "timeout"]);
}

#[test]
fn a_missing_local_path_that_reads_as_a_hub_id_is_named_as_a_path_too() {
    // `crates/` is a folder of the working directory; `crates/gone` is not there, so it reads
    // as a Hub id (organisation `crates`), which the offline cache does not hold.
    let home = tempfile::tempdir().unwrap();
    let mut c = cmd(bertlab(), &["predict", "--model", "crates/gone", "good"]);
    c.env("HF_HUB_OFFLINE", "1").env("HF_HOME", home.path());
    let out = run_with_limit(c, Duration::from_secs(60));
    fails(
        &out,
        1,
        &[
            "`crates/gone`",
            "not in the HF cache",
            "`crates` is a folder here",
            "meant as a local path, it does not exist",
        ],
    );
}

/// A named pipe or a device where a file is read is refused at once, never waited on or read
/// without end: a spec, predict's texts, and standard input that is no text.
#[test]
fn special_files_are_refused_without_waiting_and_endless_input_ends() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe.toml");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipping: no mkfifo");
        return;
    }
    let limit = Duration::from_secs(60);
    let f = fifo.to_str().unwrap();
    let spec = run_with_limit(cmd(bertlab(), &["train", "--print-spec", "--spec", f]), limit);
    fails(&spec, 1, &["--spec", "pipe.toml", "is a FIFO (named pipe)", "a run spec is a TOML file"]);
    let zero = run_with_limit(cmd(bertlab(), &["train", "--print-spec", "--spec", "/dev/zero"]), limit);
    fails(&zero, 1, &["/dev/zero", "is a device", "a run spec is a TOML file"]);

    let model = shared.join("fixtures/tiny-distilbert-classifier");
    let m = model.to_str().unwrap();
    let texts = run_with_limit(cmd(bertlab(), &["predict", "--model", m, "--file", f]), limit);
    fails(&texts, 1, &["pipe.toml", "a FIFO", "not a regular file", "standard input (-)"]);
    let endless = cmd(bertlab(), &["predict", "--model", m, "--file", "-"]);
    let out = run_with_input(endless, std::fs::File::open("/dev/zero").unwrap().into(), limit);
    fails(&out, 1, &["standard input: line 1", "longer than 64 MiB"]);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data/hf-imdb");
    let mut child = Command::new(bertlab())
        .args(["data", "split", "--source", data.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close the pipe, as `| head -c 100` does.
    let mut first = [0u8; 100];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn a_report_over_damaged_records_names_them_and_reports_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results");
    let good = out.join("p/q/good");
    let bad = out.join("p/q/bad");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    // A record of this schema, and one lacking fields (an older or foreign file).
    let spec = bertlab_run::RunSpec::default();
    let env = bertlab_run::Environment::capture("cpu (burn-flex)", "Cpu", "f32", 42);
    let mut record = bertlab_run::RunRecord::new(spec, env);
    record.status = bertlab_run::RunStatus::Completed;
    record.write_atomic(&good.join("record.json")).unwrap();
    std::fs::write(bad.join("record.json"), r#"{"schema_version": 1, "status": "completed", "epochs": []}"#)
        .unwrap();
    let output =
        run_with_limit(cmd(xtask(), &["report", "--out", out.to_str().unwrap()]), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("bad/record.json") && stderr.contains("missing field"),
        "{stderr}"
    );
    assert!(out.join("report.md").is_file());
}

#[test]
fn a_broken_model_snapshot_is_refused_by_every_command_naming_file_and_key() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fixture = shared.join("fixtures/tiny-distilbert-classifier");
    let data = shared.join("data/hf-imdb");
    let snapshot = |name: &str, edit: &dyn Fn(&Path)| {
        let model = tmp.path().join(name);
        copy_dir(&fixture, &model);
        edit(&model);
        model
    };
    let edit_json = |path: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        f(&mut json);
        std::fs::write(path, serde_json::to_string(&json).unwrap()).unwrap();
    };
    // Each command that loads a model: train, eval, predict.
    let every_command = |model: &Path, needles: &[&str]| {
        let m = model.to_str().unwrap();
        let out = tmp.path().join(format!("out-{}", model.file_name().unwrap().to_str().unwrap()));
        let d = data.to_str().unwrap();
        let o = out.to_str().unwrap();
        let train_args = [
            "train",
            "--model",
            m,
            "--source",
            d,
            "--subset",
            "0.02",
            "--max-len",
            "32",
            "--quiet",
            "--out",
            o,
        ];
        let mut train = cmd(bertlab(), &train_args);
        train.env("HF_HUB_OFFLINE", "1");
        fails(&run_with_limit(train, Duration::from_secs(120)), 1, needles);
        assert!(!out.join("record.json").exists());
        let eval =
            cmd(bertlab(), &["eval", "--model", m, "--source", data.to_str().unwrap(), "--subset", "0.01"]);
        fails(&run_with_limit(eval, Duration::from_secs(120)), 1, needles);
        let predict = cmd(bertlab(), &["predict", "--model", m, "A fine film."]);
        fails(&run_with_limit(predict, Duration::from_secs(120)), 1, needles);
    };

    // Class ids that `transformers` would silently merge ("0" and "00" are both int 0).
    let merged = snapshot("merged-ids", &|m| {
        edit_json(&m.join("config.json"), &|j| {
            j["id2label"] = serde_json::json!({"0": "neg", "00": "pos"});
            j["label2id"] = serde_json::json!({"neg": 0, "pos": 0});
        })
    });
    let config = merged.join("config.json").display().to_string();
    every_command(&merged, &[&config, "`id2label`", "\"0\" and \"00\""]);

    // A class count nothing could hold: refused before anything is sized by it.
    let huge = snapshot("huge-head", &|m| {
        edit_json(&m.join("config.json"), &|j| {
            j["num_labels"] = 1_000_000_000_000u64.into();
            j.as_object_mut().unwrap().remove("id2label");
            j.as_object_mut().unwrap().remove("label2id");
        })
    });
    let config = huge.join("config.json").display().to_string();
    every_command(&huge, &[&config, "`num_labels`", "1000000000000"]);

    // A tokenizer whose ids run past the model's embedding table (another model's tokenizer).
    let foreign = snapshot("foreign-tokenizer", &|m| {
        edit_json(&m.join("tokenizer.json"), &|j| {
            j["model"]["vocab"]["zzzforeign"] = 30_522.into();
        });
        let mut vocab = std::fs::read_to_string(m.join("vocab.txt")).unwrap();
        vocab.push_str("zzzforeign\n");
        std::fs::write(m.join("vocab.txt"), vocab).unwrap();
    });
    every_command(&foreign, &["tokenizer", "30522", "vocab_size 30522", "does not belong to this model"]);
}

/// A run replaces `best/` and `checkpoint/` wholesale: what a run did not write there, the model
/// it starts from, a file or an unreadable record are refused, and stay as they were.
#[test]
fn what_no_run_wrote_in_out_is_refused_and_left_intact() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(120);
    let t = |name: &str| tmp.path().join(name);

    std::fs::create_dir_all(t("user/best")).unwrap();
    std::fs::write(t("user/best/mine.txt"), "keep").unwrap();
    let out = run_with_limit(tiny_train(&shared, &t("user"), &[]), limit);
    fails(&out, 1, &["user/best", "no bertlab run", "--overwrite"]);
    assert_eq!(std::fs::read_to_string(t("user/best/mine.txt")).unwrap(), "keep");

    std::fs::create_dir_all(t("ck/checkpoint")).unwrap();
    std::fs::write(t("ck/checkpoint/mine.txt"), "keep").unwrap();
    let out = run_with_limit(tiny_train(&shared, &t("ck"), &[]), limit);
    fails(&out, 1, &["ck/checkpoint", "mine.txt", "--fresh"]);
    assert_eq!(std::fs::read_to_string(t("ck/checkpoint/mine.txt")).unwrap(), "keep");
    // A PyTorch checkpoint is a `.bin` too, but not one a bertlab checkpoint writes.
    std::fs::create_dir_all(t("pt/checkpoint")).unwrap();
    std::fs::write(t("pt/checkpoint/pytorch_model.bin"), "keep").unwrap();
    let out = run_with_limit(tiny_train(&shared, &t("pt"), &[]), limit);
    fails(&out, 1, &["pt/checkpoint", "pytorch_model.bin", "--fresh"]);
    assert_eq!(std::fs::read_to_string(t("pt/checkpoint/pytorch_model.bin")).unwrap(), "keep");

    std::fs::write(t("a-file"), "keep").unwrap();
    let out = run_with_limit(tiny_train(&shared, &t("a-file"), &[]), limit);
    fails(&out, 1, &["--out", "a-file", "a file, not a directory"]);
    assert_eq!(std::fs::read_to_string(t("a-file")).unwrap(), "keep");

    std::fs::create_dir_all(t("garbled")).unwrap();
    std::fs::write(t("garbled/record.json"), "garbage{").unwrap();
    let out = run_with_limit(tiny_train(&shared, &t("garbled"), &[]), limit);
    fails(&out, 1, &["garbled/record.json", "not a run record", "--overwrite"]);
    assert_eq!(std::fs::read_to_string(t("garbled/record.json")).unwrap(), "garbage{");

    // Fine-tuning M/best into --out M would replace the model being read.
    copy_dir(&shared.join("fixtures/tiny-distilbert-classifier"), &t("m/best"));
    let weights = std::fs::read(t("m/best/model.safetensors")).unwrap();
    let mut train = tiny_train(&shared, &t("m"), &[]);
    let args: Vec<String> = train.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let model_at = args.iter().position(|a| a == "--model").unwrap() + 1;
    let mut args = args;
    args[model_at] = t("m/best").display().to_string();
    train = cmd(bertlab(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    train.env("HF_HUB_OFFLINE", "1");
    fails(&run_with_limit(train, limit), 1, &["--out", "inside", "m/best"]);
    assert_eq!(std::fs::read(t("m/best/model.safetensors")).unwrap(), weights);
}

/// An output path that is one of the command's inputs is refused before anything is written;
/// an input with nothing to classify leaves an earlier output as it was.
#[test]
fn outputs_never_replace_their_inputs() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(120);
    let sample = tmp.path().join("sample");
    let s = sample.to_str().unwrap();
    let source = shared.join("data/hf-imdb");
    let made = run_with_limit(
        cmd(
            bertlab(),
            &["data", "sample", "--source", source.to_str().unwrap(), "--subset", "0.02", "--out", s],
        ),
        limit,
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let train_file = sample.join("plain_text/train-00000-of-00001.parquet");
    let before = std::fs::read(&train_file).unwrap();
    let again = run_with_limit(
        cmd(bertlab(), &["data", "sample", "--source", s, "--subset", "0.1", "--out", s]),
        limit,
    );
    fails(&again, 2, &["--out", "a file of --source", "train-00000-of-00001.parquet"]);
    assert_eq!(std::fs::read(&train_file).unwrap(), before);

    let model = shared.join("fixtures/tiny-distilbert-classifier");
    let m = model.to_str().unwrap();
    let texts = tmp.path().join("texts.txt");
    std::fs::write(&texts, "a fine film\na dull film\n").unwrap();
    let x = texts.to_str().unwrap();
    let same = run_with_limit(cmd(bertlab(), &["predict", "--model", m, "--file", x, "-o", x]), limit);
    fails(&same, 2, &["--output", "texts.txt", "--file"]);
    assert_eq!(std::fs::read_to_string(&texts).unwrap(), "a fine film\na dull film\n");

    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let preds = tmp.path().join("preds.jsonl");
    std::fs::write(&preds, "{\"earlier\": 1}\n").unwrap();
    let out = run_with_limit(
        cmd(
            bertlab(),
            &["predict", "--model", m, "--file", empty.to_str().unwrap(), "-o", preds.to_str().unwrap()],
        ),
        limit,
    );
    fails(&out, 1, &["empty.txt", "no texts"]);
    assert_eq!(std::fs::read_to_string(&preds).unwrap(), "{\"earlier\": 1}\n");

    let blank = run_with_limit(cmd(bertlab(), &["predict", "--model", m, "good", "  "]), limit);
    fails(&blank, 2, &["text 2", "empty"]);

    // Nor onto the model's own files.
    let copy = tmp.path().join("model");
    copy_dir(&model, &copy);
    let config = std::fs::read(copy.join("config.json")).unwrap();
    let c = copy.join("config.json");
    let onto_model = run_with_limit(
        cmd(
            bertlab(),
            &["predict", "--model", copy.to_str().unwrap(), "--file", x, "-o", c.to_str().unwrap()],
        ),
        limit,
    );
    fails(&onto_model, 2, &["--output", "a file of --model", "config.json"]);
    assert_eq!(std::fs::read(copy.join("config.json")).unwrap(), config);
    let vocab = copy.join("vocab.txt");
    let ids = run_with_limit(
        cmd(
            bertlab(),
            &[
                "bench",
                "make-ids",
                "--source",
                source.to_str().unwrap(),
                "--model",
                copy.to_str().unwrap(),
                "--rows",
                "4",
                "--out",
                vocab.to_str().unwrap(),
            ],
        ),
        limit,
    );
    fails(&ids, 1, &["--out", "vocab.txt", "which the command reads"]);
    assert_eq!(std::fs::read(&vocab).unwrap(), std::fs::read(model.join("vocab.txt")).unwrap());

    // Nor onto another run's record (a record's schema is all that is checked).
    let other = tmp.path().join("other-run");
    std::fs::create_dir_all(&other).unwrap();
    let record = other.join("record.json");
    let text = "{\"schema_version\": 1, \"spec\": {}}\n";
    std::fs::write(&record, text).unwrap();
    let r = record.to_str().unwrap();
    let onto_record = run_with_limit(cmd(bertlab(), &["predict", "--model", m, "--file", x, "-o", r]), limit);
    fails(&onto_record, 2, &["--output", "record.json", "a run's record"]);
    let source = source.to_str().unwrap();
    let make_ids = ["bench", "make-ids", "--source", source, "--model", m, "--rows", "4", "--out", r];
    let ids = run_with_limit(cmd(bertlab(), &make_ids), limit);
    fails(&ids, 1, &["record.json", "a run's record"]);
    assert_eq!(std::fs::read_to_string(&record).unwrap(), text);
}

/// What a run's record says is used only when a run could have said it; an evaluation never
/// scores the rows a run trained on; `imdb` beside a folder `imdb/` is not guessed at.
#[test]
fn a_runs_record_and_splits_are_not_misread() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(120);
    let run = tmp.path().join("run");
    let trained = run_with_limit(tiny_train(&shared, &run, &[]), Duration::from_secs(300));
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let best = run.join("best");
    let data = shared.join("data/hf-imdb");
    let eval = |split: &str| {
        let mut c = cmd(
            bertlab(),
            &[
                "eval",
                "--model",
                best.to_str().unwrap(),
                "--source",
                data.to_str().unwrap(),
                "--split",
                split,
            ],
        );
        c.env("HF_HUB_OFFLINE", "1");
        run_with_limit(c, limit)
    };
    // The notebook splits drew the run's training rows from IMDB's train and test files.
    fails(&eval("hub-test"), 2, &["--split hub-test", "training and validation rows", "--split test"]);

    let record = run.join("record.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    json["spec"]["batch"] = 0.into();
    std::fs::write(&record, json.to_string()).unwrap();
    fails(&eval("test"), 1, &["record.json", "batch = 0", "the run's settings"]);

    std::fs::create_dir_all(tmp.path().join("imdb")).unwrap();
    let mut summary = Command::new(bertlab());
    summary.args(["data", "summary", "--source", "imdb"]).current_dir(tmp.path()).env("HF_HUB_OFFLINE", "1");
    fails(&run_with_limit(summary, limit), 1, &["--source imdb", "./imdb", "hub:stanfordnlp/imdb"]);
}

/// Labels that would train a classifier other than the one meant: a single class, and one
/// number spelled two ways in a CSV (two classes).
#[test]
fn labels_that_would_train_the_wrong_classifier_are_refused() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let csv = |name: &str, label: &dyn Fn(usize) -> &'static str| {
        let path = tmp.path().join(name);
        let mut text = String::from("text,label\n");
        for i in 0..200 {
            text.push_str(&format!("review number {i} of a film,{}\n", label(i)));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let one = csv("one-class.csv", &|_| "pos");
    let model = shared.join("fixtures/tiny-distilbert");
    let out = tmp.path().join("run");
    let mut train = cmd(
        bertlab(),
        &[
            "train",
            "--model",
            model.to_str().unwrap(),
            "--source",
            one.to_str().unwrap(),
            "--max-len",
            "32",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    train.env("HF_HUB_OFFLINE", "1");
    fails(&run_with_limit(train, Duration::from_secs(120)), 1, &["one-class.csv", "1 class", "at least 2"]);
    assert!(!out.join("record.json").exists());

    let spelled = csv("spelled.csv", &|i| match i % 20 {
        0 => "1.0",
        r if r % 2 == 0 => "0",
        _ => "1",
    });
    let summary = cmd(bertlab(), &["data", "summary", "--source", spelled.to_str().unwrap()]);
    fails(
        &run_with_limit(summary, Duration::from_secs(60)),
        1,
        &["spelled.csv", "line", "\"1.0\"", "two classes"],
    );
}
