//! A one-node Slurm cluster on 127.0.0.1 for tests: `munged`, `slurmctld` and `slurmd` started
//! from Debian's `munge` and `slurm-wlm` with a generated `slurm.conf` for this host's cores and
//! memory, in a temporary directory, and stopped when the value is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running one-node cluster. Clients reach it through [`SlurmCluster::conf`] (`SLURM_CONF`).
pub struct SlurmCluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

/// Why no cluster can be started here (the test then skips, or fails where Slurm is required).
pub fn unavailable() -> Option<String> {
    for tool in ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"] {
        let found = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p).chain([PathBuf::from("/usr/sbin")]).any(|d| d.join(tool).is_file())
            })
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not found (apt-get install slurm-wlm munge)"));
        }
    }
    // slurmd starts jobs as their users: it must run as root.
    if effective_uid() != 0 {
        return Some("not root: slurmd must run as root".into());
    }
    None
}

fn effective_uid() -> u32 {
    // `id -u` rather than libc: this crate needs no unsafe code for one number.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

impl SlurmCluster {
    /// Start the daemons and wait until the node is idle.
    pub fn start() -> SlurmCluster {
        let dir = tempfile::Builder::new().prefix("bertlab-slurm-").tempdir().expect("temp dir");
        let d = dir.path();
        for sub in ["state", "spool", "log", "munge"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let key = d.join("munge/munge.key");
        let status = Command::new(tool("mungekey"))
            .args(["--create", "--force", "--keyfile"])
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mungekey");
        assert!(status.success(), "mungekey failed");
        let socket = d.join("munge/munge.socket");
        let mut daemons = Vec::new();
        daemons.push(
            Command::new(tool("munged"))
                .arg("--foreground")
                .arg("--force")
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--pid-file={}", d.join("munge/munged.pid").display()))
                .arg(format!("--log-file={}", d.join("munge/munged.log").display()))
                .arg(format!("--seed-file={}", d.join("munge/munge.seed").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("munged"),
        );
        wait_for(|| socket.exists(), "munged's socket");

        let host = Command::new("hostname")
            .arg("-s")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mem_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_string))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
            .map_or(1024, |kb| kb / 1024 * 9 / 10);
        let conf = format!(
            "ClusterName=bertlabtest\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={}\nSlurmdPort={}\n\
             SlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\nAuthInfo=socket={socket}\nCredType=cred/munge\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\nSlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\nSchedulerType=sched/backfill\nMpiDefault=none\nReturnToService=2\n\
             JobCompType=jobcomp/none\nAccountingStorageType=accounting_storage/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN\n\
             PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            free_port(),
            free_port(),
            socket = socket.display(),
            d = d.display(),
        );
        let conf_path = d.join("slurm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        for daemon in ["slurmctld", "slurmd"] {
            daemons.push(
                Command::new(tool(daemon))
                    .args(["-D", "-f"])
                    .arg(&conf_path)
                    .env("SLURM_CONF", &conf_path)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{daemon}: {e}")),
            );
        }
        let cluster = SlurmCluster { dir, daemons };
        wait_for(
            || {
                Command::new("sinfo")
                    .args(["-h", "-o", "%T"])
                    .env("SLURM_CONF", cluster.conf())
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
            },
            "the node to be idle",
        );
        cluster
    }

    /// The `slurm.conf` clients must use (`SLURM_CONF`).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// The jobs in the queue (pending or running).
    pub fn queued(&self) -> Vec<String> {
        let out = Command::new("squeue").args(["-h", "-o", "%i %T"]).env("SLURM_CONF", self.conf()).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The controller's log (for a failure message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/slurmctld.log")).unwrap_or_default()
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Jobs first (their processes belong to slurmd's tree), then the daemons, newest first.
        let _ =
            Command::new("scancel").arg("--full").arg("--user=root").env("SLURM_CONF", self.conf()).status();
        for child in self.daemons.iter_mut().rev() {
            // SIGTERM first: slurmctld then stops its helper (slurmscriptd) too.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "Slurm test cluster: no {what} after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}
