//! The torchrun-style environment of a rank process.
//!
//! Every rank process reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
//! `MASTER_PORT` (the same variables as `torchrun`), set by [`super::launcher`] on one
//! machine or by the user (or a cluster scheduler) across machines.
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

/// Default time a rank waits for the rendezvous to complete.
pub const DEFAULT_RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(120);

/// The distributed setup of one rank process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank in `0..world_size`.
    pub rank: usize,
    /// Number of ranks over all machines.
    pub world_size: usize,
    /// Rank on this machine; the CUDA device ordinal this rank uses.
    pub local_rank: usize,
    /// Host of the rendezvous (rank 0 listens there).
    pub master_addr: String,
    /// Port of the rendezvous.
    pub master_port: u16,
    /// How long the rendezvous may take.
    pub rendezvous_timeout: Duration,
}

impl DistEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<DistEnv, CudaError> {
        DistEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `lookup` (a test seam for [`DistEnv::from_env`]).
    /// `LOCAL_RANK` defaults to `RANK`, `MASTER_ADDR` to `127.0.0.1`, `MASTER_PORT` to
    /// 29500; `RANK` and `WORLD_SIZE` are required.
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
        let local_rank = parse_usize(&lookup, ENV_LOCAL_RANK)?.unwrap_or(rank);
        let master_addr = lookup(ENV_MASTER_ADDR).unwrap_or_else(|| "127.0.0.1".to_string());
        if master_addr.trim().is_empty() {
            return Err(env_err(ENV_MASTER_ADDR, "empty"));
        }
        let master_port = match lookup(ENV_MASTER_PORT) {
            None => 29500,
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
                })?,
        };
        let rendezvous_timeout = match lookup(ENV_RENDEZVOUS_TIMEOUT) {
            None => DEFAULT_RENDEZVOUS_TIMEOUT,
            Some(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    env_err(
                        ENV_RENDEZVOUS_TIMEOUT,
                        &format!("'{s}' is not a positive number of seconds"),
                    )
                })?,
        };
        Ok(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr: master_addr.trim().to_string(),
            master_port,
            rendezvous_timeout,
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
        ]
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
}
