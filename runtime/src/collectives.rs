//! The math of the collectives, as pure functions over the inputs of every member.
//!
//! A collective over a group of `n` members takes one tensor per member (in group order) and
//! produces member `i`'s output. These functions are what the shared-memory CPU exchange
//! ([`crate::device::shm`]) runs once every member has deposited its input, and what tests use
//! as the sequential specification. Reductions sum members **in group order** (member 0, then
//! 1, ..., n−1), so a result is bitwise identical from run to run and on every member.
//!
//! Layout semantics (1-D mesh, member `i` of `n`):
//! * all-reduce: Partial → Replicated: `Σ_r x_r`.
//! * all-gather(axis): Split(axis) → Replicated: concatenation of the chunks along `axis`.
//! * reduce-scatter(axis): Partial → Split(axis): chunk `i` (of `n`, along `axis`) of `Σ_r x_r`.
//! * all-to-all(axis → to_axis): Split(axis) → Split(to_axis): the concatenation along `axis`
//!   of every member's chunk `i` along `to_axis`.
//! * broadcast: the root's (member 0's) tensor.
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{Tensor, TensorData};
use thiserror::Error;

/// A collective could not be computed or completed.
#[derive(Debug, Error)]
pub enum CollectiveError {
    /// The members' inputs do not fit the collective (shape, dtype, axis, divisibility).
    #[error("{kind}: {msg}")]
    Invalid {
        /// Collective name (`all_reduce`, ...).
        kind: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Another member failed, so this collective was abandoned.
    #[error("{kind}: aborted because another rank failed")]
    Aborted {
        /// Collective name.
        kind: &'static str,
    },
}

/// Parameters of one collective call, identical on every member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectiveSpec {
    /// Which collective.
    pub kind: CollectiveKind,
    /// Split axis of the input (all-gather, all-to-all) or output (reduce-scatter).
    pub axis: Option<usize>,
    /// Output split axis of an all-to-all.
    pub to_axis: Option<usize>,
    /// Each member's extent of the split axis for a ragged split (all-gather's input axis,
    /// reduce-scatter's output axis, all-to-all's `to_axis`); empty for equal chunks.
    pub counts: Vec<usize>,
}

fn invalid(kind: CollectiveKind, msg: impl Into<String>) -> CollectiveError {
    CollectiveError::Invalid {
        kind: kind.as_str(),
        msg: msg.into(),
    }
}

/// Computes member `member`'s output of the collective `spec` given every member's input,
/// in group order.
pub fn compute(
    spec: &CollectiveSpec,
    inputs: &[&Tensor],
    member: usize,
) -> Result<Tensor, CollectiveError> {
    let kind = spec.kind;
    if inputs.is_empty() || member >= inputs.len() {
        return Err(invalid(
            kind,
            format!("member {member} of a group of {}", inputs.len()),
        ));
    }
    let need_axis = || spec.axis.ok_or_else(|| invalid(kind, "no axis given"));
    match kind {
        CollectiveKind::AllReduce => all_reduce(inputs),
        CollectiveKind::AllGather => all_gather(inputs, need_axis()?),
        CollectiveKind::ReduceScatter => {
            reduce_scatter_counts(inputs, need_axis()?, member, &spec.counts)
        }
        CollectiveKind::AllToAll => {
            let to = spec
                .to_axis
                .ok_or_else(|| invalid(kind, "no to_axis given"))?;
            all_to_all_counts(inputs, need_axis()?, to, member, &spec.counts)
        }
        CollectiveKind::Broadcast => Ok(inputs[0].clone()),
    }
}

/// Checks that the members hold the same shape and dtype.
fn check_same(kind: CollectiveKind, inputs: &[&Tensor]) -> Result<(), CollectiveError> {
    // No axis is free: every extent must agree.
    check_same_but(kind, inputs, usize::MAX)
}

