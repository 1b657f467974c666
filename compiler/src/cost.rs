//! Cost model of the partitioner: alpha-beta collectives plus a compute rate.
//!
//! * a collective costs `α + ring_bytes / β`, where the ring volume of a logical tensor of
//!   `B` bytes on `N` devices is `2(N−1)/N·B` (all-reduce), `(N−1)/N·B` (all-gather,
//!   reduce-scatter) and `(N−1)/N²·B` (all-to-all);
//! * compute costs `FLOPs per rank / flops_per_s`, FLOPs from [`op_flops`] on local shapes
//!   (each op's FLOPs and bytes are stated by its spec in `tessera_ir::spec`).
//!
//! Presets: `nvlink`, `pcie`, `ethernet`, `cpu`; a custom mesh loads from TOML
//! ([`load_cost_model_toml`]).
use tessera_ir::plan::CollectiveKind;
pub use tessera_ir::plan::CostModel;
use tessera_ir::{DType, Op};

/// Errors loading a cost model.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// Unknown preset name.
    #[error("unknown cost-model preset '{0}' (expected nvlink, pcie, ethernet or cpu)")]
    UnknownPreset(String),
    /// The TOML file could not be read.
    #[error("cannot read cost-model file '{path}': {msg}")]
    Read {
        /// File.
        path: String,
        /// Reason.
        msg: String,
    },
    /// The TOML was malformed or a field is invalid.
    #[error("invalid cost-model file '{path}': {msg}")]
    Invalid {
        /// File.
        path: String,
        /// Reason.
        msg: String,
    },
}

/// NVLink-class GPUs: 5 µs latency, 150 GB/s, 100 TFLOP/s.
pub fn nvlink() -> CostModel {
    CostModel {
        name: "nvlink".into(),
        alpha_s: 5e-6,
        beta_bytes_per_s: 150e9,
        flops_per_s: 100e12,
    }
}

/// PCIe-connected GPUs: 10 µs latency, 16 GB/s, 50 TFLOP/s.
pub fn pcie() -> CostModel {
    CostModel {
        name: "pcie".into(),
        alpha_s: 10e-6,
        beta_bytes_per_s: 16e9,
        flops_per_s: 50e12,
    }
}

/// Hosts over ethernet: 50 µs latency, 1.25 GB/s (10 GbE), 1 TFLOP/s.
pub fn ethernet() -> CostModel {
    CostModel {
        name: "ethernet".into(),
        alpha_s: 50e-6,
        beta_bytes_per_s: 1.25e9,
        flops_per_s: 1e12,
    }
}

/// CPU threads sharing memory: 2 µs latency, 10 GB/s, 50 GFLOP/s per device.
pub fn cpu() -> CostModel {
    CostModel {
        name: "cpu".into(),
        alpha_s: 2e-6,
        beta_bytes_per_s: 10e9,
        flops_per_s: 50e9,
    }
}

/// A preset by name.
pub fn preset(name: &str) -> Result<CostModel, CostError> {
    match name {
        "nvlink" => Ok(nvlink()),
        "pcie" => Ok(pcie()),
        "ethernet" => Ok(ethernet()),
        "cpu" => Ok(cpu()),
        other => Err(CostError::UnknownPreset(other.into())),
    }
}

/// Parses a cost model from TOML text: either `preset = "pcie"` (optionally overriding
/// fields) or all of `alpha_s`, `beta_bytes_per_s`, `flops_per_s` (and an optional `name`).
pub fn parse_cost_model_toml(text: &str, path: &str) -> Result<CostModel, CostError> {
    let invalid = |msg: String| CostError::Invalid {
        path: path.into(),
        msg,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.message().to_string()))?;
    let mut model = match table.get("preset") {
        Some(toml::Value::String(p)) => preset(p)?,
        Some(_) => return Err(invalid("'preset' must be a string".into())),
        None => CostModel {
            name: "custom".into(),
            alpha_s: f64::NAN,
            beta_bytes_per_s: f64::NAN,
            flops_per_s: f64::NAN,
        },
    };
    for (key, value) in &table {
        let num = || match value {
            toml::Value::Float(f) => Ok(*f),
            toml::Value::Integer(i) => Ok(*i as f64),
            _ => Err(invalid(format!("'{key}' must be a number"))),
        };
        match key.as_str() {
            "preset" => {}
            "name" => {
                model.name = value
                    .as_str()
                    .ok_or_else(|| invalid("'name' must be a string".into()))?
                    .to_string()
            }
            "alpha_s" => model.alpha_s = num()?,
            "beta_bytes_per_s" => model.beta_bytes_per_s = num()?,
            "flops_per_s" => model.flops_per_s = num()?,
            other => return Err(invalid(format!("unknown field '{other}'"))),
        }
    }
    for (field, v) in [
        ("alpha_s", model.alpha_s),
        ("beta_bytes_per_s", model.beta_bytes_per_s),
        ("flops_per_s", model.flops_per_s),
    ] {
        if v.is_nan() {
            return Err(invalid(format!("missing field '{field}'")));
        }
        let ok = if field == "alpha_s" {
            v >= 0.0
        } else {
            v > 0.0
        };
        if !ok || !v.is_finite() {
            return Err(invalid(format!("field '{field}' = {v} is out of range")));
        }
    }
    Ok(model)
}

