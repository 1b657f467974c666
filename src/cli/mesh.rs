//! `tessera compile --mesh DxT`: the mesh from `--devices` / `--mesh` and the batch axes
//! from `--batch-axis` (the import and the split are `tessera_compiler::partition::mesh`'s).
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tessera_ir::MAX_DEVICES;

/// The mesh `tessera compile` partitions for: `d` data groups of `t` devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshSpec {
    /// Data groups (1: plain tensor parallelism).
    pub d: usize,
    /// Devices per group.
    pub t: usize,
}

/// The mesh from `--devices` and/or `--mesh`, at most [`MAX_DEVICES`] devices in all (one
/// limit, in `tessera_ir`, shared with plan validation).
pub fn resolve_mesh(devices: Option<usize>, mesh: Option<&str>) -> Result<MeshSpec> {
    let from_mesh = match mesh {
        None => None,
        Some(spec) => {
            let dims: Vec<usize> = spec
                .split(['x', 'X'])
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("--mesh '{spec}': expected DxT or T, e.g. 2x4"))?;
            let (d, t) = match dims.as_slice() {
                [t] => (1, *t),
                [d, t] => (*d, *t),
                _ => bail!("--mesh '{spec}': expected DxT or T, e.g. 2x4"),
            };
            if d == 0 || t == 0 {
                bail!("--mesh {spec}: need at least one device on each axis");
            }
            match d.checked_mul(t) {
                Some(n) if n <= MAX_DEVICES => {}
                n => bail!(
                    "--mesh {spec}: {} devices is over the limit of {MAX_DEVICES} devices",
                    n.map_or(format!("{d}×{t}"), |n| n.to_string())
                ),
            }
            Some(MeshSpec { d, t })
        }
    };
    let spec = match (devices, from_mesh) {
        (Some(n), Some(m)) if n != m.d * m.t => bail!(
            "--devices {n} does not match --mesh {} ({} devices)",
            mesh.unwrap_or(""),
            m.d * m.t
        ),
        (_, Some(m)) => m,
        (Some(n), None) => MeshSpec { d: 1, t: n },
        (None, None) => bail!("the number of devices is missing: give --devices N (or --mesh DxT)"),
    };
    if spec.t == 0 {
        bail!("--devices 0: need at least one device");
    }
    if spec.t > MAX_DEVICES {
        bail!(
            "--devices {}: over the limit of {MAX_DEVICES} devices",
            spec.t
        );
    }
    Ok(spec)
}

/// `--batch-axis NAME=AXIS` or `NAME=none`.
pub fn parse_batch_axes(specs: &[String]) -> Result<BTreeMap<String, Option<usize>>> {
    let mut out = BTreeMap::new();
    for s in specs {
        let Some((name, axis)) = s.rsplit_once('=') else {
            bail!("--batch-axis '{s}': expected NAME=AXIS or NAME=none");
        };
        let axis = match axis.trim() {
            "none" => None,
            a => Some(a.parse::<usize>().map_err(|_| {
                anyhow::anyhow!("--batch-axis '{s}': expected NAME=AXIS or NAME=none")
            })?),
        };
        if out.insert(name.trim().to_string(), axis).is_some() {
            bail!("--batch-axis: input '{}' is given twice", name.trim());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meshes_and_device_counts() {
        let m = |d, t| MeshSpec { d, t };
        assert_eq!(resolve_mesh(Some(4), None).unwrap(), m(1, 4));
        assert_eq!(resolve_mesh(None, Some("1x8")).unwrap(), m(1, 8));
        assert_eq!(resolve_mesh(Some(8), Some("8")).unwrap(), m(1, 8));
        assert_eq!(resolve_mesh(Some(8), Some("2x4")).unwrap(), m(2, 4));
        assert_eq!(resolve_mesh(None, Some("4x2")).unwrap(), m(4, 2));
        assert!(resolve_mesh(Some(2), Some("1x4")).is_err());
        assert!(resolve_mesh(None, None).is_err());
        assert!(resolve_mesh(Some(0), None).is_err());
        assert!(resolve_mesh(None, Some("0x4")).is_err());
        assert!(resolve_mesh(None, Some("2x2x2")).is_err());
        assert_eq!(
            resolve_mesh(Some(MAX_DEVICES), None).unwrap().t,
            MAX_DEVICES
        );
        let err = |d, m| resolve_mesh(d, m).unwrap_err().to_string();
        assert_eq!(
            err(Some(4294967296), None),
            "--devices 4294967296: over the limit of 4096 devices"
        );
        assert_eq!(
            err(None, Some("1x1000000")),
            "--mesh 1x1000000: 1000000 devices is over the limit of 4096 devices"
        );
        assert_eq!(
            err(None, Some("64x128")),
            "--mesh 64x128: 8192 devices is over the limit of 4096 devices"
        );
        assert_eq!(
            err(None, Some("18446744073709551615x2")),
            "--mesh 18446744073709551615x2: 18446744073709551615×2 devices is over the limit of 4096 devices"
        );
    }

    #[test]
    fn batch_axes_parse() {
        let a = parse_batch_axes(&["x=1".into(), "pos=none".into()]).unwrap();
        assert_eq!(a["x"], Some(1));
        assert_eq!(a["pos"], None);
        assert!(parse_batch_axes(&["x".into()]).is_err());
        assert!(parse_batch_axes(&["x=first".into()]).is_err());
        assert!(parse_batch_axes(&["x=0".into(), "x=1".into()]).is_err());
    }
}
