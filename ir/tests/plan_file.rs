//! The plan file contract: write → read gives the same plan; other format versions are
//! refused naming the file and the versions; verify checks the source model and every
//! weight file against the sha256 recorded at compile time; a plan never overwrites its
//! inputs and never turns a non-finite float into `null`.
#[cfg(unix)]
#[path = "../../tests/shared/fifo.rs"]
mod fifo;

#[cfg(unix)]
use fifo::{mkfifo, within_timeout};
use std::collections::BTreeMap;
use std::path::Path;
use tessera_ir::op::{ClipAttrs, UnaryAttrs, UnaryOp};
use tessera_ir::plan::*;
use tessera_ir::{DType, Graph, Op, Tensor, TensorData, TensorKind, Weight, WeightData};

/// A one-rank plan whose graph reads weights from `model.onnx` (raw data), `w.bin`
/// (external data) and one inline constant holding -inf; its source is not recorded yet.
fn plan() -> Plan {
    let mut g = Graph::new();
    let x = g.add_input("x", DType::F32, vec![4]);
    let file_weight = |name: &str, path: &str, offset| Weight {
        perm: None,
        packed_bits: None,
        name: name.into(),
        dtype: DType::F32,
        shape: vec![4],
        data: WeightData::File {
            path: path.into(),
            offset,
            length: 16,
        },
        quant: None,
    };
    g.add_weight(file_weight("a", "model.onnx", 8));
    g.add_weight(file_weight("b", "w.bin", 0));
    g.add_weight(file_weight("c", "w.bin", 16));
    g.add_weight(Weight {
        perm: None,
        packed_bits: None,
        name: "mask".into(),
        dtype: DType::F32,
        shape: vec![2],
        data: WeightData::Inline {
            tensor: Tensor {
                dtype: DType::F32,
                shape: vec![2],
                data: TensorData::F32(vec![0.0, f32::NEG_INFINITY]),
            },
        },
        quant: None,
    });
    let y = g.add_tensor("y", DType::F32, vec![4], TensorKind::Activation);
    g.add_node(
        "relu",
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::Relu,
        }),
        vec![x],
        vec![y],
    );
    g.outputs.push(y);
    Plan {
        format_version: FORMAT_VERSION,
        source: SourceModel::default(),
        input_shapes: BTreeMap::from([("x".to_string(), vec![4])]),
        mesh: Mesh::tp(1),
        data: None,
        cost_model: CostModel {
            name: "cpu".into(),
            alpha_s: 1e-6,
            beta_bytes_per_s: 1e10,
            flops_per_s: 1e11,
            calibration: Default::default(),
            inter_group: None,
        },
        objective: Objective {
            kind: ObjectiveKind::Time,
            memory_per_device: Some(1 << 20),
            pins: BTreeMap::new(),
        },
        graph: g,
        layouts: vec![],
        values: vec![],
        outputs: vec![],
        ranks: vec![RankProgram {
            rank: 0,
            steps: vec![],
        }],
        collectives: vec![],
        weight_shards: vec![],
        estimates: vec![],
        layers: None,
        search: SearchStats {
            eclasses: 3,
            enodes: 5,
            iterations: 2,
            stop_reason: StopReason::NodeLimit,
            limits: SearchLimits {
                iterations: 30,
                nodes: 500_000,
                time_s: 20,
            },
            extractor: Extractor::ChainDp {
                nodes_per_layer: 7,
                blocks: 4,
                phases: 1,
                stream_layouts: 2,
            },
            cost: 1.5e-3,
            lower_bound: 1.5e-3,
            gap: 0.0,
        },
        summary: PlanSummary::default(),
    }
}

/// A directory with `model.onnx` and `w.bin`, and the plan compiled from them recorded for
/// `dir/plan.json`.
fn compiled(dir: &Path) -> Plan {
    std::fs::write(dir.join("model.onnx"), [7u8; 24]).unwrap();
    std::fs::write(dir.join("w.bin"), [1u8; 32]).unwrap();
    let mut p = plan();
    p.source =
        SourceModel::record(&dir.join("model.onnx"), &dir.join("plan.json"), &p.graph).unwrap();
    p
}

