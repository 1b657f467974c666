//! External data is confined like onnxruntime does: the location must be relative, have
//! no `..` component and, links resolved, name a regular file inside the model's folder;
//! a model that is not a regular file (a FIFO) is refused instead of blocking the import.
#[cfg(unix)]
#[path = "../../tests/shared/fifo.rs"]
mod fifo;
mod import_util;

#[cfg(unix)]
use fifo::{mkfifo, within_timeout};

use import_util::*;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{StringStringEntryProto, TensorProto};
use std::path::{Path, PathBuf};
use tessera_compiler::onnx::{import_bytes, import_model, ImportOptions};

/// A model whose initializer `E` (f32 [2]) is external data at `location`.
fn model(location: &str) -> ModelBuilder {
    let mut t = TensorProto::new();
    t.name = "E".into();
    t.data_type = FLOAT;
    t.dims = vec![2];
    t.data_location = DataLocation::EXTERNAL.into();
    let mut kv = StringStringEntryProto::new();
    kv.key = "location".into();
    kv.value = location.into();
    t.external_data.push(kv);
    let mut b = ModelBuilder::new(17);
    b.input("x", FLOAT, &[D::N(2)])
        .initializer(t)
        .node("Add", &["x", "E"], &["y"], vec![])
        .output("y");
    b
}

/// `outer/m/model.onnx` referencing `location`, with `outer/m/w/e.bin` and
/// `outer/secret.bin` on disk.
fn on_disk(outer: &Path, location: &str) -> PathBuf {
    let dir = outer.join("m");
    std::fs::create_dir_all(dir.join("w")).unwrap();
    std::fs::write(dir.join("w/e.bin"), [0u8; 8]).unwrap();
    std::fs::write(outer.join("secret.bin"), [1u8; 8]).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, model(location).bytes()).unwrap();
    path
}

fn import_err(path: &Path) -> String {
    match import_model(path, &ImportOptions::default()) {
        Ok(_) => panic!("{} imported", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn external_data_inside_the_model_folder_imports() {
    let outer = tempfile::tempdir().unwrap();
    let path = on_disk(outer.path(), "w/e.bin");
    assert!(import_model(&path, &ImportOptions::default()).is_ok());
}

#[test]
fn absolute_and_parent_locations_are_refused_naming_initializer_location_and_model() {
    let outer = tempfile::tempdir().unwrap();
    let secret = outer.path().join("secret.bin").display().to_string();
    for (location, why) in [
        (secret.as_str(), "is absolute"),
        ("../secret.bin", "'..' component"),
        ("w/../../secret.bin", "'..' component"),
    ] {
        let path = on_disk(outer.path(), location);
        let msg = import_err(&path);
        assert!(
            msg.contains("initializer 'E'")
                && msg.contains(&format!("location '{location}'"))
                && msg.contains("model.onnx")
                && msg.contains(why),
            "{msg}"
        );
        // Without a folder (bytes in memory) the lexical rule still holds.
        let msg = import_bytes(&model(location).bytes(), "t.onnx", &Default::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(why) && msg.contains("t.onnx"), "{msg}");
    }
    let path = on_disk(outer.path(), "w/none.bin");
    let msg = import_err(&path);
    assert!(
        msg.contains("none.bin") && msg.contains("cannot be resolved"),
        "{msg}"
    );
}

#[cfg(unix)]
#[test]
fn links_out_of_the_folder_fifos_and_directories_are_refused() {
    let outer = tempfile::tempdir().unwrap();
    let path = on_disk(outer.path(), "w/link.bin");
    let dir = outer.path().join("m");
    std::os::unix::fs::symlink(outer.path().join("secret.bin"), dir.join("w/link.bin")).unwrap();
    let msg = import_err(&path);
    assert!(msg.contains("outside the model's folder"), "{msg}");

    mkfifo(&dir.join("w/pipe.bin"));
    std::fs::write(&path, model("w/pipe.bin").bytes()).unwrap();
    let msg = within_timeout(move || import_err(&path));
    assert!(
        msg.contains("pipe.bin") && msg.contains("not a regular file"),
        "{msg}"
    );

    let path = dir.join("model.onnx");
    std::fs::write(&path, model("w").bytes()).unwrap();
    let msg = import_err(&path);
    assert!(
        msg.contains("not a regular file (it is a directory)"),
        "{msg}"
    );

    let fifo_model = dir.join("fifo.onnx");
    mkfifo(&fifo_model);
    let msg = within_timeout(move || import_err(&fifo_model));
    assert!(
        msg.contains("fifo.onnx") && msg.contains("not a regular file (it is a FIFO)"),
        "{msg}"
    );
}
