//! The packet tables on the oldest kernel cgnat supports: runs
//! `tests/oldkernel/run.sh`, which boots Debian's Linux 6.1 under qemu (TCG,
//! no KVM needed) from an initramfs holding the prog_run test executable,
//! and runs a representative subset of the prog_run tests (`tests/prog_run.rs`
//! and its tables in `tests/prog_run/`) there (the whole suite takes 8 to 11
//! minutes under TCG: see `FILTER` and docs/kernels.md). The current kernel
//! runs the whole prog_run suite itself.
//!
//! Needs root: the script installs qemu-system-x86, busybox-static, cpio
//! and bpftool with apt-get if missing, and downloads the kernel package
//! (kept in target/oldkernel/). Without root it prints a message and
//! returns, except under CI=true where it fails.
//!
//! Run: cargo test --release --test old_kernel -- --nocapture

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The prog_run tests run on 6.1 (libtest filters: names containing any
/// of them). Each loads the program with its own configuration, and the
/// verifier explores only the code that configuration leaves live:
/// translation: the NAT paths, FIB lookups, redirects and generated ICMP;
/// pool_modes: the port-block and deterministic programs, whose port
/// searches are their own code;
/// fragments: the fragment stash (bpf_xdp_load_bytes, live-frame reruns);
/// port_collisions: port allocation on collisions (map update errors);
/// malformed_and_other: the parser, with ICMP generation off;
/// mss_clamping: the bounded loop over TCP options;
/// quarantine: the in-kernel sweep (bpf/sweep.h) on 6.1: bpf_loop over
/// the session table's segments, bpf_for_each_map_elem over its own maps
/// and filter_addr, deleting and replacing what it walks.
/// The whole suite (18 tests) takes 8 to 11 minutes under TCG.
const FILTER: &str =
    "translation pool_modes fragments port_collisions malformed_and_other mss_clamping quarantine";

/// Limit for the VM (boot, load, tests). TCG verifies and runs the program
/// some 25 times slower than the host.
const VM_LIMIT: Duration = Duration::from_secs(480);

/// Limit for the whole script: installs, the kernel download, the cargo
/// check of the test executable, the initramfs, and the VM.
const SCRIPT_LIMIT: Duration = Duration::from_secs(900);

/// Every filter word names at least one `#[test]` of the prog_run tests
/// (tests/prog_run.rs and the modules in tests/prog_run/): a renamed test
/// must not drop its table from the 6.1 run unnoticed. (The script checks
/// the same against the test executable and the VM's output; this check
/// needs neither root nor qemu.)
#[test]
fn every_filter_selects_a_prog_run_test() {
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = vec![tests_dir.join("prog_run.rs")];
    let mut modules: Vec<_> = std::fs::read_dir(tests_dir.join("prog_run"))
        .expect("reading tests/prog_run/")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    modules.sort();
    files.extend(modules);
    let mut tests = Vec::new();
    for file in &files {
        let src = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let mut lines = src.lines();
        while let Some(l) = lines.next() {
            if l.trim() == "#[test]" {
                if let Some(name) = lines
                    .next()
                    .and_then(|f| f.trim().strip_prefix("fn "))
                    .and_then(|f| f.split('(').next())
                {
                    tests.push(name.to_owned());
                }
            }
        }
    }
    assert!(!tests.is_empty(), "no #[test] found in {files:?}");
    for f in FILTER.split_whitespace() {
        assert!(
            tests.iter().any(|t| t.contains(f)),
            "old_kernel filter {f:?} matches no prog_run test ({tests:?})"
        );
    }
}

#[test]
fn packet_tables_on_linux_6_1() {
    if !nix::unistd::geteuid().is_root() {
        cgnat_kit::testbed::cannot_run("old_kernel: needs root (apt-get, qemu, mknod)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/oldkernel/run.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .current_dir(root)
        .env("OLDKERNEL_FILTER", FILTER)
        .env("OLDKERNEL_TIMEOUT", VM_LIMIT.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The script builds the prog_run executable with cargo (a no-op
    // after `cargo test --release`), so that it is never a stale one.
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the script") {
            break Some(s);
        }
        if start.elapsed() > SCRIPT_LIMIT {
            // the script, qemu and anything else in its process group
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    print!("{err}{out}");
    let took = start.elapsed().as_secs();
    let Some(status) = status else {
        panic!(
            "{} did not finish within {SCRIPT_LIMIT:?}",
            script.display()
        );
    };
    println!("old_kernel: script exited with {status} after {took} s");
    assert!(
        status.success(),
        "the packet tables failed on Linux 6.1 (see the serial console above and \
         target/oldkernel/serial.log)"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("[oldkernel] PASS on 6.1.")),
        "the script exited 0 without its PASS line"
    );
}
