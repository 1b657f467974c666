//! Canonicalisation rules as data: a name, a doc line, a pattern pair and guards.
//!
//! The built-in table is the text file `rules.canon` beside this module, parsed at start-up
//! by the same parser that reads a user's `--rules FILE`. A rule is a block of lines:
//! ```text
//! rule gelu-erf
//! doc  x·0.5·(1 + erf(x/√2)) is GELU (erf form)
//! lhs  (mul (mul ?x ?h) (add (erf (mul ?x ?r)) ?one))
//! rhs  (gelu gelu_erf ?x)
//! if   const(?h, 0.5); const(?r, 0.70710678); const(?one, 1); float(?x)
//! ```
//! Patterns are egg's s-expressions over the language of [`super::lang`]; guards come from
//! the fixed vocabulary of [`super::guards`]. Blocks are separated by blank lines; `#`
//! starts a comment line.
use super::analysis::{infer_node, CanonAnalysis, CanonGraph};
use super::guards::{construct, Guard, GUARD_NAMES};
use super::lang::{CNode, CONSTRUCTORS};
use egg::{Applier, ENodeOrVar, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};

/// The built-in rules file.
pub const BUILTIN: &str = include_str!("rules.canon");

/// One rule.
#[derive(Debug, Clone)]
pub struct CanonRule {
    /// Name (unique).
    pub name: String,
    /// One-line description.
    pub doc: String,
    /// Left-hand side, as written.
    pub lhs: String,
    /// Right-hand side, as written.
    pub rhs: String,
    /// Guards, as written.
    pub guard_text: String,
    /// Canonicalisation phase (1 or 2): phase 2 runs alone on phase 1's canonical graph,
    /// for rules whose matches the first phase's reassociation would multiply (the
    /// Quantize/Dequantize pairs QDQ models put after every data movement).
    pub phase: u8,
    lhs_pat: Pattern<CNode>,
    rhs_pat: Pattern<CNode>,
    guards: Vec<Guard>,
}

/// A rules-file error: the file (or `built-in`), the line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {msg}")]
pub struct RuleError {
    /// File.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

fn parse_guard(text: &str) -> Result<Guard, String> {
    let text = text.trim();
    let (name, rest) = text
        .split_once('(')
        .ok_or_else(|| format!("guard '{text}' is not name(args)"))?;
    let args = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("guard '{text}' lacks ')'"))?;
    let args: Vec<&str> = args.split(',').map(str::trim).collect();
    let name = name.trim();
    let arity = GUARD_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let known: Vec<&str> = GUARD_NAMES.iter().map(|(n, _)| *n).collect();
            format!("unknown guard '{name}' (known: {})", known.join(", "))
        })?;
    if args.len() != arity {
        return Err(format!(
            "guard '{name}' takes {arity} arguments, got {}",
            args.len()
        ));
    }
    let var = |i: usize| -> Result<Var, String> {
        let a = args[i];
        if !a.starts_with('?') {
            return Err(format!("guard '{name}': argument '{a}' is not a ?variable"));
        }
        a.parse::<Var>().map_err(|e| format!("guard '{name}': {e}"))
    };
    Ok(match name {
        "const" => {
            let v: f64 = args[1]
                .parse()
                .map_err(|_| format!("guard 'const': '{}' is not a number", args[1]))?;
            Guard::Const(var(0)?, v)
        }
        "scalar" => Guard::Scalar(var(0)?),
        "param" => Guard::Param(var(0)?),
        "some_param" => Guard::SomeParam(var(0)?, var(1)?),
        "float" => Guard::Float(var(0)?),
        "int_weight" => Guard::IntWeight(var(0)?),
        "cast_noop" => Guard::CastNoop(var(0)?, var(1)?),
        "cast_float" => Guard::CastFloat(var(0)?),
        "trailing_mean" => Guard::TrailingMean(var(0)?, var(1)?),
        "norm_shape" => Guard::NormShape(var(0)?, var(1)?, var(2)?),
        "broadcasts_to" => Guard::BroadcastsTo(var(0)?, var(1)?),
        "inverse_perms" => Guard::InversePerms(var(0)?, var(1)?),
        "plain_gemm" => Guard::PlainGemm(var(0)?),
        "gemm_trans_b" => Guard::GemmTransB(var(0)?),
        "stored_weight" => Guard::StoredWeight(var(0)?),
        "contracts" => Guard::Contracts(var(0)?, var(1)?),
        "same_last_dim" => Guard::SameLastDim(var(0)?, var(1)?),
        "same_one_axis" => Guard::SameOneAxis(var(0)?, var(1)?),
        "last_axis_vector" => Guard::LastAxisVector(var(0)?),
        "quant_range" => Guard::QuantRange(var(0)?, var(1)?),
        "integral" => Guard::Integral(var(0)?),
        "one_element" => Guard::OneElement(var(0)?),
        "wide_int_cast" => Guard::WideIntCast(var(0)?),
        "unit_qweight" => Guard::UnitQweight(var(0)?),
        "int_activation" => Guard::IntActivation(var(0)?),
        "requantizes" => Guard::Requantizes(var(0)?, var(1)?),
        // The arity table above lists exactly the names matched here.
        _ => Guard::ZeroPoint(var(0)?, var(1)?),
    })
}

