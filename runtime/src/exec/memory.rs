//! The memory a plan needs, checked against a cap before anything is allocated.
//!
//! Each rank's program is simulated: a step's outputs are allocated when it runs, a value is
//! freed after its last reader, weights and plan outputs live to the end. The peak of every
//! rank is summed (CPU devices run as threads of one process, all at once) and compared with
//! the cap: `TESSERA_MAX_PLANNED_BYTES` when set, else this machine's memory
//! (`MemTotal` of `/proc/meminfo`), else no cap. A plan over it is refused with one line that
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

/// The cap: [`ENV_CAP`] when set (an error when it is not a number), else the machine's
/// memory, else none.
pub fn host_cap() -> Result<Option<u64>, ExecError> {
    if let Ok(s) = std::env::var(ENV_CAP) {
        return s.trim().parse().map(Some).map_err(|_| {
            ExecError::InvalidPlan(format!("{ENV_CAP}={s}: expected a number of bytes"))
        });
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Ok(meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024)))
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
