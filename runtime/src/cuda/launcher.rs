//! One process per GPU: spawning the rank processes of one machine and watching them.
//!
//! `tessera-run --backend cuda --nproc N` calls [`launch_self`]: it re-executes the
//! current program N times with the torchrun-style variables of [`super::env`] (plus
//! [`ENV_LAUNCHED_CHILD`], so the children run as ranks instead of launching again). On
//! several machines, run one launcher per machine with `nnodes`/`node_rank` (global rank =
//! `node_rank * nproc_per_node + local_rank`) and the same master address and port.
//! When one rank exits with a failure, the launcher kills its siblings and reports which
//! rank failed and how; it never waits forever on a dead rank.
use super::comm::NcclTimeouts;
use super::env::{DistEnv, DEFAULT_MASTER_PORT, DEFAULT_RENDEZVOUS_TIMEOUT};
use super::CudaError;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::Duration;

/// Set to `1` in the environment of every child the launcher spawns.
pub const ENV_LAUNCHED_CHILD: &str = "TESSERA_LAUNCHED_CHILD";

/// How to lay out the ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Rank processes on this machine (usually its GPU count).
    pub nproc_per_node: usize,
    /// Machines taking part.
    pub nnodes: usize,
    /// Index of this machine in `0..nnodes` (machine 0 hosts rank 0 and the rendezvous).
    pub node_rank: usize,
    /// Host of rank 0, reachable from every machine.
    pub master_addr: String,
    /// Rendezvous port on the master.
    pub master_port: u16,
    /// Rendezvous timeout given to the ranks.
    pub rendezvous_timeout: Duration,
    /// NCCL time limits given to the ranks.
    pub nccl: NcclTimeouts,
}

impl LaunchSpec {
    /// `nproc` ranks on this machine only, rendezvous on 127.0.0.1:29500.
    pub fn single_node(nproc: usize) -> LaunchSpec {
        LaunchSpec {
            nproc_per_node: nproc,
            nnodes: 1,
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_MASTER_PORT,
            rendezvous_timeout: DEFAULT_RENDEZVOUS_TIMEOUT,
            nccl: NcclTimeouts::default(),
        }
    }

