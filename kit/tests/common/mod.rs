//! Helpers shared by the end-to-end tests: the one test bed wrapper
//! ([`Bed`]) with its failure report, the root check, config editing and
//! polling.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use cgnat_kit::testbed::{Cgnat, Host, Testbed, TestbedOptions};

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

/// How long a `cgnat` command in the router namespace may take.
pub const CMD: Duration = Duration::from_secs(30);
/// How long cgnat may take to load and attach (its largest test tables, on
/// a loaded machine).
pub const START: Duration = Duration::from_secs(60);

/// The one test bed wrapper of the end-to-end tests: a [`Testbed`] and at
/// most one cgnat daemon at a time, started from a config of the test's
/// own (and stopped, killed, restarted or reloaded by the test).
///
/// On drop it stops the daemon and removes what it left pinned (`cgnat
/// stop --detach`). During a panic it first prints one failure report
/// ([`Bed::dump`]): the config, every daemon's log, `cgnat stats`, the
/// subscribers and sessions, and the state of the router and switches.
/// The daemon stops before the namespaces go.
pub struct Bed {
    pub daemon: Option<Cgnat>,
    /// Logs of the daemons stopped so far, in order.
    pub old_logs: Vec<String>,
    /// The config last started (empty before the first start).
    pub config: PathBuf,
    /// Its text.
    pub config_text: String,
    /// The router's ForwDatagrams once the first daemon had attached.
    pub forw_before: u64,
    /// Whether the drop runs `cgnat stop --detach` with [`Bed::config`].
    pub detach_at_end: bool,
    pub tb: Testbed,
}

impl Bed {
    /// A test bed with no daemon yet. `None` when the test cannot run here
    /// (see [`require_root`]).
    pub fn new() -> Option<Bed> {
        Bed::with_options(TestbedOptions::default())
    }

    /// [`Bed::new`] on a test bed built with `options`.
    pub fn with_options(options: TestbedOptions) -> Option<Bed> {
        if !require_root() {
            return None;
        }
        let tb =
            Testbed::with_options(options).unwrap_or_else(|e| panic!("building the test bed: {e}"));
        Some(Bed::on(tb))
    }

    /// A bed around a test bed the test built itself (no daemon yet).
    pub fn on(tb: Testbed) -> Bed {
        Bed {
            daemon: None,
            old_logs: Vec::new(),
            config: PathBuf::new(),
            config_text: String::new(),
            forw_before: 0,
            detach_at_end: false,
            tb,
        }
    }

    /// A test bed with cgnat running on its own config (see
    /// [`Bed::running_with`]).
    pub fn running() -> Option<Bed> {
        Bed::running_with(TestbedOptions::default(), |text| text)
    }

    /// A test bed built with `options`, with cgnat running on the test
    /// bed's config passed through `edit` (written as `cgnat.toml`).
    pub fn running_with(
        options: TestbedOptions,
        edit: impl FnOnce(String) -> String,
    ) -> Option<Bed> {
        let mut bed = Bed::with_options(options)?;
        let text = edit(bed.tb.config_toml());
        bed.start_text("cgnat.toml", &text);
        Some(bed)
    }

    /// Writes `text` as config `name` and starts cgnat on it.
    pub fn start_text(&mut self, name: &str, text: &str) -> &Cgnat {
        let config = self
            .tb
            .write_config(name, text)
            .unwrap_or_else(|e| panic!("writing {name}: {e}"));
        self.start(&config)
    }

    /// Starts cgnat with `config` and waits for its `attached` line.
    pub fn start(&mut self, config: &Path) -> &Cgnat {
        assert!(self.daemon.is_none(), "a daemon is already running");
        self.config = config.to_owned();
        self.config_text = std::fs::read_to_string(config).unwrap_or_default();
        self.detach_at_end = true;
        let c = self
            .tb
            .start_cgnat(bin(), config, START)
            .unwrap_or_else(|e| {
                panic!(
                    "starting cgnat with {}: {e}\n--- config ---\n{}\n{}",
                    config.display(),
                    self.config_text,
                    self.tb.dump_state()
                )
            });
        if self.old_logs.is_empty() {
            self.forw_before = self.tb.forw_datagrams().expect("reading ForwDatagrams");
        }
        self.daemon = Some(c);
        self.daemon.as_ref().expect("just started")
    }

    /// The running daemon.
    pub fn cgnat(&self) -> &Cgnat {
        self.daemon.as_ref().expect("cgnat is running")
    }

    /// The running daemon's pid.
    pub fn pid(&mut self) -> Pid {
        let pid = self
            .daemon
            .as_mut()
            .expect("cgnat is running")
            .process()
            .pid()
            .expect("daemon pid");
        Pid::from_raw(pid as i32)
    }

