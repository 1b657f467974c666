//! What the search was asked for and what it did: the objective, and the statistics of the
//! e-graph search (stop reason, limits, extractor).
use crate::Layout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What the search optimises. Spelled `memory`, `time`, `latency` on the command line and
/// in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    /// Fit each rank's parameters in the budget, then minimise communication (compute only
    /// breaks ties).
    #[default]
    Memory,
    /// Fit each rank's parameters in the budget, then minimise modelled time
    /// (communication + compute): replicated compute counts in full, e.g. on CPU devices.
    Time,
    /// Minimise modelled time, no budget.
    Latency,
}

impl ObjectiveKind {
    /// Every objective, in the order the CLI lists them.
    pub const ALL: [ObjectiveKind; 3] = [
        ObjectiveKind::Memory,
        ObjectiveKind::Time,
        ObjectiveKind::Latency,
    ];

    /// The spelling used on the command line and in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectiveKind::Memory => "memory",
            ObjectiveKind::Time => "time",
            ObjectiveKind::Latency => "latency",
        }
    }

    /// One-line help for the command line.
    pub fn help(self) -> &'static str {
        match self {
            ObjectiveKind::Memory => {
                "Fit the per-device parameter budget, then least communication"
            }
            ObjectiveKind::Time => {
                "Fit the per-device parameter budget, then least modelled time (communication + compute; suits CPU devices, where replicated compute is dear)"
            }
            ObjectiveKind::Latency => "Least modelled time, no budget",
        }
    }
}

impl fmt::Display for ObjectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectiveKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ObjectiveKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ObjectiveKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "invalid objective '{s}' [possible values: {}]",
                    names.join(", ")
                )
            })
    }
}

/// Objective and budget the search ran under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// What the search optimised.
    pub kind: ObjectiveKind,
    /// Per-device parameter budget in bytes, when one applies.
    pub memory_per_device: Option<u64>,
    /// User pins: tensor name → layout.
    pub pins: BTreeMap<String, Layout>,
}

/// Why the e-graph runner stopped: egg's `StopReason`, recorded in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// No rewrite added anything: every form was explored (the default: a search with
    /// nothing to explore).
    #[default]
    Saturated,
    /// The iteration limit was reached.
    IterationLimit,
    /// The e-node limit was reached.
    NodeLimit,
    /// The time limit was reached.
    TimeLimit,
    /// Stopped by a hook, with its message.
    Other(String),
}

impl StopReason {
    /// True when the search explored every form (the result is exact).
    pub fn is_saturated(&self) -> bool {
        *self == StopReason::Saturated
    }

    /// The reason of a search made of several runs: the first run that did not saturate,
    /// or `Saturated` when all did (or there were none).
    pub fn worst<'a>(reasons: impl IntoIterator<Item = &'a StopReason>) -> StopReason {
        reasons
            .into_iter()
            .find(|r| !r.is_saturated())
            .cloned()
            .unwrap_or(StopReason::Saturated)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Saturated => f.write_str("saturated"),
            StopReason::IterationLimit => f.write_str("iteration_limit"),
            StopReason::NodeLimit => f.write_str("node_limit"),
            StopReason::TimeLimit => f.write_str("time_limit"),
            StopReason::Other(msg) => write!(f, "other: {msg}"),
        }
    }
}

/// The limits each e-graph runner ran under (all zero by default: no runner ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SearchLimits {
    /// Iterations.
    pub iterations: u64,
    /// E-nodes.
    pub nodes: u64,
    /// Wall-clock seconds.
    pub time_s: u64,
}

impl fmt::Display for SearchLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} iterations, {} e-nodes, {} s",
            self.iterations, self.nodes, self.time_s
        )
    }
}

