//! The torchrun-style environment of a rank process.
//!
//! Every rank process reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
//! `MASTER_PORT` (the same variables as `torchrun`), set by [`super::launcher`] on one
//! machine or by the user (or a cluster scheduler) across machines.
//!
//! The rank on this machine (which GPU to use) comes from the first of `LOCAL_RANK`
//! (torchrun, this launcher), `SLURM_LOCALID` (srun) and `OMPI_COMM_WORLD_LOCAL_RANK`
//! (mpirun). Without any of them it is `RANK` only where the run is known to be on one
//! machine (a node count of 1 from `SLURM_NNODES`, `LOCAL_WORLD_SIZE` or
//! `OMPI_COMM_WORLD_LOCAL_SIZE` equal to the world size, or a loopback `MASTER_ADDR`);
//! on several machines `RANK` would pick a GPU the second machine does not have, so that
//! is an error. [`device_ordinal`] then maps the local rank to a visible device, using
//! device 0 where the scheduler gives each task its own single GPU.
use super::comm::NcclTimeouts;
use super::CudaError;
use std::time::Duration;

/// Variable holding the global rank.
pub const ENV_RANK: &str = "RANK";
/// Variable holding the number of ranks.
pub const ENV_WORLD_SIZE: &str = "WORLD_SIZE";
/// Variable holding the rank on this machine (the GPU ordinal used).
pub const ENV_LOCAL_RANK: &str = "LOCAL_RANK";
/// Variable holding the rendezvous host (rank 0's machine).
pub const ENV_MASTER_ADDR: &str = "MASTER_ADDR";
/// Variable holding the rendezvous TCP port.
pub const ENV_MASTER_PORT: &str = "MASTER_PORT";
/// Optional: rendezvous timeout in seconds (default [`DEFAULT_RENDEZVOUS_TIMEOUT`]).
pub const ENV_RENDEZVOUS_TIMEOUT: &str = "TESSERA_RENDEZVOUS_TIMEOUT_S";
/// Optional: number of ranks on this machine (torchrun sets it).
pub const ENV_LOCAL_WORLD_SIZE: &str = "LOCAL_WORLD_SIZE";
/// Optional: bound on joining NCCL, in seconds (default [`super::comm::DEFAULT_INIT_TIMEOUT`]).
pub const ENV_NCCL_INIT_TIMEOUT: &str = "TESSERA_NCCL_INIT_TIMEOUT_S";
/// Optional: bound on one collective, in seconds (default
/// [`super::comm::DEFAULT_COLLECTIVE_TIMEOUT`]).
pub const ENV_NCCL_TIMEOUT: &str = "TESSERA_NCCL_TIMEOUT_S";
/// Default rendezvous port (torchrun's).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Variables holding the rank on this machine, by precedence: torchrun, Slurm, Open MPI.
pub const LOCAL_RANK_VARS: [&str; 3] = [
    ENV_LOCAL_RANK,
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
];

/// Default time a rank waits for the rendezvous to complete.
pub const DEFAULT_RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(120);

/// The distributed setup of one rank process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank in `0..world_size`.
    pub rank: usize,
    /// Number of ranks over all machines.
    pub world_size: usize,
    /// Rank on this machine (see the module notes); [`device_ordinal`] maps it to a GPU.
    pub local_rank: usize,
    /// Ranks on this machine, when the environment says (`LOCAL_WORLD_SIZE`).
    pub local_world_size: Option<usize>,
    /// Host of the rendezvous (rank 0 listens there).
    pub master_addr: String,
    /// Port of the rendezvous.
    pub master_port: u16,
    /// How long the rendezvous may take.
    pub rendezvous_timeout: Duration,
    /// NCCL time limits.
    pub nccl: NcclTimeouts,
}

