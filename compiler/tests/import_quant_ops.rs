//! Import of the quantisation ops onnxruntime's tools write: QuantizeLinear and
//! DequantizeLinear of activations, DynamicQuantizeLinear, MatMulInteger, com.microsoft
//! MatMulNBits and INT4 initializers: what each lowers to, which weights stay quantised (and
//! at what width), and a one-line error naming the node for every input refused.
mod import_util;

use import_util::*;
use onnx_protobuf::TensorProto;
use tessera_compiler::onnx::import_bytes;
use tessera_ir::DType;

const UINT8: i32 = 2;
const INT8: i32 = 3;
const UINT4: i32 = 21;
const INT4: i32 = 22;

/// A raw_data initializer of ONNX element type `elem`.
fn raw(name: &str, elem: i32, dims: &[i64], bytes: Vec<u8>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = elem;
    t.dims = dims.to_vec();
    t.raw_data = bytes;
    t
}

#[test]
fn quantize_and_dequantize_of_activations_are_elementwise() {
    let mut b = ModelBuilder::new(19);
    b.input("x", FLOAT, &[D::N(2), D::N(4)]);
    b.init_f32_raw("s", &[4], &[0.1, 0.2, 0.3, 0.4]);
    b.initializer(raw("z", UINT8, &[4], vec![128, 120, 0, 255]));
    b.node("QuantizeLinear", &["x", "s", "z"], &["q"], vec![])
        .node("DequantizeLinear", &["q", "s", "z"], &["y"], vec![])
        .output("y");
    let m = import(&b).unwrap();
    let got = ops(&m);
    for want in ["Div", "Round", "Add", "Clip", "Cast", "Sub", "Mul"] {
        assert!(got.contains(&want.to_string()), "{want} in {got:?}");
    }
    // Per-axis parameters broadcast along axis 1 (the default).
    let reshapes: Vec<_> = m
        .graph
        .nodes
        .iter()
        .filter(|n| n.op.name() == "Reshape")
        .map(|n| m.graph.tensor(n.outputs[0]).shape.clone())
        .collect();
    assert!(reshapes.iter().all(|s| s == &vec![1, 4]), "{reshapes:?}");
}

#[test]
fn dynamic_quantize_linear_has_three_outputs_and_matmul_integer_a_quantised_weight() {
    let mut b = ModelBuilder::new(13);
    b.input("x", FLOAT, &[D::N(2), D::N(4)]);
    let w: Vec<u8> = (0..12).map(|i| (i as i8 - 6) as u8).collect();
    b.initializer(raw("w", INT8, &[4, 3], w));
    b.initializer(raw("wz", INT8, &[], vec![0]));
    b.node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xz"], vec![])
        .node("MatMulInteger", &["xq", "w", "xz", "wz"], &["acc"], vec![])
        .output("acc")
        .output("xs");
    let m = import(&b).unwrap();
    let got = ops(&m);
    for want in ["ReduceMax", "ReduceMin", "Round", "MatMul"] {
        assert!(got.contains(&want.to_string()), "{want} in {got:?}");
    }
    // MatMulInteger's int32 output, the scale a scalar.
    let acc = m.graph.outputs[0];
    assert_eq!(m.graph.tensor(acc).dtype, DType::I32);
    assert!(m.graph.tensor(m.graph.outputs[1]).shape.is_empty());
    // B is one weight stored at a byte per element, dequantised with scale 1.
    let q: Vec<_> = m
        .graph
        .weights
        .values()
        .filter(|w| w.quant.is_some())
        .collect();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].dtype, q[0].size_bytes() >= 12), (DType::I8, true));
}

