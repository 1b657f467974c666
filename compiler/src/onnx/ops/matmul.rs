//! Matrix products: MatMul, Gemm and matmul-like Einsum.
//!
//! * MatMul: <https://onnx.ai/onnx/operators/onnx__MatMul.html> (opsets 13..=23)
//! * Gemm: <https://onnx.ai/onnx/operators/onnx__Gemm.html> (opsets 13..=23)
//! * Einsum: <https://onnx.ai/onnx/operators/onnx__Einsum.html> (opsets 13..=23; forms without
//!   repeated labels inside one operand, i.e. no diagonals; `...` is expanded to letters)
use super::{entry, Lowered, NodeCx, OpEntry};
use crate::onnx::ImportError;
use tessera_ir::einsum::{split_terms, EquationTerms};
use tessera_ir::op::{EinsumAttrs, GemmAttrs, MatMulAttrs};
use tessera_ir::Op;

pub(super) const OPS: &[OpEntry] = &[
    entry("MatMul", 1, matmul),
    entry("Gemm", 1, gemm),
    entry("Einsum", 12, einsum),
];

fn matmul(_cx: &NodeCx) -> Result<Lowered, ImportError> {
    Ok(Lowered::op(Op::MatMul(MatMulAttrs {}), &[0, 1]))
}

fn gemm(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let op = Op::Gemm(GemmAttrs {
        alpha: cx.attr_float("alpha", 1.0),
        beta: cx.attr_float("beta", 1.0),
        trans_a: cx.attr_int("transA", 0) != 0,
        trans_b: cx.attr_int("transB", 0) != 0,
    });
    if cx.opt_input(2).is_some() {
        Ok(Lowered::op(op, &[0, 1, 2]))
    } else {
        Ok(Lowered::op(op, &[0, 1]))
    }
}

/// Why an equation with a repeated label inside one operand is rejected.
const DIAGONAL: &str = "Einsum diagonals are not supported";

fn einsum(cx: &NodeCx) -> Result<Lowered, ImportError> {
    let eq = cx
        .attr_str("equation")
        .ok_or_else(|| cx.err("missing attribute 'equation'"))?;
    let ranks = (0..cx.n_inputs())
        .map(|i| cx.rank(i))
        .collect::<Result<Vec<_>, _>>()?;
    let equation = explicit_equation(&eq, &ranks).map_err(|m| {
        let msg = format!("equation '{eq}': {m}");
        if m.contains(DIAGONAL) {
            ImportError::UnsupportedFeature {
                node: cx.name.into(),
                op: cx.node.op_type.clone(),
                msg,
            }
        } else {
            cx.err(msg)
        }
    })?;
    let all: Vec<usize> = (0..cx.n_inputs()).collect();
    Ok(Lowered::op(Op::Einsum(EinsumAttrs { equation }), &all))
}

/// Rewrites an einsum equation into the explicit, ellipsis-free form the IR stores:
/// whitespace removed, `...` replaced by fresh letters (right-aligned across operands as
/// numpy broadcasting does), and an implicit output made explicit (ellipsis letters, then the
/// labels used exactly once, in alphabetical order).
pub(crate) fn explicit_equation(eq: &str, ranks: &[usize]) -> Result<String, String> {
    let EquationTerms {
        inputs: terms,
        output: rhs,
    } = split_terms(eq, ranks.len())
        .map_err(|n| format!("{n} operands in the equation but {} inputs", ranks.len()))?;
    let used: Vec<char> = terms
        .iter()
        .chain(&rhs)
        .flat_map(|t| t.chars())
        .filter(|c| c.is_ascii_alphabetic())
        .collect();
    let fresh: Vec<char> = ('A'..='Z')
        .chain('a'..='z')
        .filter(|c| !used.contains(c))
        .collect();
    let mut ell_rank = 0;
    for (t, &r) in terms.iter().zip(ranks) {
        if t.contains("...") {
            let labels = t.replace("...", "").chars().count();
            ell_rank = ell_rank.max(
                r.checked_sub(labels)
                    .ok_or("operand rank below its label count")?,
            );
        }
    }
    if ell_rank > fresh.len() {
        return Err("too many ellipsis dims".into());
    }
    let ell: String = fresh[..ell_rank].iter().collect();
    let mut out_terms = Vec::new();
    for (t, &r) in terms.iter().zip(ranks) {
        let t = if t.contains("...") {
            let n = r - t.replace("...", "").chars().count();
            t.replace("...", &ell[ell_rank - n..])
        } else {
            t.to_string()
        };
        let mut seen = Vec::new();
        for c in t.chars() {
            if seen.contains(&c) {
                return Err(format!(
                    "label '{c}' repeated within one operand ({DIAGONAL})"
                ));
            }
            seen.push(c);
        }
        out_terms.push(t);
    }
    let joined = out_terms.join(",");
    let output = match rhs {
        Some(r) => r.replace("...", &ell),
        None => {
            let mut singles: Vec<char> = joined
                .chars()
                .filter(|c| c.is_ascii_alphabetic() && !ell.contains(*c))
                .collect();
            singles.sort_unstable();
            let once: Vec<char> = singles
                .iter()
                .copied()
                .filter(|c| singles.iter().filter(|d| *d == c).count() == 1)
                .collect();
            format!("{ell}{}", once.iter().collect::<String>())
        }
    };
    Ok(format!("{joined}->{output}"))
}

#[cfg(test)]
mod tests {
    use super::explicit_equation;

    #[test]
    fn einsum_equations_become_explicit() {
        assert_eq!(explicit_equation("ij, jk", &[2, 2]).unwrap(), "ij,jk->ik");
        assert_eq!(
            explicit_equation("...ij,...jk->...ik", &[4, 3]).unwrap(),
            "ABij,Bjk->ABik"
        );
        assert!(explicit_equation("ii->i", &[2]).is_err());
        assert!(explicit_equation("ij,jk->ik", &[2]).is_err());
    }
}
