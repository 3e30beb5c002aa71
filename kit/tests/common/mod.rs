//! Helpers shared by the privileged integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use cgnat_kit::testbed::{Cgnat, Testbed, TestbedOptions};

/// The cgnat binary under test.
pub fn bin() -> &'static Path {
    cgnat_kit::cgnat_binary()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// True when this process can build a test bed (root, and the tools it
/// drives). Otherwise: under `CI=true` it panics (a test that cannot run
/// must fail there), elsewhere it prints why and returns false so that the
/// caller returns early.
pub fn require_root() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    for tool in [
        "ip",
        "ethtool",
        "sysctl",
        "ping",
        "nft",
        "iptables-save",
        "conntrack",
    ] {
        if !on_path(tool) {
            missing.push(format!("`{tool}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("privileged end-to-end test needs {}", missing.join(", "));
    cgnat_kit::testbed::cannot_run(&msg);
    false
}

/// A test bed with cgnat running in its router namespace.
///
/// On a panic in the test, its drop prints the daemon's log, `cgnat stats`
/// and the state of the router and switches. Fields drop in order: the
/// daemon stops before the namespaces go.
pub struct Env {
    pub cgnat: Option<Cgnat>,
    pub tb: Testbed,
    pub config: PathBuf,
    /// The router's ForwDatagrams once cgnat had attached.
    pub forw_before: u64,
}

impl Env {
    /// Builds a test bed, writes its config and starts cgnat (waiting for
    /// `attached`). `None` when the test cannot run here (see
    /// [`require_root`]).
    pub fn start() -> Option<Env> {
        Env::start_with(TestbedOptions::default(), |text| text)
    }

    /// [`Env::start`] on a test bed built with `options`, with the config
    /// text passed through `edit`.
    pub fn start_with(options: TestbedOptions, edit: impl FnOnce(String) -> String) -> Option<Env> {
        if !require_root() {
            return None;
        }
        let tb =
            Testbed::with_options(options).unwrap_or_else(|e| panic!("building the test bed: {e}"));
        let config = tb
            .write_config("cgnat.toml", &edit(tb.config_toml()))
            .expect("writing the config");
        let cgnat = tb
            .start_cgnat(bin(), &config, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("starting cgnat: {e}\n{}", tb.dump_state()));
        let forw_before = tb.forw_datagrams().expect("reading ForwDatagrams");
        Some(Env {
            cgnat: Some(cgnat),
            tb,
            config,
            forw_before,
        })
    }

    pub fn cgnat(&self) -> &Cgnat {
        self.cgnat.as_ref().expect("cgnat is running")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Some(c) = &self.cgnat {
            eprintln!("=== cgnat log ===\n{}", c.log());
            match c.stats_text() {
                Ok(s) => eprintln!("=== cgnat stats ===\n{s}"),
                Err(e) => eprintln!("=== cgnat stats failed: {e}"),
            }
        }
        eprintln!(
            "=== test bed {} ===\n{}",
            self.tb.id(),
            self.tb.dump_state()
        );
    }
}

/// Sets `key = value` (value as TOML text) in `[table]` of a config text:
/// replaces the key if the table has it, else adds it under the header;
/// appends the table if the text has none.
pub fn toml_set(text: &str, table: &str, key: &str, value: &str) -> String {
    let header = format!("[{table}]");
    let line = format!("{key} = {value}");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match lines.iter().position(|l| l.trim() == header) {
        Some(h) => {
            let end = lines[h + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map(|i| h + 1 + i)
                .unwrap_or(lines.len());
            let existing = (h + 1..end).find(|&i| {
                lines[i]
                    .trim_start()
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with('='))
            });
            match existing {
                Some(i) => lines[i] = line,
                None => lines.insert(h + 1, line),
            }
        }
        None => {
            lines.push(String::new());
            lines.push(header);
            lines.push(line);
        }
    }
    lines.join("\n") + "\n"
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
