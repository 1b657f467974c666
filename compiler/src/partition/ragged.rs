//! Ragged splits: a split axis that does not divide into N equal chunks.
//!
//! An axis of extent `d` split over N ranks is cut in blocks of a *grain* of elements
//! ([`tessera_ir::split_bounds`]): equal chunks when the blocks divide by N, else balanced
//! chunks whose first ranks hold one block more (12 heads on 8 ranks: 2,2,2,2,1,1,1,1 heads).
//! The grain of an extent is chosen once per graph ([`Grains::of`]): a Reshape that cuts an
//! axis of extent `d` into `[h, e]` (heads of `e` elements) gives `d` the grain `e`, so its
//! chunks stay whole heads. Keying the grain by the extent makes every two axes a rule ties
//! together (they always have equal extents) agree on their chunks; a form that ties axes of
//! different extents (a Reshape) is kept only if its rank-local op gives every rank the
//! output shape the layout says ([`consistent`]), so chunks of the two sides line up.
use super::form::{LocalForm, Lowering, Operand};
use super::rules::attention::kv_head_of_ranks;
use std::collections::{HashMap, HashSet};
use tessera_ir::op::{AttentionAttrs, ExpandAttrs, ReshapeAttrs, SliceAttrs};
use tessera_ir::{split_bounds, Graph, Layout, Node, Op, TensorId};