    /// `nproc` ranks on this machine, honouring `MASTER_PORT` and the timeout variables
    /// (`TESSERA_RENDEZVOUS_TIMEOUT_S`, `TESSERA_NCCL_INIT_TIMEOUT_S`,
    /// `TESSERA_NCCL_TIMEOUT_S`) read through `lookup`.
    pub fn single_node_from(
        nproc: usize,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<LaunchSpec, CudaError> {
        // Parse the shared variables as a rank-0 environment of a one-machine world.
        let probe = DistEnv::from_lookup(|k| match k {
            "RANK" | "LOCAL_RANK" => Some("0".into()),
            "WORLD_SIZE" => Some("1".into()),
            "MASTER_ADDR" => None,
            other => lookup(other),
        })?;
        Ok(LaunchSpec {
            master_port: probe.master_port,
            rendezvous_timeout: probe.rendezvous_timeout,
            nccl: probe.nccl,
            ..LaunchSpec::single_node(nproc)
        })
    }

    /// [`LaunchSpec::single_node_from`] the process environment.
    pub fn single_node_from_env(nproc: usize) -> Result<LaunchSpec, CudaError> {
        LaunchSpec::single_node_from(nproc, |k| std::env::var(k).ok())
    }

    /// The environment of each rank process of this machine, by local rank.
    pub fn child_envs(&self) -> Result<Vec<DistEnv>, CudaError> {
        if self.nproc_per_node == 0 || self.nnodes == 0 {
            return Err(CudaError::Launch(
                "nproc and nnodes must be at least 1".into(),
            ));
        }
        if self.node_rank >= self.nnodes {
            return Err(CudaError::Launch(format!(
                "node_rank {} is not below nnodes {}",
                self.node_rank, self.nnodes
            )));
        }
        let world_size = self.nproc_per_node * self.nnodes;
        Ok((0..self.nproc_per_node)
            .map(|local_rank| DistEnv {
                rank: self.node_rank * self.nproc_per_node + local_rank,
                world_size,
                local_rank,
                local_world_size: Some(self.nproc_per_node),
                master_addr: self.master_addr.clone(),
                master_port: self.master_port,
                rendezvous_timeout: self.rendezvous_timeout,
                nccl: self.nccl,
            })
            .collect())
    }
}

/// True in a process started by the launcher.
pub fn is_launched_child() -> bool {
    std::env::var(ENV_LAUNCHED_CHILD)
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// Re-executes the current program (same arguments) once per local rank and waits.
pub fn launch_self(spec: &LaunchSpec) -> Result<(), CudaError> {
    let exe = std::env::current_exe()
        .map_err(|e| CudaError::Launch(format!("cannot find the current executable: {e}")))?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    launch(&exe, &args, spec)
}

/// Runs `program args` once per local rank of `spec` with the rank variables set, and
/// waits for all. Fails (after killing the others) as soon as one exits unsuccessfully.
pub fn launch(program: &Path, args: &[OsString], spec: &LaunchSpec) -> Result<(), CudaError> {
    let envs = spec.child_envs()?;
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(envs.len());
    for env in &envs {
        let mut cmd = Command::new(program);
        cmd.args(args).env(ENV_LAUNCHED_CHILD, "1");
        for (k, v) in env.to_vars() {
            cmd.env(k, v);
        }
        match cmd.spawn() {
            Ok(child) => children.push((env.rank, child)),
            Err(e) => {
                kill_all(&mut children);
                return Err(CudaError::Launch(format!(
                    "cannot start rank {} ({}): {e}",
                    env.rank,
                    program.display()
                )));
            }
        }
    }
    watch(children)
}

/// Polls the children until all succeeded or one failed.
fn watch(mut children: Vec<(usize, Child)>) -> Result<(), CudaError> {
    let mut running: Vec<bool> = vec![true; children.len()];
    loop {
        let mut any_running = false;
        for i in 0..children.len() {
            if !running[i] {
                continue;
            }
            let (rank, child) = &mut children[i];
            match child.try_wait() {
                Ok(Some(status)) => {
                    running[i] = false;
                    if !status.success() {
                        let rank = *rank;
                        kill_all(&mut children);
                        return Err(CudaError::Launch(format!(
                            "rank {rank} {}; the other ranks were stopped",
                            describe(status)
                        )));
                    }
                }
                Ok(None) => any_running = true,
                Err(e) => {
                    let rank = *rank;
                    kill_all(&mut children);
                    return Err(CudaError::Launch(format!(
                        "cannot wait for rank {rank}: {e}"
                    )));
                }
            }
        }
        if !any_running {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Kills (by their own handles) and reaps the children that are still running.
fn kill_all(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter_mut() {
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
        }
    }
    for (_, c) in children.iter_mut() {
        let _ = c.wait();
    }
}

/// "exited with status 7" / "was killed by signal 9".
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    format!("ended abnormally ({status})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn child_envs_cover_two_nodes() {
        let spec = LaunchSpec {
            nproc_per_node: 4,
            nnodes: 2,
            node_rank: 1,
            master_addr: "node0".into(),
            master_port: 1234,
            rendezvous_timeout: Duration::from_secs(9),
            nccl: NcclTimeouts::default(),
        };
        let envs = spec.child_envs().unwrap();
        let ranks: Vec<_> = envs
            .iter()
            .map(|e| (e.rank, e.local_rank, e.world_size))
            .collect();
        assert_eq!(ranks, vec![(4, 0, 8), (5, 1, 8), (6, 2, 8), (7, 3, 8)]);
        assert!(envs.iter().all(|e| e.master_endpoint() == "node0:1234"));
        let bad = LaunchSpec {
            node_rank: 2,
            ..spec
        };
        assert!(bad
            .child_envs()
            .unwrap_err()
            .to_string()
            .contains("node_rank 2"));
    }

    #[cfg(unix)]
    #[test]
    fn children_get_the_rank_variables() {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $MASTER_ADDR $MASTER_PORT ${ENV_LAUNCHED_CHILD}\" > '{}'/rank$RANK",
            dir.path().display()
        );
        let spec = LaunchSpec {
            master_port: 29777,
            ..LaunchSpec::single_node(3)
        };
        launch(Path::new("sh"), &["-c".into(), script.into()], &spec).unwrap();
        for r in 0..3 {
            let got = std::fs::read_to_string(dir.path().join(format!("rank{r}"))).unwrap();
            assert_eq!(got.trim(), format!("{r} 3 {r} 127.0.0.1 29777 1"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_failing_rank_stops_its_siblings() {
        // Rank 1 fails at once; ranks 0 and 2 would sleep for a minute.
        let script = "if [ \"$RANK\" = 1 ]; then exit 7; fi; sleep 60";
        let t0 = Instant::now();
        let err = launch(
            Path::new("sh"),
            &["-c".into(), script.into()],
            &LaunchSpec::single_node(3),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("rank 1 exited with status 7"), "{err}");
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "siblings were not killed: {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let err = launch(
            Path::new("/nonexistent/tessera-x"),
            &[],
            &LaunchSpec::single_node(2),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cannot start rank 0") && err.contains("/nonexistent/tessera-x"),
            "{err}"
        );
    }

    #[test]
    fn single_node_honours_master_port() {
        let vars = |k: &str| match k {
            "MASTER_PORT" => Some("31234".to_string()),
            "TESSERA_NCCL_TIMEOUT_S" => Some("45".to_string()),
            _ => None,
        };
        let spec = LaunchSpec::single_node_from(2, vars).expect("spec");
        assert_eq!(spec.master_port, 31234);
        assert_eq!(spec.nccl.collective, Duration::from_secs(45));
        let envs = spec.child_envs().expect("envs");
        assert!(envs.iter().all(|e| e.master_port == 31234));
        assert_eq!(envs[1].local_world_size, Some(2));
        let dflt = LaunchSpec::single_node_from(2, |_| None).expect("default");
        assert_eq!(dflt.master_port, 29500);
        let bad = LaunchSpec::single_node_from(2, |k| (k == "MASTER_PORT").then(|| "x".into()));
        assert!(bad
            .expect_err("bad port")
            .to_string()
            .contains("MASTER_PORT"));
    }
}
