//! docs/partitioner.md holds the built-in canonicalisation rule table, generated from the
//! rules file (`tessera rules --markdown`): the two must agree.
use tessera_compiler::canon::{builtin, rules_markdown};

#[test]
fn partitioner_doc_lists_the_builtin_rules() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/partitioner.md")).unwrap();
    let (_, rest) = doc
        .split_once("<!-- canon-rules:begin -->\n")
        .expect("begin marker");
    let (table, _) = rest
        .split_once("<!-- canon-rules:end -->")
        .expect("end marker");
    assert_eq!(
        table,
        rules_markdown(&builtin()),
        "regenerate with `tessera rules --markdown`"
    );
}

#[test]
fn partitioner_doc_lists_the_distribution_rules() {
    use tessera_compiler::partition::rules::dsl::{table, table_markdown};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/partitioner.md")).unwrap();
    let (_, rest) = doc
        .split_once("<!-- dist-rules:begin -->\n")
        .expect("begin marker");
    let (md, _) = rest
        .split_once("<!-- dist-rules:end -->")
        .expect("end marker");
    assert_eq!(
        md,
        table_markdown(table()),
        "regenerate with `tessera rules --distribution --markdown`"
    );
}