/// The grain of each axis extent of one graph (1 where nothing asks for more), and the
/// head grain it falls back to when the first gives some rank no block (grouped-query heads
/// in groups of 2 over 5 ranks: whole heads instead).
#[derive(Debug, Clone, Default)]
pub struct Grains(
    HashMap<usize, usize>,
    HashMap<usize, usize>,
    /// `(query heads, key/value heads)` of the model's grouped-query attention, when it has
    /// one kind ([`Layout::Block`] cuts axes in that many key/value blocks).
    Option<(usize, usize)>,
    /// The tensors on the key/value paths: from the K and V projections to the attention
    /// (or the grouped-query repeat) that reads them; only they are cut in blocks.
    HashSet<TensorId>,
);

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Grains {
    /// Grains asked for by the Reshapes of `g` (an axis of extent `d` cut into `[h, e]`
    /// heads, or heads merged back: `d` is cut in whole heads, `e` times the grain of `h`)
    /// and its Attention ops (3-D: hidden = heads × head size; grouped-query: the query heads
    /// in groups of `q / kv`, so each rank's query heads read its own key-value heads). The
    /// reshape links are followed to a fixpoint, so a group grain on the heads axis reaches
    /// the hidden axis the heads were cut from.
    pub fn of(g: &Graph) -> Grains {
        let mut grains = Grains::default();
        // (d, h, e): extent d = h heads × e, from a Reshape.
        let mut links: Vec<(usize, usize, usize)> = Vec::new();
        let (mut gqa, mut kv_ends) = gqa_repeats(g);
        for nd in &g.nodes {
            match &nd.op {
                Op::Reshape(_) => {
                    let (Some(&i), Some(&o)) = (nd.inputs.first(), nd.outputs.first()) else {
                        continue;
                    };
                    reshape_links(&g.tensor(i).shape, &g.tensor(o).shape, &mut links);
                }
                Op::Attention(a) => {
                    let shape = |k: usize| nd.inputs.get(k).map(|t| &g.tensor(*t).shape);
                    let (Some(q), Some(k)) = (shape(0), shape(1)) else {
                        continue;
                    };
                    let (hq, hkv) = match (q.len(), a.q_num_heads, a.kv_num_heads) {
                        (4, _, _) => (q[1], k[1]),
                        (3, Some(hq), Some(hkv)) => (hq, hkv),
                        _ => continue,
                    };
                    if hkv == 0 || hq == 0 || !hq.is_multiple_of(hkv) {
                        continue;
                    }
                    if hkv < hq {
                        gqa.push((hq, hkv));
                        kv_ends.extend(nd.inputs.get(1..3).into_iter().flatten().copied());
                    }
                    if q.len() == 4 {
                        grains.ask(hq, hq / hkv);
                    } else if q[2].is_multiple_of(hq) && k[2].is_multiple_of(hkv) {
                        // Whole heads of the hidden axis; query heads in groups of q/kv.
                        grains.ask(q[2], q[2] / hq * (hq / hkv));
                        grains.ask(k[2], k[2] / hkv);
                    }
                }
                _ => {}
            }
        }
        for &(d, _, e) in &links {
            grains.ask(d, e);
        }
        // Whole heads, before the query-group grains are propagated.
        let mut heads = Grains::default();
        for &(d, _, e) in &links {
            heads.ask(d, e);
        }
        grains.1 = heads.0;
        gqa.sort_unstable();
        gqa.dedup();
        grains.2 = match gqa.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        if grains.2.is_some() {
            grains.3 = kv_paths(g, kv_ends);
        }
        // Follow the links both ways until nothing changes (a few passes: chains are short).
        for _ in 0..8 {
            let before = grains.0.clone();
            for &(d, h, e) in &links {
                let gh = grains.grain(h);
                grains.ask(d, e * gh);
                let gd = grains.grain(d);
                if gd.is_multiple_of(e) {
                    grains.ask(h, gd / e);
                }
            }
            if grains.0 == before {
                break;
            }
        }
        grains
    }

    /// The grain of `extent` (1 when nothing asked).
    fn grain(&self, extent: usize) -> usize {
        self.0.get(&extent).copied().unwrap_or(1)
    }

    /// `extent` asks to be cut in whole blocks of `grain`.
    fn ask(&mut self, extent: usize, grain: usize) {
        if grain <= 1 || extent == 0 || !extent.is_multiple_of(grain) {
            return;
        }
        let e = self.0.entry(extent).or_insert(1);
        let lcm = *e / gcd(*e, grain) * grain;
        if extent.is_multiple_of(lcm) {
            *e = lcm;
        }
    }

    #[cfg(test)]
    fn reshape(&mut self, input: &[usize], output: &[usize]) {
        let mut links = Vec::new();
        reshape_links(input, output, &mut links);
        for (d, _, e) in links {
            self.ask(d, e);
        }
    }

    /// The chunks of an axis of `extent` over `n` ranks: in blocks of the extent's grain
    /// when that gives every rank a block, else by elements; `None` when `extent < n`.
    pub fn bounds(&self, extent: usize, n: usize) -> Option<Vec<(usize, usize)>> {
        let head = self.1.get(&extent).copied().unwrap_or(1);
        split_bounds(extent, self.grain(extent), n)
            .or_else(|| split_bounds(extent, head, n))
            .or_else(|| split_bounds(extent, 1, n))
    }

    /// Rank `r`'s local shape of a tensor of logical `shape` in `layout`.
    pub fn rank_local(
        &self,
        layout: Layout,
        shape: &[usize],
        n: usize,
        r: usize,
    ) -> Option<Vec<usize>> {
        match layout {
            Layout::Replicated | Layout::Partial => Some(shape.to_vec()),
            Layout::Split(a) => {
                let (s, e) = *self.bounds(*shape.get(a)?, n)?.get(r)?;
                let mut local = shape.to_vec();
                local[a] = e - s;
                Some(local)
            }
            Layout::Block(a) => {
                let (s, e) = self.block_range(*shape.get(a)?, n, r)?;
                let mut local = shape.to_vec();
                local[a] = e - s;
                Some(local)
            }
        }
    }

    /// For [`Layout::Block`]: the key/value head each rank's query heads read when the
    /// query heads split over `n` ranks in whole heads; `None` without grouped-query
    /// attention, with at least `n` key/value heads, or when a rank's query heads would
    /// read two key/value heads.
    pub fn block_of_ranks(&self, n: usize) -> Option<Vec<usize>> {
        let (hq, hkv) = self.2?;
        if hkv >= n {
            return None;
        }
        kv_head_of_ranks(&split_bounds(hq, 1, n)?, hq, hq, hkv)
    }

    /// Rank `r`'s range of an axis of `extent` in [`Layout::Block`]: its key/value head's
    /// block of `extent / kv heads` elements.
    pub fn block_range(&self, extent: usize, n: usize, r: usize) -> Option<(usize, usize)> {
        let (_, hkv) = self.2?;
        if extent == 0 || !extent.is_multiple_of(hkv) {
            return None;
        }
        let b = *self.block_of_ranks(n)?.get(r)?;
        let per = extent / hkv;
        Some((b * per, (b + 1) * per))
    }

    /// Whether a tensor in [`Layout::Block`] along an axis of `extent` holds, on every rank,
    /// that rank's chunk of the same axis split ([`Layout::Split`]), so a local slice turns
    /// one into the other.
    pub fn block_holds_split(&self, extent: usize, n: usize) -> bool {
        let Some(split) = self.bounds(extent, n) else {
            return false;
        };
        split.iter().enumerate().all(|(r, &(s, e))| {
            self.block_range(extent, n, r)
                .is_some_and(|(bs, be)| bs <= s && e <= be)
        })
    }

    /// Whether `t` lies on a key/value path (from a K or V projection to its attention).
    pub fn on_kv_path(&self, t: TensorId) -> bool {
        self.3.contains(&t)
    }

    /// The key/value head count of Block layouts, when the model has one.
    pub fn kv_blocks(&self, n: usize) -> Option<usize> {
        self.block_of_ranks(n)?;
        self.2.map(|(_, kv)| kv)
    }

    /// The largest local shape (rank 0's), what costs and memory count.
    pub fn local(&self, layout: Layout, shape: &[usize], n: usize) -> Option<Vec<usize>> {
        self.rank_local(layout, shape, n, 0)
    }

    /// Whether the ranks' chunks of `shape` in `layout` differ in size.
    pub fn is_ragged(&self, layout: Layout, shape: &[usize], n: usize) -> bool {
        match layout {
            Layout::Split(a) => shape
                .get(a)
                .and_then(|&d| self.bounds(d, n))
                .is_some_and(|b| b.iter().any(|(s, e)| e - s != b[0].1 - b[0].0)),
            _ => false,
        }
    }
}