fn guard_vars(g: &Guard) -> Vec<Var> {
    match g {
        Guard::Const(v, _)
        | Guard::Scalar(v)
        | Guard::Param(v)
        | Guard::Float(v)
        | Guard::IntWeight(v)
        | Guard::CastFloat(v)
        | Guard::PlainGemm(v)
        | Guard::GemmTransB(v)
        | Guard::StoredWeight(v)
        | Guard::LastAxisVector(v)
        | Guard::Integral(v)
        | Guard::OneElement(v)
        | Guard::WideIntCast(v)
        | Guard::UnitQweight(v)
        | Guard::IntActivation(v) => vec![*v],
        Guard::CastNoop(a, b)
        | Guard::SomeParam(a, b)
        | Guard::SameLastDim(a, b)
        | Guard::SameOneAxis(a, b)
        | Guard::Contracts(a, b)
        | Guard::TrailingMean(a, b)
        | Guard::BroadcastsTo(a, b)
        | Guard::InversePerms(a, b)
        | Guard::ZeroPoint(a, b)
        | Guard::QuantRange(a, b)
        | Guard::Requantizes(a, b) => vec![*a, *b],
        Guard::NormShape(a, b, c) => vec![*a, *b, *c],
    }
}

/// Parses a rules file (`file` names it in errors).
pub fn parse_rules(text: &str, file: &str) -> Result<Vec<CanonRule>, RuleError> {
    let mut rules = Vec::new();
    let mut block: Vec<(usize, &str, &str)> = Vec::new();
    let lines: Vec<&str> = text.lines().chain(std::iter::once("")).collect();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !block.is_empty() {
                rules.push(build_rule(&block, file)?);
                block.clear();
            }
            continue;
        }
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        block.push((i + 1, key, rest.trim()));
    }
    let mut seen = std::collections::HashSet::new();
    for r in &rules {
        if !seen.insert(r.name.clone()) {
            return Err(RuleError {
                file: file.into(),
                line: 0,
                msg: format!("rule '{}' is defined twice", r.name),
            });
        }
    }
    Ok(rules)
}

