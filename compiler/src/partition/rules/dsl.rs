//! The distribution rule table as data: `table.dist` parsed into [`DistRule`]s and
//! interpreted for a node (see the file's header for the language).
//!
//! The interpreter knows a fixed vocabulary — op classes for the lhs head, layout forms,
//! axis sets and axis functions, guards — and nothing of any particular rule; the rules
//! themselves (which operand goes in which layout, for which axes, under which condition)
//! live only in the table. Two rules need more than patterns and name a built-in generator
//! instead: `attention-heads` (optional operands chosen by the op's flags) and
//! `fused-section` (weight views through a Split of a projection).
use super::{t, RuleCx, Sig};
use crate::partition::form::Lowering;
use std::collections::HashMap;
use std::sync::OnceLock;
use symbolic_expressions::Sexp;
use tessera_ir::op::{BinaryOp, ReduceKind, UnaryOp};
use tessera_ir::{Layout, NodeId, Op, TensorId};

/// The built-in table's text.
pub const TABLE: &str = include_str!("table.dist");

/// One rule of the table.
#[derive(Debug, Clone)]
pub struct DistRule {
    /// Name (recorded in each local form; several rows may share one).
    pub name: &'static str,
    /// One line on what it does.
    pub doc: String,
    /// The lhs pattern, as written.
    pub lhs: String,
    /// The `for` clause, as written (empty when none).
    pub for_clause: String,
    /// The rhs patterns, as written.
    pub rhs: Vec<String>,
    /// The guards, as written (empty when none).
    pub guards: String,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Pattern {
        head: String,
        vars: Vec<String>,
        rest: Option<String>,
        for_var: Option<(String, Sexp)>,
        rhs: Vec<Sexp>,
        guards: Vec<Sexp>,
    },
    Builtin(String),
}

/// A malformed rule table (line and message).
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {msg}")]
pub struct TableError {
    file: String,
    line: usize,
    msg: String,
}

fn sexp(text: &str) -> Result<Sexp, String> {
    symbolic_expressions::parser::parse_str(text).map_err(|e| format!("'{text}': {e}"))
}

/// The (line, key, value) fields of one rule block.
type Fields = Vec<(usize, String, String)>;

impl DistRule {
    /// The rule's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Interns a rule name for the life of the process (names are recorded in every local form
/// as `&'static str`; a process reads its rule files once).
fn intern(name: String) -> &'static str {
    static NAMES: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let mut guard = match names.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(n) = guard.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    guard.push(leaked);
    leaked
}

/// Parses the built-in rules table.
pub fn parse_table(text: &str) -> Result<Vec<DistRule>, TableError> {
    parse_table_file(text, "table.dist")
}

/// Parses a user's rules file (`file` names it in errors). Names of built-in rules are
/// refused: a user's rules add forms, they do not replace the table's.
pub fn parse_user_rules(text: &str, file: &str) -> Result<Vec<DistRule>, TableError> {
    let rules = parse_table_file(text, file)?;
    if let Some(r) = rules
        .iter()
        .find(|r| r.name == "replicated" || table().iter().any(|b| b.name == r.name))
    {
        return Err(TableError {
            file: file.to_string(),
            line: 0,
            msg: format!("rule '{}' is a built-in rule (choose another name)", r.name),
        });
    }
    if let Some(r) = rules.iter().find(|r| matches!(r.body, Body::Builtin(_))) {
        return Err(TableError {
            file: file.to_string(),
            line: 0,
            msg: format!(
                "rule '{}': built-in generators are not available to rule files",
                r.name
            ),
        });
    }
    Ok(rules)
}

