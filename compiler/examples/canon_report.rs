//! Prints what canonicalisation did to a model: `cargo run -p tessera-compiler --example
//! canon_report -- MODEL.onnx [name=AxB ...]`.
use std::collections::BTreeMap;
use tessera_compiler::onnx::{import_model, ImportOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: canon_report MODEL.onnx [name=AxB ...]");
        std::process::exit(2);
    };
    let mut input_shapes = BTreeMap::new();
    for a in &args[1..] {
        if let Some((n, s)) = a.split_once('=') {
            let dims = s.split('x').filter_map(|d| d.parse().ok()).collect();
            input_shapes.insert(n.to_string(), dims);
        }
    }
    let t = std::time::Instant::now();
    match import_model(
        std::path::Path::new(path),
        &ImportOptions {
            input_shapes,
            canon: tessera_compiler::onnx::CanonConfig {
                enabled: std::env::var("CANON_OFF").is_err(),
                ..Default::default()
            },
        },
    ) {
        Ok(m) => {
            println!("import {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
            println!(
                "{}",
                serde_json::to_string_pretty(&m.report.canon).unwrap_or_default()
            );
            match tessera_compiler::partition::layers::detect(&m.graph) {
                Some(l) => println!(
                    "layers: {} × {} nodes",
                    l.info.count, l.info.nodes_per_layer
                ),
                None => println!("layers: none found"),
            }
            if std::env::var("CANON_NODES").is_ok() {
                for n in &m.graph.nodes {
                    let ins: Vec<String> = n
                        .inputs
                        .iter()
                        .map(|t| m.graph.tensor(*t).name.clone())
                        .collect();
                    println!("{} {} <- {:?}", n.name, n.op.name(), ins);
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