fn build_rule(block: &[(usize, &str, &str)], file: &str) -> Result<CanonRule, RuleError> {
    let first = block[0].0;
    let err = |line: usize, msg: String| RuleError {
        file: file.into(),
        line,
        msg,
    };
    let get = |key: &str| block.iter().find(|(_, k, _)| *k == key);
    for (line, key, _) in block {
        if !["rule", "doc", "lhs", "rhs", "if", "phase"].contains(key) {
            return Err(err(
                *line,
                format!("unknown key '{key}' (rule, doc, lhs, rhs, if, phase)"),
            ));
        }
    }
    let need = |key: &str| {
        get(key)
            .map(|(l, _, v)| (*l, v.to_string()))
            .ok_or_else(|| err(first, format!("rule block lacks '{key}'")))
    };
    let (_, name) = need("rule")?;
    let (_, doc) = need("doc")?;
    let (ll, lhs) = need("lhs")?;
    let (rl, rhs) = need("rhs")?;
    let lhs_pat: Pattern<CNode> = lhs
        .parse()
        .map_err(|e| err(ll, format!("rule '{name}': lhs: {e}")))?;
    let rhs_pat: Pattern<CNode> = rhs
        .parse()
        .map_err(|e| err(rl, format!("rule '{name}': rhs: {e}")))?;
    let phase = match get("phase") {
        None => 1,
        Some((l, _, v)) => match *v {
            "1" => 1,
            "2" => 2,
            _ => {
                return Err(err(
                    *l,
                    format!("rule '{name}': phase must be 1 or 2, got '{v}'"),
                ))
            }
        },
    };
    let (gl, guard_text) =
        get("if").map_or((first, String::new()), |(l, _, v)| (*l, v.to_string()));
    let guards = guard_text
        .split(';')
        .filter(|g| !g.trim().is_empty())
        .map(parse_guard)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| err(gl, format!("rule '{name}': {m}")))?;
    let bound = lhs_pat.vars();
    let needed = rhs_pat
        .vars()
        .into_iter()
        .chain(guards.iter().flat_map(guard_vars));
    for v in needed {
        if !bound.contains(&v) {
            return Err(err(
                rl,
                format!("rule '{name}': {v} is not bound by the lhs"),
            ));
        }
    }
    if matches!(lhs_pat.ast.as_ref().last(), Some(ENodeOrVar::Var(_))) {
        return Err(err(
            ll,
            format!("rule '{name}': the lhs must be an op, not a variable"),
        ));
    }
    Ok(CanonRule {
        name,
        doc,
        lhs,
        rhs,
        guard_text,
        phase,
        lhs_pat,
        rhs_pat,
        guards,
    })
}

/// The applier of a rule: checks the guards, builds the right-hand side (constructors
/// included) and merges it into the matched class when its type agrees.
struct GuardedApplier {
    rhs: Pattern<CNode>,
    guards: Vec<Guard>,
}

impl GuardedApplier {
    fn instantiate(&self, eg: &mut CanonGraph, subst: &Subst) -> Option<Id> {
        let ast = self.rhs.ast.as_ref();
        let mut ids: Vec<Id> = Vec::with_capacity(ast.len());
        for node in ast {
            let id = match node {
                ENodeOrVar::Var(v) => *subst.get(*v)?,
                ENodeOrVar::ENode(n) => {
                    let mut n = n.clone();
                    for c in egg::Language::children_mut(&mut n) {
                        *c = ids[usize::from(*c)];
                    }
                    let CNode::Op { sym, children, .. } = &n else {
                        return None;
                    };
                    if CONSTRUCTORS.contains(&sym.as_str()) {
                        let leaf = construct(eg, sym.as_str(), children)?;
                        eg.add(leaf)
                    } else {
                        infer_node(eg, &n)?;
                        eg.add(n)
                    }
                }
            };
            ids.push(id);
        }
        ids.last().copied()
    }
}

impl Applier<CNode, CanonAnalysis> for GuardedApplier {
    fn apply_one(
        &self,
        eg: &mut CanonGraph,
        eclass: Id,
        subst: &Subst,
        _: Option<&PatternAst<CNode>>,
        _: Symbol,
    ) -> Vec<Id> {
        if !self.guards.iter().all(|g| g.check(eg, subst)) {
            return vec![];
        }
        let Some(new) = self.instantiate(eg, subst) else {
            return vec![];
        };
        // A rule that would merge values of different types is wrong for this match: skip.
        if eg[new].data.ty != eg[eclass].data.ty {
            return vec![];
        }
        if eg.union(eclass, new) {
            vec![eclass]
        } else {
            vec![]
        }
    }

    fn vars(&self) -> Vec<Var> {
        self.rhs.vars()
    }
}