/// Parses a rules table read from `file`.
fn parse_table_file(text: &str, file: &str) -> Result<Vec<DistRule>, TableError> {
    let err = |line: usize, msg: String| TableError {
        file: file.to_string(),
        line,
        msg,
    };
    let mut rules: Vec<DistRule> = Vec::new();
    let mut cur: Option<(usize, Fields)> = None;
    let mut blocks = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if key == "rule" {
            blocks.extend(cur.take());
            cur = Some((i + 1, vec![(i + 1, key.into(), rest.trim().into())]));
        } else if let Some((_, b)) = cur.as_mut() {
            b.push((i + 1, key.into(), rest.trim().into()));
        } else {
            return Err(err(i + 1, format!("'{key}' outside a rule")));
        }
    }
    blocks.extend(cur);
    for (start, fields) in blocks {
        let get = |k: &str| fields.iter().filter(|f| f.1 == k).collect::<Vec<_>>();
        let one = |k: &str| get(k).first().map(|f| (f.0, f.2.clone()));
        let name = one("rule").map(|f| f.1).unwrap_or_default();
        let doc = one("doc").map(|f| f.1).unwrap_or_default();
        let body = if let Some((_, b)) = one("builtin") {
            Body::Builtin(b)
        } else {
            let (ll, lhs) = one("lhs").ok_or(err(start, format!("rule '{name}' has no lhs")))?;
            let Sexp::List(items) = sexp(&lhs).map_err(|e| err(ll, e))? else {
                return Err(err(ll, "the lhs must be (op ?operands...)".into()));
            };
            let head = items.first().map(|s| s.to_string()).unwrap_or_default();
            let mut vars = Vec::new();
            let mut rest = None;
            for v in &items[1..] {
                let v = v.to_string();
                match v.strip_suffix("...") {
                    Some(r) => rest = Some(r.to_string()),
                    None => vars.push(v),
                }
            }
            let for_var = match one("for") {
                Some((fl, f)) => {
                    let (var, set) = f
                        .split_once(" in ")
                        .ok_or(err(fl, "expected 'for ?k in SET'".into()))?;
                    Some((
                        var.trim().to_string(),
                        sexp(set.trim()).map_err(|e| err(fl, e))?,
                    ))
                }
                None => None,
            };
            let rhs = get("rhs")
                .iter()
                .map(|f| sexp(&f.2).map_err(|e| err(f.0, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let guards = match one("if") {
                Some((gl, g)) => match sexp(&format!("({g})")).map_err(|e| err(gl, e))? {
                    Sexp::List(gs) => gs,
                    other => vec![other],
                },
                None => vec![],
            };
            Body::Pattern {
                head,
                vars,
                rest,
                for_var,
                rhs,
                guards,
            }
        };
        if name.is_empty() {
            return Err(err(start, "a rule without a name".into()));
        }
        rules.push(DistRule {
            name: intern(name),
            doc,
            lhs: one("lhs").map(|f| f.1).unwrap_or_default(),
            for_clause: one("for").map(|f| f.1).unwrap_or_default(),
            rhs: get("rhs").iter().map(|f| f.2.clone()).collect(),
            guards: one("if").map(|f| f.1).unwrap_or_default(),
            body,
        });
    }
    Ok(rules)
}

/// The built-in table, parsed once.
pub fn table() -> &'static [DistRule] {
    static RULES: OnceLock<Vec<DistRule>> = OnceLock::new();
    // The table is part of the source and parsed by a test (`the_table_parses`), so a
    // malformed table cannot ship.
    RULES.get_or_init(|| parse_table(TABLE).unwrap_or_default())
}

/// Does the lhs head name `op`'s class?
fn head_matches(head: &str, op: &Op) -> bool {
    match head {
        "matmul" => matches!(op, Op::MatMul(_)),
        "gemm" => matches!(op, Op::Gemm(_)),
        "mul" => matches!(op, Op::Binary(b) if b.kind == BinaryOp::Mul),
        "div" => matches!(op, Op::Binary(b) if b.kind == BinaryOp::Div),
        "gather" => matches!(op, Op::Gather(_)),
        "softmax" => matches!(op, Op::Softmax(_)),
        "cumsum" => matches!(op, Op::CumSum(_)),
        "norm" => matches!(op, Op::LayerNorm(_) | Op::RmsNorm(_)),
        "trilu" => matches!(op, Op::Trilu(_)),
        "pool" => matches!(op, Op::Pool(_)),
        "reduce" => matches!(op, Op::Reduce(_)),
        "reshape" => matches!(op, Op::Reshape(_)),
        "transpose" => matches!(op, Op::Transpose(_)),
        "split" => matches!(op, Op::Split(_)),
        "slice" => matches!(op, Op::Slice(_)),
        "concat" => matches!(op, Op::Concat(_)),
        "elementwise" => super::elementwise_like(op),
        // Any other head names one op by its name in the canonical language (`gelu`,
        // `layer_norm`, `where`, ...).
        other if other == crate::canon::lang::sym_name(op) => true,
        "linear" => match op {
            Op::Binary(b) => matches!(b.kind, BinaryOp::Add | BinaryOp::Sub),
            Op::Unary(u) => matches!(u.kind, UnaryOp::Neg | UnaryOp::Identity),
            Op::Reduce(r) => matches!(r.kind, ReduceKind::Sum | ReduceKind::Mean),
            Op::Reshape(_)
            | Op::Transpose(_)
            | Op::Expand(_)
            | Op::Slice(_)
            | Op::Split(_)
            | Op::Concat(_) => true,
            _ => false,
        },
        _ => false,
    }
}

/// An attribute of `op` by name (as the op serialises), as integers (a bool is 0 or 1, a
/// scalar a one-element list).
fn attr(op: &Op, name: &str) -> Option<Vec<i64>> {
    let v = serde_json::to_value(op).ok()?;
    match v.get(name)? {
        serde_json::Value::Bool(b) => Some(vec![i64::from(*b)]),
        serde_json::Value::Number(n) => n.as_i64().map(|x| vec![x]),
        serde_json::Value::Array(a) => a.iter().map(|x| x.as_i64()).collect(),
        _ => None,
    }
}

/// What a rule sees of one node output.
struct Env<'a> {
    cx: &'a RuleCx<'a>,
    op: &'a Op,
    inputs: &'a [TensorId],
    y: TensorId,
    vars: HashMap<&'a str, Vec<TensorId>>,
    k: Option<usize>,
}

