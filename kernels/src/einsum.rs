//! Einsum: diagonals, single-operand sums and transposes, and pairwise contractions lowered
//! to batched matmul (so the products run through the `gemm` crate).
use super::binary::broadcast_to;
use super::index::{strided_offsets, strides};
use super::matmul::matmul;
use super::movement::{reshape, transpose};
use super::reduce::reduce;
use super::{describe, make, map_storage, take, KResult};
use tessera_ir::einsum::{split_terms, EquationTerms};
use tessera_ir::op::{ReduceAttrs, ReduceKind};
use tessera_ir::Tensor;

/// A tensor whose axes are named by einsum labels.
struct Labeled {
    t: Tensor,
    labels: Vec<char>,
}

/// First label used for the axes an ellipsis stands for (outside the ASCII letters).
const ELLIPSIS_BASE: u32 = 0x100;

/// Parses the equation into per-operand label lists and the output labels.
fn parse(equation: &str, ranks: &[usize]) -> KResult<(Vec<Vec<char>>, Vec<char>)> {
    let EquationTerms {
        inputs: terms,
        output: rhs,
    } = split_terms(equation, ranks.len()).map_err(|n| {
        format!(
            "equation '{equation}' has {n} operands, got {}",
            ranks.len()
        )
    })?;
    let letters = |t: &str| t.replace("...", "").chars().count();
    let n_ell = terms
        .iter()
        .zip(ranks)
        .filter(|(t, _)| t.contains("..."))
        .map(|(t, &r)| r.saturating_sub(letters(t)))
        .max()
        .unwrap_or(0);
    let ell = |count: usize| -> Vec<char> {
        (n_ell - count..n_ell)
            .filter_map(|i| char::from_u32(ELLIPSIS_BASE + i as u32))
            .collect()
    };
    let expand = |t: &str, rank: Option<usize>| -> KResult<Vec<char>> {
        let Some((pre, post)) = t.split_once("...") else {
            return Ok(t.chars().collect());
        };
        let count = match rank {
            Some(r) => r
                .checked_sub(letters(t))
                .ok_or_else(|| format!("term '{t}' has more labels than rank {r}"))?,
            None => n_ell,
        };
        Ok(pre.chars().chain(ell(count)).chain(post.chars()).collect())
    };
    let mut ins = Vec::with_capacity(terms.len());
    for (t, &r) in terms.iter().zip(ranks) {
        let l = expand(t, Some(r))?;
        if l.len() != r || l.iter().any(|c| c.is_ascii() && !c.is_ascii_alphabetic()) {
            return Err(format!("term '{t}' does not match an operand of rank {r}"));
        }
        ins.push(l);
    }
    let out = match rhs {
        Some(r) => expand(&r, None)?,
        None => {
            // Implicit output: ellipsis axes, then labels seen exactly once, sorted.
            let all: Vec<char> = ins.iter().flatten().copied().collect();
            let mut once: Vec<char> = all
                .iter()
                .copied()
                .filter(|c| c.is_ascii() && all.iter().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            ell(n_ell).into_iter().chain(once).collect()
        }
    };
    Ok((ins, out))
}

/// Takes diagonals over repeated labels of one operand (`ii -> i`).
fn diagonal(x: Labeled) -> KResult<Labeled> {
    let mut uniq: Vec<char> = Vec::new();
    for &c in &x.labels {
        if !uniq.contains(&c) {
            uniq.push(c);
        }
    }
    if uniq.len() == x.labels.len() {
        return Ok(x);
    }
    let s = strides(&x.t.shape);
    let mut shape = Vec::with_capacity(uniq.len());
    let mut st = Vec::with_capacity(uniq.len());
    for &c in &uniq {
        let pos: Vec<usize> = (0..x.labels.len()).filter(|&i| x.labels[i] == c).collect();
        let dim = x.t.shape[pos[0]];
        if pos.iter().any(|&p| x.t.shape[p] != dim) {
            return Err(format!(
                "label '{c}' has different extents in {}",
                describe(&x.t)
            ));
        }
        shape.push(dim);
        st.push(pos.iter().map(|&p| s[p] as isize).sum());
    }
    let idx = strided_offsets(&shape, &st, 0);
    let t = make(
        x.t.dtype,
        shape,
        map_storage!(&x.t.data, v => take(v, &idx)),
    )?;
    Ok(Labeled { t, labels: uniq })
}

/// Sums out the axes whose labels are not in `keep`.
fn sum_out(x: Labeled, keep: &[char]) -> KResult<Labeled> {
    let axes: Vec<usize> = (0..x.labels.len())
        .filter(|&i| !keep.contains(&x.labels[i]))
        .collect();
    if axes.is_empty() {
        return Ok(x);
    }
    let t = reduce(
        &ReduceAttrs {
            kind: ReduceKind::Sum,
            axes: axes.clone(),
            keepdims: false,
        },
        &x.t,
    )?;
    let labels = (0..x.labels.len())
        .filter(|i| !axes.contains(i))
        .map(|i| x.labels[i])
        .collect();
    Ok(Labeled { t, labels })
}

/// Permutes `x` so its labels read `order` (a permutation of its labels).
fn permute(x: &Labeled, order: &[char]) -> KResult<Tensor> {
    let perm: Vec<usize> = order
        .iter()
        .filter_map(|c| x.labels.iter().position(|d| d == c))
        .collect();
    transpose(&perm, &x.t)
}

fn extent(x: &Labeled, c: char) -> usize {
    x.labels
        .iter()
        .position(|&d| d == c)
        .map_or(1, |i| x.t.shape[i])
}

/// Contracts two operands, keeping the labels in `keep`.
fn contract(a: Labeled, b: Labeled, keep: &[char]) -> KResult<Labeled> {
    let in_b = |c: &char| b.labels.contains(c);
    let in_a = |c: &char| a.labels.contains(c);
    let batch: Vec<char> = a
        .labels
        .iter()
        .copied()
        .filter(|c| in_b(c) && keep.contains(c))
        .collect();
    let summed: Vec<char> = a
        .labels
        .iter()
        .copied()
        .filter(|c| in_b(c) && !keep.contains(c))
        .collect();
    let left: Vec<char> = a.labels.iter().copied().filter(|c| !in_b(c)).collect();
    let right: Vec<char> = b.labels.iter().copied().filter(|c| !in_a(c)).collect();
    let mut batch_shape = Vec::with_capacity(batch.len());
    for &c in batch.iter().chain(&summed) {
        let (ea, eb) = (extent(&a, c), extent(&b, c));
        if ea != eb && ea != 1 && eb != 1 {
            return Err(format!("label '{c}' has extents {ea} and {eb}"));
        }
        batch_shape.push(ea.max(eb));
    }
    let (nb, ns) = (batch.len(), summed.len());
    let prod = |v: &[usize]| v.iter().product::<usize>();
    let m = prod(&left.iter().map(|&c| extent(&a, c)).collect::<Vec<_>>());
    let n = prod(&right.iter().map(|&c| extent(&b, c)).collect::<Vec<_>>());
    let k = prod(&batch_shape[nb..]);
    let bsz = prod(&batch_shape[..nb]);
    // A → [batch.., left.., summed..] broadcast → [bsz, m, k].
    let order_a: Vec<char> = batch.iter().chain(&left).chain(&summed).copied().collect();
    let mut full_a: Vec<usize> = batch_shape[..nb].to_vec();
    full_a.extend(left.iter().map(|&c| extent(&a, c)));
    full_a.extend_from_slice(&batch_shape[nb..nb + ns]);
    let ta = reshape(
        &[bsz, m, k],
        &broadcast_to(&permute(&a, &order_a)?, &full_a)?,
    )?;
    // B → [batch.., summed.., right..] broadcast → [bsz, k, n].
    let order_b: Vec<char> = batch.iter().chain(&summed).chain(&right).copied().collect();
    let mut full_b: Vec<usize> = batch_shape.clone();
    full_b.extend(right.iter().map(|&c| extent(&b, c)));
    let tb = reshape(
        &[bsz, k, n],
        &broadcast_to(&permute(&b, &order_b)?, &full_b)?,
    )?;
    let prod_t = matmul(&ta, &tb)?;
    let mut shape: Vec<usize> = batch_shape[..nb].to_vec();
    shape.extend(left.iter().map(|&c| extent(&a, c)));
    shape.extend(right.iter().map(|&c| extent(&b, c)));
    let labels = batch.iter().chain(&left).chain(&right).copied().collect();
    Ok(Labeled {
        t: reshape(&shape, &prod_t)?,
        labels,
    })
}

/// Evaluates an einsum equation.
pub(crate) fn einsum(equation: &str, inputs: &[&Tensor]) -> KResult<Tensor> {
    let ranks: Vec<usize> = inputs.iter().map(|t| t.shape.len()).collect();
    let (terms, out) = parse(equation, &ranks)?;
    let mut ops: Vec<Labeled> = Vec::with_capacity(inputs.len());
    for (t, labels) in inputs.iter().zip(terms) {
        ops.push(diagonal(Labeled {
            t: (*t).clone(),
            labels,
        })?);
    }
    if let Some(c) = out
        .iter()
        .find(|c| !ops.iter().any(|o| o.labels.contains(c)))
    {
        return Err(format!("output label '{c}' appears in no operand"));
    }
    // Labels still needed after operand i: the output and every later operand.
    let labels_all: Vec<Vec<char>> = ops.iter().map(|o| o.labels.clone()).collect();
    let keep_after = |i: usize| -> Vec<char> {
        out.iter()
            .copied()
            .chain(labels_all[i + 1..].iter().flatten().copied())
            .collect()
    };
    let mut rest = ops.into_iter();
    // The operand list is non-empty: eval checks arity >= 1 and parse matched the terms.
    let first = rest.next().ok_or("no operands")?;
    // Sum out labels of the first operand that nothing else needs (also the 1-operand case).
    let mut acc = sum_out(first, &keep_after(0))?;
    for (i, next) in rest.enumerate().map(|(j, o)| (j + 1, o)) {
        let keep = keep_after(i);
        let mut keep_next = keep.clone();
        keep_next.extend(&acc.labels);
        let next = sum_out(next, &keep_next)?;
        acc = contract(acc, next, &keep)?;
    }
    let acc = sum_out(acc, &out)?;
    let t = permute(&acc, &out)?;
    if t.shape.len() != out.len() {
        return Err(format!(
            "output labels of '{equation}' are not all distinct"
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::f32(shape, (0..n).map(|x| x as f32).collect())
    }

    #[test]
    fn attention_scores_form() {
        // bhid,bhjd->bhij equals q·kᵀ per (b,h).
        let q = iota(vec![1, 2, 2, 3]);
        let k = Tensor::f32(
            vec![1, 2, 2, 3],
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        );
        let s = einsum("bhid,bhjd->bhij", &[&q, &k]).unwrap();
        assert_eq!(s.shape, vec![1, 2, 2, 2]);
        // head 0: q rows [0,1,2],[3,4,5] · k rows [1,0,0],[0,1,0] → [[0,1],[3,4]]
        // head 1: q rows [6,7,8],[9,10,11] · k rows [0,0,1],[1,1,1] → [[8,21],[11,30]]
        assert_eq!(
            s.as_f32().unwrap(),
            &[0.0, 1.0, 3.0, 4.0, 8.0, 21.0, 11.0, 30.0]
        );
    }

    #[test]
    fn single_operand_forms() {
        let x = iota(vec![2, 3]);
        assert_eq!(
            einsum("ij->ji", &[&x]).unwrap().as_f32().unwrap(),
            &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        assert_eq!(
            einsum("ij->i", &[&x]).unwrap().as_f32().unwrap(),
            &[3.0, 12.0]
        );
        assert_eq!(einsum("ij->", &[&x]).unwrap().as_f32().unwrap(), &[15.0]);
        let sq = iota(vec![3, 3]);
        assert_eq!(
            einsum("ii->i", &[&sq]).unwrap().as_f32().unwrap(),
            &[0.0, 4.0, 8.0]
        );
        assert_eq!(einsum("ii", &[&sq]).unwrap().as_f32().unwrap(), &[12.0]);
    }

    #[test]
    fn ellipsis_outer_and_three_operands() {
        let a = iota(vec![2, 2, 3]);
        let b = iota(vec![2, 3, 1]);
        let c = einsum("...ij,...jk->...ik", &[&a, &b]).unwrap();
        let m = matmul(&a, &b).unwrap();
        assert_eq!(c.as_f32().unwrap(), m.as_f32().unwrap());
        let u = Tensor::f32(vec![2], vec![1.0, 2.0]);
        let v = Tensor::f32(vec![3], vec![1.0, 0.0, -1.0]);
        let outer = einsum("i,j->ij", &[&u, &v]).unwrap();
        assert_eq!(outer.as_f32().unwrap(), &[1.0, 0.0, -1.0, 2.0, 0.0, -2.0]);
        // i,ij,j-> : uᵀ·X·v with X = iota(2,3) = 1·(0-2) + 2·(3-5) = -6
        let x = iota(vec![2, 3]);
        assert_eq!(
            einsum("i,ij,j->", &[&u, &x, &v]).unwrap().as_f32().unwrap(),
            &[-6.0]
        );
        assert!(einsum("ij,jk->ik", &[&u, &v]).is_err());
    }
}
