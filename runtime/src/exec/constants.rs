//! Activation-independent items of a rank's program, computed once per session.
//!
//! Exporters build values such as the causal/padding mask of a decoder from constant
//! position tensors (torch dynamo: `LessOrEqual`, `Equal`, `And`, `Where` over hoisted
//! constants); the importer folds only small results, so a `[B, 1, S, S]` mask is computed
//! at run time, on every run and on every rank (real/llama at 8×128: 1.1 ms of ~10 ms).
//! onnxruntime folds such subgraphs when it builds its session; this is the runtime's
//! equivalent. An item is *constant* when it reads only weights and constant values. On a
//! session's first run its constant items run as usual and the ones whose outputs a
//! non-constant item (or the plan's outputs) reads keep host copies of those outputs; once
//! every such copy exists, later runs serve them from the copies and skip the rest of the
//! constant subgraph, including weight loads only it reads.
//!
//! Weight loads a non-constant item reads are served the same way (the tensor the store
//! holds resident, or a decoded inline constant). A rank's slice of a constant (a mask cut
//! to the rank's batch rows) is constant too.
//!
//! A collective over constants (a weight the plan stores split and gathers on every run)
//! is not cached: its output is a whole weight, which the plan's memory budget does not
//! allow a rank to keep. It is marked instead, so a backend whose devices share memory may
//! read the peers' shards without meeting them
//! ([`crate::device::Device::collective_of_constant`]).
//!
//! The copies stay resident like weights, up to [`CACHE_BYTES`] per rank (items beyond it
//! keep running every time; weights do not count), and only for devices whose buffers are
//! host tensors
//! ([`crate::device::Device::shares_host_tensors`]).
use super::fuse::Item;
use std::sync::{Arc, OnceLock};
use tessera_ir::plan::{Plan, StepKind, ValueId};
use tessera_ir::Tensor;

/// Most bytes of constant outputs a rank keeps (a 2048-token f32 causal mask is 16 MiB).
pub const CACHE_BYTES: usize = 64 << 20;

/// What a run does with an item once the cache is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Run it (the default, and every item before the cache is complete).
    Run,
    /// Skip it: only constant items read its outputs, and they are skipped or served.
    Skip,
    /// Hand out its cached outputs instead of computing them.
    Serve,
}

/// The constant items of one rank's program and their cached outputs.
pub(crate) struct Constants {
    /// Per item, its role once the cache is complete.
    roles: Vec<Role>,
    /// Per item, its cached outputs (served items only).
    slots: Vec<OnceLock<Vec<Arc<Tensor>>>>,
    /// Set once every served item's slot is filled.
    complete: OnceLock<()>,
    /// Per item, whether it is a collective whose input is constant (a weight shard
    /// gathered on every run): see [`crate::device::Device::collective_of_constant`].
    constant_collectives: Vec<bool>,
}

