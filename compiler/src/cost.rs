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
//!
//! On a 2-D `[D, T]` mesh the links inside a data group (`alpha_s`, `beta_bytes_per_s`) and
//! the links across groups ([`CostModel::inter_group`], [`inter_group_link`]) are told
//! apart: a collective over ranks of several groups would cost
//! [`collective_seconds_across_groups`]. The forward pass of a data × tensor plan has none
//! (its collectives stay inside each group), which `tessera inspect` reports.
use tessera_ir::plan::CollectiveKind;
pub use tessera_ir::plan::{Calibration, CostModel, GemmClass, LinkFit};
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
///
/// Sources: NVIDIA A100 datasheet (2021): NVLink 3 at 600 GB/s total per GPU, 312 TFLOP/s
/// BF16 dense tensor-core peak; nccl-tests `all_reduce_perf` on a DGX A100 reports a bus
/// bandwidth of about 230 GB/s for large messages and a few µs for small ones. The preset
/// takes 150 GB/s (large but not asymptotic messages), 5 µs, and a third of the BF16 peak
/// (the utilisation of a tensor-parallel layer's GEMMs at moderate sizes).
pub fn nvlink() -> CostModel {
    CostModel {
        name: "nvlink".into(),
        alpha_s: 5e-6,
        beta_bytes_per_s: 150e9,
        flops_per_s: 100e12,
        calibration: Calibration::default(),
        inter_group: Some(INFINIBAND_HDR),
    }
}

/// The links between machines of NVLink-class GPUs (the `nvlink` preset's data-group links):
/// 10 µs latency, 20 GB/s.
///
/// Sources: NVIDIA DGX A100 user guide: one 200 Gb/s HDR InfiniBand adapter (ConnectX-6) per
/// GPU, 25 GB/s line rate; nccl-tests across nodes report about 20 GB/s of bus bandwidth per
/// GPU for large all-reduces and about 10 µs for small ones.
pub const INFINIBAND_HDR: LinkFit = LinkFit {
    alpha_s: 10e-6,
    beta_bytes_per_s: 20e9,
};

/// PCIe-connected GPUs: 10 µs latency, 16 GB/s, 50 TFLOP/s.
///
/// Sources: PCI-SIG PCIe 4.0 x16 at 32 GB/s per direction (nccl-tests over PCIe without
/// NVLink report 12-20 GB/s bus bandwidth for all-reduce, about half of it); NVIDIA A10 / L4
/// class datasheets: 125 / 121 TFLOP/s FP16 dense tensor peak, of which the preset takes
/// about 40 %.
pub fn pcie() -> CostModel {
    CostModel {
        name: "pcie".into(),
        alpha_s: 10e-6,
        beta_bytes_per_s: 16e9,
        flops_per_s: 50e12,
        calibration: Calibration::default(),
        inter_group: None,
    }
}

/// Hosts over ethernet: 50 µs latency, 1.25 GB/s (10 GbE), 1 TFLOP/s.
///
/// Sources: IEEE 802.3ae 10 GbE line rate (10 Gbit/s = 1.25 GB/s); tens of µs of TCP
/// round-trip latency; 1 TFLOP/s is a multi-core server CPU's FP32 AVX-512 rate.
pub fn ethernet() -> CostModel {
    CostModel {
        name: "ethernet".into(),
        alpha_s: 50e-6,
        beta_bytes_per_s: 1.25e9,
        flops_per_s: 1e12,
        calibration: Calibration::default(),
        inter_group: None,
    }
}

