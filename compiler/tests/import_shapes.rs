//! Shapes, attributes, folding and weight references of imported small models.
mod import_util;

use import_util::*;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{StringStringEntryProto, TensorProto};
use tessera_compiler::onnx::{import_bytes, ImportOptions, ImportedModel};
use tessera_ir::op::*;
use tessera_ir::{DType, Op, WeightData};

fn import(b: &ModelBuilder, spec: &str) -> ImportedModel {
    match import_bytes(&b.bytes(), "t.onnx", &opts(spec)) {
        Ok(m) => m,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn ty(m: &ImportedModel, name: &str) -> (DType, Vec<usize>) {
    let found = m.graph.tensors.iter().find(|t| t.name == name);
    let t = found.unwrap_or_else(|| panic!("no tensor {name}"));
    (t.dtype, t.shape.clone())
}

fn shape(m: &ImportedModel, name: &str) -> Vec<usize> {
    ty(m, name).1
}

fn op_of(m: &ImportedModel, out: &str) -> Op {
    let id = m.graph.tensor_by_name(out).unwrap();
    m.graph
        .nodes
        .iter()
        .find(|n| n.outputs.contains(&id))
        .unwrap_or_else(|| panic!("{out} has no producer"))
        .op
        .clone()
}

#[test]
fn pytorch_shape_chain_folds_into_static_reshape() {
    // y = x.reshape(x.shape[0], -1), exported as Shape → Gather → Unsqueeze → Concat → Reshape,
    // plus a dead Relu branch.
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::S("batch"), D::N(3), D::N(4)])
        .node("Shape", &["x"], &["s"], vec![])
        .const_i64("zero", &[], &[0])
        .gather("s", "zero", "b", 0)
        .const_i64("ax0", &[1], &[0])
        .node("Unsqueeze", &["b", "ax0"], &["b1"], vec![])
        .const_i64("minus1", &[1], &[-1])
        .node(
            "Concat",
            &["b1", "minus1"],
            &["target"],
            vec![attr_int("axis", 0)],
        )
        .node("Reshape", &["x", "target"], &["y"], vec![])
        .node("Relu", &["x"], &["unused"], vec![])
        .output("y");
    let m = import(&b, "x=5x3x4");
    assert_eq!(
        m.graph.nodes.len(),
        1,
        "only the reshape is left: {:?}",
        m.graph.nodes
    );
    assert_eq!(
        m.graph.nodes[0].op,
        Op::Reshape(ReshapeAttrs { shape: vec![5, 12] })
    );
    assert_eq!(shape(&m, "y"), vec![5, 12]);
    assert!(
        m.graph.weights.is_empty(),
        "folded shape constants are not weights"
    );
    let r = &m.report;
    assert_eq!((r.onnx_nodes, r.folded_nodes), (9, 7));
    assert_eq!(
        (r.emitted_nodes, r.dead_nodes_removed, r.final_nodes),
        (2, 1, 1)
    );
    assert_eq!(r.op_histogram["Constant"], 3);
}

#[test]
fn raw_data_initializers_reference_file_bytes() {
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2), D::N(3)])
        .init_f32_raw("W", &[3, 4], &w)
        .init_i64("idx", &[2], &[1, 0])
        .node("MatMul", &["x", "W"], &["h"], vec![])
        .gather("h", "idx", "y", 0)
        .output("y");
    let bytes = b.bytes();
    let m = import_bytes(&bytes, "model.onnx", &ImportOptions::default()).unwrap();
    let id = m.graph.tensor_by_name("W").unwrap();
    let WeightData::File {
        path,
        offset,
        length,
    } = &m.graph.weights[&id].data
    else {
        panic!("W should be file-backed")
    };
    assert_eq!((path.as_str(), *length), ("model.onnx", 48));
    let stored = &bytes[*offset as usize..(*offset + *length) as usize];
    let expected: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(stored, expected.as_slice(), "offset points at W's raw_data");
    let idx = m.graph.weights[&m.graph.tensor_by_name("idx").unwrap()]
        .inline()
        .expect("typed initializer is inline");
    assert_eq!(idx.to_i64_vec(), vec![1, 0]);
    assert_eq!(
        (m.report.parameter_count, m.report.parameter_bytes),
        (14, 48 + 16)
    );
}