impl DistEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<DistEnv, CudaError> {
        DistEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `lookup` (a test seam for [`DistEnv::from_env`]).
    /// `RANK` and `WORLD_SIZE` are required; the local rank follows the module notes;
    /// `MASTER_ADDR` defaults to `127.0.0.1`, `MASTER_PORT` to [`DEFAULT_MASTER_PORT`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<DistEnv, CudaError> {
        let rank = parse_usize(&lookup, ENV_RANK)?.ok_or_else(|| {
            env_err(
                ENV_RANK,
                "not set (run under `tessera-run --nproc N` or set it)",
            )
        })?;
        let world_size = parse_usize(&lookup, ENV_WORLD_SIZE)?
            .ok_or_else(|| env_err(ENV_WORLD_SIZE, "not set"))?;
        if world_size == 0 {
            return Err(env_err(ENV_WORLD_SIZE, "must be at least 1"));
        }
        if rank >= world_size {
            return Err(env_err(
                ENV_RANK,
                &format!("{rank} is not below WORLD_SIZE={world_size}"),
            ));
        }
        let master_addr = lookup(ENV_MASTER_ADDR).unwrap_or_else(|| "127.0.0.1".to_string());
        if master_addr.trim().is_empty() {
            return Err(env_err(ENV_MASTER_ADDR, "empty"));
        }
        let master_addr = master_addr.trim().to_string();
        let local_rank = resolve_local_rank(&lookup, rank, world_size, &master_addr)?;
        let local_world_size = parse_usize(&lookup, ENV_LOCAL_WORLD_SIZE)?;
        let master_port = master_port(&lookup)?;
        let secs = |var: &str, default: Duration| -> Result<Duration, CudaError> {
            lookup(var).map_or(Ok(default), |s| parse_secs(var, &s))
        };
        let defaults = NcclTimeouts::default();
        Ok(DistEnv {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr,
            master_port,
            rendezvous_timeout: secs(ENV_RENDEZVOUS_TIMEOUT, DEFAULT_RENDEZVOUS_TIMEOUT)?,
            nccl: NcclTimeouts {
                init: secs(ENV_NCCL_INIT_TIMEOUT, defaults.init)?,
                collective: secs(ENV_NCCL_TIMEOUT, defaults.collective)?,
            },
        })
    }

    /// `MASTER_ADDR:MASTER_PORT`.
    pub fn master_endpoint(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }

    /// The variables of this setup, as the launcher sets them for a child.
    pub fn to_vars(&self) -> Vec<(String, String)> {
        vec![
            (ENV_RANK.into(), self.rank.to_string()),
            (ENV_WORLD_SIZE.into(), self.world_size.to_string()),
            (ENV_LOCAL_RANK.into(), self.local_rank.to_string()),
            (ENV_MASTER_ADDR.into(), self.master_addr.clone()),
            (ENV_MASTER_PORT.into(), self.master_port.to_string()),
            (
                ENV_RENDEZVOUS_TIMEOUT.into(),
                self.rendezvous_timeout.as_secs_f64().to_string(),
            ),
            (
                ENV_NCCL_INIT_TIMEOUT.into(),
                self.nccl.init.as_secs_f64().to_string(),
            ),
            (
                ENV_NCCL_TIMEOUT.into(),
                self.nccl.collective.as_secs_f64().to_string(),
            ),
        ]
        .into_iter()
        .chain(
            self.local_world_size
                .map(|n| (ENV_LOCAL_WORLD_SIZE.to_string(), n.to_string())),
        )
        .collect()
    }
}

/// The collective timeout of this process (`TESSERA_NCCL_TIMEOUT_S`, also used by virtual
/// ranks), or the default.
pub fn collective_timeout_from_env() -> Result<Duration, CudaError> {
    match std::env::var(ENV_NCCL_TIMEOUT) {
        Err(_) => Ok(NcclTimeouts::default().collective),
        Ok(s) => parse_secs(ENV_NCCL_TIMEOUT, &s),
    }
}

/// A positive, finite number of seconds in variable `var`.
fn parse_secs(var: &str, s: &str) -> Result<Duration, CudaError> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t > 0.0 && *t < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| env_err(var, &format!("'{s}' is not a positive number of seconds")))
}

/// `MASTER_PORT`, or [`DEFAULT_MASTER_PORT`] when unset.
pub fn master_port(lookup: &impl Fn(&str) -> Option<String>) -> Result<u16, CudaError> {
    match lookup(ENV_MASTER_PORT) {
        None => Ok(DEFAULT_MASTER_PORT),
        Some(s) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                env_err(
                    ENV_MASTER_PORT,
                    &format!("'{s}' is not a TCP port (1-65535)"),
                )
            }),
    }
}

