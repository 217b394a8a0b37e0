//! Slurm job scripts: a job array per problem (one task per planned run, all writing into the
//! shared results directory, with the same resume and out-of-memory rules as `cargo xtask`), and
//! the small jobs of a submitted chain (plan and submit the next problem once the records of the
//! one it builds on exist; write the report at the end), with the scheduler options a cluster
//! requires (`[slurm]` in a TOML file, or `--slurm KEY=VALUE`).
//!
//! Shared filesystem: the `bertlab` and `xtask` binaries, the results directory (run specs,
//! records, checkpoints) and the token cache under it must be visible at the same paths from the
//! compute nodes; every job checks the paths it needs first and says so when they are not.

use crate::error::PipelineError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a cluster needs to know about every job: where, for whom, how long, with what. Read from
/// a `[slurm]` table (keys as below, `cpus-per-task` with dashes) and `--slurm KEY=VALUE` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time` of each training task (e.g. `04:00:00`).
    pub time: Option<String>,
    /// `--mem` of each training task (e.g. `16G`).
    pub mem: Option<String>,
    /// `--cpus-per-task` of each training task (default: this machine's cores, at most 8).
    pub cpus_per_task: Option<usize>,
    /// GPUs per training task as `--gres=gpu:<this>` (`1`, `a100:1`; default `1` for GPU
    /// backends, none for the CPU).
    pub gpus: Option<String>,
    /// A whole `--gres` value instead of `gpus`.
    pub gres: Option<String>,
    /// `--constraint`.
    pub constraint: Option<String>,
    /// More `#SBATCH` lines, verbatim (e.g. `--exclusive`, `--mail-type=FAIL`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Environment modules to load before running (`module load …`).
    #[serde(default)]
    pub modules: Vec<String>,
    /// A shell line run before the job's work (e.g. `source /opt/venv/bin/activate`).
    pub setup: Option<String>,
}

/// A settings file with a `[slurm]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlurmFile {
    slurm: SlurmOptions,
}

impl SlurmOptions {
    /// Read the `[slurm]` table of `path`.
    pub fn from_file(path: &Path) -> Result<SlurmOptions, PipelineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
        let file: SlurmFile = toml::from_str(&text)
            .map_err(|e| PipelineError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(file.slurm)
    }

    /// Apply one `--slurm KEY=VALUE` flag (`extra` and `modules` add to their lists).
    pub fn set(&mut self, flag: &str) -> Result<(), PipelineError> {
        let bad = |message: String| PipelineError::BadOption { flag: format!("--slurm {flag}"), message };
        let (key, value) = flag
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim().to_string()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| bad("expected KEY=VALUE, e.g. --slurm partition=gpu".into()))?;
        match key.replace('_', "-").as_str() {
            "partition" => self.partition = Some(value),
            "account" => self.account = Some(value),
            "qos" => self.qos = Some(value),
            "time" => self.time = Some(value),
            "mem" => self.mem = Some(value),
            "cpus-per-task" => {
                let n = value.parse::<usize>().ok().filter(|&n| n > 0);
                self.cpus_per_task =
                    Some(n.ok_or_else(|| bad(format!("{value:?} is not a positive number")))?);
            }
            "gpus" => self.gpus = Some(value),
            "gres" => self.gres = Some(value),
            "constraint" => self.constraint = Some(value),
            "extra" => self.extra.push(value),
            "modules" | "module" => self.modules.push(value),
            "setup" => self.setup = Some(value),
            other => {
                return Err(bad(format!(
                    "unknown key {other:?}; the keys are partition, account, qos, time, mem, cpus-per-task, \
                     gpus, gres, constraint, extra, modules, setup"
                )))
            }
        }
        Ok(())
    }

    /// The `#SBATCH` lines every job of a chain shares (where and for whom).
    fn common_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (flag, value) in [("partition", &self.partition), ("account", &self.account), ("qos", &self.qos)]
        {
            if let Some(v) = value {
                lines.push(format!("--{flag}={v}"));
            }
        }
        lines
    }

    /// `module load` and setup lines.
    fn setup_lines(&self) -> String {
        let mut s = String::new();
        for m in &self.modules {
            s.push_str(&format!("module load {m}\n"));
        }
        if let Some(setup) = &self.setup {
            s.push_str(setup);
            s.push('\n');
        }
        s
    }
}

