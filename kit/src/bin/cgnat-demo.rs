//! `cgnat-demo` (`make demo`): builds the network-namespace test bed, runs
//! the `cgnat` binary of this build in it and shows translated and
//! hairpinned traffic as the far end saw it; cleans up.
use std::process::ExitCode;

fn main() -> ExitCode {
    let bin = cgnat_kit::cgnat_binary();
    match cgnat_kit::demo::run_demo(bin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgnat-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