/// Checks that the members hold the same shape and dtype except along `free` (a ragged
/// split axis members may hold different extents of).
fn check_same_but(
    kind: CollectiveKind,
    inputs: &[&Tensor],
    free: usize,
) -> Result<(), CollectiveError> {
    let first = inputs[0];
    let strip = |s: &[usize]| -> Vec<usize> {
        s.iter()
            .enumerate()
            .filter(|(a, _)| *a != free)
            .map(|(_, d)| *d)
            .collect()
    };
    for (r, t) in inputs.iter().enumerate().skip(1) {
        if t.shape.len() != first.shape.len()
            || strip(&t.shape) != strip(&first.shape)
            || t.dtype != first.dtype
        {
            return Err(invalid(
                kind,
                format!(
                    "member {r} holds {}{:?} but member 0 holds {}{:?}",
                    t.dtype, t.shape, first.dtype, first.shape
                ),
            ));
        }
    }
    Ok(())
}

/// `member`'s chunk `[start, end)` of `axis` of `shape`: from `counts` (one extent per
/// member, summing to the axis) when given, else one of equal chunks.
fn counted_chunk(
    kind: CollectiveKind,
    shape: &[usize],
    axis: usize,
    n: usize,
    member: usize,
    counts: &[usize],
) -> Result<(usize, usize), CollectiveError> {
    if counts.is_empty() {
        return chunk(kind, shape, axis, n, member);
    }
    let d = shape.get(axis).copied();
    if counts.len() != n || Some(counts.iter().sum::<usize>()) != d {
        return Err(invalid(
            kind,
            format!("counts {counts:?} do not split axis {axis} of {shape:?} over {n} members"),
        ));
    }
    let start: usize = counts[..member].iter().sum();
    Ok((start, start + counts[member]))
}

/// Σ over members, in member order.
pub fn all_reduce(inputs: &[&Tensor]) -> Result<Tensor, CollectiveError> {
    let kind = CollectiveKind::AllReduce;
    check_same(kind, inputs)?;
    let mut out = inputs[0].clone();
    for t in &inputs[1..] {
        add_into(kind, &mut out, t)?;
    }
    Ok(out)
}

fn add_into(kind: CollectiveKind, acc: &mut Tensor, t: &Tensor) -> Result<(), CollectiveError> {
    match (&mut acc.data, &t.data) {
        (TensorData::F32(a), TensorData::F32(b)) => a.iter_mut().zip(b).for_each(|(x, y)| *x += *y),
        (TensorData::I64(a), TensorData::I64(b)) => a
            .iter_mut()
            .zip(b)
            .for_each(|(x, y)| *x = x.wrapping_add(*y)),
        _ => return Err(invalid(kind, format!("cannot sum {} tensors", acc.dtype))),
    }
    Ok(())
}

/// Concatenation of the members' chunks along `axis` (of equal or ragged extents).
pub fn all_gather(inputs: &[&Tensor], axis: usize) -> Result<Tensor, CollectiveError> {
    let kind = CollectiveKind::AllGather;
    check_same_but(kind, inputs, axis)?;
    concat_axis(inputs, axis).map_err(|m| invalid(kind, m))
}

/// Chunk `member` along `axis` of Σ over members (summed in member order).
pub fn reduce_scatter(
    inputs: &[&Tensor],
    axis: usize,
    member: usize,
) -> Result<Tensor, CollectiveError> {
    reduce_scatter_counts(inputs, axis, member, &[])
}

/// [`reduce_scatter`] with each member's extent given (`counts`, empty: equal chunks).
pub fn reduce_scatter_counts(
    inputs: &[&Tensor],
    axis: usize,
    member: usize,
    counts: &[usize],
) -> Result<Tensor, CollectiveError> {
    let kind = CollectiveKind::ReduceScatter;
    check_same(kind, inputs)?;
    let n = inputs.len();
    let (start, end) = counted_chunk(kind, &inputs[0].shape, axis, n, member, counts)?;
    let mut out = slice_axis(inputs[0], axis, start, end).map_err(|m| invalid(kind, m))?;
    for t in &inputs[1..] {
        let piece = slice_axis(t, axis, start, end).map_err(|m| invalid(kind, m))?;
        add_into(kind, &mut out, &piece)?;
    }
    Ok(out)
}