/// The CPU cores a training task asks for when `--slurm cpus-per-task` is not given: this
/// machine's, at most 8 (a task's threads follow what it gets, `SLURM_CPUS_PER_TASK`).
pub fn default_cpus_per_task() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// Single-quote `s` for bash.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn quote_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// A check, at the top of a job, that a path it needs is visible from the node it runs on.
fn visible(what: &str, path: &Path, test: &str) -> String {
    format!(
        "[ {test} {p} ] || {{ echo \"error: {what} {p} is not visible from $(hostname): the binaries and the \
         results directory must be on a filesystem the compute nodes share\" >&2; exit 1; }}\n",
        p = quote_path(path)
    )
}

/// One job array (the runs of one problem).
#[derive(Debug, Clone)]
pub struct SlurmArray {
    /// `--job-name`.
    pub job_name: String,
    /// The `bertlab` binary (on a filesystem the compute nodes share).
    pub bertlab: PathBuf,
    /// Run directories, each holding its `run.toml`; task i trains `run_dirs[i]`.
    pub run_dirs: Vec<PathBuf>,
    /// Where Slurm writes the tasks' stdout/stderr.
    pub log_dir: PathBuf,
    /// The tasks train on a GPU (one each unless the options say otherwise).
    pub gpu: bool,
    /// Scheduler options.
    pub options: SlurmOptions,
}

impl SlurmArray {
    /// The `sbatch` script.
    pub fn script(&self) -> String {
        let n = self.run_dirs.len();
        let o = &self.options;
        let mut s = String::new();
        s.push_str("#!/usr/bin/env bash\n");
        s.push_str(&format!(
            "# Written by cargo xtask: one array task per run ({n} runs). Submit with `sbatch <this file>`;\n\
             # then `cargo xtask report --out <results dir>` merges whatever records exist.\n\
             # The bertlab binary, the results directory and its token cache must be visible at these\n\
             # paths from the compute nodes (a shared filesystem).\n"
        ));
        let mut sbatch =
            vec![format!("--job-name={}", self.job_name), format!("--array=0-{}", n.saturating_sub(1))];
        sbatch.extend(o.common_lines());
        match (&o.gres, &o.gpus, self.gpu) {
            (Some(gres), _, _) => sbatch.push(format!("--gres={gres}")),
            (None, Some(gpus), _) => sbatch.push(format!("--gres=gpu:{gpus}")),
            (None, None, true) => sbatch.push("--gres=gpu:1".into()),
            (None, None, false) => {}
        }
        sbatch.push(format!("--cpus-per-task={}", o.cpus_per_task.unwrap_or_else(default_cpus_per_task)));
        if let Some(t) = &o.time {
            sbatch.push(format!("--time={t}"));
        }
        if let Some(m) = &o.mem {
            sbatch.push(format!("--mem={m}"));
        }
        if let Some(c) = &o.constraint {
            sbatch.push(format!("--constraint={c}"));
        }
        sbatch.extend(o.extra.iter().cloned());
        sbatch.push(format!("--output={}/%x-%A_%a.out", self.log_dir.display()));
        for line in &sbatch {
            s.push_str(&format!("#SBATCH {line}\n"));
        }
        s.push_str("set -euo pipefail\n\n");
        s.push_str(&o.setup_lines());
        s.push_str(&format!("BERTLAB={}\n", quote_path(&self.bertlab)));
        s.push_str("RUNS=(\n");
        for d in &self.run_dirs {
            s.push_str(&format!("  {}\n", quote_path(d)));
        }
        s.push_str(")\n");
        s.push_str(
            r#"RUN="${RUNS[$SLURM_ARRAY_TASK_ID]}"
"#,
        );
        s.push_str(&visible("the bertlab binary", &self.bertlab, "-x"));
        s.push_str(
            r#"[ -f "$RUN/run.toml" ] || { echo "error: $RUN/run.toml is not visible from $(hostname): the results directory must be on a filesystem the compute nodes share" >&2; exit 1; }
# The trainer's threads follow the cores Slurm gave the task.
export RAYON_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"

# Records are the only state: a completed record means the run is done.
if grep -q '"status": *"completed"' "$RUN/record.json" 2>/dev/null; then
  echo "already done: $RUN"
  exit 0
fi

# An interrupted attempt resumes from its checkpoint (bertlab train does by default); a record
# that is there but not completed cannot be read: move it aside, never delete it.
if [ -e "$RUN/record.json" ]; then
  n=1; while [ -e "$RUN/record.json.unreadable-$n" ]; do n=$((n + 1)); done
  mv "$RUN/record.json" "$RUN/record.json.unreadable-$n"
  echo "warning: $RUN/record.json could not be read; moved to record.json.unreadable-$n"
fi

# Exit code 3 means out of memory: retry with half the batch (the record keeps the batch used,
# planned.json the planned one), from scratch (--fresh: a checkpoint of the larger batch is
# another run's).
FRESH=()
while true; do
  set +e
  "$BERTLAB" train --spec "$RUN/run.toml" ${FRESH[@]+"${FRESH[@]}"} >> "$RUN/train.log" 2>&1
  rc=$?
  set -e
  batch=$(sed -n 's/^batch = \([0-9][0-9]*\)$/\1/p' "$RUN/run.toml")
  if [ "$rc" -ne 3 ] || [ -z "$batch" ] || [ "$batch" -le 1 ]; then
    tail -n 20 "$RUN/train.log"
    exit "$rc"
  fi
  echo "out of memory at batch $batch: retrying with batch $((batch / 2))"
  sed -i "s/^batch = $batch\$/batch = $((batch / 2))/" "$RUN/run.toml"
  FRESH=(--fresh)
done
"#,
        );
        s
    }
}