    /// Waits for the running daemon to exit (signalled or on its own, within
    /// `timeout`, else it is stopped); keeps its log. Returns the exit
    /// status and the log.
    pub fn reap(&mut self, timeout: Duration) -> (std::io::Result<ExitStatus>, String) {
        let mut c = self.daemon.take().expect("cgnat is running");
        let status = c
            .process()
            .stop(timeout)
            .map_err(|e| std::io::Error::other(e.to_string()));
        let log = c.log();
        self.old_logs.push(log.clone());
        (status, log)
    }

    /// SIGTERM; waits for the exit; returns its status and the whole log.
    pub fn stop(&mut self) -> (ExitStatus, String) {
        let (status, log) = self.reap(Duration::from_secs(15));
        (
            status.unwrap_or_else(|e| panic!("stopping cgnat: {e}")),
            log,
        )
    }

    pub fn signal(&mut self, sig: Signal) {
        let pid = self.pid();
        kill(pid, sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
    }

    /// True while the daemon process exists and is not a zombie.
    pub fn alive(&mut self) -> bool {
        let pid = self.pid();
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|st| st != "Z" && st != "X"),
            Err(_) => false,
        }
    }

    /// The running daemon's log so far.
    pub fn log(&self) -> String {
        self.cgnat().log()
    }

    /// `cgnat stats` as name -> packets.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.cgnat()
            .stats()
            .unwrap_or_else(|e| panic!("cgnat stats: {e}"))
            .into_iter()
            .map(|(k, (p, _))| (k, p))
            .collect()
    }

    /// `cgnat --config CONFIG ARGS...` in the router namespace.
    pub fn cli_with(&self, config: &Path, args: &[&str]) -> Output {
        let b = bin().display().to_string();
        let c = config.display().to_string();
        let mut argv = vec![b.as_str(), "--config", c.as_str()];
        argv.extend_from_slice(args);
        self.tb
            .exec_timeout(Host::Router, &argv, CMD)
            .unwrap_or_else(|e| panic!("running {argv:?}: {e}"))
    }

    /// [`Bed::cli_with`] that must succeed; returns stdout.
    pub fn cli_ok(&self, config: &Path, args: &[&str]) -> String {
        let out = self.cli_with(config, args);
        assert!(
            out.status.success(),
            "cgnat {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cgnat ARGS` with the config last started: (success, stdout +
    /// stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = self.cli_with(&self.config, args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The failure report: the config, every daemon's log, `cgnat stats`,
    /// subscribers and sessions (cut), and the test bed's state.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        if !self.config_text.is_empty() {
            s += &format!(
                "=== config {} ===\n{}\n",
                self.config.display(),
                self.config_text
            );
        }
        for (i, l) in self.old_logs.iter().enumerate() {
            s += &format!(
                "=== log of stopped cgnat #{} ===\n{}\n",
                i + 1,
                cut(l, 20000)
            );
        }
        if let Some(c) = &self.daemon {
            s += &format!(
                "=== log of the running cgnat ===\n{}\n",
                cut(&c.log(), 20000)
            );
            match c.stats_text() {
                Ok(t) => s += &format!("=== cgnat stats ===\n{t}\n"),
                Err(e) => s += &format!("=== cgnat stats failed: {e}\n"),
            }
        }
        if !self.config.as_os_str().is_empty() {
            for what in ["subscribers", "sessions"] {
                let out = self.cli_with(&self.config, &[what, "--json"]);
                s += &format!(
                    "=== cgnat {what} --json ===\n{}{}\n",
                    cut(&String::from_utf8_lossy(&out.stdout), 8000),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        s += &format!(
            "=== test bed {} ===\n{}",
            self.tb.id(),
            self.tb.dump_state()
        );
        s
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.dump());
        }
        if let Some(mut c) = self.daemon.take() {
            let _ = c.process().stop(Duration::from_secs(10));
        }
        // No panic here: this may run while unwinding.
        if self.detach_at_end {
            let b = bin().display().to_string();
            let c = self.config.display().to_string();
            let argv = [b.as_str(), "--config", c.as_str(), "stop", "--detach"];
            match self.tb.exec_timeout(Host::Router, &argv, CMD) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "clean-up: cgnat stop --detach failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("clean-up: cgnat stop --detach: {e}"),
            }
        }
    }
}

/// `s` cut to about `n` bytes (on a character boundary), saying how long
/// it was.
pub fn cut(s: &str, n: usize) -> String {
    let s = s.trim_end();
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes in all)", &s[..end], s.len())
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || f().then_some(())).is_some()
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