/// Member `member`'s chunk along `to_axis` of the tensor split along `axis`.
pub fn all_to_all(
    inputs: &[&Tensor],
    axis: usize,
    to_axis: usize,
    member: usize,
) -> Result<Tensor, CollectiveError> {
    all_to_all_counts(inputs, axis, to_axis, member, &[])
}

/// [`all_to_all`] with each member's extent of `to_axis` given (`counts`, empty: equal
/// chunks); members may hold ragged extents of `axis`.
pub fn all_to_all_counts(
    inputs: &[&Tensor],
    axis: usize,
    to_axis: usize,
    member: usize,
    counts: &[usize],
) -> Result<Tensor, CollectiveError> {
    let kind = CollectiveKind::AllToAll;
    check_same_but(kind, inputs, axis)?;
    let n = inputs.len();
    let (start, end) = counted_chunk(kind, &inputs[0].shape, to_axis, n, member, counts)?;
    let pieces = inputs
        .iter()
        .map(|t| slice_axis(t, to_axis, start, end))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| invalid(kind, m))?;
    let refs: Vec<&Tensor> = pieces.iter().collect();
    concat_axis(&refs, axis).map_err(|m| invalid(kind, m))
}

/// The range `[start, end)` of chunk `member` of `n` equal chunks of `shape[axis]`.
fn chunk(
    kind: CollectiveKind,
    shape: &[usize],
    axis: usize,
    n: usize,
    member: usize,
) -> Result<(usize, usize), CollectiveError> {
    let d = *shape.get(axis).ok_or_else(|| {
        invalid(
            kind,
            format!("axis {axis} out of range for shape {shape:?}"),
        )
    })?;
    if d % n != 0 {
        return Err(invalid(
            kind,
            format!("axis {axis} of shape {shape:?} does not split into {n} chunks"),
        ));
    }
    let c = d / n;
    Ok((member * c, (member + 1) * c))
}

/// Rows `[start, end)` of `t` along `axis`, copied.
pub fn slice_axis(t: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor, String> {
    let d = *t
        .shape
        .get(axis)
        .ok_or_else(|| format!("axis {axis} out of range for shape {:?}", t.shape))?;
    if start > end || end > d {
        return Err(format!(
            "slice [{start}, {end}) of axis {axis} out of range for shape {:?}",
            t.shape
        ));
    }
    let outer: usize = t.shape[..axis].iter().product();
    let inner: usize = t.shape[axis + 1..].iter().product();
    let mut shape = t.shape.clone();
    shape[axis] = end - start;
    fn go<T: Copy>(v: &[T], outer: usize, d: usize, inner: usize, s: usize, e: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (e - s) * inner);
        for o in 0..outer {
            let base = o * d * inner;
            out.extend_from_slice(&v[base + s * inner..base + e * inner]);
        }
        out
    }
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(go(v, outer, d, inner, start, end)),
        TensorData::I64(v) => TensorData::I64(go(v, outer, d, inner, start, end)),
        TensorData::Bool(v) => TensorData::Bool(go(v, outer, d, inner, start, end)),
    };
    Ok(Tensor {
        dtype: t.dtype,
        shape,
        data,
    })
}