#[test]
fn a_written_plan_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let p = compiled(dir.path());
    let path = dir.path().join("plan.json");
    p.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with("}\n") && text.contains("\"-inf\""), "{text}");
    assert_eq!(Plan::read(&path).unwrap(), p);
    // The same plan gives the same bytes.
    p.write(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn record_hashes_the_model_and_each_weight_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = compiled(dir.path());
    assert_eq!(p.source.path, "model.onnx");
    let model_sha = sha256_file(&dir.path().join("model.onnx")).unwrap();
    assert_eq!(p.source.sha256, model_sha);
    assert_eq!(
        p.source.weight_files,
        BTreeMap::from([
            ("model.onnx".to_string(), model_sha),
            (
                "w.bin".to_string(),
                sha256_file(&dir.path().join("w.bin")).unwrap()
            ),
        ])
    );
    // sha256("abc"), the FIPS 180-2 test vector.
    std::fs::write(dir.path().join("abc"), b"abc").unwrap();
    assert_eq!(
        sha256_file(&dir.path().join("abc")).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn other_format_versions_are_refused_naming_file_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = plan();
    let path = dir.path().join("future.json");
    p.format_version = FORMAT_VERSION + 1;
    std::fs::write(&path, serde_json::to_string(&p).unwrap()).unwrap();
    let msg = Plan::read(&path).unwrap_err().to_string();
    let newer = FORMAT_VERSION + 1;
    assert!(
        msg.contains("future.json")
            && msg.contains(&format!("format_version {newer}"))
            && msg.contains(&format!("({FORMAT_VERSION})"))
            && msg.contains("newer"),
        "{msg}"
    );
    // A newer plan need not parse with this version's types.
    std::fs::write(&path, r#"{"format_version": 99, "shiny": true}"#).unwrap();
    let msg = Plan::read(&path).unwrap_err().to_string();
    assert!(msg.contains("format_version 99"), "{msg}");

    std::fs::write(&path, r#"{"format_version": 1, "source": {}}"#).unwrap();
    let msg = Plan::read(&path).unwrap_err().to_string();
    assert!(
        msg.contains("future.json")
            && msg.contains("format_version 1")
            && msg.contains("recompile"),
        "{msg}"
    );
}

#[test]
fn broken_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let text = serde_json::to_string_pretty(&plan()).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let msg = Plan::read(&path).unwrap_err().to_string();
    assert!(
        msg.contains("plan.json")
            && msg.contains("not a Tessera plan")
            && msg.contains("line")
            && msg.contains("column"),
        "{msg}"
    );
    std::fs::write(
        &path,
        format!("{{\"format_version\": {FORMAT_VERSION}, \"source\": 3}}"),
    )
    .unwrap();
    let msg = Plan::read(&path).unwrap_err().to_string();
    assert!(
        msg.contains("not a valid Tessera plan") && msg.contains("line 1"),
        "{msg}"
    );
    std::fs::write(&path, "{}").unwrap();
    let msg = Plan::read(&path).unwrap_err().to_string();
    assert!(msg.contains("no format_version"), "{msg}");
    let msg = Plan::read(&dir.path().join("nope.json"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.json"), "{msg}");
}

#[test]
fn verify_checks_the_model_and_every_weight_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = compiled(dir.path());
    let plan_path = dir.path().join("plan.json");
    assert_eq!(
        p.verify(&plan_path, None).unwrap(),
        dir.path().join("model.onnx")
    );

    // A modified weight file is named, with both hashes.
    std::fs::write(dir.path().join("w.bin"), [2u8; 32]).unwrap();
    let msg = p.verify(&plan_path, None).unwrap_err().to_string();
    assert!(
        msg.contains("weight file") && msg.contains("w.bin") && msg.matches("sha256 ").count() == 2,
        "{msg}"
    );
    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    let msg = p.verify(&plan_path, None).unwrap_err().to_string();
    assert!(msg.contains("w.bin") && msg.contains("not found"), "{msg}");

    // A modified source model is named.
    let p = compiled(dir.path());
    std::fs::write(dir.path().join("model.onnx"), [8u8; 24]).unwrap();
    let msg = p.verify(&plan_path, None).unwrap_err().to_string();
    assert!(
        msg.contains("source model") && msg.contains("model.onnx"),
        "{msg}"
    );

    // --model elsewhere: the weights are looked for beside it.
    let p = compiled(dir.path());
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("model.onnx"),
        other.path().join("model.onnx"),
    )
    .unwrap();
    let model = other.path().join("model.onnx");
    let msg = p.verify(&plan_path, Some(&model)).unwrap_err().to_string();
    assert!(msg.contains("w.bin") && msg.contains("not found"), "{msg}");
    std::fs::copy(dir.path().join("w.bin"), other.path().join("w.bin")).unwrap();
    assert_eq!(p.verify(&plan_path, Some(&model)).unwrap(), model);
}

#[test]
fn an_empty_or_missing_sha256_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.json");
    let mut p = compiled(dir.path());
    p.source.weight_files.insert("w.bin".into(), String::new());
    let msg = p.verify(&plan_path, None).unwrap_err().to_string();
    assert!(msg.contains("no sha256") && msg.contains("w.bin"), "{msg}");
    p.source.weight_files.remove("w.bin");
    let msg = p.verify(&plan_path, None).unwrap_err().to_string();
    assert!(msg.contains("no sha256") && msg.contains("w.bin"), "{msg}");

    let mut p = compiled(dir.path());
    p.source.sha256.clear();
    let msg = p.verify(&plan_path, None).unwrap_err().to_string();
    assert!(
        msg.contains("no sha256") && msg.contains("source model"),
        "{msg}"
    );
}

/// Asserts that writing `p` to `path` fails with a message that mentions every word.
fn write_refused(p: &Plan, path: &Path, words: &[&str]) {
    let msg = p.write(path).unwrap_err().to_string();
    assert!(words.iter().all(|w| msg.contains(w)), "{msg}");
}

#[test]
fn a_plan_never_overwrites_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    let mut p = compiled(dir.path());
    p.source = SourceModel::record(&model, &model, &p.graph).unwrap();
    write_refused(&p, &model, &["source model", "model.onnx"]);
    assert_eq!(std::fs::read(&model).unwrap(), [7u8; 24]);

    // Nor through a symbolic link to it.
    #[cfg(unix)]
    {
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        write_refused(&p, &link, &["source model"]);
        assert_eq!(std::fs::read(&model).unwrap(), [7u8; 24]);
    }

    let weights = dir.path().join("w.bin");
    p.source = SourceModel::record(&model, &weights, &p.graph).unwrap();
    write_refused(&p, &weights, &["weight file", "w.bin"]);
    assert_eq!(std::fs::read(&weights).unwrap(), [1u8; 32]);
}

