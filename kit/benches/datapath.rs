//! `make bench` / `cargo bench --bench datapath`: the benchmark suite
//! (src/bench.rs). Needs root. Prints the table and writes
//! target/bench/summary.json (and summary.txt). Environment:
//! CGNAT_BENCH_ONLY=paths,newflows,sync,scale,e2e,tcp selects sections,
//! CGNAT_BENCH_PATHS=hairpin,icmp_err_in the cases of the paths section,
//! CGNAT_BENCH_SCALE_SUBS=N shrinks the large table,
//! CGNAT_BENCH_SYNC_SESSIONS=N sets the sync section's sessions,
//! CGNAT_BENCH_CONN_CLIENTS=N the TCP connection loops run at once,
//! CGNAT_BENCH_RUNS=N.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    // cargo passes `--bench`; there is nothing to filter.
    let params = cgnat_kit::bench::Params::full().with_env();
    let summary = match cgnat_kit::bench::run(&params) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let table = summary.table();
    println!("{table}");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cgnat_kit::repo_root().join("target"))
        .join("bench");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("summary.json"), summary.to_json()))
        .and_then(|()| std::fs::write(dir.join("summary.txt"), &table));
    match written {
        Ok(()) => println!("wrote {}", dir.join("summary.json").display()),
        Err(e) => {
            eprintln!("bench: writing {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if summary.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