#[test]
fn matmul_nbits_reads_the_packed_bytes_as_a_4_bit_weight() {
    let (n, k, block) = (8i64, 32i64, 16i64);
    let mut b = ModelBuilder::new(21);
    b.opset("com.microsoft", 1);
    b.input("a", FLOAT, &[D::N(2), D::N(k)]);
    // [N, n_blocks, blob] = [8, 2, 8]: 256 4-bit values in 128 bytes.
    b.initializer(raw("B", UINT8, &[n, k / block, block / 2], vec![0x21; 128]));
    b.init_f32_raw("scales", &[n * (k / block)], &[0.5; 16]);
    b.initializer(raw("zp", UINT8, &[n], vec![0x88; 8]));
    b.node_in(
        "com.microsoft",
        "MatMulNBits",
        &["a", "B", "scales", "zp"],
        &["y"],
        vec![
            attr_int("K", k),
            attr_int("N", n),
            attr_int("bits", 4),
            attr_int("block_size", block),
        ],
    )
    .output("y");
    // The import phases: a Transpose of the stored [N, K] weight, then a MatMul.
    let m = import(&b).unwrap();
    assert_eq!(ops(&m), ["Transpose", "MatMul"]);
    let w: Vec<_> = m
        .graph
        .weights
        .values()
        .filter(|w| w.quant.is_some())
        .collect();
    assert_eq!((w.len(), w[0].shape.clone()), (1, vec![8, 32]));
    assert_eq!(w[0].packed_bits, Some(4));
    let q = w[0].quant.as_ref().unwrap();
    assert_eq!(
        q.scale.shape,
        vec![8, 2],
        "one scale per block of 16 along K"
    );
    // 128 packed bytes + 16 f32 scales + 16 4-bit zero points.
    assert_eq!(w[0].size_bytes(), 128 + 64 + 8);
    assert_eq!(m.graph.tensor(m.graph.outputs[0]).shape, vec![2, 8]);
    // Canonicalisation makes the Transpose the weight's stored order: logical [K, N].
    let canon = import_bytes(&b.bytes(), "m.onnx", &Default::default()).unwrap();
    assert_eq!(ops(&canon), ["MatMul"]);
    let w: Vec<_> = canon
        .graph
        .weights
        .values()
        .filter(|w| w.quant.is_some())
        .collect();
    assert_eq!(w[0].shape, vec![32, 8]);
    assert_eq!(
        (w[0].perm.clone(), w[0].packed_bits),
        (Some(vec![1, 0]), Some(4))
    );
    let q = w[0].quant.as_ref().unwrap();
    assert_eq!(q.scale.shape, vec![2, 8]);
}
#[test]
fn int4_initializers_dequantise_to_a_packed_weight() {
    let mut b = ModelBuilder::new(21);
    b.input("x", FLOAT, &[D::N(2), D::N(4)]);
    // int4 [4, 2]: 8 values in 4 bytes; uint4 zero point.
    b.initializer(raw("w", INT4, &[4, 2], vec![0x1F, 0x27, 0x80, 0x3D]));
    b.init_f32_raw("s", &[], &[0.25]);
    b.node("DequantizeLinear", &["w", "s"], &["wd"], vec![])
        .node("MatMul", &["x", "wd"], &["y"], vec![])
        .output("y");
    let m = import(&b).unwrap();
    let w: Vec<_> = m
        .graph
        .weights
        .values()
        .filter(|w| w.quant.is_some())
        .collect();
    assert_eq!(
        (w.len(), w[0].packed_bits, w[0].dtype),
        (1, Some(4), DType::I8)
    );
    // A uint4 tensor small enough to fold decodes nibble by nibble.
    let t =
        tessera_compiler::onnx::decode_tensor_proto(&raw("u", UINT4, &[3], vec![0x21, 0x03]), "u")
            .unwrap();
    assert_eq!((t.dtype, t.to_i64_vec()), (DType::U8, vec![1, 2, 3]));
    let s = tessera_compiler::onnx::decode_tensor_proto(&raw("i", INT4, &[2], vec![0xF8]), "i")
        .unwrap();
    assert_eq!(s.to_i64_vec(), vec![-8, -1]);
    let e = tessera_compiler::onnx::decode_tensor_proto(&raw("i", INT4, &[5], vec![0; 2]), "i")
        .unwrap_err()
        .to_string();
    assert_mentions(&e, &["'i'", "2 bytes", "4-bit"]);
}

#[test]
fn refusals_name_the_node_and_the_feature() {
    // MatMulNBits: act-order g_idx, 3 bits, K not a multiple of the block.
    let nbits = |bits: i64, k: i64, g_idx: bool| {
        let mut b = ModelBuilder::new(21);
        b.opset("com.microsoft", 1);
        b.input("a", FLOAT, &[D::N(2), D::N(k)]);
        b.initializer(raw("B", UINT8, &[4, 1, 8], vec![0; 32]));
        b.init_f32_raw("scales", &[4], &[1.0; 4]);
        let mut inputs = vec!["a", "B", "scales"];
        if g_idx {
            b.init_i64("g", &[k], &vec![0; k as usize]);
            inputs.extend(["", "g"]);
        }
        b.node_in(
            "com.microsoft",
            "MatMulNBits",
            &inputs,
            &["y"],
            vec![
                attr_int("K", k),
                attr_int("N", 4),
                attr_int("bits", bits),
                attr_int("block_size", 16),
            ],
        )
        .output("y");
        import(&b).unwrap_err()
    };
    assert_mentions(&nbits(4, 16, true), &["MatMulNBits", "g_idx"]);
    assert_mentions(&nbits(3, 16, false), &["MatMulNBits", "bits=3"]);
    assert_mentions(
        &nbits(4, 20, false),
        &["MatMulNBits", "K=20", "block_size 16"],
    );
    // QuantizeLinear to a float8 type, blocked quantisation of an activation.
    let mut b = ModelBuilder::new(21);
    b.input("x", FLOAT, &[D::N(2), D::N(4)]);
    b.init_f32_raw("s", &[2, 2], &[1.0; 4]);
    b.node(
        "QuantizeLinear",
        &["x", "s"],
        &["q"],
        vec![attr_int("axis", 1), attr_int("block_size", 2)],
    )
    .output("q");
    assert_mentions(&import(&b).unwrap_err(), &["QuantizeLinear", "block_size"]);
    let mut b = ModelBuilder::new(13);
    b.input("x", FLOAT, &[D::N(4), D::N(4)]);
    b.init_f32_raw("s", &[], &[1.0]);
    b.node(
        "QuantizeLinear",
        &["x", "s"],
        &["q"],
        vec![attr_int("axis", 1)],
    );
    b.node("MatMulInteger", &["q", "q"], &["y"], vec![])
        .output("y");
    // Two uint8 activations: fine (no quantised weight), and the product has int32 type.
    let m = import(&b).unwrap();
    assert_eq!(m.graph.tensor(m.graph.outputs[0]).dtype, DType::I32);
}
