//! The logical graph: tensors and nodes behind our own ids.
//!
//! Nodes are kept in a topological order (the importer emits them so and every pass keeps
//! it); petgraph is used for the structural algorithms (toposort, reachability) without
//! leaking its indices.
use crate::{DType, IrError, Op, Weight};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Id of a tensor (value) of a [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TensorId(pub u32);

/// Id of a node of a [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl TensorId {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl NodeId {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What produces a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// A graph input, fed at run time.
    Input,
    /// A weight or constant (see [`Graph::weights`]).
    Weight,
    /// The output of a node.
    Activation,
}

/// A tensor of the graph with its static type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Name (the ONNX value name).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Static shape.
    pub shape: Vec<usize>,
    /// What produces it.
    pub kind: TensorKind,
}

/// A node: an op applied to tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Name (the ONNX node name, or a generated one).
    pub name: String,
    /// The op.
    pub op: Op,
    /// Input tensors, in op order.
    pub inputs: Vec<TensorId>,
    /// Output tensors.
    pub outputs: Vec<TensorId>,
}

/// A typed dataflow graph with static shapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// All tensors, indexed by [`TensorId`].
    pub tensors: Vec<TensorInfo>,
    /// Nodes in topological order, indexed by [`NodeId`].
    pub nodes: Vec<Node>,
    /// Graph inputs, in model order.
    pub inputs: Vec<TensorId>,
    /// Graph outputs, in model order.
    pub outputs: Vec<TensorId>,
    /// Weights and constants, by tensor.
    pub weights: BTreeMap<TensorId, Weight>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a tensor and returns its id.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        kind: TensorKind,
    ) -> TensorId {
        let id = TensorId(self.tensors.len() as u32);
        self.tensors.push(TensorInfo {
            name: name.into(),
            dtype,
            shape,
            kind,
        });
        id
    }

    /// Adds a graph input.
    pub fn add_input(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
    ) -> TensorId {
        let id = self.add_tensor(name, dtype, shape, TensorKind::Input);
        self.inputs.push(id);
        id
    }

    /// Adds a weight; its tensor has the weight's logical dtype (a quantised weight's
    /// tensor is a float).
    pub fn add_weight(&mut self, weight: Weight) -> TensorId {
        let id = self.add_tensor(
            weight.name.clone(),
            weight.logical_dtype(),
            weight.shape.clone(),
            TensorKind::Weight,
        );
        self.weights.insert(id, weight);
        id
    }

    /// Appends a node whose outputs were already added as tensors. Nodes must be appended
    /// in topological order.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<TensorId>,
        outputs: Vec<TensorId>,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs,
        });
        id
    }

    /// Tensor metadata.
    pub fn tensor(&self, id: TensorId) -> &TensorInfo {
        &self.tensors[id.index()]
    }

    /// Node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Node ids in order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// The node producing each tensor (None for inputs and weights).
    pub fn producers(&self) -> Vec<Option<NodeId>> {
        let mut p = vec![None; self.tensors.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                p[o.index()] = Some(NodeId(i as u32));
            }
        }
        p
    }

    /// For each tensor, the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut c = vec![Vec::new(); self.tensors.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for t in &n.inputs {
                if !c[t.index()].contains(&NodeId(i as u32)) {
                    c[t.index()].push(NodeId(i as u32));
                }
            }
        }
        c
    }

    /// Finds a tensor by name.
    pub fn tensor_by_name(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(|i| TensorId(i as u32))
    }

    /// Total stored bytes of all weights (scales and zero points of quantised ones included).
    pub fn weight_bytes(&self) -> usize {
        self.weights.values().map(|w| w.size_bytes()).sum()
    }

    fn dependency_graph(&self) -> (DiGraph<NodeId, ()>, Vec<NodeIndex>) {
        let mut g = DiGraph::with_capacity(self.nodes.len(), self.nodes.len() * 2);
        let idx: Vec<NodeIndex> = self.node_ids().map(|n| g.add_node(n)).collect();
        let prod = self.producers();
        for (i, n) in self.nodes.iter().enumerate() {
            for t in &n.inputs {
                if let Some(p) = prod[t.index()] {
                    g.add_edge(idx[p.index()], idx[i], ());
                }
            }
        }
        (g, idx)
    }

    /// Re-sorts the nodes topologically (stable for already-sorted graphs). Fails on a cycle.
    pub fn toposort(&mut self) -> Result<(), IrError> {
        let (g, _) = self.dependency_graph();
        let order = petgraph::algo::toposort(&g, None).map_err(|c| {
            IrError::Invalid(format!(
                "cycle through node '{}'",
                self.nodes[g[c.node_id()].index()].name
            ))
        })?;
        let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(Some)
            .collect();
        for ix in order {
            // Each index appears exactly once in a toposort, so the slot is still full.
            if let Some(n) = old[g[ix].index()].take() {
                self.nodes.push(n);
            }
        }
        Ok(())
    }

    /// Removes nodes that no graph output depends on, and weights nobody reads. Tensor ids
    /// stay valid (unused tensors remain as metadata). Returns the number of nodes removed.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let (g, idx) = self.dependency_graph();
        let prod = self.producers();
        let mut live = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeIndex> = self
            .outputs
            .iter()
            .filter_map(|t| prod[t.index()])
            .map(|n| idx[n.index()])
            .collect();
        while let Some(ix) = stack.pop() {
            let n = g[ix].index();
            if live[n] {
                continue;
            }
            live[n] = true;
            stack.extend(g.neighbors_directed(ix, petgraph::Direction::Incoming));
        }
        let before = self.nodes.len();
        let nodes = std::mem::take(&mut self.nodes);
        self.nodes = nodes
            .into_iter()
            .zip(live)
            .filter(|(_, l)| *l)
            .map(|(n, _)| n)
            .collect();
        let mut used = vec![false; self.tensors.len()];
        for n in &self.nodes {
            for t in &n.inputs {
                used[t.index()] = true;
            }
        }
        for t in &self.outputs {
            used[t.index()] = true;
        }
        self.weights.retain(|t, _| used[t.index()]);
        before - self.nodes.len()
    }

    /// Checks structural invariants: ids in range, every node input produced before use,
    /// every tensor produced once, outputs produced, quantised weights well-formed
    /// ([`Weight::check_quant`]), transposed weights' `perm` a permutation
    /// ([`Weight::stored_view`]).
    pub fn validate(&self) -> Result<(), IrError> {
        for w in self.weights.values() {
            w.check_quant()?;
            w.stored_view()?;
        }
        let n_t = self.tensors.len();
        let mut defined = vec![false; n_t];
        for t in &self.inputs {
            defined[t.index()] = true;
        }
        for t in self.weights.keys() {
            defined[t.index()] = true;
        }
        for n in &self.nodes {
            for t in &n.inputs {
                if t.index() >= n_t || !defined[t.index()] {
                    return Err(IrError::Invalid(format!(
                        "node '{}' reads a tensor before it is produced",
                        n.name
                    )));
                }
            }
            for t in &n.outputs {
                if t.index() >= n_t {
                    return Err(IrError::Invalid(format!(
                        "node '{}' has an output id out of range",
                        n.name
                    )));
                }
                if defined[t.index()] {
                    return Err(IrError::Invalid(format!(
                        "tensor '{}' is produced twice (node '{}')",
                        self.tensors[t.index()].name,
                        n.name
                    )));
                }
                defined[t.index()] = true;
            }
        }
        for t in &self.outputs {
            if !defined[t.index()] {
                return Err(IrError::Invalid(format!(
                    "output '{}' is never produced",
                    self.tensors[t.index()].name
                )));
            }
        }
        Ok(())
    }
}