/// A small job of a submitted chain: one command of the `xtask` binary (plan and submit the
/// next problem, or write the report), run in the directory the chain was submitted from.
#[derive(Debug, Clone)]
pub struct ChainJob {
    /// `--job-name`.
    pub job_name: String,
    /// The `xtask` binary (on a filesystem the compute nodes share).
    pub xtask: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The directory to run in (relative paths of the submitted command resolve from it).
    pub cwd: PathBuf,
    /// Where Slurm writes the job's output.
    pub log_dir: PathBuf,
    /// Scheduler options (partition, account, qos apply; the job needs one core and no GPU).
    pub options: SlurmOptions,
}

impl ChainJob {
    /// The `sbatch` script.
    pub fn script(&self) -> String {
        let mut s =
            String::from("#!/usr/bin/env bash\n# Written by cargo xtask: a step of a submitted pipeline.\n");
        let mut sbatch = vec![format!("--job-name={}", self.job_name), "--cpus-per-task=1".to_string()];
        sbatch.extend(self.options.common_lines());
        if let Some(t) = &self.options.time {
            sbatch.push(format!("--time={t}"));
        }
        sbatch.push(format!("--output={}/%x-%j.out", self.log_dir.display()));
        for line in &sbatch {
            s.push_str(&format!("#SBATCH {line}\n"));
        }
        s.push_str("set -euo pipefail\n\n");
        s.push_str(&self.options.setup_lines());
        s.push_str(&visible("the xtask binary", &self.xtask, "-x"));
        s.push_str(&visible("the directory", &self.cwd, "-d"));
        s.push_str(&format!("cd {}\n", quote_path(&self.cwd)));
        let args: Vec<String> = self.args.iter().map(|a| quote(a)).collect();
        s.push_str(&format!("exec {} {}\n", quote_path(&self.xtask), args.join(" ")));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(options: SlurmOptions, gpu: bool) -> String {
        SlurmArray {
            job_name: "bertlab-problem1".into(),
            bertlab: "/opt/bertlab/target/release/bertlab".into(),
            run_dirs: vec!["/scratch/runs/problem1/problem1/a".into(), "/scratch/runs/it's/b".into()],
            log_dir: "/scratch/runs/problem1/slurm/logs".into(),
            gpu,
            options,
        }
        .script()
    }

    #[test]
    fn the_script_has_one_task_per_run_and_the_resume_and_oom_rules() {
        let s = job(SlurmOptions { cpus_per_task: Some(8), ..Default::default() }, true);
        assert!(s.starts_with("#!/usr/bin/env bash\n"));
        for needle in [
            "#SBATCH --array=0-1\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --job-name=bertlab-problem1\n",
            "#SBATCH --cpus-per-task=8\n",
            "#SBATCH --output=/scratch/runs/problem1/slurm/logs/%x-%A_%a.out\n",
            "BERTLAB='/opt/bertlab/target/release/bertlab'\n",
            "  '/scratch/runs/it'\\''s/b'\n",
            "train --spec \"$RUN/run.toml\"",
            "\"$rc\" -ne 3",
            "\"status\": *\"completed\"",
            "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"",
            "is not visible from $(hostname)",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
        assert!(!job(SlurmOptions::default(), false).contains("--gres"));
        assert!(job(SlurmOptions::default(), false)
            .contains(&format!("#SBATCH --cpus-per-task={}\n", default_cpus_per_task())));
    }

    #[test]
    fn options_from_a_file_and_flags_reach_the_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.toml");
        std::fs::write(
            &file,
            "[slurm]\npartition = \"gpu\"\naccount = \"proj42\"\ntime = \"02:00:00\"\ngpus = \"a100:1\"\nmodules = [\"cuda/12.4\"]\n",
        )
        .unwrap();
        let mut o = SlurmOptions::from_file(&file).unwrap();
        o.set("mem=32G").unwrap();
        o.set("extra=--exclusive").unwrap();
        o.set("setup=source /opt/env.sh").unwrap();
        o.set("cpus-per-task=6").unwrap();
        let s = job(o.clone(), true);
        for needle in [
            "#SBATCH --partition=gpu\n",
            "#SBATCH --account=proj42\n",
            "#SBATCH --gres=gpu:a100:1\n",
            "#SBATCH --time=02:00:00\n",
            "#SBATCH --mem=32G\n",
            "#SBATCH --cpus-per-task=6\n",
            "#SBATCH --exclusive\n",
            "module load cuda/12.4\n",
            "source /opt/env.sh\n",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
        let chain = ChainJob {
            job_name: "bertlab-next".into(),
            xtask: "/opt/x/xtask".into(),
            args: vec!["slurm-next".into(), "--out".into(), "/scratch/runs".into()],
            cwd: "/home/me/bertlab".into(),
            log_dir: "/scratch/runs/slurm".into(),
            options: o,
        }
        .script();
        assert!(
            chain.contains("#SBATCH --partition=gpu\n") && chain.contains("#SBATCH --cpus-per-task=1\n"),
            "{chain}"
        );
        assert!(!chain.contains("--gres") && !chain.contains("--mem"), "{chain}");
        assert!(chain.contains("exec '/opt/x/xtask' 'slurm-next' '--out' '/scratch/runs'\n"), "{chain}");
        let e = SlurmOptions::default().set("partiton=gpu").unwrap_err().to_string();
        assert!(e.starts_with("--slurm partiton=gpu: unknown key \"partiton\""), "{e}");
        assert!(SlurmOptions::default().set("cpus-per-task=0").is_err());
        assert!(SlurmOptions::default().set("partition").is_err());
        std::fs::write(&file, "[slurm]\nqueue = \"x\"\n").unwrap();
        let e = SlurmOptions::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("cluster.toml") && e.contains("queue"), "{e}");
    }
}