/// CPU threads sharing memory: 2 µs latency, 10 GB/s, 50 GFLOP/s per device. `tessera
/// calibrate --backend cpu` measures the machine instead.
pub fn cpu() -> CostModel {
    CostModel {
        name: "cpu".into(),
        alpha_s: 2e-6,
        beta_bytes_per_s: 10e9,
        flops_per_s: 50e9,
        calibration: Calibration::default(),
        inter_group: None,
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
/// Optional measured fields (what `tessera calibrate` writes): `mem_bytes_per_s`,
/// `op_overhead_s`, a table `[collectives.KIND]` of `alpha_s` and `beta_bytes_per_s` per
/// collective kind (`all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`,
/// `broadcast`), and a table `[gemm_flops_per_s]` keyed by GEMM class (`skinny`, `small`,
/// `medium`, `large`), and a table `[inter_group]` of `alpha_s` and `beta_bytes_per_s`: the
/// links between the data groups of a 2-D mesh. Errors name the file and the field.
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
            calibration: Calibration::default(),
            inter_group: None,
        },
    };
    let num = |key: &str, value: &toml::Value, zero_ok: bool| -> Result<f64, CostError> {
        let v = match value {
            toml::Value::Float(f) => *f,
            toml::Value::Integer(i) => *i as f64,
            _ => return Err(invalid(format!("field '{key}' must be a number"))),
        };
        let ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
        if !ok || !v.is_finite() {
            return Err(invalid(format!("field '{key}' = {v} is out of range")));
        }
        Ok(v)
    };
    let sub = |key: &str, value: &toml::Value| -> Result<toml::Table, CostError> {
        value
            .as_table()
            .cloned()
            .ok_or_else(|| invalid(format!("field '{key}' must be a table")))
    };
    // A latency/bandwidth table `[prefix]`: exactly `alpha_s` and `beta_bytes_per_s`.
    let link_fit = |prefix: &str, value: &toml::Value| -> Result<LinkFit, CostError> {
        let fit = sub(prefix, value)?;
        let field = |f: &str, zero_ok: bool| {
            let name = format!("{prefix}.{f}");
            fit.get(f)
                .ok_or_else(|| invalid(format!("missing field '{name}'")))
                .and_then(|v| num(&name, v, zero_ok))
        };
        if let Some(extra) = fit
            .keys()
            .find(|f| *f != "alpha_s" && *f != "beta_bytes_per_s")
        {
            return Err(invalid(format!("unknown field '{prefix}.{extra}'")));
        }
        Ok(LinkFit {
            alpha_s: field("alpha_s", true)?,
            beta_bytes_per_s: field("beta_bytes_per_s", false)?,
        })
    };
    for (key, value) in &table {
        match key.as_str() {
            "preset" => {}
            "name" => {
                model.name = value
                    .as_str()
                    .ok_or_else(|| invalid("field 'name' must be a string".into()))?
                    .to_string()
            }
            "alpha_s" => model.alpha_s = num(key, value, true)?,
            "beta_bytes_per_s" => model.beta_bytes_per_s = num(key, value, false)?,
            "flops_per_s" => model.flops_per_s = num(key, value, false)?,
            "mem_bytes_per_s" => model.calibration.mem_bytes_per_s = Some(num(key, value, false)?),
            "op_overhead_s" => model.calibration.op_overhead_s = num(key, value, true)?,
            "inter_group" => model.inter_group = Some(link_fit(key, value)?),
            "collectives" => {
                for (kind, fit) in sub(key, value)? {
                    let k = collective_kind(&kind).ok_or_else(|| {
                        invalid(format!("unknown collective 'collectives.{kind}'"))
                    })?;
                    let lf = link_fit(&format!("collectives.{kind}"), &fit)?;
                    model.calibration.collectives.insert(k, lf);
                }
            }
            "gemm_flops_per_s" => {
                for (class, rate) in sub(key, value)? {
                    let c = GemmClass::ALL
                        .into_iter()
                        .find(|c| c.as_str() == class)
                        .ok_or_else(|| {
                            invalid(format!("unknown GEMM class 'gemm_flops_per_s.{class}' (expected skinny, small, medium or large)"))
                        })?;
                    let v = num(&format!("gemm_flops_per_s.{class}"), &rate, false)?;
                    model.calibration.gemm_flops_per_s.insert(c, v);
                }
            }
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
    }
    Ok(model)
}

