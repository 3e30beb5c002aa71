//! PLACEHOLDER (to be replaced by the demo implementation).
use std::path::Path;

pub fn run_demo(_bin: &Path) -> Result<(), String> {
    Err("demo not implemented yet".into())
}
