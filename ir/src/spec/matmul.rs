//! Products: MatMul (<https://onnx.ai/onnx/operators/onnx__MatMul.html>), Gemm
//! (<https://onnx.ai/onnx/operators/onnx__Gemm.html>) and Einsum in a matmul-like form
//! (<https://onnx.ai/onnx/operators/onnx__Einsum.html>).
//!
//! Cost: 2·M·N·K FLOPs. Partitioning: MatMul and Gemm by columns, rows (partial sums) or
//! left-hand rows, MatMul also by batch axes and on partial operands; Einsum is replicated.
use super::{first_numel, Arity, OpSpec, Partitioning};
use crate::infer::{broadcast_shapes, broadcasts_to, InferCx, TypedShape};
use crate::op::{EinsumAttrs, GemmAttrs, MatMulAttrs};
use crate::IrError;

impl OpSpec for MatMulAttrs {
    fn name(&self) -> String {
        "MatMul".into()
    }
    fn arity(&self) -> Arity {
        Arity::exactly(2)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        matmul(cx).map(|o| vec![o])
    }
    /// 2·(output elements)·K, K the last axis of A.
    fn flops(&self, inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        let k = inputs.first().and_then(|a| a.last()).copied().unwrap_or(1) as u64;
        2 * first_numel(outputs) * k
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&[
            "matmul-column",
            "matmul-row",
            "matmul-lhs-rows",
            "matmul-batch",
            "matmul-partial",
        ])
    }
}

impl OpSpec for GemmAttrs {
    fn name(&self) -> String {
        "Gemm".into()
    }
    fn arity(&self) -> Arity {
        Arity::range(2, 3)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        gemm(cx, self.trans_a, self.trans_b).map(|o| vec![o])
    }
    /// 2·M·N·K (the bias add is not counted).
    fn flops(&self, inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        let a = inputs.first().copied().unwrap_or(&[]);
        let k = if self.trans_a { a.first() } else { a.last() }
            .copied()
            .unwrap_or(1) as u64;
        2 * first_numel(outputs) * k
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::Rules(&["gemm-column", "gemm-row", "gemm-lhs-rows"])
    }
}

impl OpSpec for EinsumAttrs {
    fn name(&self) -> String {
        "Einsum".into()
    }
    fn arity(&self) -> Arity {
        Arity::at_least(1)
    }
    fn infer(&self, cx: &InferCx) -> Result<Vec<TypedShape>, IrError> {
        einsum(cx, &self.equation).map(|o| vec![o])
    }
    /// 2·(output elements)·K with K the largest last axis of the operands (the imported
    /// equations are matmul-like).
    fn flops(&self, inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
        let k = inputs
            .iter()
            .map(|s| s.last().copied().unwrap_or(1) as u64)
            .max()
            .unwrap_or(1);
        2 * first_numel(outputs) * k
    }
    fn partitioning(&self) -> Partitioning {
        Partitioning::ReplicatedOnly
    }
}

fn matmul(cx: &InferCx) -> Result<TypedShape, IrError> {
    let d = cx.same_dtype(&[0, 1])?;
    let (a, b) = (cx.inputs[0].1, cx.inputs[1].1);
    if a.is_empty() || b.is_empty() {
        return Err(cx.err(format!("operands must have rank >= 1, got {a:?} · {b:?}")));
    }
    // numpy: a 1-D A is a row vector (prepend 1), a 1-D B a column vector (append 1);
    // the added axis is removed from the result.
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, ka) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if ka != kb {
        return Err(cx.err(format!(
            "inner dimensions differ: {a:?} · {b:?} ({ka} vs {kb})"
        )));
    }
    let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .ok_or_else(|| cx.err(format!("batch dimensions do not broadcast: {a:?} · {b:?}")))?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok((d, out))
}

fn gemm(cx: &InferCx, trans_a: bool, trans_b: bool) -> Result<TypedShape, IrError> {
    let d = cx.same_dtype(&[0, 1])?;
    let (a, b) = (cx.inputs[0].1, cx.inputs[1].1);
    if a.len() != 2 || b.len() != 2 {
        return Err(cx.err(format!("A and B must be 2-D, got {a:?} and {b:?}")));
    }
    let (m, ka) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let (kb, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if ka != kb {
        return Err(cx.err(format!(
            "inner dimensions differ: {a:?} (trans_a={trans_a}) · {b:?} (trans_b={trans_b})"
        )));
    }
    if let Some((dc, c)) = cx.inputs.get(2) {
        if *dc != d {
            return Err(cx.err(format!("C dtype {dc} differs from A dtype {d}")));
        }
        if !broadcasts_to(c, &[m, n]) {
            return Err(cx.err(format!("C shape {c:?} does not broadcast to [{m}, {n}]")));
        }
    }
    Ok((d, vec![m, n]))
}

fn einsum(cx: &InferCx, equation: &str) -> Result<TypedShape, IrError> {
    let d = cx.same_dtype(&(0..cx.inputs.len()).collect::<Vec<_>>())?;
    let (lhs, rhs) = equation
        .split_once("->")
        .ok_or_else(|| cx.err(format!("equation '{equation}' has no explicit '->' output")))?;
    if equation.contains("...") {
        return Err(cx.err(format!(
            "equation '{equation}': ellipsis must be expanded on import"
        )));
    }
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != cx.inputs.len() {
        return Err(cx.err(format!(
            "equation '{equation}' has {} operands, got {} inputs",
            terms.len(),
            cx.inputs.len()
        )));
    }
    let mut sizes: std::collections::BTreeMap<char, usize> = Default::default();
    for (t, (_, shape)) in terms.iter().zip(cx.inputs) {
        if t.chars().count() != shape.len() {
            return Err(cx.err(format!("term '{t}' does not match operand shape {shape:?}")));
        }
        for (c, &e) in t.chars().zip(shape.iter()) {
            if !c.is_ascii_alphabetic() {
                return Err(cx.err(format!("equation '{equation}': bad label '{c}'")));
            }
            match sizes.get(&c) {
                Some(&prev) if prev != e && prev != 1 && e != 1 => {
                    return Err(cx.err(format!(
                        "label '{c}' has sizes {prev} and {e} in '{equation}'"
                    )))
                }
                Some(&prev) if prev >= e => {}
                _ => {
                    sizes.insert(c, e);
                }
            }
        }
    }
    let out =
        rhs.chars()
            .map(|c| {
                sizes.get(&c).copied().ok_or_else(|| {
                    cx.err(format!("output label '{c}' not in inputs of '{equation}'"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
    Ok((d, out))
}
