//! onnxruntime's contrib ops (domain `com.microsoft`, opset version 1):
//!
//! * MatMulNBits:
//!   <https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.MatMulNBits>
//!   `Y = A · dequant(B)ᵀ (+ bias)`, the weight-only 2/4/8-bit blocked form that
//!   onnxruntime's `MatMulNBitsQuantizer` writes. `B` (uint8 `[N, n_blocks, blob]`, a constant)
//!   holds row `n`'s K values `bits` at a time from the low bits of each byte up; `scales`
//!   (`[N·n_blocks]` or `[N, n_blocks]`, constant) and `zero_points` (uint8, packed the same
//!   way per row, constant; absent: `2^(bits−1)`) apply per block of `block_size` values
//!   along K. B becomes one quantised weight leaf stored as the file's packed bytes
//!   ([`Weight::packed_bits`]; 8-bit values as plain u8) with a blocked scale and zero
//!   point `[N, n_blocks]`, read through a Transpose by a MatMul, which canonicalisation
//!   makes a Linear over the transposed weight: it splits like a float weight (scales and
//!   zero points sliced along) and is counted at its stored size. Refused: `g_idx`
//!   (act-order), float zero points and a K that is not a multiple of `block_size`.
use super::activation_extra::Chain;
use super::elementwise::bin;
use super::{InputView, Lowered, NodeCx, OpEntry, Ref};
use crate::onnx::ImportError;
use tessera_ir::op::{BinaryOp, MatMulAttrs, TransposeAttrs};
use tessera_ir::{numel, DType, Op, Quant, Tensor, Weight, WeightData};

pub(super) const OPS: &[OpEntry] = &[super::ms_entry("MatMulNBits", matmul_nbits)];

/// MatMulNBits's attributes (the contrib schema's; others are an error).
const ATTRS: &[&str] = &["K", "N", "bits", "block_size", "accuracy_level"];

fn matmul_nbits(cx: &NodeCx) -> Result<Lowered, ImportError> {
    if let Some(a) = cx
        .node
        .attribute
        .iter()
        .find(|a| !ATTRS.contains(&a.name.as_str()))
    {
        return Err(cx.err(format!(
            "unknown attribute '{}' (MatMulNBits takes {})",
            a.name,
            ATTRS.join(", ")
        )));
    }
    let required = |name: &str| match cx.attr(name) {
        Some(a) if a.i > 0 => Ok(a.i as usize),
        _ => Err(cx.err(format!("attribute {name} must be given and positive"))),
    };
    let (k, n, block) = (required("K")?, required("N")?, required("block_size")?);
    let bits = cx.attr_int("bits", 4);
    if !matches!(bits, 2 | 4 | 8) {
        return Err(cx.unsupported(format!("bits={bits}: only 2, 4 and 8")));
    }
    let bits = bits as usize;
    if block < 16 || !block.is_power_of_two() {
        return Err(cx.err(format!(
            "block_size {block} must be a power of two, at least 16"
        )));
    }
    if !k.is_multiple_of(block) {
        return Err(cx.unsupported(format!(
            "K={k} is not a multiple of block_size {block} (a padded last block)"
        )));
    }
    if cx.opt_input(4).is_some() {
        return Err(cx.unsupported("g_idx (act-order) is not supported"));
    }
    let a = cx.input(0)?;
    if !a.dtype.is_float() || a.shape.last() != Some(&k) {
        return Err(cx.err(format!(
            "A '{}' is {} {:?}: expected a float tensor whose last axis is K={k}",
            a.name, a.dtype, a.shape
        )));
    }
    let blocks = k / block;
    let b = cx.input(1)?;
    if b.dtype != DType::U8 || numel(b.shape) != n * k * bits / 8 {
        return Err(cx.err(format!(
            "B '{}' is {} {:?}: expected uint8 holding N={n} rows of K={k} {bits}-bit values",
            b.name, b.dtype, b.shape
        )));
    }
    let scales = cx.input(2)?;
    if !scales.dtype.is_float() || numel(scales.shape) != n * blocks {
        return Err(cx.err(format!(
            "scales '{}' is {} {:?}: expected {} floats (N × K / block_size)",
            scales.name,
            scales.dtype,
            scales.shape,
            n * blocks
        )));
    }
    let scale = super::quantize::constant(cx, 2, vec![n, blocks])?;
    let zero_point = match cx.opt_input(3) {
        Some(z) => zero_points(cx, z, n, blocks, bits)?,
        None => Weight::constant(
            format!("{}/zero_point", b.name),
            Tensor {
                dtype: DType::U8,
                ..Tensor::i64(vec![1, 1], vec![1 << (bits - 1)])
            },
        ),
    };
    let mut w = packed(cx, b, vec![n, k], bits)?;
    w.quant = Some(Quant {
        dtype: scales.dtype,
        scale: Box::new(scale),
        zero_point: Some(Box::new(zero_point)),
    });
    w.check_quant().map_err(|e| cx.err(e.to_string()))?;

    let mut c = Chain::default();
    let wt = c.push(
        Op::Transpose(TransposeAttrs { perm: vec![1, 0] }),
        vec![Ref::Weight(Box::new(w))],
    );
    let y = c.push(Op::MatMul(MatMulAttrs {}), vec![Ref::In(0), wt]);
    if let Some(bias) = cx.opt_input(5) {
        if bias.shape != [n] {
            return Err(cx.err(format!(
                "bias '{}' {:?} should be [{n}]",
                bias.name, bias.shape
            )));
        }
        c.push(bin(BinaryOp::Add), vec![y, Ref::In(5)]);
    }
    Ok(c.done())
}