fn int(s: &Sexp) -> Option<i64> {
    match s {
        Sexp::String(x) => x.parse().ok(),
        _ => None,
    }
}

impl Env<'_> {
    fn rank(&self, t: TensorId) -> usize {
        self.cx.shape(t).len()
    }

    fn one(&self, v: &Sexp) -> Option<TensorId> {
        match self.vars.get(v.to_string().trim_end_matches("...")) {
            Some(ts) if ts.len() == 1 => Some(ts[0]),
            _ if v.to_string() == "?y" => Some(self.y),
            _ => None,
        }
    }

    fn many(&self, v: &Sexp) -> Option<Vec<TensorId>> {
        let name = v.to_string();
        if name == "?y" {
            return Some(vec![self.y]);
        }
        self.vars.get(name.trim_end_matches("...")).cloned()
    }

    /// An axis; negative literals count from the end of `rank`.
    fn axis(&self, e: &Sexp, rank: usize) -> Option<usize> {
        if let Some(i) = int(e) {
            let a = if i < 0 { rank as i64 + i } else { i };
            return usize::try_from(a).ok();
        }
        if let Sexp::String(s) = e {
            return if s.starts_with('?') { self.k } else { None };
        }
        let Sexp::List(items) = e else { return None };
        let f = items.first()?.to_string();
        let arg = |i: usize| items.get(i);
        match f.as_str() {
            "+" => Some(self.axis(arg(1)?, rank)? + self.axis(arg(2)?, rank)?),
            "attr" => {
                let v = attr(self.op, &arg(1)?.to_string())?;
                usize::try_from(*v.first()?).ok()
            }
            "perm" => {
                let Op::Transpose(tr) = self.op else {
                    return None;
                };
                tr.perm.get(self.axis(arg(1)?, rank)?).copied()
            }
            "reshape-axis" => {
                let x = *self.inputs.first()?;
                let k = self.axis(arg(1)?, rank)?;
                super::movement::reshape_split_axis(
                    self.cx.shape(x),
                    self.cx.shape(self.y),
                    k,
                    self.cx.n,
                )
            }
            "reduced" => {
                let (axes, keepdims) = match self.op {
                    Op::Reduce(r) => (&r.axes[..], r.keepdims),
                    Op::ArgReduce(r) => (std::slice::from_ref(&r.axis), r.keepdims),
                    _ => return None,
                };
                let k = self.axis(arg(1)?, rank)?;
                Some(if keepdims {
                    k
                } else {
                    k - axes.iter().filter(|&&x| x < k).count()
                })
            }
            "gather-out" => {
                let Op::Gather(g) = self.op else { return None };
                let k = self.axis(arg(1)?, rank)?;
                let ir = self.rank(*self.inputs.get(1)?);
                Some(if k < g.axis { k } else { k - 1 + ir })
            }
            "k-axis-a" | "k-axis-b" | "m-axis-a" => {
                let Op::Gemm(g) = self.op else { return None };
                Some(match f.as_str() {
                    "k-axis-a" => usize::from(!g.trans_a),
                    "k-axis-b" => usize::from(g.trans_b),
                    _ => usize::from(g.trans_a),
                })
            }
            _ => None,
        }
    }

    /// An axis set.
    fn set(&self, e: &Sexp) -> Option<Vec<usize>> {
        let Sexp::List(items) = e else { return None };
        let f = items.first()?.to_string();
        let arg = |i: usize| items.get(i);
        match f.as_str() {
            "axes" => Some((0..self.rank(self.one(arg(1)?)?)).collect()),
            "batch-axes" => Some((0..self.rank(self.one(arg(1)?)?).saturating_sub(2)).collect()),
            "except" => {
                let base = self.set(arg(1)?)?;
                let drop: Vec<usize> = match arg(2)? {
                    Sexp::List(a) if a.first()?.to_string() == "attr" => {
                        attr(self.op, &a.get(1)?.to_string())?
                            .into_iter()
                            .filter_map(|x| usize::try_from(x).ok())
                            .collect()
                    }
                    other => vec![self.axis(other, base.len())?],
                };
                Some(base.into_iter().filter(|a| !drop.contains(a)).collect())
            }
            "below" => {
                let base = self.set(arg(1)?)?;
                let rank = base.len();
                let limit = match arg(2)? {
                    lit if int(lit).is_some_and(|i| i < 0) => self.axis(lit, rank)?,
                    other => self.axis(other, rank)?,
                };
                Some(base.into_iter().filter(|a| *a < limit).collect())
            }
            _ => None,
        }
    }

    fn guard(&self, g: &Sexp) -> bool {
        let Sexp::List(items) = g else { return false };
        let f = items.first().map(|s| s.to_string()).unwrap_or_default();
        match f.as_str() {
            "min-rank" => match (
                items.get(1).and_then(|v| self.one(v)),
                items.get(2).and_then(int),
            ) {
                (Some(t), Some(r)) => self.rank(t) as i64 >= r,
                _ => false,
            },
            "attr" => match (items.get(1), items.get(2).and_then(int)) {
                (Some(name), Some(v)) => attr(self.op, &name.to_string()) == Some(vec![v]),
                _ => false,
            },
            _ => false,
        }
    }

    /// The operands of one layout argument.
    fn operands(&self, e: &Sexp) -> Option<Vec<(TensorId, Layout)>> {
        let Sexp::List(items) = e else { return None };
        let f = items.first()?.to_string();
        let last = items.last()?;
        let ts = self.many(last)?;
        let ro = self.rank(self.y);
        ts.into_iter()
            .map(|x| {
                let l = match f.as_str() {
                    "R" => Layout::Replicated,
                    "P" => Layout::Partial,
                    "S" => Layout::Split(self.axis(items.get(1)?, self.rank(x))?),
                    "aligned" => {
                        super::matmul::aligned(self.cx.shape(x), ro, self.axis(items.get(1)?, ro)?)
                    }
                    "aligned-batch" => {
                        let s = self.cx.shape(x);
                        super::matmul::aligned(
                            &s[..s.len().checked_sub(2)?],
                            ro.checked_sub(2)?,
                            self.axis(items.get(1)?, ro)?,
                        )
                    }
                    _ => return None,
                };
                Some((x, l))
            })
            .collect()
    }

    /// One rhs: `(LAYOUT (op ARGS...))`.
    fn rhs(&self, head: &str, e: &Sexp) -> Option<Sig> {
        let Sexp::List(items) = e else { return None };
        let ro = self.rank(self.y);
        let (out, body) = match items.first()?.to_string().as_str() {
            "R" => (Layout::Replicated, items.get(1)?),
            "P" => (Layout::Partial, items.get(1)?),
            "S" => (Layout::Split(self.axis(items.get(1)?, ro)?), items.get(2)?),
            _ => return None,
        };
        let Sexp::List(call) = body else { return None };
        let lowering = match call.first()?.to_string().as_str() {
            "sharded_gather" => Lowering::ShardedGather,
            h if h == head || h == "same" => Lowering::Op,
            _ => return None,
        };
        let mut ops = Vec::new();
        for a in &call[1..] {
            ops.extend(self.operands(a)?);
        }
        // The operands must be the node's inputs, in order (the lowering relies on it).
        let tensors: Vec<TensorId> = ops.iter().map(|o| o.0).collect();
        if tensors != self.inputs {
            return None;
        }
        Some((
            ops.into_iter().map(|(x, l)| t(x, l)).collect(),
            out,
            lowering,
        ))
    }
}