#[test]
fn external_data_initializers() {
    let mut t = TensorProto::new();
    t.name = "E".into();
    t.data_type = FLOAT;
    t.dims = vec![4, 2];
    t.data_location = DataLocation::EXTERNAL.into();
    for (k, v) in [
        ("location", "weights/e.bin"),
        ("offset", "4096"),
        ("length", "32"),
    ] {
        let mut kv = StringStringEntryProto::new();
        kv.key = k.into();
        kv.value = v.into();
        t.external_data.push(kv);
    }
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(3), D::N(4)])
        .initializer(t)
        .node("MatMul", &["x", "E"], &["y"], vec![])
        .output("y");
    let m = import(&b, "");
    let w = &m.graph.weights[&m.graph.tensor_by_name("E").unwrap()];
    assert_eq!(
        w.data,
        WeightData::File {
            path: "weights/e.bin".into(),
            offset: 4096,
            length: 32
        }
    );
    assert_eq!(shape(&m, "y"), vec![3, 2]);
}

#[test]
fn matmul_family() {
    let mut b = ModelBuilder::new(17);
    b.input("a", FLOAT, &[D::N(4), D::N(3)])
        .input("q", FLOAT, &[D::N(2), D::N(5), D::N(8)])
        .input("k", FLOAT, &[D::N(2), D::N(7), D::N(8)])
        .init_f32_raw("B", &[6, 3], &[0.0; 18])
        .init_f32_raw("C", &[6], &[0.0; 6])
        .node(
            "Gemm",
            &["a", "B", "C"],
            &["g"],
            vec![attr_int("transB", 1), attr_float("alpha", 0.5)],
        )
        .node(
            "Einsum",
            &["q", "k"],
            &["s"],
            vec![attr_str("equation", "b i d, b j d -> b i j")],
        )
        .node(
            "Einsum",
            &["q"],
            &["qt"],
            vec![attr_str("equation", "...ij")],
        )
        .output("g")
        .output("s")
        .output("qt");
    let m = import(&b, "");
    assert_eq!(shape(&m, "g"), vec![4, 6]);
    assert_eq!(
        op_of(&m, "g"),
        Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 1.0,
            trans_a: false,
            trans_b: true
        })
    );
    assert_eq!(shape(&m, "s"), vec![2, 5, 7]);
    assert_eq!(
        op_of(&m, "s"),
        Op::Einsum(EinsumAttrs {
            equation: "bid,bjd->bij".into()
        })
    );
    assert_eq!(
        op_of(&m, "qt"),
        Op::Einsum(EinsumAttrs {
            equation: "Aij->Aij".into()
        })
    );
}

#[test]
fn reshape_family_becomes_static_reshapes() {
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2), D::N(1), D::N(6)])
        .const_i64("sq_axes", &[1], &[1])
        .node("Squeeze", &["x", "sq_axes"], &["sq"], vec![])
        .const_i64("unsq_axes", &[2], &[0, -1])
        .node("Unsqueeze", &["sq", "unsq_axes"], &["unsq"], vec![])
        .node("Flatten", &["x"], &["flat"], vec![attr_int("axis", 2)])
        .const_i64("target", &[3], &[0, 3, -1])
        .node("Reshape", &["x", "target"], &["rs"], vec![])
        .node("Transpose", &["x"], &["tr"], vec![])
        .const_i64("ex", &[4], &[3, 2, 1, 1])
        .node("Expand", &["x", "ex"], &["exp"], vec![]);
    for o in ["sq", "unsq", "flat", "rs", "tr", "exp"] {
        b.output(o);
    }
    let m = import(&b, "");
    assert_eq!(
        op_of(&m, "sq"),
        Op::Reshape(ReshapeAttrs { shape: vec![2, 6] })
    );
    assert_eq!(shape(&m, "unsq"), vec![1, 2, 6, 1]);
    assert_eq!(shape(&m, "flat"), vec![2, 6]);
    assert_eq!(shape(&m, "rs"), vec![2, 3, 2]);
    assert_eq!(
        op_of(&m, "tr"),
        Op::Transpose(TransposeAttrs {
            perm: vec![2, 1, 0]
        })
    );
    assert_eq!(
        op_of(&m, "exp"),
        Op::Expand(ExpandAttrs {
            shape: vec![3, 2, 1, 6]
        })
    );
}

