//! Einsum equation text: the split every reader of an equation starts from.

/// An einsum equation with white space removed, split into its operand terms and its
/// output term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquationTerms {
    /// One term per operand, in operand order (`...` kept as written).
    pub inputs: Vec<String>,
    /// The term after `->`; `None` for an implicit output.
    pub output: Option<String>,
}

/// Removes white space from `equation` and splits it at `->` and `,`. Fails with the number
/// of operand terms found when it is not `n_operands`, so that each caller can word the
/// error for its own context.
pub fn split_terms(equation: &str, n_operands: usize) -> Result<EquationTerms, usize> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, output) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r.to_string())),
        None => (eq.as_str(), None),
    };
    let inputs: Vec<String> = lhs.split(',').map(str::to_string).collect();
    if inputs.len() != n_operands {
        return Err(inputs.len());
    }
    Ok(EquationTerms { inputs, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_split_at_arrow_and_commas() {
        assert_eq!(
            split_terms(" ij, jk -> ik", 2),
            Ok(EquationTerms {
                inputs: vec!["ij".into(), "jk".into()],
                output: Some("ik".into()),
            })
        );
        assert_eq!(
            split_terms("...ij", 1),
            Ok(EquationTerms {
                inputs: vec!["...ij".into()],
                output: None,
            })
        );
        assert_eq!(split_terms("ij,jk->ik", 3), Err(2));
    }
}
