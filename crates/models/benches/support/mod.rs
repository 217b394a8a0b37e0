//! What the benchmarks against PyTorch share: thread setup, a persistent Python process that
//! answers one JSON line per request (so its rounds interleave with bertlab's and both see the
//! same machine load), the machine's load average, and best-of-rounds bookkeeping.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Threads for both sides: BENCH_THREADS, default 2 (the goals are stated for 2 threads).
pub fn threads() -> usize {
    env_usize("BENCH_THREADS", 2)
}

/// A `usize` from the environment, or `default` when unset or unparsable.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The Python interpreter with torch and transformers: BENCH_PYTHON, default `python3`.
pub fn python() -> String {
    std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Size rayon's global pool once, before any tensor work.
pub fn init_threads(threads: usize) {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon pool set once");
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` says (empty where absent).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `nproc` and the CPU model, for the table's header.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// A Python process running `script`: it reads one JSON line of arguments, prints one JSON
/// line (its hello), then answers each JSON request line with one JSON line.
pub struct Python {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The hello line.
    pub hello: serde_json::Value,
}

impl Python {
    /// Start `script` with `args`; `Err` says why the PyTorch side is skipped.
    pub fn start(script: &str, args: &serde_json::Value) -> Result<Python, String> {
        let python = python();
        let mut child = Command::new(&python)
            .args(["-c", script])
            .env("TRANSFORMERS_VERBOSITY", "error")
            .env("HF_HUB_OFFLINE", "1")
            .env("OMP_NUM_THREADS", threads().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "{python} not runnable ({e}); set BENCH_PYTHON to a python with torch and transformers"
                )
            })?;
        let stdin = child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{args}").map_err(|e| e.to_string())?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(hello) => Ok(Python { child, stdout, hello }),
            Err(_) => {
                let mut stderr = String::new();
                let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
                let _ = child.wait();
                let last = stderr.lines().last().unwrap_or("no output").to_string();
                Err(format!("{python} failed: {last} (BENCH_PYTHON picks the interpreter)"))
            }
        }
    }

    /// Send one request, wait for its answer.
    pub fn ask(&mut self, request: &serde_json::Value) -> serde_json::Value {
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{request}").expect("the PyTorch process is alive");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("the PyTorch process is alive");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("the PyTorch process replied {line:?}"))
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF ends the python loop
        let _ = self.child.wait();
    }
}

/// The best (lowest) of the rounds seen so far, per implementation.
#[derive(Default, Clone, Copy, Debug)]
pub struct Best(pub Option<f64>);

impl Best {
    /// Keep `seconds` if it is the lowest yet.
    pub fn add(&mut self, seconds: f64) {
        self.0 = Some(self.0.map_or(seconds, |b| b.min(seconds)));
    }

    /// `12.345` or `-`.
    pub fn show(&self, scale: f64, decimals: usize) -> String {
        self.0.map_or("-".to_string(), |v| format!("{:.*}", decimals, v * scale))
    }
}

/// The mean of a round's timings.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// Deterministic token ids: `rows` rows of `[CLS] w… [SEP]`, words from the real vocabulary.
pub fn token_ids(rows: usize, seq: usize, seed: u64) -> Vec<i64> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut ids = Vec::with_capacity(rows * seq);
    for _ in 0..rows {
        ids.push(101);
        for _ in 1..seq - 1 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ids.push(1996 + ((state >> 33) % 27_000) as i64);
        }
        ids.push(102);
    }
    ids
}