/// Concatenation of tensors along `axis` (all other extents and the dtype must agree).
pub fn concat_axis(parts: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = parts.first().ok_or("nothing to concatenate")?;
    if axis >= first.shape.len() {
        return Err(format!(
            "axis {axis} out of range for shape {:?}",
            first.shape
        ));
    }
    let mut total = 0;
    for p in parts {
        let same_rest = p.shape.len() == first.shape.len()
            && p.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_rest || p.dtype != first.dtype {
            return Err(format!(
                "cannot concatenate {}{:?} with {}{:?} along axis {axis}",
                p.dtype, p.shape, first.dtype, first.shape
            ));
        }
        total += p.shape[axis];
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = total;
    fn go<T: Copy>(parts: &[(&[T], usize)], outer: usize, inner: usize, total: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for (v, d) in parts {
                out.extend_from_slice(&v[o * d * inner..(o + 1) * d * inner]);
            }
        }
        out
    }
    macro_rules! gather_parts {
        ($variant:ident) => {{
            let mut v = Vec::with_capacity(parts.len());
            for p in parts {
                match &p.data {
                    TensorData::$variant(x) => v.push((x.as_slice(), p.shape[axis])),
                    _ => return Err(format!("mixed storage for dtype {}", first.dtype)),
                }
            }
            TensorData::$variant(go(&v, outer, inner, total))
        }};
    }
    let data = match &first.data {
        TensorData::F32(_) => gather_parts!(F32),
        TensorData::I64(_) => gather_parts!(I64),
        TensorData::Bool(_) => gather_parts!(Bool),
    };
    Ok(Tensor {
        dtype: first.dtype,
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random logical tensor.
    fn logical(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        Tensor::f32(shape.to_vec(), v)
    }

    /// Element (multi-index) of a row-major tensor.
    fn at(t: &Tensor, idx: &[usize]) -> f32 {
        let mut flat = 0;
        for (i, d) in idx.iter().zip(&t.shape) {
            flat = flat * d + i;
        }
        t.as_f32().expect("f32 tensor")[flat]
    }

    fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
        let mut out = vec![vec![]];
        for &d in shape {
            out = out
                .into_iter()
                .flat_map(|p| (0..d).map(move |i| [p.clone(), vec![i]].concat()))
                .collect();
        }
        out
    }

    /// Ragged chunks (3 members over an axis of 8: 3, 3, 2): all-gather concatenates them,
    /// reduce-scatter and all-to-all cut by the counts; the same specs as the runtime calls.
    #[test]
    fn ragged_collectives_follow_the_counts() {
        let counts = vec![3, 3, 2];
        let starts = [0, 3, 6];
        let full = logical(&[2, 8], 11);
        let chunk = |t: &Tensor, m: usize| slice_axis(t, 1, starts[m], starts[m] + counts[m]);
        let parts: Vec<Tensor> = (0..3).map(|m| chunk(&full, m).unwrap()).collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let gather = CollectiveSpec {
            kind: CollectiveKind::AllGather,
            axis: Some(1),
            to_axis: None,
            counts: counts.clone(),
        };
        for m in 0..3 {
            assert_eq!(compute(&gather, &refs, m).unwrap(), full);
        }
        // Reduce-scatter of three addends: member m gets its chunk of the sum.
        let addends: Vec<Tensor> = (0..3).map(|r| logical(&[2, 8], 20 + r)).collect();
        let arefs: Vec<&Tensor> = addends.iter().collect();
        let sum = all_reduce(&arefs).unwrap();
        let scatter = CollectiveSpec {
            kind: CollectiveKind::ReduceScatter,
            axis: Some(1),
            to_axis: None,
            counts: counts.clone(),
        };
        for m in 0..3 {
            let got = compute(&scatter, &arefs, m).unwrap();
            assert_eq!(got, chunk(&sum, m).unwrap(), "member {m}");
        }
        // All-to-all from a ragged split of axis 1 to a ragged split of axis 0 (extent 8).
        let full = logical(&[8, 8], 5);
        let parts: Vec<Tensor> = (0..3).map(|m| chunk(&full, m).unwrap()).collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let a2a = CollectiveSpec {
            kind: CollectiveKind::AllToAll,
            axis: Some(1),
            to_axis: Some(0),
            counts: counts.clone(),
        };
        for m in 0..3 {
            let got = compute(&a2a, &refs, m).unwrap();
            let want = slice_axis(&full, 0, starts[m], starts[m] + counts[m]).unwrap();
            assert_eq!(got, want, "member {m}");
        }
        // Counts that do not cover the axis are refused.
        let bad = CollectiveSpec {
            counts: vec![3, 3, 3],
            ..scatter
        };
        assert!(compute(&bad, &arefs, 0).is_err());
    }

    #[test]
    fn all_reduce_sums_in_member_order() {
        for n in 1..=6 {
            let parts: Vec<Tensor> = (0..n).map(|r| logical(&[3, 4], r as u64)).collect();
            let refs: Vec<&Tensor> = parts.iter().collect();
            let out = all_reduce(&refs).unwrap();
            for (i, got) in out.as_f32().unwrap().iter().enumerate() {
                let mut want = 0.0f32;
                want += parts[0].as_f32().unwrap()[i];
                for p in &parts[1..] {
                    want += p.as_f32().unwrap()[i];
                }
                assert_eq!(got.to_bits(), want.to_bits(), "n={n} element {i}");
            }
        }
    }

    #[test]
    fn all_gather_reassembles_the_logical_tensor() {
        for n in 1..=6 {
            for axis in 0..3 {
                let mut shape = vec![2, 3, 5];
                shape[axis] = 2 * n;
                let full = logical(&shape, 7);
                let parts: Vec<Tensor> = (0..n)
                    .map(|r| slice_axis(&full, axis, 2 * r, 2 * r + 2).unwrap())
                    .collect();
                let refs: Vec<&Tensor> = parts.iter().collect();
                for member in 0..n {
                    let spec = CollectiveSpec {
                        kind: CollectiveKind::AllGather,
                        axis: Some(axis),
                        to_axis: None,
                        counts: vec![],
                    };
                    assert_eq!(
                        compute(&spec, &refs, member).unwrap(),
                        full,
                        "n={n} axis={axis}"
                    );
                }
            }
        }
    }

    #[test]
    fn reduce_scatter_is_a_chunk_of_the_sum() {
        for n in 1..=6 {
            let parts: Vec<Tensor> = (0..n)
                .map(|r| logical(&[2, 3 * n], 11 + r as u64))
                .collect();
            let refs: Vec<&Tensor> = parts.iter().collect();
            let sum = all_reduce(&refs).unwrap();
            for member in 0..n {
                let got = reduce_scatter(&refs, 1, member).unwrap();
                assert_eq!(got.shape, vec![2, 3]);
                for idx in indices(&got.shape) {
                    let want = at(&sum, &[idx[0], member * 3 + idx[1]]);
                    assert_eq!(
                        at(&got, &idx).to_bits(),
                        want.to_bits(),
                        "n={n} member={member}"
                    );
                }
            }
        }
    }

    #[test]
    fn all_to_all_moves_the_split_axis() {
        for n in 1..=6 {
            let full = logical(&[2 * n, 3, n * 4], 5);
            // Input S(0): member r holds rows [2r, 2r+2). Output S(2): member m holds [4m, 4m+4).
            let parts: Vec<Tensor> = (0..n)
                .map(|r| slice_axis(&full, 0, 2 * r, 2 * r + 2).unwrap())
                .collect();
            let refs: Vec<&Tensor> = parts.iter().collect();
            for member in 0..n {
                let got = all_to_all(&refs, 0, 2, member).unwrap();
                assert_eq!(
                    got,
                    slice_axis(&full, 2, 4 * member, 4 * member + 4).unwrap(),
                    "n={n}"
                );
            }
        }
    }

    #[test]
    fn broadcast_returns_member_zero() {
        for n in 1..=6 {
            let parts: Vec<Tensor> = (0..n).map(|r| logical(&[4], r as u64)).collect();
            let refs: Vec<&Tensor> = parts.iter().collect();
            let spec = CollectiveSpec {
                kind: CollectiveKind::Broadcast,
                axis: None,
                to_axis: None,
                counts: vec![],
            };
            for member in 0..n {
                assert_eq!(compute(&spec, &refs, member).unwrap(), parts[0]);
            }
        }
    }

    #[test]
    fn integer_all_reduce_and_bad_inputs() {
        let a = Tensor::i64(vec![2], vec![1, 2]);
        let b = Tensor::i64(vec![2], vec![10, 20]);
        assert_eq!(
            all_reduce(&[&a, &b]).unwrap(),
            Tensor::i64(vec![2], vec![11, 22])
        );
        let c = Tensor::i64(vec![3], vec![1, 2, 3]);
        let e = all_reduce(&[&a, &c]).unwrap_err().to_string();
        assert!(e.contains("member 1") && e.contains("[3]"), "{e}");
        let e = reduce_scatter(&[&c, &c], 0, 0).unwrap_err().to_string();
        assert!(e.contains("does not split into 2"), "{e}");
        let t = Tensor::bool(vec![1], vec![true]);
        assert!(all_reduce(&[&t, &t]).is_err());
    }
}