/// Whether `rule` can apply to an op (its lhs head names the op's class; a built-in
/// generator is always tried).
pub fn may_match(rule: &DistRule, op: &Op) -> bool {
    match &rule.body {
        Body::Builtin(_) => true,
        Body::Pattern { head, .. } => head_matches(head, op),
    }
}

/// The forms `rule` gives output `out` of `node`.
pub fn instantiate(rule: &DistRule, cx: &RuleCx, node: NodeId, out: usize) -> Vec<Sig> {
    let nd = cx.g.node(node);
    match &rule.body {
        Body::Builtin(b) => match b.as_str() {
            "attention-heads" => super::attention::heads(cx, node, out),
            "attention-batch" => super::attention::batch(cx, node, out),
            "gather-nd-split" => super::gather_index::gather_nd(cx, node, out),
            "gather-elements-split" => super::gather_index::gather_elements(cx, node, out),
            "attention-kv-replicated" => super::attention::kv_replicated(cx, node, out),
            "kv-block" => super::kv_block::kv_block(cx, node, out),
            "fused-section" => super::matmul::fused_section(cx, node, out),
            _ => vec![],
        },
        Body::Pattern {
            head,
            vars,
            rest,
            for_var,
            rhs,
            guards,
        } => {
            if !head_matches(head, &nd.op) {
                return vec![];
            }
            let fixed = vars.len();
            if nd.inputs.len() < fixed || (rest.is_none() && nd.inputs.len() != fixed) {
                return vec![];
            }
            let mut bound: HashMap<&str, Vec<TensorId>> = vars
                .iter()
                .zip(&nd.inputs)
                .map(|(v, t)| (v.as_str(), vec![*t]))
                .collect();
            if let Some(r) = rest {
                bound.insert(r.as_str(), nd.inputs[fixed..].to_vec());
            }
            let mut env = Env {
                cx,
                op: &nd.op,
                inputs: &nd.inputs,
                y: nd.outputs[out],
                vars: bound,
                k: None,
            };
            if !guards.iter().all(|g| env.guard(g)) {
                return vec![];
            }
            let ks: Vec<Option<usize>> = match for_var {
                Some((_, set)) => match env.set(set) {
                    Some(s) => s.into_iter().map(Some).collect(),
                    None => return vec![],
                },
                None => vec![None],
            };
            let mut sigs = Vec::new();
            for k in ks {
                env.k = k;
                sigs.extend(rhs.iter().filter_map(|r| env.rhs(head, r)));
            }
            sigs
        }
    }
}

