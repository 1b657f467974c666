//! `tessera calibrate`: a quick CPU calibration writes a profile that loads, round-trips and
//! drives `compile --cost-model`; `--backend cuda` without a GPU backend is a clear error.
use std::process::Command;
use tessera_compiler::cost::{cost_model_toml, load_cost_model_toml, parse_cost_model_toml};
use tessera_ir::plan::{CollectiveKind, GemmClass};

#[test]
fn quick_cpu_calibration_writes_a_loadable_profile() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("profile.toml");
    let st = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "calibrate",
            "--backend",
            "cpu",
            "--devices",
            "2",
            "--quick",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let m = load_cost_model_toml(&out).unwrap();
    assert_eq!(m.name, "calibrated-cpu-2");
    let c = &m.calibration;
    for k in [
        CollectiveKind::AllReduce,
        CollectiveKind::AllGather,
        CollectiveKind::ReduceScatter,
        CollectiveKind::AllToAll,
        CollectiveKind::Broadcast,
    ] {
        let f = c.collectives[&k];
        assert!(f.alpha_s >= 0.0 && f.beta_bytes_per_s > 0.0, "{k:?}: {f:?}");
    }
    for class in GemmClass::ALL {
        let r = c.gemm_flops_per_s[&class];
        // Any CPU this runs on does between 1 MFLOP/s and 100 TFLOP/s per device.
        assert!(r > 1e6 && r < 1e14, "{class:?}: {r}");
    }
    assert!(c.mem_bytes_per_s.unwrap() > 1e6);
    let again = parse_cost_model_toml(&cost_model_toml(&m), "again").unwrap();
    assert_eq!(again, m);
}

#[test]
fn cuda_calibration_without_a_gpu_backend_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gpu.toml");
    let st = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["calibrate", "--backend", "cuda", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.starts_with("error: calibrate --backend cuda"), "{err}");
    assert!(err.contains("no CUDA GPU"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists());
}