#[test]
fn split_slice_concat_gather() {
    let mut b = ModelBuilder::new(18);
    b.input("x", FLOAT, &[D::N(10), D::N(8)])
        .input("ids", INT64, &[D::N(3), D::N(1)])
        .node(
            "Split",
            &["x"],
            &["p0", "p1", "p2"],
            vec![attr_int("num_outputs", 3)],
        )
        .const_i64("sizes", &[2], &[7, 3])
        .node("Split", &["x", "sizes"], &["q0", "q1"], vec![])
        .const_i64("st", &[2], &[-1, 1])
        .const_i64("en", &[2], &[i64::MIN, 100])
        .const_i64("axes", &[2], &[0, -1])
        .const_i64("steps", &[2], &[-3, 2])
        .node(
            "Slice",
            &["x", "st", "en", "axes", "steps"],
            &["sl"],
            vec![],
        )
        .node(
            "Concat",
            &["p0", "p2"],
            &["cat"],
            vec![attr_int("axis", -2)],
        )
        .gather("x", "ids", "ga", 0)
        .node("GatherND", &["x", "ids"], &["gnd"], vec![]);
    for o in ["p0", "p1", "p2", "q0", "q1", "sl", "cat", "ga", "gnd"] {
        b.output(o);
    }
    let m = import(&b, "");
    assert_eq!((shape(&m, "p0"), shape(&m, "p2")), (vec![4, 8], vec![2, 8]));
    assert_eq!((shape(&m, "q0"), shape(&m, "q1")), (vec![7, 8], vec![3, 8]));
    let want = SliceAttrs {
        axes: vec![0, 1],
        starts: vec![9, 1],
        ends: vec![-1, 8],
        steps: vec![-3, 2],
    };
    assert_eq!(op_of(&m, "sl"), Op::Slice(want));
    assert_eq!(shape(&m, "sl"), vec![4, 4]);
    assert_eq!(shape(&m, "cat"), vec![6, 8]);
    assert_eq!(shape(&m, "ga"), vec![3, 1, 8]);
    assert_eq!(shape(&m, "gnd"), vec![3, 8]);
}

#[test]
fn reductions_across_opsets() {
    for opset in [13, 18] {
        let mut b = ModelBuilder::new(opset);
        b.input("x", FLOAT, &[D::N(2), D::N(3), D::N(4)]);
        if opset >= 18 {
            b.const_i64("axes", &[1], &[-1])
                .node("ReduceMean", &["x", "axes"], &["m"], vec![]);
        } else {
            b.node("ReduceMean", &["x"], &["m"], vec![attr_ints("axes", &[-1])]);
        }
        b.const_i64("sum_axes", &[2], &[0, 1])
            .node(
                "ReduceSum",
                &["x", "sum_axes"],
                &["s"],
                vec![attr_int("keepdims", 0)],
            )
            .node("ReduceMax", &["x"], &["all"], vec![attr_int("keepdims", 0)])
            .output("m")
            .output("s")
            .output("all");
        let m = import(&b, "");
        let mean = ReduceAttrs {
            kind: ReduceKind::Mean,
            axes: vec![2],
            keepdims: true,
        };
        assert_eq!(op_of(&m, "m"), Op::Reduce(mean), "opset {opset}");
        assert_eq!(shape(&m, "s"), vec![4]);
        assert_eq!(shape(&m, "all"), Vec::<usize>::new());
    }
}

