//! A user's distribution rules (`PartitionOptions::dist_rules`, `tessera compile
//! --dist-rules FILE`) add local forms the built-in table lacks, and the runner uses them.
mod partition_common;
use partition_common::*;
use tessera_compiler::partition::rules::dsl::parse_user_rules;
use tessera_compiler::partition::{partition, PartitionOptions};
use tessera_ir::plan::CollectiveKind;
use tessera_ir::{DType, Layout, Op};

/// Where selects between two partial sums elementwise, so it keeps them partial: a correct
/// form the built-in table does not have.
const WHERE_PARTIAL: &str = "\
rule where-partial
doc  Where of two partial sums under a replicated condition is a partial sum
lhs  (where ?c ?a ?b)
rhs  (P (where (R ?c) (P ?a) (P ?b)))
";

/// y = x·W (row-parallel gives P), z = Where(cond, y, 0.5) as the graph output.
fn graph() -> (tessera_ir::Graph, String) {
    let mut b = B::new();
    let x = b.input("x", DType::F32, &[4, 8]);
    let cond = b.input("cond", DType::Bool, &[4, 8]);
    let w = b.weight("w", &[8, 8]);
    let y = b.matmul(x, w);
    let half = b.scalar("half");
    let z = b.op(Op::Where, &[cond, y, half]);
    b.output(z);
    let name = b.g.tensor(z).name.clone();
    (b.g, name)
}

#[test]
fn a_user_rule_makes_a_pinned_partial_where_possible() {
    let (g, z) = graph();
    let mut o = PartitionOptions::new(2);
    o.pins.insert(z.clone(), Layout::Partial);
    // Built-in rules only: no rule produces the Where output partial.
    let err = partition(&g, &o)
        .expect_err("no partial form of Where")
        .to_string();
    assert!(
        err.contains("no valid plan") || err.contains("no rule produces"),
        "{err}"
    );
    // With the user's rule the pin is honoured: one all-reduce, after the Where.
    o.dist_rules = parse_user_rules(WHERE_PARTIAL, "where.dist").expect("parses");
    let p = partition(&g, &o).expect("plan with the user's rule").plan;
    let reduces: Vec<&str> = p
        .collectives
        .iter()
        .filter(|c| c.kind == CollectiveKind::AllReduce)
        .map(|c| c.tensor_name.as_str())
        .collect();
    assert_eq!(reduces, [z.as_str()]);
    assert_eq!(count(&p, CollectiveKind::AllGather), 0);
}

#[test]
fn user_rule_files_are_checked() {
    let e = parse_user_rules(
        "rule matmul-row\ndoc  x\nlhs  (matmul ?a ?b)\nrhs  (R (matmul (R ?a) (R ?b)))\n",
        "mine.dist",
    )
    .expect_err("built-in name");
    assert_eq!(
        e.to_string(),
        "mine.dist:0: rule 'matmul-row' is a built-in rule (choose another name)"
    );
    let e = parse_user_rules("rule a\ndoc  x\nlhs  (matmul ?a ?b\n", "mine.dist")
        .expect_err("unbalanced");
    assert!(e.to_string().starts_with("mine.dist:3: "), "{e}");
    let e = parse_user_rules("rule a\ndoc  x\nbuiltin fused-section\n", "mine.dist")
        .expect_err("builtin");
    assert!(e.to_string().contains("built-in generators"), "{e}");
}
