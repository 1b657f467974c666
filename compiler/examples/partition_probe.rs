//! Probe: time one partition of a GPT stack.
//! Args: layers devices [batch] [whole] — `whole` disables layer detection.
#[path = "../tests/partition_common/mod.rs"]
mod partition_common;
use tessera_compiler::partition::*;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let layers: usize = a.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let n: usize = a.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let bsz: usize = a.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let g = partition_common::gpt(layers, bsz, 16, 64, 8);
    let mut o = PartitionOptions::new(n);
    o.detect_layers = a.get(4).is_none_or(|s| s != "whole");
    if a.get(5).is_some_and(|s| s == "latency") {
        o.objective = ObjectiveKind::Latency;
    }
    let t = std::time::Instant::now();
    let p = partition(&g, &o).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{layers} layers, {n} devices: {:?} {:?}",
        t.elapsed(),
        p.timings
    );
    println!("{:?}\n{:?}", p.plan.search, p.plan.summary);
    println!("params {}", p.plan.estimates[0].param_bytes);
    if std::env::var_os("PROBE_LAYOUTS").is_some() {
        for (i, l) in p.plan.layouts.iter().enumerate() {
            if let Some(l) = l {
                print!("{}={} ", p.plan.graph.tensors[i].name, l);
            }
        }
        println!();
    }
}
