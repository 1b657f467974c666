//! docs/ops.md lists exactly the ops the registry supports, with their opset ranges.
use tessera_compiler::onnx::ops::supported_ops;

#[test]
fn ops_doc_matches_registry() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ops.md")).unwrap();
    let rows: Vec<(String, String)> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ONNX op"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect();
    let ops = supported_ops();
    assert_eq!(rows.len(), ops.len(), "docs/ops.md rows vs registry");
    for (op, since, until) in ops {
        let want = format!("{since}..={until}");
        assert!(
            rows.iter().any(|(o, r)| o == op && *r == want),
            "docs/ops.md lacks '| {op} | {want} |'"
        );
    }
}
