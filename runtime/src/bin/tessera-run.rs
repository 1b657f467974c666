//! `tessera-run`: executes a partitioned plan.
fn main() {
    eprintln!("tessera-run: not implemented yet");
    std::process::exit(2);
}
