//! The crate map of docs/architecture.md, checked against the manifests: the compiler and the
//! runtime stand side by side over `ir` and `kernels`, and the plan file is their only bridge.
use std::path::Path;

/// Names of the `tessera-*` crates a member's manifest depends on, in any dependency table.
fn tessera_deps(member: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(member)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&path).expect("member manifest is readable");
    let manifest: toml::Table = text.parse().expect("member manifest is TOML");
    let mut deps = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(toml::Value::Table(t)) = manifest.get(table) {
            deps.extend(t.keys().filter(|k| k.starts_with("tessera")).cloned());
        }
    }
    deps.sort();
    deps
}

#[test]
fn compiler_and_runtime_stand_side_by_side() {
    assert_eq!(tessera_deps("ir"), Vec::<String>::new());
    assert_eq!(tessera_deps("kernels"), ["tessera-ir"]);
    assert_eq!(tessera_deps("compiler"), ["tessera-ir", "tessera-kernels"]);
    assert_eq!(tessera_deps("runtime"), ["tessera-ir", "tessera-kernels"]);
    // The Python package sits on top, beside the CLI: it compiles (root crate) and runs.
    assert_eq!(
        tessera_deps("python"),
        [
            "tessera",
            "tessera-compiler",
            "tessera-ir",
            "tessera-runtime"
        ]
    );
}