/// The table as Markdown (docs/partitioner.md's distribution rule table).
pub fn table_markdown(rules: &[DistRule]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let code = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("`{}`", cell(s))
        }
    };
    let mut out = String::from(
        "| rule | what | op | local form | for | guards |\n|---|---|---|---|---|---|\n",
    );
    for r in rules {
        let (lhs, rhs) = match &r.body {
            Body::Builtin(b) => ("(built-in)".to_string(), format!("built-in `{b}`")),
            Body::Pattern { .. } => (
                code(&r.lhs),
                r.rhs
                    .iter()
                    .map(|x| code(x))
                    .collect::<Vec<_>>()
                    .join("<br>"),
            ),
        };
        out.push_str(&format!(
            "| {} | {} | {lhs} | {rhs} | {} | {} |\n",
            r.name,
            cell(&r.doc),
            code(&r.for_clause),
            code(&r.guards)
        ));
    }
    out
}

/// The table in its own format (`tessera rules --distribution`).
pub fn table_text(rules: &[DistRule]) -> String {
    let mut out = String::new();
    for r in rules {
        out.push_str(&format!("rule {}\ndoc  {}\n", r.name, r.doc));
        match &r.body {
            Body::Builtin(b) => out.push_str(&format!("builtin {b}\n")),
            Body::Pattern { .. } => {
                out.push_str(&format!("lhs  {}\n", r.lhs));
                if !r.for_clause.is_empty() {
                    out.push_str(&format!("for  {}\n", r.for_clause));
                }
                for x in &r.rhs {
                    out.push_str(&format!("rhs  {x}\n"));
                }
                if !r.guards.is_empty() {
                    out.push_str(&format!("if   {}\n", r.guards));
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses() {
        let rules = parse_table(TABLE).expect("table.dist parses");
        assert_eq!(rules.len(), table().len());
        assert!(rules
            .iter()
            .all(|r| !r.name.is_empty() && !r.doc.is_empty()));
        assert!(rules
            .iter()
            .all(|r| matches!(r.body, Body::Builtin(_)) || !r.rhs.is_empty()));
        // The text form parses back to the same table.
        let again = parse_table(&table_text(&rules)).expect("printed table parses");
        assert_eq!(table_text(&again), table_text(&rules));
    }

    #[test]
    fn a_malformed_rule_is_an_error_naming_its_line() {
        let e = parse_table(
            "rule x
doc  y
for  ?k (axes ?y)
lhs  (matmul ?a ?b)
",
        )
        .expect_err("for without in");
        assert_eq!(e.to_string(), "table.dist:3: expected 'for ?k in SET'");
        let e = parse_table(
            "rule x
doc  y
",
        )
        .expect_err("no lhs");
        assert!(e.to_string().contains("has no lhs"), "{e}");
    }
}