impl Constants {
    /// Finds the constant items of `items` (rank `rank`'s program of `plan`; `keep` marks
    /// the values the rank must hold at the end). With `enabled` false every item runs.
    pub fn new(
        plan: &Plan,
        rank: usize,
        items: &[Item],
        keep: &[bool],
        enabled: bool,
    ) -> Constants {
        let steps = &plan.ranks[rank].steps;
        let n = items.len();
        let mut roles = vec![Role::Run; n];
        let slots = (0..n).map(|_| OnceLock::new()).collect();
        if !enabled {
            return Constants {
                roles,
                slots,
                complete: OnceLock::new(),
                constant_collectives: vec![false; n],
            };
        }
        let n_values = plan.values.len();
        let mut konst = vec![false; n_values];
        let mut is_const = vec![false; n];
        let mut budget = CACHE_BYTES;
        let mut constant_collectives = vec![false; n];
        let kind_of = |item: &Item| match item {
            Item::Step(s) => Some(&steps[*s].kind),
            Item::Fused(_) => None,
        };
        let io = |item: &Item| -> (Vec<ValueId>, Vec<ValueId>) {
            match item {
                Item::Step(s) => (steps[*s].inputs.clone(), steps[*s].outputs.clone()),
                Item::Fused(f) => (f.inputs.clone(), f.outputs.clone()),
            }
        };
        let bytes = |v: &ValueId| {
            let pv = &plan.values[v.index()];
            tessera_ir::numel(pv.shape_on(rank)) * pv.dtype.size_bytes()
        };
        for (i, item) in items.iter().enumerate() {
            let (ins, outs) = io(item);
            let reads_constants = ins.iter().all(|v| konst[v.index()]);
            let c = match item {
                Item::Step(s) => match &steps[*s].kind {
                    StepKind::LoadWeight { .. } => true,
                    // A rank's slice of a constant (a mask cut to its batch rows) is one too.
                    StepKind::Compute { .. }
                    | StepKind::LocalSlice { .. }
                    | StepKind::ScaleToPartial { .. }
                    | StepKind::ShardedGather { .. } => reads_constants,
                    _ => false,
                },
                Item::Fused(_) => reads_constants,
            };
            // Within the budget (counted for every constant compute item: any may be
            // served); beyond it the item and what reads it run every time.
            let size: usize = outs.iter().map(bytes).sum();
            let loads = matches!(kind_of(item), Some(StepKind::LoadWeight { .. }));
            constant_collectives[i] =
                reads_constants && matches!(kind_of(item), Some(StepKind::Collective { .. }));
            if c && (loads || size <= budget) {
                if !loads {
                    budget -= size;
                }
                is_const[i] = true;
                for v in &outs {
                    konst[v.index()] = true;
                }
            }
        }
        // Readers of each value, by item.
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n_values];
        for (i, item) in items.iter().enumerate() {
            for v in io(item).0 {
                readers[v.index()].push(i);
            }
        }
        for (i, item) in items.iter().enumerate() {
            if !is_const[i] {
                continue;
            }
            let outs = io(item).1;
            let needed = outs
                .iter()
                .any(|v| keep[v.index()] || readers[v.index()].iter().any(|&r| !is_const[r]));
            let loads = matches!(kind_of(item), Some(StepKind::LoadWeight { .. }));
            roles[i] = match (needed, loads) {
                (false, _) => Role::Skip,
                // A weight is resident already; serving it skips building its store key
                // (a path check, the quantisation formatted) on every run.
                (true, _) => Role::Serve,
            };
        }
        if !roles.contains(&Role::Serve) {
            roles.fill(Role::Run);
            // Nothing is served, so a weight's load runs anew on every run.
            constant_collectives.fill(false);
        }
        Constants {
            roles,
            slots,
            complete: OnceLock::new(),
            constant_collectives,
        }
    }

    /// Item `at`'s role in this run.
    pub fn role(&self, at: usize) -> Role {
        match self.complete.get() {
            Some(()) => self.roles[at],
            None => Role::Run,
        }
    }

    /// Whether item `at` is a collective whose input is the same tensor on every run.
    pub fn is_constant_collective(&self, at: usize) -> bool {
        self.constant_collectives[at]
    }

    /// Item `at`'s cached outputs (a served item of a complete cache).
    pub fn cached(&self, at: usize) -> Option<&[Arc<Tensor>]> {
        self.slots[at].get().map(Vec::as_slice)
    }

    /// Whether item `at` is served and its outputs are not cached yet.
    pub fn wants(&self, at: usize) -> bool {
        self.roles[at] == Role::Serve && self.slots[at].get().is_none()
    }

    /// Caches item `at`'s outputs (computed by a run that did not use the cache).
    pub fn store(&self, at: usize, outs: Vec<Arc<Tensor>>) {
        // A concurrent or earlier store holds the same values (the items are pure).
        let _ = self.slots[at].set(outs);
    }

    /// After a successful run: the cache is complete once every served item is cached.
    pub fn finish_run(&self) {
        let all = self
            .roles
            .iter()
            .zip(&self.slots)
            .all(|(r, s)| *r != Role::Serve || s.get().is_some());
        if all && self.roles.contains(&Role::Serve) {
            let _ = self.complete.set(());
        }
    }
}
