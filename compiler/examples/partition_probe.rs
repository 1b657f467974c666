//! Probe: time one MLP partition.
#[path = "../tests/partition_common/mod.rs"]
mod partition_common;
fn main() {
    let g = partition_common::mlp(2, 16, 64, true);
    let t = std::time::Instant::now();
    let p = partition_common::run(&g, 4);
    println!("{:?} {:?} {:?}", t.elapsed(), p.timings, p.plan.search);
}