/// `(query heads, key/value heads)` of every grouped-query repeat spelled as exporters do:
/// an Expand that broadcasts an axis of 1 to `g` right after a key/value head axis of `kv`,
/// read by a Reshape that merges the two into one axis of `kv · g` query heads.
fn gqa_repeats(g: &Graph) -> (Vec<(usize, usize)>, Vec<TensorId>) {
    let mut readers: HashMap<tessera_ir::TensorId, Vec<&Node>> = HashMap::new();
    for nd in &g.nodes {
        for &i in &nd.inputs {
            readers.entry(i).or_default().push(nd);
        }
    }
    let (mut found, mut ends) = (Vec::new(), Vec::new());
    for nd in &g.nodes {
        let (Op::Expand(_), Some(&i), Some(&o)) = (&nd.op, nd.inputs.first(), nd.outputs.first())
        else {
            continue;
        };
        let (x, y) = (&g.tensor(i).shape, &g.tensor(o).shape);
        if x.len() != y.len() || y.len() < 4 {
            continue;
        }
        let grown: Vec<usize> = (0..y.len()).filter(|&a| x[a] != y[a]).collect();
        let [a] = grown.as_slice() else { continue };
        let (a, rep) = (*a, y[*a]);
        if a == 0 || x[a] != 1 || rep < 2 {
            continue;
        }
        let kv = y[a - 1];
        let merged = readers.get(&o).into_iter().flatten().find_map(|r| {
            let Op::Reshape(_) = r.op else { return None };
            r.outputs.first().copied().filter(|&t| {
                let z = &g.tensor(t).shape;
                z.len() + 1 == y.len() && z.get(a - 1) == Some(&(kv * rep))
            })
        });
        if let Some(m) = merged.filter(|_| kv > 1) {
            found.push((kv * rep, kv));
            ends.push(m);
        }
    }
    (found, ends)
}

/// The tensors from each of `ends` back to the projection that starts it: producers are
/// followed through every computed operand and stop at a MatMul or Gemm (the projection).
fn kv_paths(g: &Graph, ends: Vec<TensorId>) -> HashSet<TensorId> {
    let producers = g.producers();
    let mut seen = HashSet::new();
    let mut stack = ends;
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        let Some(p) = producers.get(t.index()).copied().flatten() else {
            continue;
        };
        let nd = g.node(p);
        if matches!(nd.op, Op::MatMul(_) | Op::Gemm(_)) {
            continue;
        }
        stack.extend(
            nd.inputs
                .iter()
                .filter(|&&i| producers.get(i.index()).copied().flatten().is_some()),
        );
    }
    seen
}

