//! Plan notes for convolutions: for each Conv, which split the search picked and what it
//! weighed (weight bytes per rank, the activations a batch split would keep local, what the
//! chosen split moves), so that `tessera inspect` says why a CNN runs by batch, by channels
//! or replicated.
use super::form::{LocalForm, Operand};
use super::segment::Selection;
use tessera_ir::{numel, Graph, Layout, Op, TensorId};

/// Human bytes (B, KB, MB with one decimal).
fn bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

fn size(g: &Graph, t: TensorId) -> usize {
    let i = g.tensor(t);
    numel(&i.shape) * i.dtype.size_bytes()
}

/// The layout a form reads its operand `k` in.
fn read(f: &LocalForm, k: usize) -> Option<Layout> {
    f.inputs.get(k).map(Operand::layout)
}

/// One note per Conv / ConvTranspose of the selection (none on one device).
pub fn conv_notes(g: &Graph, n: usize, sel: &Selection) -> Vec<String> {
    if n == 1 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for f in sel.prod.values() {
        let nd = g.node(f.node);
        if !matches!(nd.op, Op::Conv(_) | Op::ConvTranspose(_)) {
            continue;
        }
        let (x, w, y) = (nd.inputs[0], nd.inputs[1], nd.outputs[0]);
        let params: usize = nd.inputs[1..].iter().map(|&t| size(g, t)).sum();
        let (xb, yb) = (size(g, x), size(g, y));
        let shape = &g.tensor(w).shape;
        let batch = g.tensor(x).shape[0];
        // Why a channel split rather than the batch split.
        let over_batch = if !batch.is_multiple_of(n) {
            format!("batch {batch} does not divide over {n} ranks")
        } else if params > xb + yb {
            "the weights outweigh the activations".to_string()
        } else {
            "cheaper than a batch split under the cost model".to_string()
        };
        let why = match f.rule {
            "conv-batch" => format!(
                "split by batch (conv-batch): X and Y stay split ({} + {} over {n} ranks), \
                 W whole on every rank ({} of parameters per rank); activations outweigh \
                 the weights",
                bytes(xb),
                bytes(yb),
                bytes(params)
            ),
            "conv-column" => format!(
                "split by output channels (conv-column): {} of parameters per rank instead \
                 of {}, X read replicated ({}), Y split on channels; {over_batch}",
                bytes(params / n),
                bytes(params),
                bytes(xb)
            ),
            "conv-depthwise" => format!(
                "depthwise, split by channels (conv-depthwise): each rank convolves its own \
                 channels, {} of parameters per rank instead of {}, X and Y split on \
                 channels, nothing moved; {over_batch}",
                bytes(params / n),
                bytes(params)
            ),
            "conv-row" => format!(
                "split by input channels (conv-row): {} of parameters per rank instead of \
                 {}, X read split on channels, Y a partial sum ({} to reduce); {over_batch}",
                bytes(params / n),
                bytes(params),
                bytes(yb)
            ),
            "replicated" => format!(
                "replicated: {} of parameters per rank, X {} and Y {} whole; no split of \
                 batch or channels divides by {n} or pays for its collectives",
                bytes(params),
                bytes(xb),
                bytes(yb)
            ),
            other => format!(
                "form '{other}', X read {:?}, W read {:?}",
                read(f, 0),
                read(f, 1)
            ),
        };
        out.push(format!(
            "Conv '{}' (W {shape:?}, {} parameters; X {}, Y {}): {why}",
            nd.name,
            bytes(params),
            bytes(xb),
            bytes(yb)
        ));
    }
    out
}