#[test]
fn non_finite_op_attributes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let mut p = plan();
    p.graph.nodes[0].op = Op::Clip(ClipAttrs {
        min: Some(f32::NEG_INFINITY),
        max: Some(f32::NAN),
    });
    p.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\"-inf\"") && text.contains("\"NaN\""),
        "{text}"
    );
    let back = Plan::read(&path).unwrap();
    let Op::Clip(c) = &back.graph.nodes[0].op else {
        panic!("not a Clip: {:?}", back.graph.nodes[0].op)
    };
    assert_eq!(c.min, Some(f32::NEG_INFINITY));
    assert!(c.max.is_some_and(f32::is_nan));
}

#[test]
fn non_finite_search_stats_are_refused_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let mut p = plan();
    p.search.gap = f64::NAN;
    let msg = p.write(&path).unwrap_err().to_string();
    assert!(msg.contains("search.gap = NaN"), "{msg}");
    assert!(!path.exists());
}

/// `plan` with weight `b` moved to `location` (a path a crafted plan may name) and its
/// sha256 recorded as the one of `actual`, as an attacker would write it.
fn pointing_at(mut p: Plan, location: &str, actual: &Path) -> Plan {
    if let Some(w) = p.graph.weights.values_mut().find(|w| w.name == "b") {
        w.data = WeightData::File {
            path: location.into(),
            offset: 0,
            length: 16,
        };
    }
    let sha = sha256_file(actual).unwrap();
    p.source.weight_files.insert(location.into(), sha);
    p
}

