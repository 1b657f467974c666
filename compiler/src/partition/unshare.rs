//! Small constants given one tensor per reader before layer detection.
use std::collections::BTreeSet;
use tessera_ir::{Graph, TensorId};

/// Inline constants of at most this many elements are given one tensor per reader by
/// [`unshare_small_constants`].
const UNSHARE_MAX_ELEMS: usize = 64;

/// `g` with every small inline constant (at most [`UNSHARE_MAX_ELEMS`] elements) read by
/// more than one node input given a copy per reader after the first; `None` when there is
/// none. Canonicalisation makes equal constants one tensor, so a layer whose quantisation
/// zero points happen to be equal reads one constant where the next layer reads two, and
/// the layers' weights no longer map one to one (an onnxruntime QDQ model then had no
/// layers and a whole-graph search that ran out its time). A copy of a scalar costs
/// nothing: constants are replicated.
pub fn unshare_small_constants(g: &Graph) -> Option<Graph> {
    let small = |t: TensorId| {
        g.weights.get(&t).is_some_and(|w| {
            matches!(w.data, tessera_ir::WeightData::Inline { .. })
                && tessera_ir::numel(&w.shape) <= UNSHARE_MAX_ELEMS
        })
    };
    let mut seen = BTreeSet::new();
    let mut copies = Vec::new();
    for (pos, nd) in g.nodes.iter().enumerate() {
        for (k, &t) in nd.inputs.iter().enumerate() {
            if small(t) && !seen.insert(t) {
                copies.push((pos, k, t));
            }
        }
    }
    if copies.is_empty() {
        return None;
    }
    let mut out = g.clone();
    for (pos, k, t) in copies {
        let mut w = g.weights[&t].clone();
        w.name = format!("{}#{pos}.{k}", w.name);
        let id = out.add_weight(w);
        out.nodes[pos].inputs[k] = id;
    }
    Some(out)
}