/// The number of machines, where the environment tells it.
fn node_count(
    lookup: &impl Fn(&str) -> Option<String>,
    world_size: usize,
) -> Result<Option<usize>, CudaError> {
    for var in ["SLURM_NNODES", "SLURM_JOB_NUM_NODES"] {
        if let Some(n) = parse_usize(lookup, var)? {
            return Ok(Some(n));
        }
    }
    for (local, world) in [
        (ENV_LOCAL_WORLD_SIZE, None),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", Some("OMPI_COMM_WORLD_SIZE")),
    ] {
        if let Some(l) = parse_usize(lookup, local)?.filter(|l| *l > 0) {
            let w = match world {
                Some(v) => parse_usize(lookup, v)?.unwrap_or(world_size),
                None => world_size,
            };
            return Ok(Some(w.div_ceil(l)));
        }
    }
    Ok(None)
}

/// Whether `addr` names this machine through loopback.
fn is_loopback(addr: &str) -> bool {
    addr == "localhost"
        || addr == "::1"
        || addr
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The rank on this machine (see the module notes).
fn resolve_local_rank(
    lookup: &impl Fn(&str) -> Option<String>,
    rank: usize,
    world_size: usize,
    master_addr: &str,
) -> Result<usize, CudaError> {
    for var in LOCAL_RANK_VARS {
        if let Some(l) = parse_usize(lookup, var)? {
            return Ok(l);
        }
    }
    let nodes = node_count(lookup, world_size)?;
    match nodes {
        Some(n) if n > 1 => Err(env_err(
            ENV_LOCAL_RANK,
            &format!(
                "not set on a multi-node run ({n} machines): set LOCAL_RANK (or run under \
                 srun / mpirun, which set SLURM_LOCALID / OMPI_COMM_WORLD_LOCAL_RANK); RANK \
                 {rank} is not a GPU ordinal on this machine"
            ),
        )),
        Some(_) => Ok(rank),
        None if world_size == 1 || is_loopback(master_addr) => Ok(rank),
        None => Err(env_err(
            ENV_LOCAL_RANK,
            &format!(
                "not set, and MASTER_ADDR={master_addr} may be another machine: set LOCAL_RANK \
                 (torchrun), SLURM_LOCALID or OMPI_COMM_WORLD_LOCAL_RANK, or LOCAL_WORLD_SIZE \
                 on a single machine"
            ),
        )),
    }
}

/// The CUDA device a rank with `local_rank` uses when `visible` devices are visible:
/// `local_rank` itself, or device 0 when the scheduler made exactly one GPU visible to
/// each task (`CUDA_VISIBLE_DEVICES` per rank, Slurm `--gpus-per-task=1`).
pub fn device_ordinal(rank: usize, local_rank: usize, visible: usize) -> Result<usize, CudaError> {
    if local_rank < visible {
        Ok(local_rank)
    } else if visible == 1 {
        Ok(0)
    } else {
        Err(CudaError::Driver(format!(
            "rank {rank} has LOCAL_RANK={local_rank} but {visible} CUDA device(s) are visible \
             (check CUDA_VISIBLE_DEVICES and the number of ranks per machine)"
        )))
    }
}

fn parse_usize(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<usize>, CudaError> {
    match lookup(var) {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| env_err(var, &format!("'{s}' is not a non-negative integer"))),
    }
}

fn env_err(var: &str, msg: &str) -> CudaError {
    CudaError::Env {
        var: var.into(),
        msg: msg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn parses_full_environment() {
        let e = DistEnv::from_lookup(lookup(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.7"),
            ("MASTER_PORT", "29611"),
            ("TESSERA_RENDEZVOUS_TIMEOUT_S", "2.5"),
            ("LOCAL_WORLD_SIZE", "4"),
        ]))
        .unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.master_port),
            (3, 8, 1, 29611)
        );
        assert_eq!(e.master_endpoint(), "10.0.0.7:29611");
        assert_eq!(e.rendezvous_timeout, Duration::from_millis(2500));
        let back = DistEnv::from_lookup(lookup(
            &e.to_vars()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        ))
        .unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn defaults_and_errors() {
        let e = DistEnv::from_lookup(lookup(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap();
        assert_eq!(
            (e.local_rank, e.master_addr.as_str(), e.master_port),
            (0, "127.0.0.1", 29500)
        );
        let refused = |vars: &[(&str, &str)], says: &[&str]| {
            let err = DistEnv::from_lookup(lookup(vars)).unwrap_err().to_string();
            assert!(says.iter().all(|s| err.contains(s)), "{err}");
        };
        refused(&[("WORLD_SIZE", "2")], &["RANK", "not set"]);
        refused(
            &[("RANK", "2"), ("WORLD_SIZE", "2")],
            &["not below WORLD_SIZE=2"],
        );
        refused(&[("RANK", "x"), ("WORLD_SIZE", "2")], &["'x'"]);
        let port = ("MASTER_PORT", "70000");
        refused(
            &[("RANK", "0"), ("WORLD_SIZE", "2"), port],
            &["MASTER_PORT"],
        );
        refused(&[("RANK", "0"), ("WORLD_SIZE", "0")], &["at least 1"]);
    }

    #[test]
    fn local_rank_sources_by_precedence() {
        let base = [
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("MASTER_ADDR", "10.0.0.1"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            DistEnv::from_lookup(lookup(&v))
        };
        let lr = |extra: &[(&str, &str)]| with(extra).expect("parses").local_rank;
        assert_eq!(lr(&[("LOCAL_RANK", "1")]), 1);
        assert_eq!(lr(&[("SLURM_LOCALID", "2")]), 2);
        assert_eq!(lr(&[("OMPI_COMM_WORLD_LOCAL_RANK", "3")]), 3);
        // torchrun's variable wins over the scheduler's.
        assert_eq!(lr(&[("SLURM_LOCALID", "2"), ("LOCAL_RANK", "0")]), 0);
        // Without one: RANK on a known single node, an error on several or unknown nodes.
        assert_eq!(lr(&[("SLURM_NNODES", "1")]), 5);
        assert_eq!(lr(&[("LOCAL_WORLD_SIZE", "8")]), 5);
        let multi = with(&[("SLURM_NNODES", "2")])
            .expect_err("multi-node")
            .to_string();
        assert!(
            multi.contains("multi-node") && multi.contains("2 machines"),
            "{multi}"
        );
        let lws = with(&[("LOCAL_WORLD_SIZE", "4")])
            .expect_err("2 nodes")
            .to_string();
        assert!(lws.contains("multi-node"), "{lws}");
        let ompi = with(&[
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
        ])
        .expect_err("2 nodes")
        .to_string();
        assert!(ompi.contains("multi-node"), "{ompi}");
        let unknown = with(&[]).expect_err("remote master").to_string();
        assert!(unknown.contains("MASTER_ADDR=10.0.0.1") && unknown.contains("LOCAL_RANK"));
        // A loopback master is this machine.
        let local = DistEnv::from_lookup(lookup(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "localhost"),
        ]))
        .expect("single machine");
        assert_eq!(local.local_rank, 1);
        let bad = with(&[("SLURM_LOCALID", "x")])
            .expect_err("bad")
            .to_string();
        assert!(bad.contains("SLURM_LOCALID"), "{bad}");
    }

    #[test]
    fn one_visible_gpu_per_task_uses_device_0() {
        assert_eq!(device_ordinal(3, 3, 4).expect("own gpu"), 3);
        assert_eq!(device_ordinal(3, 3, 1).expect("one per task"), 0);
        assert_eq!(device_ordinal(0, 0, 1).expect("rank 0"), 0);
        let e = device_ordinal(5, 5, 2).expect_err("too few").to_string();
        assert!(
            e.contains("LOCAL_RANK=5") && e.contains("2 CUDA device"),
            "{e}"
        );
    }

    #[test]
    fn master_port_and_timeouts() {
        let l = lookup(&[("MASTER_PORT", "29612")]);
        assert_eq!(master_port(&l).expect("port"), 29612);
        assert_eq!(
            master_port(&lookup(&[])).expect("default"),
            DEFAULT_MASTER_PORT
        );
        let e = DistEnv::from_lookup(lookup(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("TESSERA_NCCL_TIMEOUT_S", "30"),
            ("TESSERA_NCCL_INIT_TIMEOUT_S", "7.5"),
        ]))
        .expect("parses");
        assert_eq!(e.nccl.collective, Duration::from_secs(30));
        assert_eq!(e.nccl.init, Duration::from_millis(7500));
        let bad = DistEnv::from_lookup(lookup(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("TESSERA_NCCL_TIMEOUT_S", "-1"),
        ]))
        .expect_err("negative")
        .to_string();
        assert!(bad.contains("TESSERA_NCCL_TIMEOUT_S"), "{bad}");
    }
}