/// How the plan was extracted from the e-graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Extractor {
    /// The exact frontier DP over the whole graph (or each segment); the default.
    #[default]
    FrontierDp,
    /// Repeated blocks: the frontier DP per piece (prologue, one representative block per
    /// phase, epilogue), then a DP along the chain of blocks over the residual stream's
    /// layouts. Blocks that differ are each their own representative (`phases` =
    /// `blocks`, which repeated blocks never have: each phase has two blocks or more).
    ChainDp {
        /// Nodes in each block (the largest, where blocks differ).
        nodes_per_layer: usize,
        /// Blocks in the chain.
        blocks: usize,
        /// Representative blocks: blocks that read different globals in turn (alternating
        /// attention masks) repeat with this many phases.
        #[serde(default = "one")]
        phases: usize,
        /// Layouts the residual stream may take between blocks.
        stream_layouts: usize,
    },
}

fn one() -> usize {
    1
}

impl fmt::Display for Extractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extractor::FrontierDp => f.write_str("frontier-dp"),
            Extractor::ChainDp {
                nodes_per_layer,
                blocks,
                phases,
                stream_layouts,
            } if phases == blocks => write!(
                f,
                "frontier-dp per piece (prologue + {blocks} blocks that differ, up to {nodes_per_layer} nodes + epilogue) + chain-dp over {stream_layouts} stream layouts",
            ),
            Extractor::ChainDp {
                nodes_per_layer,
                blocks,
                phases,
                stream_layouts,
            } => write!(
                f,
                "frontier-dp per piece (prologue + {phases} representative block{} of {nodes_per_layer} + epilogue) + chain-dp over {blocks} blocks x {stream_layouts} stream layouts",
                if *phases == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Statistics of the e-graph search (the default: an empty search, as for a plan built by
/// hand).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchStats {
    /// E-classes at the end of saturation.
    pub eclasses: usize,
    /// E-nodes at the end of saturation.
    pub enodes: usize,
    /// Runner iterations.
    pub iterations: usize,
    /// Why the runner stopped (the first segment that did not saturate, if any).
    pub stop_reason: StopReason,
    /// Limits of each runner.
    pub limits: SearchLimits,
    /// Extractor used.
    pub extractor: Extractor,
    /// Cost of the chosen plan (model seconds).
    pub cost: f64,
    /// Proven lower bound on the cost.
    pub lower_bound: f64,
    /// Relative gap (cost − bound) / cost; 0 when optimal.
    pub gap: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_parse_and_print_their_cli_spelling() {
        for k in ObjectiveKind::ALL {
            assert_eq!(k.as_str().parse::<ObjectiveKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        let e = "speed".parse::<ObjectiveKind>().unwrap_err();
        assert_eq!(
            e,
            "invalid objective 'speed' [possible values: memory, time, latency]"
        );
    }

    #[test]
    fn worst_stop_reason_is_the_first_unsaturated() {
        let rs = [
            StopReason::Saturated,
            StopReason::NodeLimit,
            StopReason::TimeLimit,
        ];
        assert_eq!(StopReason::worst(&rs), StopReason::NodeLimit);
        assert_eq!(StopReason::worst(&rs[..1]), StopReason::Saturated);
        assert_eq!(StopReason::worst(&[]), StopReason::Saturated);
        assert_eq!(
            serde_json::to_string(&StopReason::IterationLimit).unwrap(),
            "\"iteration_limit\""
        );
    }

    #[test]
    fn extractors_keep_their_report_spelling() {
        assert_eq!(Extractor::FrontierDp.to_string(), "frontier-dp");
        let chain = Extractor::ChainDp {
            nodes_per_layer: 9,
            blocks: 24,
            phases: 2,
            stream_layouts: 2,
        };
        assert!(chain.to_string().contains("2 representative blocks of 9"));
        assert!(chain.to_string().contains("chain-dp over 24 blocks x 2"));
        let json = serde_json::to_string(&chain).unwrap();
        assert_eq!(serde_json::from_str::<Extractor>(&json).unwrap(), chain);
        // Plans written before phases read as one phase.
        let old = r#"{"kind":"chain_dp","nodes_per_layer":9,"blocks":24,"stream_layouts":2}"#;
        assert!(matches!(
            serde_json::from_str::<Extractor>(old).unwrap(),
            Extractor::ChainDp { phases: 1, .. }
        ));
    }
}