impl CanonRule {
    /// The egg rewrite of this rule.
    pub fn rewrite(&self) -> Rewrite<CNode, CanonAnalysis> {
        let applier = GuardedApplier {
            rhs: self.rhs_pat.clone(),
            guards: self.guards.clone(),
        };
        // Unwrap-free: Rewrite::new only fails when the applier uses unbound variables,
        // which build_rule rejected.
        Rewrite::new(self.name.clone(), self.lhs_pat.clone(), applier)
            .expect("rule variables checked by build_rule")
    }
}

/// The rules as a Markdown table (`tessera rules --markdown`; docs/partitioner.md holds the
/// built-in table, checked by a test).
pub fn rules_markdown(rules: &[CanonRule]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out =
        String::from("| rule | what | pattern | becomes | guards |\n|---|---|---|---|---|\n");
    for r in rules {
        out.push_str(&format!(
            "| {}{} | {} | `{}` | `{}` | {} |\n",
            r.name,
            if r.phase == 1 { "" } else { " (phase 2)" },
            cell(&r.doc),
            r.lhs,
            r.rhs,
            cell(&r.guard_text)
        ));
    }
    out
}

/// The rules as plain text, one block per rule (`tessera rules`): the rules-file format.
pub fn rules_text(rules: &[CanonRule]) -> String {
    let mut out = String::new();
    for r in rules {
        out.push_str(&format!(
            "rule {}\ndoc  {}\nlhs  {}\nrhs  {}\n",
            r.name, r.doc, r.lhs, r.rhs
        ));
        if !r.guard_text.is_empty() {
            out.push_str(&format!("if   {}\n", r.guard_text));
        }
        if r.phase != 1 {
            out.push_str(&format!("phase {}\n", r.phase));
        }
        out.push('\n');
    }
    out
}

/// The built-in rules.
pub fn builtin() -> Vec<CanonRule> {
    // The built-in file is part of the source and parsed by a test.
    parse_rules(BUILTIN, "built-in rules").expect("built-in rules parse (tested)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_parse_and_are_documented() {
        let rules = builtin();
        assert!(rules.len() >= 15, "{} rules", rules.len());
        for r in &rules {
            assert!(!r.doc.is_empty(), "{}", r.name);
        }
    }

    #[test]
    fn printed_rules_parse_back_to_the_same_table() {
        let rules = builtin();
        let again = parse_rules(&rules_text(&rules), "printed").unwrap();
        let key = |r: &CanonRule| {
            (
                r.name.clone(),
                r.doc.clone(),
                r.lhs.clone(),
                r.rhs.clone(),
                r.phase,
            )
        };
        let user = parse_rules(
            "rule a\ndoc d\nlhs (neg (neg ?x))\nrhs ?x\nphase 2\n",
            "user",
        )
        .unwrap();
        let printed = rules_text(&user);
        assert!(printed.contains("phase 2"), "{printed}");
        assert_eq!(parse_rules(&printed, "printed").unwrap()[0].phase, 2);
        assert_eq!(
            rules.iter().map(key).collect::<Vec<_>>(),
            again.iter().map(key).collect::<Vec<_>>()
        );
        let md = rules_markdown(&rules);
        assert_eq!(md.lines().count(), rules.len() + 2);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = parse_rules(
            "rule a\ndoc d\nlhs (add ?x ?y)\nrhs (add ?y ?z)\n",
            "my.rules",
        )
        .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(
            e.to_string().contains("my.rules:4") && e.to_string().contains("?z"),
            "{e}"
        );
        let e = parse_rules("rule a\ndoc d\nlhs (frob ?x)\nrhs ?x\n", "f").unwrap_err();
        assert!(e.to_string().contains("frob"), "{e}");
        let e = parse_rules(
            "rule a\ndoc d\nlhs (neg ?x)\nrhs ?x\nif positive(?x)\n",
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown guard 'positive'"), "{e}");
        let e = parse_rules("rule a\ndoc d\nlhs ?x\nrhs (neg ?x)\n", "f").unwrap_err();
        assert!(e.to_string().contains("must be an op"), "{e}");
        let e = parse_rules("rule a\ndoc d\nlhs (neg ?x)\nrhs ?x\nphase 3\n", "f").unwrap_err();
        assert!(
            e.to_string().contains("f:5") && e.to_string().contains("phase"),
            "{e}"
        );
    }
}
