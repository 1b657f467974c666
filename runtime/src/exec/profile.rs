//! Time per step of a rank's runs, collected when the environment variable `TESSERA_PROFILE`
//! is set (`1`: per op kind; `shapes`: per op kind and output shape; `steps`: per item of the
//! schedule, in run order, to set beside another runtime's per-node profile).
//!
//! Runs add to one table per rank for the whole process, and [`take_step_profiles`] returns
//! it as text, each figure the mean per run, and empties it. Nothing is printed during a
//! run: printing a hundred lines between runs evicted the caches and slowed every step of a
//! small model 2–3× (MobileNet at batch 2: 1.8 ms of steps against 0.7 ms unprofiled).
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a profile groups its times by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// Op kind.
    Kind,
    /// Op kind and output shape.
    Shape,
    /// Each item of the schedule, in run order, naming its graph node.
    Step,
}

/// One item's name: its op kind, the graph node it runs and its first output's shape.
#[derive(Debug, Clone)]
pub(crate) struct StepLabel {
    /// Op kind (`MatMul`, `fused Conv+Act`, `load_weight`, ...).
    pub kind: String,
    /// The graph node it runs (a fused chain: its first compute step's), if any.
    pub node: Option<String>,
    /// Its first output's shape, if it has an output.
    pub shape: Option<Vec<usize>>,
}

/// A rank's table: the schedule it times, each item's label, its total time and count over
/// `runs` runs and its shortest time in one run.
#[derive(Debug, Default)]
struct RankTable {
    schedule: usize,
    runs: usize,
    labels: Vec<StepLabel>,
    times: Vec<(usize, Duration)>,
    least: Vec<Duration>,
}

/// Every rank's table in this process.
static TABLES: Mutex<BTreeMap<usize, RankTable>> = Mutex::new(BTreeMap::new());

/// The grouping `TESSERA_PROFILE` asks for, or None when it is unset (read once per
/// process: every run asks).
fn grouping() -> Option<Grouping> {
    static GROUPING: std::sync::OnceLock<Option<Grouping>> = std::sync::OnceLock::new();
    *GROUPING.get_or_init(|| {
        std::env::var("TESSERA_PROFILE")
            .ok()
            .map(|v| match v.as_str() {
                "steps" => Grouping::Step,
                "shapes" => Grouping::Shape,
                _ => Grouping::Kind,
            })
    })
}

/// One run's times, kept by the rank while it runs and added to the process table at its
/// end ([`RunProfile::finish`]).
pub(crate) struct RunProfile {
    rank: usize,
    /// Which schedule runs (see [`RunProfile::from_env`]).
    schedule: usize,
    times: Vec<Option<Duration>>,
    /// Labels to make this run: the table has none yet for this rank's schedule.
    labels: Option<Vec<Option<StepLabel>>>,
}

impl RunProfile {
    /// A profile of one run of `items` items on `rank`, when `TESSERA_PROFILE` is set.
    /// `schedule` tells schedules apart (the address of the prepared program): a rank's
    /// table starts over when another schedule runs on it, so one of the same length does
    /// not add its times under the first one's labels.
    pub(crate) fn from_env(rank: usize, schedule: usize, items: usize) -> Option<RunProfile> {
        grouping()?;
        let tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        let labelled = tables
            .get(&rank)
            .is_some_and(|t| t.schedule == schedule && t.labels.len() == items);
        Some(RunProfile {
            rank,
            schedule,
            times: vec![None; items],
            labels: (!labelled).then(|| vec![None; items]),
        })
    }

    /// The time a step starts at.
    pub(crate) fn start(&self) -> Instant {
        Instant::now()
    }

    /// Item `at` ran from `t0` until now; `label` names it (called only on the
    /// first run of a schedule).
    pub(crate) fn record(&mut self, at: usize, t0: Instant, label: impl FnOnce() -> StepLabel) {
        let d = t0.elapsed();
        if let Some(slot) = self.times.get_mut(at) {
            *slot = Some(d);
        }
        if let Some(slot) = self.labels.as_mut().and_then(|l| l.get_mut(at)) {
            *slot = Some(label());
        }
    }

    /// Adds this run to its rank's table.
    pub(crate) fn finish(self) {
        let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        let table = tables.entry(self.rank).or_default();
        if let Some(labels) = self.labels {
            // A new schedule (or the first run): start the table over.
            *table = RankTable {
                schedule: self.schedule,
                runs: 0,
                labels: labels
                    .into_iter()
                    .map(|l| {
                        l.unwrap_or(StepLabel {
                            kind: "(not run)".into(),
                            node: None,
                            shape: None,
                        })
                    })
                    .collect(),
                times: vec![(0, Duration::ZERO); self.times.len()],
                least: vec![Duration::MAX; self.times.len()],
            };
        }
        if table.schedule != self.schedule || table.times.len() != self.times.len() {
            // Another schedule labelled the table since this run began: not its items.
            return;
        }
        table.runs += 1;
        for ((acc, least), t) in table.times.iter_mut().zip(&mut table.least).zip(self.times) {
            if let Some(t) = t {
                acc.0 += 1;
                acc.1 += t;
                *least = (*least).min(t);
            }
        }
    }
}