/// The axes a reshape maps onto each other (equal element counts, ones left out): an input
/// axis `d` cut into several output axes `[h, ..]` gives the link `(d, h, d / h)`; several
/// input axes `[h, ..]` merged into one output axis `d` give the same link.
fn reshape_links(input: &[usize], output: &[usize], links: &mut Vec<(usize, usize, usize)>) {
    let a: Vec<usize> = input.iter().copied().filter(|&d| d != 1).collect();
    let b: Vec<usize> = output.iter().copied().filter(|&d| d != 1).collect();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (i0, j0) = (i, j);
        let (mut pa, mut pb) = (a[i], b[j]);
        while pa != pb {
            if pa < pb {
                i += 1;
                let Some(&x) = a.get(i) else { return };
                pa *= x;
            } else {
                j += 1;
                let Some(&x) = b.get(j) else { return };
                pb *= x;
            }
        }
        if i == i0 && j > j0 {
            links.push((a[i0], b[j0], a[i0] / b[j0]));
        } else if j == j0 && i > i0 {
            links.push((b[j0], a[i0], b[j0] / a[i0]));
        }
        i += 1;
        j += 1;
    }
}

/// The rank-local op of a form of `nd` (output `out_index`), given the rank's output shape
/// and the logical and local shapes of the inputs: Reshape and Expand take their local
/// target, a Split output becomes a Slice, a 3-D Attention its local head counts.
pub fn local_op(
    nd: &Node,
    out_index: usize,
    out_local: &[usize],
    in_full: &[&[usize]],
    in_local: &[Vec<usize>],
) -> Op {
    match &nd.op {
        Op::Reshape(_) => Op::Reshape(ReshapeAttrs {
            shape: out_local.to_vec(),
        }),
        Op::Expand(_) => Op::Expand(ExpandAttrs {
            shape: out_local.to_vec(),
        }),
        Op::Split(s) => {
            let start: usize = s.sizes[..out_index].iter().sum();
            Op::Slice(SliceAttrs {
                axes: vec![s.axis],
                starts: vec![start as i64],
                ends: vec![(start + s.sizes[out_index]) as i64],
                steps: vec![1],
            })
        }
        // 3-D attention split by heads: each rank's head counts.
        Op::Attention(a) if a.q_num_heads.is_some() => {
            let heads = |h: Option<usize>, k: usize| {
                let (full, local) = (in_full.get(k)?, in_local.get(k)?);
                match (full.get(2), local.get(2)) {
                    (Some(&f), Some(&l)) if f > 0 => h.map(|h| h * l / f),
                    _ => h,
                }
            };
            Op::Attention(AttentionAttrs {
                q_num_heads: heads(a.q_num_heads, 0),
                kv_num_heads: heads(a.kv_num_heads, 1),
                ..a.clone()
            })
        }
        other => other.clone(),
    }
}

/// Whether a form with a ragged layout computes, on every rank, the chunk its output layout
/// names: the rank-local op, inferred on the rank's operand shapes, must give the rank's
/// output shape. Forms without a ragged layout are consistent by construction.
pub fn consistent(g: &Graph, grains: &Grains, n: usize, f: &LocalForm) -> bool {
    let shape_of = |o: &Operand| -> Vec<usize> {
        match o {
            Operand::Tensor { t, .. } => g.tensor(*t).shape.clone(),
            Operand::View {
                t,
                section: (axis, start, end),
                ..
            } => {
                let mut s = g.tensor(*t).shape.clone();
                if let Some(d) = s.get_mut(*axis) {
                    *d = end - start;
                }
                s
            }
        }
    };
    let full: Vec<Vec<usize>> = f.inputs.iter().map(shape_of).collect();
    let out_full = &g.tensor(f.tensor).shape;
    let ragged = grains.is_ragged(f.out, out_full, n)
        || f.inputs
            .iter()
            .zip(&full)
            .any(|(o, s)| grains.is_ragged(o.layout(), s, n));
    if !ragged {
        return true;
    }
    let nd = g.node(f.node);
    let full_refs: Vec<&[usize]> = full.iter().map(|s| s.as_slice()).collect();
    (0..n).all(|r| {
        let Some(out) = grains.rank_local(f.out, out_full, n, r) else {
            return false;
        };
        let Some(locals) = f
            .inputs
            .iter()
            .zip(&full)
            .map(|(o, s)| grains.rank_local(o.layout(), s, n, r))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let typed = |k: usize| {
            let (Operand::Tensor { t, .. } | Operand::View { t, .. }) = &f.inputs[k];
            (g.tensor(*t).dtype, locals[k].as_slice())
        };
        let (op, args, index) = match &f.lowering {
            Lowering::Op => (
                local_op(nd, f.out_index, &out, &full_refs, &locals),
                (0..locals.len()).map(typed).collect::<Vec<_>>(),
                f.out_index,
            ),
            Lowering::FusedSection { .. } if locals.len() >= 2 => (
                Op::MatMul(tessera_ir::op::MatMulAttrs {}),
                vec![typed(0), typed(1)],
                0,
            ),
            // The sharded gather's table rows come from the same bounds as its offsets.
            _ => return true,
        };
        // Grouped-query attention: every rank keeps the q/kv head ratio, so its query heads
        // read its own key-value heads (a shape check alone would accept 3 q / 1 kv heads on
        // a rank whose query heads belong to two key-value heads).
        if let (Op::Attention(full), Op::Attention(local)) = (&nd.op, &op) {
            let heads = |a: &tessera_ir::op::AttentionAttrs, q: &[usize], k: &[usize]| match (
                q.len(),
                a.q_num_heads,
                a.kv_num_heads,
            ) {
                (4, _, _) if k.len() == 4 => Some((q[1], k[1])),
                (3, Some(hq), Some(hkv)) => Some((hq, hkv)),
                _ => None,
            };
            let (Some(fq), Some(fk), Some(lq), Some(lk)) = (
                full_refs.first(),
                full_refs.get(1),
                locals.first(),
                locals.get(1),
            ) else {
                return false;
            };
            // Key/value blocks hold, by construction, the head each rank's queries read.
            let kv_block = matches!(f.inputs.get(1).map(|o| o.layout()), Some(Layout::Block(_)));
            if let (Some((q, kv)), Some((lq, lkv))) = (heads(full, fq, fk), heads(local, lq, lk)) {
                if lq * kv != lkv * q && !kv_block {
                    return false;
                }
            }
        }
        let idx = if matches!(nd.op, Op::Split(_)) {
            0
        } else {
            index
        };
        tessera_ir::infer::infer(&nd.name, &op, &args)
            .ok()
            .and_then(|outs| outs.into_iter().nth(idx))
            .is_some_and(|(_, s)| s == out)
    })
}

