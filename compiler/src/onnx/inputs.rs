//! Graph inputs: fixing dynamic dims from `--shape`, and parsing `--shape` specifications.
use super::ImportError;
use onnx_protobuf::ValueInfoProto;
use std::collections::BTreeMap;
use tessera_ir::{check_tensor_size, DType};

/// One declared dim of a model input.
enum Dim {
    Fixed(usize),
    Symbolic(String),
}

fn declared_dims(vi: &ValueInfoProto) -> Option<Vec<Dim>> {
    let tt = vi.type_.as_ref()?.tensor_type();
    let shape = tt.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match (d.has_dim_value(), d.dim_value()) {
                (true, v) if v >= 0 => Dim::Fixed(v as usize),
                _ if !d.dim_param().is_empty() => Dim::Symbolic(d.dim_param().to_string()),
                _ => Dim::Symbolic("?".into()),
            })
            .collect(),
    )
}

fn show(dims: &Option<Vec<Dim>>) -> String {
    match dims {
        None => "(no declared shape)".into(),
        Some(d) => {
            let parts: Vec<String> = d
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => v.to_string(),
                    Dim::Symbolic(s) => s.clone(),
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// The dtype and static shape of a graph input, taking `given` (from `--shape`) into account;
/// a shape over [`tessera_ir::MAX_TENSOR_BYTES`] (or overflowing) is an error naming the input.
pub(crate) fn resolve_input(
    vi: &ValueInfoProto,
    given: Option<&Vec<usize>>,
) -> Result<(DType, Vec<usize>), ImportError> {
    let name = vi.name.as_str();
    let elem = vi
        .type_
        .as_ref()
        .map(|t| t.tensor_type().elem_type)
        .unwrap_or(0);
    let dtype = DType::from_onnx_code(elem).ok_or_else(|| {
        ImportError::tensor(
            name,
            format!("graph input has unsupported element type {elem}"),
        )
    })?;
    let dims = declared_dims(vi);
    let shape = match (given, &dims) {
        (Some(g), None) => g.clone(),
        (Some(g), Some(d)) => {
            let mismatch = |msg: String| ImportError::InputShapeMismatch {
                input: name.into(),
                given: g.clone(),
                model_shape: show(&dims),
                msg,
            };
            if g.len() != d.len() {
                return Err(mismatch(format!("rank {} vs {}", g.len(), d.len())));
            }
            for (i, (gv, dv)) in g.iter().zip(d).enumerate() {
                if let Dim::Fixed(v) = dv {
                    if v != gv {
                        return Err(mismatch(format!(
                            "dim {i} is fixed to {v} in the model, given {gv}"
                        )));
                    }
                }
            }
            g.clone()
        }
        (None, None) => {
            return Err(ImportError::DynamicDim {
                input: name.into(),
                dim: 0,
                dim_name: "unknown rank".into(),
                model_shape: show(&dims),
            })
        }
        (None, Some(d)) => d
            .iter()
            .enumerate()
            .map(|(i, dv)| match dv {
                Dim::Fixed(v) => Ok(*v),
                Dim::Symbolic(s) => Err(ImportError::DynamicDim {
                    input: name.into(),
                    dim: i,
                    dim_name: s.clone(),
                    model_shape: show(&dims),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    // Checked before any tensor of this shape exists (inference, folding, a plan, a run).
    check_tensor_size(&shape, dtype).map_err(|e| {
        let how = if given.is_some() { "--shape " } else { "" };
        ImportError::tensor(name, format!("{how}graph input: {e}"))
    })?;
    Ok((dtype, shape))
}

/// Parses `"input_ids=1x128,attention_mask=1x128"` into input shapes. An empty dims part
/// (`"x="`) is a scalar.
pub fn parse_shape_spec(spec: &str) -> Result<BTreeMap<String, Vec<usize>>, ImportError> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |msg: &str| ImportError::ShapeSpec {
            spec: part.into(),
            msg: msg.into(),
        };
        let (name, dims) = part.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("empty input name"));
        }
        let dims = dims.trim();
        let shape = if dims.is_empty() {
            vec![]
        } else {
            dims.split(['x', 'X'])
                .map(|d| {
                    d.trim()
                        .parse::<usize>()
                        .map_err(|_| bad(&format!("'{d}' is not a non-negative integer")))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        if out.insert(name.to_string(), shape).is_some() {
            return Err(bad("input given twice"));
        }
    }
    if out.is_empty() {
        return Err(ImportError::ShapeSpec {
            spec: spec.into(),
            msg: "no shapes given".into(),
        });
    }
    Ok(out)
}