/// Every rank's profile since the last call, as text (one block per rank: the mean time per
/// run in steps, then one line per group with its count, its mean milliseconds per run and
/// the sum of its items' shortest times, steadier than the mean on a noisy machine), and
/// empties the tables. Empty when `TESSERA_PROFILE` is unset or nothing ran.
pub fn take_step_profiles() -> String {
    grouping().map(take_grouped).unwrap_or_default()
}

/// [`take_step_profiles`] grouped by `grouping`.
fn take_grouped(grouping: Grouping) -> String {
    let tables = std::mem::take(&mut *TABLES.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out = String::new();
    for (rank, t) in tables {
        if t.runs == 0 {
            continue;
        }
        let runs = t.runs as f64;
        let mut rows: BTreeMap<String, (usize, Duration, Duration)> = BTreeMap::new();
        let items = t.labels.iter().zip(&t.times).zip(&t.least);
        for (at, ((label, (n, d)), least)) in items.enumerate() {
            if *n == 0 {
                continue;
            }
            let shape = label.shape.as_ref().map(|s| format!(" {s:?}"));
            let key = match grouping {
                Grouping::Kind => label.kind.clone(),
                Grouping::Shape => format!("{}{}", label.kind, shape.unwrap_or_default()),
                Grouping::Step => {
                    let node = label.node.as_ref().map(|n| format!(" '{n}'"));
                    format!(
                        "{at:05} {}{}{}",
                        label.kind,
                        node.unwrap_or_default(),
                        shape.unwrap_or_default()
                    )
                }
            };
            let e = rows.entry(key).or_default();
            e.0 += n;
            e.1 += *d;
            e.2 += *least;
        }
        let mut rows: Vec<_> = rows.into_iter().collect();
        if grouping != Grouping::Step {
            rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
        }
        let total: Duration = rows.iter().map(|r| r.1 .1).sum();
        let least: Duration = rows.iter().map(|r| r.1 .2).sum();
        out += &format!(
            "rank {rank} profile: {:.3} ms in steps per run (mean of {} runs; least {:.3} ms)\n",
            total.as_secs_f64() * 1e3 / runs,
            t.runs,
            least.as_secs_f64() * 1e3
        );
        for (k, (n, d, least)) in rows {
            out += &format!(
                "  {k:<32} {:>5} {:>9.3} ms  (least {:.3} ms)\n",
                (n as f64 / runs).round() as usize,
                d.as_secs_f64() * 1e3 / runs,
                least.as_secs_f64() * 1e3
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_add_up_to_a_mean_per_run() {
        let label = |k: &str| StepLabel {
            kind: k.into(),
            node: Some("n".into()),
            shape: Some(vec![2, 3]),
        };
        for run in 0..4u64 {
            let mut p = RunProfile {
                rank: 7,
                schedule: 1,
                times: vec![None; 2],
                labels: (run == 0).then(|| vec![None; 2]),
            };
            let t0 = Instant::now() - Duration::from_millis(2);
            p.record(0, t0, || label("MatMul"));
            p.record(1, Instant::now(), || label("Add"));
            p.finish();
        }
        let text = take_grouped(Grouping::Step);
        let line = text
            .lines()
            .find(|l| l.contains("MatMul"))
            .expect("a MatMul row");
        assert!(line.starts_with("  00000 MatMul 'n' [2, 3]"), "{line}");
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[fields.len() - 6], "1", "{line}");
        let ms: f64 = fields[fields.len() - 5].parse().expect("ms");
        assert!((2.0..3.0).contains(&ms), "{line}");
        assert!(text.contains("(mean of 4 runs; least"), "{text}");
        let least: f64 = fields[fields.len() - 2].parse().expect("least");
        assert!(least >= 2.0 && least <= ms, "{line}");
        assert!(!take_grouped(Grouping::Step).contains("MatMul"));
    }

    #[test]
    fn another_schedule_of_the_same_length_starts_the_table_over() {
        let label = |k: &str| StepLabel {
            kind: k.into(),
            node: None,
            shape: None,
        };
        let run = |schedule: usize, kind: &'static str| {
            let labelled = TABLES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&8)
                .is_some_and(|t| t.schedule == schedule);
            let mut p = RunProfile {
                rank: 8,
                schedule,
                times: vec![None; 1],
                labels: (!labelled).then(|| vec![None; 1]),
            };
            p.record(0, Instant::now(), || label(kind));
            p.finish();
        };
        run(1, "MatMul");
        run(1, "MatMul");
        run(2, "Conv");
        let tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        let t = tables.get(&8).expect("rank 8's table");
        assert_eq!((t.schedule, t.runs), (2, 1));
        assert_eq!(t.labels[0].kind, "Conv");
    }
}