#[cfg(test)]
mod tests {
    use super::Grains;

    #[test]
    fn reshape_into_heads_sets_the_grain() {
        let mut g = Grains::default();
        g.reshape(&[2, 16, 768], &[2, 16, 12, 64]);
        g.reshape(&[2, 12, 16, 64], &[2, 12, 16, 64]);
        g.reshape(&[2, 16, 12, 64], &[2, 16, 768]);
        let lens = |d: usize, n: usize| -> Vec<usize> {
            g.bounds(d, n).unwrap().iter().map(|(s, e)| e - s).collect()
        };
        assert_eq!(lens(768, 8), [128, 128, 128, 128, 64, 64, 64, 64]);
        assert_eq!(lens(768, 4), [192; 4]);
        // No grain for other extents: ragged by elements.
        assert_eq!(lens(1000, 3), [334, 333, 333]);
        // Fewer heads than ranks: by elements again.
        let mut k = Grains::default();
        k.reshape(&[2, 16, 256], &[2, 16, 4, 64]);
        assert_eq!(lens(256, 8).len(), 8);
        assert_eq!(k.bounds(256, 8).unwrap()[0], (0, 32));
        assert_eq!(k.bounds(256, 3).unwrap()[0], (0, 128));
    }

    #[test]
    fn grouped_query_heads_split_by_groups() {
        // 8 query heads of 16 (hidden 128), 4 key-value heads repeated by Expand + Reshape.
        let mut links = Vec::new();
        super::reshape_links(&[2, 16, 128], &[2, 16, 8, 16], &mut links);
        super::reshape_links(&[2, 4, 2, 16, 16], &[2, 8, 16, 16], &mut links);
        let mut g = Grains::default();
        for &(d, _, e) in &links {
            g.ask(d, e);
        }
        g.1 = g.0.clone();
        for _ in 0..3 {
            for &(d, h, e) in &links {
                let gh = g.grain(h);
                g.ask(d, e * gh);
            }
        }
        let heads = |d: usize, n: usize, unit: usize| -> Vec<usize> {
            g.bounds(d, n)
                .unwrap()
                .iter()
                .map(|(s, e)| (e - s) / unit)
                .collect()
        };
        // 3 ranks: query heads 4,2,2 follow the key-value heads 2,1,1.
        assert_eq!(heads(128, 3, 16), [4, 2, 2]);
        assert_eq!(heads(8, 3, 1), [4, 2, 2]);
        // 5 ranks: fewer groups than ranks, so whole heads 2,2,2,1,1.
        assert_eq!(heads(128, 5, 16), [2, 2, 2, 1, 1]);
    }
}
