//! `tessera rules` and `tessera compile --rules FILE`: the rule table printed in the rules-file
//! format, user rules applied during canonicalisation, bad rule files refused in one line.
mod common;

use common::{root, tessera};

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `tessera compile` of the MLP example for 2 devices with `flag FILE` (a rules option).
fn compile_mlp(
    flag: &str,
    file: &std::path::Path,
    plan: &std::path::Path,
) -> (i32, String, String) {
    let model = root().join("examples/models/mlp.onnx");
    tessera(&[
        "compile",
        model.to_str().unwrap(),
        "--devices",
        "2",
        "--shape",
        "x=4x64",
        flag,
        file.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
    ])
}

#[test]
fn rules_prints_the_builtin_table_in_the_rules_file_format() {
    let (code, out, err) = tessera(&["rules"]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "gelu-erf",
        "layer-norm",
        "rms-norm",
        "quantized-weight",
        "div-as-reciprocal",
    ] {
        assert!(
            out.contains(&format!("rule {name}\n")),
            "{name} missing:\n{out}"
        );
    }
    // What it prints is a valid rules file (user rules must have new names, so only check
    // that it parses by feeding a renamed copy back).
    let renamed = out.replace("rule ", "rule my-");
    let f = tmp("copy.rules", &renamed);
    let (code, out2, err) = tessera(&["rules", "--rules", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out2.matches("\nrule ").count() + 1,
        2 * (out.matches("\nrule ").count() + 1)
    );
}

#[test]
fn a_user_rule_fires_during_compile() {
    // Test-only rule (not semantics-preserving): the MLP's canonical GELU as a Relu.
    let f = tmp(
        "relu.rules",
        "rule test-gelu-as-relu\ndoc a test rule\nlhs (gelu ?a ?x)\nrhs (relu ?x)\n",
    );
    let plan = std::env::temp_dir().join(format!("tessera-rules-{}.json", std::process::id()));
    let (code, out, err) = compile_mlp("--rules", &f, &plan);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gelu-erf ×1"), "{out}");
    assert!(out.contains("test-gelu-as-relu ×1"), "{out}");
    let _ = std::fs::remove_file(&plan);
}

#[test]
fn bad_rule_files_are_refused_in_one_line() {
    let cases = [
        ("rule a\ndoc d\nlhs (frob ?x)\nrhs ?x\n", "frob"),
        ("rule a\ndoc d\nlhs (neg ?x)\nrhs ?y\n", "?y is not bound"),
        (
            "rule a\ndoc d\nlhs (neg ?x)\nrhs ?x\nif positive(?x)\n",
            "unknown guard 'positive'",
        ),
        (
            "rule gelu-erf\ndoc d\nlhs (neg ?x)\nrhs ?x\n",
            "already a built-in rule",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let f = tmp(&format!("bad{i}.rules"), text);
        let (code, out, err) = tessera(&["rules", "--rules", f.to_str().unwrap()]);
        assert_ne!(code, 0, "{text}: {out}");
        assert!(err.contains(needle), "{text}: {err}");
        assert!(err.contains("bad"), "names the file: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn distribution_rules_print_and_a_bad_user_file_is_refused_in_one_line() {
    let (code, out, err) = tessera(&["rules", "--distribution"]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "matmul-column",
        "matmul-row",
        "elementwise-split",
        "gather-vocab",
    ] {
        assert!(
            out.contains(&format!("rule {name}\n")),
            "{name} missing:\n{out}"
        );
    }
    assert!(
        out.contains("rhs  (S -1 (matmul (R ?a) (S -1 ?b)))\n"),
        "{out}"
    );
    let f = tmp("bad.dist", "rule mine\ndoc  x\nlhs  (matmul ?a ?b\n");
    let plan = std::env::temp_dir().join(format!("tessera-dist-{}.json", std::process::id()));
    let (code, _, err) = compile_mlp("--dist-rules", &f, &plan);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad.dist:3: "), "{err}");
    assert!(!plan.exists());
}