fn collective_kind(name: &str) -> Option<CollectiveKind> {
    [
        CollectiveKind::AllReduce,
        CollectiveKind::AllGather,
        CollectiveKind::ReduceScatter,
        CollectiveKind::AllToAll,
        CollectiveKind::Broadcast,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// Writes a cost model as TOML that [`parse_cost_model_toml`] reads back to the same model.
pub fn cost_model_toml(model: &CostModel) -> String {
    let mut out = String::new();
    let name = toml::Value::String(model.name.clone());
    out += &format!("name = {name}\n");
    out += &format!("alpha_s = {:e}\n", model.alpha_s);
    out += &format!("beta_bytes_per_s = {:e}\n", model.beta_bytes_per_s);
    out += &format!("flops_per_s = {:e}\n", model.flops_per_s);
    let c = &model.calibration;
    if let Some(m) = c.mem_bytes_per_s {
        out += &format!("mem_bytes_per_s = {m:e}\n");
    }
    if c.op_overhead_s != 0.0 {
        out += &format!("op_overhead_s = {:e}\n", c.op_overhead_s);
    }
    if !c.gemm_flops_per_s.is_empty() {
        out += "\n[gemm_flops_per_s]\n";
        for (k, v) in &c.gemm_flops_per_s {
            out += &format!("{} = {v:e}\n", k.as_str());
        }
    }
    for (k, f) in &c.collectives {
        out += &format!(
            "\n[collectives.{}]\nalpha_s = {:e}\nbeta_bytes_per_s = {:e}\n",
            k.as_str(),
            f.alpha_s,
            f.beta_bytes_per_s
        );
    }
    if let Some(f) = &model.inter_group {
        out += &format!(
            "\n[inter_group]\nalpha_s = {:e}\nbeta_bytes_per_s = {:e}\n",
            f.alpha_s, f.beta_bytes_per_s
        );
    }
    out
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
/// A calibrated kind uses its own measured latency and bandwidth.
pub fn collective_seconds(model: &CostModel, kind: CollectiveKind, bytes: u64, n: usize) -> f64 {
    let (alpha, beta) = match model.calibration.collectives.get(&kind) {
        Some(f) => (f.alpha_s, f.beta_bytes_per_s),
        None => (model.alpha_s, model.beta_bytes_per_s),
    };
    alpha + ring_bytes(kind, bytes, n) / beta
}

/// The links between data groups: [`CostModel::inter_group`], or the links inside a group
/// when the model does not tell them apart.
pub fn inter_group_link(model: &CostModel) -> LinkFit {
    model.inter_group.unwrap_or(LinkFit {
        alpha_s: model.alpha_s,
        beta_bytes_per_s: model.beta_bytes_per_s,
    })
}

/// Model seconds of one collective whose `n` members span several data groups: the ring
/// runs at the speed of its slowest hop, the link across groups.
pub fn collective_seconds_across_groups(
    model: &CostModel,
    kind: CollectiveKind,
    bytes: u64,
    n: usize,
) -> f64 {
    let l = inter_group_link(model);
    l.alpha_s + ring_bytes(kind, bytes, n) / l.beta_bytes_per_s
}

/// Model seconds of `flops` floating-point operations on one rank.
pub fn compute_seconds(model: &CostModel, flops: u64) -> f64 {
    flops as f64 / model.flops_per_s
}

/// What one op does on one rank, for [`op_seconds`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpWork {
    /// FLOPs.
    pub flops: u64,
    /// Bytes read and written.
    pub bytes: u64,
    /// The GEMM's `(M, N, K)` (batch folded into M) when the op is a matrix product.
    pub gemm: Option<(usize, usize, usize)>,
}

/// Model seconds of one op on one rank: the op overhead plus the larger of its compute
/// time (FLOPs at the rate of its GEMM class, or `flops_per_s`) and its memory time (bytes at
/// `mem_bytes_per_s`, when calibrated) — a roofline: an op is bound by one or the other.
/// Uncalibrated models reduce to `FLOPs / flops_per_s`.
pub fn op_seconds(model: &CostModel, w: OpWork) -> f64 {
    let c = &model.calibration;
    let rate = w
        .gemm
        .and_then(|(m, n, k)| c.gemm_flops_per_s.get(&GemmClass::of(m, n, k)).copied())
        .unwrap_or(model.flops_per_s);
    let compute = w.flops as f64 / rate;
    let memory = c.mem_bytes_per_s.map_or(0.0, |bw| w.bytes as f64 / bw);
    c.op_overhead_s + compute.max(memory)
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
    fn calibrated_profile_round_trips_and_errors_name_the_field() {
        let text = "name = \"lab\"\nalpha_s = 1e-5\nbeta_bytes_per_s = 2e9\nflops_per_s = 3e10\n\
                    mem_bytes_per_s = 8e9\nop_overhead_s = 4e-7\n[gemm_flops_per_s]\nlarge = 5e10\n\
                    [collectives.all_gather]\nalpha_s = 7e-6\nbeta_bytes_per_s = 3e9\n";
        let m = parse_cost_model_toml(text, "lab.toml").unwrap();
        assert_eq!(m.calibration.mem_bytes_per_s, Some(8e9));
        assert_eq!(m.calibration.gemm_flops_per_s[&GemmClass::Large], 5e10);
        let back = parse_cost_model_toml(&cost_model_toml(&m), "again.toml").unwrap();
        assert_eq!(back, m);
        // The all-gather uses its own fit, the all-reduce the base numbers.
        let ag = collective_seconds(&m, CollectiveKind::AllGather, 1000, 2);
        assert!((ag - (7e-6 + 500.0 / 3e9)).abs() < 1e-15);
        let ar = collective_seconds(&m, CollectiveKind::AllReduce, 1000, 2);
        assert!((ar - (1e-5 + 1000.0 / 2e9)).abs() < 1e-15);
        // Roofline: a large GEMM at its class rate; an elementwise op at memory bandwidth.
        let g = OpWork {
            flops: 2 * 512 * 512 * 1024,
            bytes: 0,
            gemm: Some((512, 512, 1024)),
        };
        assert!((op_seconds(&m, g) - (4e-7 + g.flops as f64 / 5e10)).abs() < 1e-15);
        let e = OpWork {
            flops: 1000,
            bytes: 8e6 as u64,
            gemm: None,
        };
        assert!((op_seconds(&m, e) - (4e-7 + 1e-3)).abs() < 1e-15);
        for (bad, field) in [
            (
                "[collectives.all_gather]\nalpha_s = 1e-6",
                "collectives.all_gather.beta_bytes_per_s",
            ),
            (
                "[collectives.all_gather]\nalpha_s = \"x\"\nbeta_bytes_per_s = 1",
                "collectives.all_gather.alpha_s",
            ),
            (
                "[collectives.gossip]\nalpha_s = 1\nbeta_bytes_per_s = 1",
                "collectives.gossip",
            ),
            ("[gemm_flops_per_s]\nhuge = 1e9", "gemm_flops_per_s.huge"),
            ("[gemm_flops_per_s]\nlarge = -1", "gemm_flops_per_s.large"),
            ("mem_bytes_per_s = 0", "mem_bytes_per_s"),
        ] {
            let e = parse_cost_model_toml(&format!("preset = \"cpu\"\n{bad}"), "p.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("p.toml") && e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn old_three_number_files_load_unchanged() {
        let m = parse_cost_model_toml(
            "name = \"old\"\nalpha_s = 2e-6\nbeta_bytes_per_s = 1e10\nflops_per_s = 5e10\n",
            "old.toml",
        )
        .unwrap();
        assert!(m.calibration.is_empty());
        let w = OpWork {
            flops: 1_000_000,
            bytes: 1 << 30,
            gemm: Some((100, 100, 50)),
        };
        assert_eq!(op_seconds(&m, w), compute_seconds(&m, 1_000_000));
    }

    #[test]
    fn links_across_data_groups_are_their_own() {
        // A profile that tells the group's links from the links across groups round-trips,
        // and a collective across groups runs at the slower link.
        let text = "preset = \"cpu\"\n[inter_group]\nalpha_s = 5e-5\nbeta_bytes_per_s = 1e9\n";
        let m = parse_cost_model_toml(text, "two.toml").unwrap();
        let l = inter_group_link(&m);
        assert_eq!((l.alpha_s, l.beta_bytes_per_s), (5e-5, 1e9));
        let back = parse_cost_model_toml(&cost_model_toml(&m), "again.toml").unwrap();
        assert_eq!(back, m);
        let inside = collective_seconds(&m, CollectiveKind::AllReduce, 1000, 2);
        let across = collective_seconds_across_groups(&m, CollectiveKind::AllReduce, 1000, 2);
        assert!((inside - (2e-6 + 1000.0 / 10e9)).abs() < 1e-15);
        assert!((across - (5e-5 + 1000.0 / 1e9)).abs() < 1e-15);
        // Without the table both are the same links; nvlink's preset has the network's.
        let c = inter_group_link(&cpu());
        assert_eq!((c.alpha_s, c.beta_bytes_per_s), (2e-6, 10e9));
        assert_eq!(nvlink().inter_group, Some(INFINIBAND_HDR));
        for bad in [
            "[inter_group]\nalpha_s = 1e-6",
            "[inter_group]\nalpha_s = 1\nbeta_bytes_per_s = 1\nhops = 2",
        ] {
            let e = parse_cost_model_toml(&format!("preset = \"cpu\"\n{bad}"), "p.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("p.toml") && e.contains("inter_group."),
                "{bad}: {e}"
            );
        }
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
