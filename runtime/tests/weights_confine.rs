//! Weights are read only from the model's folder and only from regular files: a plan weight
//! entry naming an absolute path, a `..` path or a link out of the folder is refused, a
//! store made from a verified plan opens no file verification did not check, and a FIFO
//! (weight file or `.npy` input) is refused instead of blocking forever.
#[cfg(unix)]
#[path = "../../tests/shared/fifo.rs"]
mod fifo;

#[cfg(unix)]
use fifo::{mkfifo, within_timeout};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tessera_ir::plan::VerifiedFiles;
use tessera_ir::{DType, Weight, WeightData};
use tessera_runtime::npy::read_npy;
use tessera_runtime::weights::WeightStore;

fn weight(path: &str) -> Weight {
    Weight {
        perm: None,
        packed_bits: None,
        name: "emb".into(),
        dtype: DType::F32,
        shape: vec![2],
        data: WeightData::File {
            path: path.into(),
            offset: 0,
            length: 8,
        },
        quant: None,
    }
}

/// A folder `m/` with `model.onnx` and `w.bin`, and `secret.bin` beside it.
fn layout() -> (tempfile::TempDir, PathBuf) {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), [0u8; 16]).unwrap();
    std::fs::write(dir.join("w.bin"), [0u8; 8]).unwrap();
    std::fs::write(outer.path().join("secret.bin"), [1u8; 8]).unwrap();
    (outer, dir)
}

#[test]
fn weight_paths_are_confined_to_the_model_folder() {
    let (outer, dir) = layout();
    let store = WeightStore::open(&dir.join("model.onnx")).unwrap();
    assert!(store.load(&weight("w.bin"), None).is_ok());
    let abs = outer.path().join("secret.bin").display().to_string();
    for (location, why) in [
        (abs.as_str(), "absolute"),
        ("../secret.bin", "'..'"),
        ("sub/../../secret.bin", "'..'"),
    ] {
        let e = store.load(&weight(location), None).unwrap_err().to_string();
        assert!(e.contains("emb") && e.contains(why), "{e}");
        let e = store
            .load_resident(&weight(location), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outer.path().join("secret.bin"), dir.join("l.bin")).unwrap();
        let e = store.load(&weight("l.bin"), None).unwrap_err().to_string();
        assert!(e.contains("outside the model's folder"), "{e}");
    }
    assert_eq!(store.mapped_files(), 1);
}

#[test]
fn a_verified_store_opens_only_verified_files() {
    let (_outer, dir) = layout();
    let files = VerifiedFiles {
        model: dir.join("model.onnx"),
        weight_files: BTreeMap::from([("w.bin".to_string(), dir.join("w.bin"))]),
    };
    let store = WeightStore::verified(&files);
    assert!(store.load(&weight("w.bin"), None).is_ok());
    // model.onnx is in the folder, but verification did not check it as a weight file.
    let e = store
        .load(&weight("model.onnx"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not among the weight files"), "{e}");
}

/// The error `store` gives loading the weight file `pipe.bin`.
#[cfg(unix)]
fn pipe_error(store: WeightStore) -> String {
    store
        .load(&weight("pipe.bin"), None)
        .unwrap_err()
        .to_string()
}

#[cfg(unix)]
#[test]
fn fifos_are_refused_not_read() {
    let (_outer, dir) = layout();
    mkfifo(&dir.join("pipe.bin"));
    let d = dir.clone();
    let e = within_timeout(move || pipe_error(WeightStore::with_dir(&d)));
    assert!(
        e.contains("pipe.bin") && e.contains("not a regular file"),
        "{e}"
    );
    // Even a verified store re-checks the file when it opens it.
    let files = VerifiedFiles {
        model: dir.join("model.onnx"),
        weight_files: BTreeMap::from([("pipe.bin".to_string(), dir.join("pipe.bin"))]),
    };
    let e = within_timeout(move || pipe_error(WeightStore::verified(&files)));
    assert!(e.contains("not a regular file"), "{e}");
    let npy = dir.join("x.npy");
    mkfifo(&npy);
    let e = within_timeout(move || read_npy(&npy).unwrap_err().to_string());
    assert!(
        e.contains("x.npy") && e.contains("not a regular file"),
        "{e}"
    );
    let e = read_npy(&dir).unwrap_err().to_string();
    assert!(e.contains("directory"), "{e}");
}

/// Found by the plan_fields fuzz target: a weight whose `offset + length` overflows a u64
/// panicked while its error message was being written; a shape whose size overflows is
/// refused too.
#[test]
fn overflowing_offsets_and_shapes_are_errors() {
    let (_outer, dir) = layout();
    let store = WeightStore::with_dir(&dir);
    let mut w = weight("w.bin");
    w.data = WeightData::File {
        path: "w.bin".into(),
        offset: u64::MAX - 3,
        length: 8,
    };
    let msg = store.load(&w, None).unwrap_err().to_string();
    assert!(msg.contains("past the end of the file"), "{msg}");
    let mut w = weight("w.bin");
    w.shape = vec![1 << 62, 8];
    let msg = store.load(&w, None).unwrap_err().to_string();
    assert!(msg.contains("overflows"), "{msg}");
}