/// `values` (`bits`-bit values of `shape`, packed from the low bits of each byte up, each
/// row of `row` values starting on a byte) as a weight of `shape`: the initializer's bytes
/// themselves when they are in a file and rows end on whole bytes, else unpacked at import.
fn packed(
    cx: &NodeCx,
    v: &InputView,
    shape: Vec<usize>,
    bits: usize,
) -> Result<Weight, ImportError> {
    let row = shape.last().copied().unwrap_or(1);
    let row_bytes = (row * bits).div_ceil(8);
    if let Some(src) = v.source {
        if matches!(src.data, WeightData::File { .. }) && (row * bits).is_multiple_of(8) {
            return Ok(Weight {
                dtype: DType::U8,
                shape,
                packed_bits: (bits < 8).then_some(bits as u8),
                quant: None,
                perm: None,
                ..src.clone()
            });
        }
    }
    let bytes = match (v.source.map(|s| &s.data), v.konst) {
        (Some(WeightData::Inline { tensor }), _) | (_, Some(tensor)) => tensor.to_i64_vec(),
        _ => {
            return Err(cx.unsupported(format!(
                "'{}' {:?}: rows of {row} {bits}-bit values padded to whole bytes must be \
                     small enough to unpack at import",
                v.name, v.shape
            )))
        }
    };
    let rows = numel(&shape) / row.max(1);
    if bytes.len() < rows * row_bytes {
        return Err(cx.err(format!(
            "'{}' has {} bytes, expected {}",
            v.name,
            bytes.len(),
            rows * row_bytes
        )));
    }
    let per_byte = 8 / bits;
    let mask = (1i64 << bits) - 1;
    let mut out = Vec::with_capacity(rows * row);
    for r in 0..rows {
        for i in 0..row {
            let byte = bytes[r * row_bytes + i / per_byte];
            out.push((byte >> ((i % per_byte) * bits)) & mask);
        }
    }
    let t = Tensor {
        dtype: DType::U8,
        ..Tensor::i64(shape, out)
    };
    Ok(Weight::constant(v.name, t))
}

/// MatMulNBits's zero points as a `[n, blocks]` u8 weight.
fn zero_points(
    cx: &NodeCx,
    z: &InputView,
    n: usize,
    blocks: usize,
    bits: usize,
) -> Result<Weight, ImportError> {
    if z.dtype != DType::U8 {
        return Err(cx.unsupported(format!(
            "zero points '{}' are {}: only packed uint8 zero points",
            z.name, z.dtype
        )));
    }
    let want = n * (blocks * bits).div_ceil(8);
    if numel(z.shape) != want {
        return Err(cx.err(format!(
            "zero points '{}' {:?}: expected {want} bytes ({n} rows of {blocks} {bits}-bit values)",
            z.name, z.shape
        )));
    }
    packed(cx, z, vec![n, blocks], bits)
}
