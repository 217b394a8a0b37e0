//! `cargo xtask`: build `bertlab` and run the experiment pipelines.

fn main() {
    let pipelines = ["problem1", "problem2", "problem3", "all", "smoke"];
    eprintln!("cargo xtask: pipelines to come: {}", pipelines.join(", "));
}
