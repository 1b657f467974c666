//! Probe: time one partition of a GPT stack (args: layers, devices, latency?).
#[path = "../tests/partition_common/mod.rs"]
mod partition_common;
use tessera_compiler::partition::*;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let layers: usize = a.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let n: usize = a.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let g = partition_common::gpt(layers, 1, 16, 64, 8);
    let mut o = PartitionOptions::new(n);
    if a.get(3).is_some() {
        o.memory_per_device = Some(a[3].parse().unwrap());
    }
    let t = std::time::Instant::now();
    let p = partition(&g, &o).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{:?} {:?}\n{:?}\n{:?}",
        t.elapsed(),
        p.timings,
        p.plan.search,
        p.plan.summary
    );
    println!("params {}", p.plan.estimates[0].param_bytes);
    for (i, l) in p.plan.layouts.iter().enumerate() {
        if let Some(l) = l {
            print!("{}={} ", p.plan.graph.tensors[i].name, l);
        }
    }
    println!();
}