/// Loads a cost model from a TOML file (see [`parse_cost_model_toml`]).
pub fn load_cost_model_toml(path: &std::path::Path) -> Result<CostModel, CostError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CostError::Read {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    parse_cost_model_toml(&text, &p)
}

/// Ring volume in bytes each rank sends for a collective over a logical tensor of `bytes`.
pub fn ring_bytes(kind: CollectiveKind, bytes: u64, n: usize) -> f64 {
    let (b, n) = (bytes as f64, n as f64);
    match kind {
        CollectiveKind::AllReduce => 2.0 * (n - 1.0) / n * b,
        CollectiveKind::AllGather | CollectiveKind::ReduceScatter | CollectiveKind::Broadcast => {
            (n - 1.0) / n * b
        }
        CollectiveKind::AllToAll => (n - 1.0) / (n * n) * b,
    }
}

/// Model seconds of one collective over a logical tensor of `bytes` on `n` devices.
pub fn collective_seconds(model: &CostModel, kind: CollectiveKind, bytes: u64, n: usize) -> f64 {
    model.alpha_s + ring_bytes(kind, bytes, n) / model.beta_bytes_per_s
}

/// Model seconds of `flops` floating-point operations on one rank.
pub fn compute_seconds(model: &CostModel, flops: u64) -> f64 {
    flops as f64 / model.flops_per_s
}

/// Estimated FLOPs of `op` on the given (local) input and output shapes: the op's spec
/// ([`tessera_ir::spec::OpSpec::flops`], in its family file) says how.
///
/// MatMul/Gemm count 2·M·N·K; elementwise ops one per output element (GELU 8, Softmax 5,
/// LayerNorm 8, RMSNorm 5 per element); Attention 2·B·H·Sq·T·(Dk+Dv) plus 5 per score;
/// reductions one per input element; pure data movement zero.
pub fn op_flops(op: &Op, inputs: &[&[usize]], outputs: &[&[usize]]) -> u64 {
    op.spec().flops(inputs, outputs)
}

/// Estimated bytes `op` reads and writes on the given (local) inputs and outputs, for
/// memory-bound ops ([`tessera_ir::spec::OpSpec::bytes`]).
pub fn op_bytes(op: &Op, inputs: &[(DType, &[usize])], outputs: &[(DType, &[usize])]) -> u64 {
    op.spec().bytes(inputs, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_preset_override_and_custom() {
        let m = parse_cost_model_toml("preset = \"pcie\"\nalpha_s = 1e-5", "x.toml").unwrap();
        assert_eq!(m.name, "pcie");
        assert_eq!(m.alpha_s, 1e-5);
        assert_eq!(m.beta_bytes_per_s, 16e9);
        let c = parse_cost_model_toml(
            "alpha_s = 0.0\nbeta_bytes_per_s = 1e9\nflops_per_s = 1e12",
            "y",
        )
        .unwrap();
        assert_eq!(c.name, "custom");
        let e = parse_cost_model_toml("alpha_s = 0.0", "z.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("z.toml") && e.contains("beta_bytes_per_s"),
            "{e}"
        );
        assert!(parse_cost_model_toml("preset = \"foo\"", "p").is_err());
        assert!(parse_cost_model_toml("bogus = 1", "p")
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }

    #[test]
    fn ring_volumes() {
        assert_eq!(ring_bytes(CollectiveKind::AllReduce, 1000, 4), 1500.0);
        assert_eq!(ring_bytes(CollectiveKind::AllGather, 1000, 4), 750.0);
        assert_eq!(ring_bytes(CollectiveKind::AllToAll, 1600, 4), 300.0);
        let m = cpu();
        let s = collective_seconds(&m, CollectiveKind::AllReduce, 1000, 2);
        assert!((s - (2e-6 + 1000.0 / 10e9)).abs() < 1e-15);
    }
}