#[test]
fn logic_casts_and_norms() {
    let mut b = ModelBuilder::new(23);
    b.input("x", FLOAT, &[D::N(2), D::N(4)])
        .input("i", INT64, &[D::N(4)])
        .init_f32_raw("g", &[4], &[1.0; 4])
        .node("Equal", &["i", "i"], &["eq"], vec![])
        .node("Not", &["eq"], &["ne"], vec![])
        .node("Where", &["ne", "x", "x"], &["w"], vec![])
        .node("IsNaN", &["x"], &["nan"], vec![])
        .node("Cast", &["i"], &["fi"], vec![attr_int("to", 1)])
        .node("CastLike", &["x", "i"], &["xi"], vec![])
        .node(
            "Gelu",
            &["x"],
            &["ge"],
            vec![attr_str("approximate", "tanh")],
        )
        .node(
            "RMSNormalization",
            &["x", "g"],
            &["rms"],
            vec![attr_float("epsilon", 1e-6)],
        )
        .node("LayerNormalization", &["x", "g", "g"], &["ln"], vec![])
        .node("LogSoftmax", &["x"], &["ls"], vec![attr_int("axis", 0)])
        .node("Max", &["x", "fi", "x"], &["mx"], vec![])
        .node("Mean", &["x", "x"], &["mean"], vec![])
        .node("Dropout", &["mean"], &["drop"], vec![]);
    for o in ["w", "nan", "xi", "ge", "rms", "ln", "ls", "mx", "drop"] {
        b.output(o);
    }
    let m = import(&b, "");
    assert_eq!(ty(&m, "eq"), (DType::Bool, vec![4]));
    assert_eq!(ty(&m, "w"), (DType::F32, vec![2, 4]));
    assert_eq!(ty(&m, "nan"), (DType::Bool, vec![2, 4]));
    assert_eq!(ty(&m, "fi"), (DType::F32, vec![4]));
    assert_eq!(ty(&m, "xi"), (DType::I64, vec![2, 4]));
    assert_eq!(
        op_of(&m, "ge"),
        Op::Gelu(GeluAttrs {
            tanh_approximation: true
        })
    );
    assert_eq!(
        op_of(&m, "rms"),
        Op::RmsNorm(NormAttrs {
            axis: 1,
            epsilon: 1e-6
        })
    );
    assert_eq!(
        op_of(&m, "ln"),
        Op::LayerNorm(NormAttrs {
            axis: 1,
            epsilon: 1e-5
        })
    );
    assert_eq!(
        op_of(&m, "ls"),
        Op::Softmax(SoftmaxAttrs { axis: 0, log: true })
    );
    // Max of 3 inputs is a chain of 2 binary ops.
    let maxes = m
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(&n.op, Op::Binary(a) if a.kind == BinaryOp::Max))
        .count();
    assert_eq!(maxes, 2);
    assert_eq!(ty(&m, "mx"), (DType::F32, vec![2, 4]));
    assert_eq!(
        op_of(&m, "drop"),
        Op::Unary(UnaryAttrs {
            kind: UnaryOp::Identity
        })
    );
}

/// `y = x + Cast(Range(zero, n, one))` with the constants zero = 0, n = 5, one = 1.
fn add_range_sum(b: &mut ModelBuilder) -> &mut ModelBuilder {
    b.const_i64("zero", &[], &[0])
        .const_i64("n", &[], &[5])
        .const_i64("one", &[], &[1])
        .node("Range", &["zero", "n", "one"], &["r"], vec![])
        .node("Cast", &["r"], &["rf"], vec![attr_int("to", 1)])
        .node("Add", &["x", "rf"], &["y"], vec![])
}

