//! The memory a plan needs, checked against a cap before anything is allocated.
//!
//! Each rank's program is simulated: a step's outputs are allocated when it runs, a value is
//! freed after its last reader, weights and plan outputs live to the end. The peak of every
//! rank is summed (CPU devices run as threads of one process, all at once) and compared with
//! the cap: `TESSERA_MAX_PLANNED_BYTES` when set, else this machine's memory
//! (`MemTotal` of `/proc/meminfo`) or less under an address-space limit (`ulimit -v`) or a
//! cgroup memory limit, else no cap. A plan over it is refused with one line that
//! names the rank, the step and the tensor where the largest rank peaks, instead of the
//! process being killed half-way through a run.
use super::error::ExecError;
use tessera_ir::numel;
use tessera_ir::plan::{Plan, StepKind, ValueId};

/// The environment variable that sets the cap, in bytes.
pub const ENV_CAP: &str = "TESSERA_MAX_PLANNED_BYTES";

/// Where a rank's memory peaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peak {
    /// Bytes live at the peak.
    pub bytes: u64,
    /// Step index at the peak.
    pub step: usize,
    /// The largest value the step allocates.
    pub value: Option<ValueId>,
}

fn value_bytes(plan: &Plan, v: ValueId) -> u64 {
    plan.values.get(v.index()).map_or(0, |pv| {
        (numel(&pv.shape) as u64).saturating_mul(pv.dtype.size_bytes() as u64)
    })
}

/// The peak of rank `rank`'s program (ids are assumed valid: `validate_plan` ran first).
pub fn rank_peak(plan: &Plan, rank: usize) -> Peak {
    let Some(prog) = plan.ranks.get(rank) else {
        return Peak {
            bytes: 0,
            step: 0,
            value: None,
        };
    };
    let n = plan.values.len();
    let mut last = vec![None::<usize>; n];
    let mut resident = vec![false; n];
    for (i, s) in prog.steps.iter().enumerate() {
        for v in &s.inputs {
            if let Some(l) = last.get_mut(v.index()) {
                *l = Some(i);
            }
        }
        if matches!(s.kind, StepKind::LoadWeight { .. }) {
            for v in &s.outputs {
                if let Some(r) = resident.get_mut(v.index()) {
                    *r = true;
                }
            }
        }
    }
    for v in &plan.outputs {
        if let Some(r) = resident.get_mut(v.index()) {
            *r = true;
        }
    }
    let mut live: u64 = 0;
    let mut peak = Peak {
        bytes: 0,
        step: 0,
        value: None,
    };
    for (i, s) in prog.steps.iter().enumerate() {
        for v in &s.outputs {
            live = live.saturating_add(value_bytes(plan, *v));
        }
        if live > peak.bytes {
            peak = Peak {
                bytes: live,
                step: i,
                value: s
                    .outputs
                    .iter()
                    .copied()
                    .max_by_key(|v| value_bytes(plan, *v)),
            };
        }
        let mut freed: Vec<ValueId> = s
            .inputs
            .iter()
            .chain(&s.outputs)
            .copied()
            .filter(|v| !resident.get(v.index()).copied().unwrap_or(true))
            .filter(|v| {
                last.get(v.index())
                    .copied()
                    .flatten()
                    .is_none_or(|l| l <= i)
            })
            .collect();
        freed.sort_unstable();
        freed.dedup();
        for v in freed {
            live = live.saturating_sub(value_bytes(plan, v));
        }
    }
    peak
}

/// The cap: [`ENV_CAP`] when set (an error when it is not a number), else the least of
/// the machine's memory, this process's address-space limit (`ulimit -v`) and its cgroup's
/// `memory.max`, else none. Without the last two a run under such a limit would pass the
/// check and then abort on an allocation the limit refuses.
pub fn host_cap() -> Result<Option<u64>, ExecError> {
    if let Ok(s) = std::env::var(ENV_CAP) {
        return s.trim().parse().map(Some).map_err(|_| {
            ExecError::InvalidPlan(format!("{ENV_CAP}={s}: expected a number of bytes"))
        });
    }
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cgroup = cgroup_dir(&read("/proc/self/cgroup"))
        .map(|d| read(&format!("/sys/fs/cgroup{d}/memory.max")))
        .unwrap_or_default();
    Ok([
        mem_total(&read("/proc/meminfo")),
        address_space_limit(&read("/proc/self/limits")),
        cgroup_memory_max(&cgroup),
    ]
    .into_iter()
    .flatten()
    .min())
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
}

/// The soft `Max address space` of a `/proc/self/limits` text, in bytes (`unlimited`: none).
fn address_space_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max address space"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// The cgroup v2 folder (`0::/PATH`) of a `/proc/self/cgroup` text.
fn cgroup_dir(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A cgroup v2 `memory.max` text in bytes (`max`: none).
fn cgroup_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Refuses a plan whose ranks together need more than `cap` bytes at their peaks.
pub fn check_planned_memory(plan: &Plan, cap: Option<u64>) -> Result<(), ExecError> {
    let Some(cap) = cap else { return Ok(()) };
    let peaks: Vec<Peak> = (0..plan.ranks.len()).map(|r| rank_peak(plan, r)).collect();
    let total = peaks
        .iter()
        .fold(0u64, |acc, p| acc.saturating_add(p.bytes));
    if total <= cap {
        return Ok(());
    }
    let (rank, worst) = peaks
        .iter()
        .enumerate()
        // The first rank among equal peaks.
        .max_by(|a, b| a.1.bytes.cmp(&b.1.bytes).then(b.0.cmp(&a.0)))
        .map(|(r, p)| (r, p.clone()))
        .unwrap_or((
            0,
            Peak {
                bytes: 0,
                step: 0,
                value: None,
            },
        ));
    let tensor = worst
        .value
        .and_then(|v| plan.values.get(v.index()))
        .and_then(|pv| plan.graph.tensors.get(pv.tensor.index()))
        .map_or("?", |t| t.name.as_str());
    Err(ExecError::PlannedMemory {
        needed: total,
        cap,
        ranks: plan.ranks.len(),
        rank,
        peak: worst.bytes,
        step: worst.step,
        tensor: tensor.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_reads_meminfo_ulimit_and_cgroup_texts() {
        assert_eq!(
            mem_total("MemFree: 5 kB\nMemTotal:       24000 kB\n"),
            Some(24000 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max stack size            8388608              unlimited            bytes\n\
                      Max address space         4294967296           unlimited            bytes\n";
        assert_eq!(address_space_limit(limits), Some(4294967296));
        let unlimited =
            "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(address_space_limit(unlimited), None);
        assert_eq!(
            cgroup_dir("0::/user.slice/a.scope\n"),
            Some("/user.slice/a.scope")
        );
        assert_eq!(cgroup_dir("12:memory:/docker/x\n"), None);
        assert_eq!(cgroup_memory_max("1073741824\n"), Some(1 << 30));
        assert_eq!(cgroup_memory_max("max\n"), None);
    }
}
