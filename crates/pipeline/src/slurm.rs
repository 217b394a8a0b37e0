//! Slurm job-array scripts: one array task per planned run, all writing into the shared results
//! directory, with the same resume and out-of-memory rules as `cargo xtask`.

use std::path::{Path, PathBuf};

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
    /// GPUs per task (0 = CPU-only tasks).
    pub gpus: usize,
    /// CPU cores per task.
    pub cpus: usize,
}

fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl SlurmArray {
    /// The `sbatch` script.
    pub fn script(&self) -> String {
        let n = self.run_dirs.len();
        let mut s = String::new();
        s.push_str("#!/usr/bin/env bash\n");
        s.push_str(&format!(
            "# Written by cargo xtask: one array task per run ({n} runs). Submit with `sbatch <this file>`;\n\
             # then `cargo xtask report --out <results dir>` merges whatever records exist.\n"
        ));
        s.push_str(&format!("#SBATCH --job-name={}\n", self.job_name));
        s.push_str(&format!("#SBATCH --array=0-{}\n", n.saturating_sub(1)));
        if self.gpus > 0 {
            s.push_str(&format!("#SBATCH --gres=gpu:{}\n", self.gpus));
        }
        s.push_str(&format!("#SBATCH --cpus-per-task={}\n", self.cpus.max(1)));
        s.push_str(&format!("#SBATCH --output={}/%x-%A_%a.out\n", self.log_dir.display()));
        s.push_str("set -euo pipefail\n\n");
        s.push_str(&format!("BERTLAB={}\n", quote(&self.bertlab)));
        s.push_str("RUNS=(\n");
        for d in &self.run_dirs {
            s.push_str(&format!("  {}\n", quote(d)));
        }
        s.push_str(")\n");
        s.push_str(
            r#"RUN="${RUNS[$SLURM_ARRAY_TASK_ID]}"

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_has_one_task_per_run_and_the_resume_and_oom_rules() {
        let job = SlurmArray {
            job_name: "bertlab-problem1".into(),
            bertlab: "/opt/bertlab/target/release/bertlab".into(),
            run_dirs: vec!["/scratch/runs/problem1/problem1/a".into(), "/scratch/runs/it's/b".into()],
            log_dir: "/scratch/runs/problem1/slurm/logs".into(),
            gpus: 1,
            cpus: 8,
        };
        let s = job.script();
        assert!(s.starts_with("#!/usr/bin/env bash\n"));
        for needle in [
            "#SBATCH --array=0-1\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --job-name=bertlab-problem1\n",
            "#SBATCH --output=/scratch/runs/problem1/slurm/logs/%x-%A_%a.out\n",
            "BERTLAB='/opt/bertlab/target/release/bertlab'\n",
            "  '/scratch/runs/it'\\''s/b'\n",
            "train --spec \"$RUN/run.toml\"",
            "\"$rc\" -ne 3",
            "\"status\": *\"completed\"",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
        let cpu = SlurmArray { gpus: 0, ..job }.script();
        assert!(!cpu.contains("--gres"));
    }
}