/// `pos = CumSum(ConstantOfShape(Shape(x, start = -1), 1), zero)`: the positions 1..=last dim.
fn add_positions(b: &mut ModelBuilder) -> &mut ModelBuilder {
    b.node("Shape", &["x"], &["s"], vec![attr_int("start", -1)])
        .node(
            "ConstantOfShape",
            &["s"],
            &["ones"],
            vec![attr_tensor("value", tensor_i64("", &[1], &[1]))],
        )
        .node("CumSum", &["ones", "zero"], &["pos"], vec![])
}

#[test]
fn constants_fold_through_range_and_constant_of_shape() {
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2), D::N(5)]);
    add_positions(&mut b);
    add_range_sum(&mut b)
        .node("Trilu", &["x"], &["tri"], vec![attr_int("upper", 0)])
        .node("Clip", &["x", "", "rf_max"], &["clip"], vec![])
        .initializer({
            let mut t = tensor_i64("rf_max", &[], &[]);
            t.data_type = FLOAT;
            t.float_data = vec![6.0];
            t
        })
        .output("y")
        .output("tri")
        .output("clip");
    // CumSum reads 'zero' before the Constant that defines it: graph order matters.
    let e = import_bytes(&b.bytes(), "t.onnx", &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CumSum") && e.contains("'zero'") && e.contains("not produced before"),
        "{e}"
    );

    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2), D::N(5)])
        .init_f32_raw("hi", &[], &[6.0]);
    add_range_sum(&mut b);
    add_positions(&mut b)
        .node("Trilu", &["x"], &["tri"], vec![attr_int("upper", 0)])
        .node("Clip", &["x", "", "hi"], &["clip"], vec![])
        .output("y")
        .output("pos")
        .output("tri")
        .output("clip");
    let m = import(&b, "");
    // rf = [0, 1, 2, 3, 4] folded into an inline constant read by the Add.
    let rf = m.graph.weights[&m.graph.tensor_by_name("rf").unwrap()]
        .inline()
        .unwrap();
    assert_eq!(rf.to_f64_vec(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    // pos = cumsum(ones(5)) is a folded graph output.
    let pos = m.graph.weights[&m.graph.tensor_by_name("pos").unwrap()]
        .inline()
        .unwrap();
    assert_eq!(pos.to_i64_vec(), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        op_of(&m, "clip"),
        Op::Clip(ClipAttrs {
            min: None,
            max: Some(6.0)
        })
    );
    assert_eq!(
        op_of(&m, "tri"),
        Op::Trilu(TriluAttrs { upper: false, k: 0 })
    );
    assert_eq!(m.report.folded_nodes, 8);
}

#[test]
fn big_results_of_constants_stay_nodes() {
    // Gathering rows of a small constant table for constant ids folds only while the result
    // stays small (FOLD_MAX_OUTPUT_ELEMS).
    let table: Vec<f32> = (0..2 * 5000).map(|i| i as f32).collect();
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(1)])
        .init_f32_raw("table", &[2, 5000], &table)
        .const_i64("ids", &[1], &[1])
        .const_i64("ids2", &[2], &[1, 0])
        .gather("table", "ids", "row", 0)
        .gather("table", "ids2", "rows", 0)
        .node("Add", &["x", "row"], &["y"], vec![])
        .node("Add", &["x", "rows"], &["z"], vec![])
        .output("y")
        .output("z");
    let m = import(&b, "");
    let row = m.graph.weights[&m.graph.tensor_by_name("row").unwrap()]
        .inline()
        .expect("5000 elements fold");
    assert_eq!(row.to_f64_vec()[..3], [5000.0, 5001.0, 5002.0]);
    assert!(
        matches!(op_of(&m, "rows"), Op::Gather(_)),
        "10000 elements are computed at run time"
    );
    assert_eq!(m.report.folded_nodes, 3);
}
