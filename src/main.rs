//! `tessera`: compile, inspect and draw partitioned plans.
fn main() {
    eprintln!("tessera: not implemented yet");
    std::process::exit(2);
}