#[test]
fn verify_confines_weight_paths_to_the_model_folder() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    let secret = outer.path().join("secret.bin");
    std::fs::write(&secret, [9u8; 32]).unwrap();
    let plan_path = dir.join("plan.json");
    let abs = secret.display().to_string();
    for (location, why) in [
        (abs.as_str(), "is absolute"),
        ("../secret.bin", "'..' component"),
    ] {
        let p = pointing_at(compiled(&dir), location, &secret);
        let msg = p.verify(&plan_path, None).unwrap_err().to_string();
        assert!(
            msg.contains(why) && msg.contains(location) && msg.contains("model.onnx"),
            "{msg}"
        );
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&secret, dir.join("link.bin")).unwrap();
        let p = pointing_at(compiled(&dir), "link.bin", &secret);
        let msg = p.verify(&plan_path, None).unwrap_err().to_string();
        assert!(
            msg.contains("link.bin") && msg.contains("outside the model's folder"),
            "{msg}"
        );
    }
    // What verify returns is every weight file it checked, canonical.
    let p = compiled(&dir);
    let files = p.verify_files(&plan_path, None).unwrap();
    assert_eq!(files.model, dir.join("model.onnx"));
    assert_eq!(
        files.weight_files.get("w.bin"),
        Some(&dir.join("w.bin").canonicalize().unwrap())
    );
    assert_eq!(files.weight_files.len(), 2);
}

#[cfg(unix)]
#[test]
fn fifos_are_refused_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let p = compiled(dir.path());
    let plan_path = dir.path().join("plan.json");
    std::fs::remove_file(dir.path().join("w.bin")).unwrap();
    mkfifo(&dir.path().join("w.bin"));
    let (pp, q) = (plan_path.clone(), p.clone());
    let msg = within_timeout(move || q.verify(&pp, None).unwrap_err().to_string());
    assert!(
        msg.contains("w.bin") && msg.contains("not a regular file") && msg.contains("FIFO"),
        "{msg}"
    );
    let fifo_model = dir.path().join("fifo.onnx");
    mkfifo(&fifo_model);
    let (pp, m) = (plan_path.clone(), fifo_model.clone());
    let msg = within_timeout(move || p.verify(&pp, Some(&m)).unwrap_err().to_string());
    assert!(
        msg.contains("fifo.onnx") && msg.contains("not a regular file"),
        "{msg}"
    );
    let m = fifo_model.clone();
    let msg = within_timeout(move || sha256_file(&m).unwrap_err().to_string());
    assert!(msg.contains("not a regular file"), "{msg}");
    let msg = within_timeout(move || Plan::read(&fifo_model).unwrap_err().to_string());
    assert!(msg.contains("not a regular file"), "{msg}");
    let msg = Plan::read(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("directory"), "{msg}");
}

/// Found by the plan_fields fuzz target: a mesh whose device count overflows a usize
/// panicked computing it; it is an inconsistent plan.
#[test]
fn a_mesh_whose_device_count_overflows_is_refused() {
    let mut v = serde_json::to_value(plan()).unwrap();
    v["mesh"]["shape"] = serde_json::json!([1u64 << 33, 1u64 << 33]);
    let bytes = serde_json::to_vec(&v).unwrap();
    let msg = Plan::from_bytes(&bytes, Path::new("crafted.json"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("crafted.json") && msg.contains("inconsistent"),
        "{msg}"
    );
}
