//! Packaging: the Debian package (`make deb`, packaging/build-deb.sh). The
//! container image has its own test (kit/tests/image.rs).
//!
//! `deb_package_installs_checks_and_purges` needs root and changes the real
//! system: it installs the package with `dpkg -i` and purges it at the end
//! (also when it fails). Under `CI=true` it fails rather than skips when it
//! cannot run. It also checks the unit's restart settings by section, and
//! that removing the package (prerm) detaches what a stopped daemon left
//! pinned. `daemon_warns_serves_metrics_and_exits_when_an_interface_is_deleted`
//! (root) runs the built daemon in a scratch namespace for the behaviour
//! the unit relies on.

use cgnat_kit::testbed::cannot_run;
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const TOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const UNIT: &str = "/lib/systemd/system/cgnat.service";
const CONF: &str = "/etc/cgnat.toml";
/// The cgnat binary under test (target/release/cgnat under
/// `cargo test --release`).
fn bin() -> &'static Path {
    cgnat_kit::cgnat_binary()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn command(argv: &[&str]) -> Command {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]).stdin(Stdio::null());
    c
}

fn output(argv: &[&str]) -> Output {
    command(argv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

fn show(argv: &[&str], out: &Output) -> String {
    format!(
        "{argv:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `argv`, panics unless it succeeds, returns its stdout.
fn run_ok(argv: &[&str]) -> String {
    let out = output(argv);
    assert!(out.status.success(), "{}", show(argv, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dpkg refuses to run while another dpkg or apt holds its lock: retry.
fn dpkg_ok(args: &[&str]) -> String {
    let mut argv = vec!["dpkg", "--force-confdef", "--force-confold"];
    argv.extend_from_slice(args);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = output(&argv);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("lock") && Instant::now() < deadline {
            thread::sleep(Duration::from_secs(2));
            continue;
        }
        panic!("{}", show(&argv, &out));
    }
}

fn is_installed(pkg: &str) -> bool {
    let out = output(&["dpkg-query", "-W", "-f=${Status}", pkg]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok installed")
}

/// The Debian packages that provide the shared libraries `exe` links, from
/// `ldd` and `dpkg -S`.
fn library_packages(exe: &Path) -> Result<BTreeSet<String>, String> {
    for tool in ["ldd", "dpkg"] {
        if !on_path(tool) {
            return Err(format!(
                "`{tool}` not found (Debian with libc-bin and dpkg)"
            ));
        }
    }
    let exe_s = exe.display().to_string();
    let ldd = run_ok(&["ldd", &exe_s]);
    let mut pkgs = BTreeSet::new();
    for line in ldd.lines() {
        let line = line.trim();
        assert!(!line.contains("not found"), "ldd {exe_s}: {line}");
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)" or "linux-vdso.so.1 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if !path.starts_with('/') {
            continue; // the vDSO
        }
        // dpkg knows the path a package ships, which on a merged-/usr
        // system may be the /lib or the /usr/lib spelling, or the target.
        let real = fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.to_owned());
        let mut candidates = vec![path.to_owned(), real.clone()];
        for p in [path, real.as_str()] {
            if let Some(rest) = p.strip_prefix("/usr") {
                candidates.push(rest.to_owned());
            } else {
                candidates.push(format!("/usr{p}"));
            }
        }
        let owner = candidates.iter().find_map(|c| {
            let out = output(&["dpkg", "-S", c]);
            if !out.status.success() {
                return None;
            }
            let s = String::from_utf8_lossy(&out.stdout);
            let first = s.lines().next()?;
            let pkg = first.split(':').next()?.trim();
            Some(pkg.to_owned())
        });
        let owner =
            owner.unwrap_or_else(|| panic!("no package owns {path} (tried {candidates:?})"));
        pkgs.insert(owner);
    }
    Ok(pkgs)
}

/// Purges cgnat on drop (also when the test fails) and puts back a
/// configuration that was there before the test.
struct Installed {
    saved_conf: Option<PathBuf>,
    purged: bool,
}

impl Installed {
    fn purge(&mut self) {
        if !self.purged {
            self.purged = true;
            dpkg_ok(&["--purge", "cgnat"]);
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            self.purged = true;
            let out = output(&["dpkg", "--purge", "cgnat"]);
            if !out.status.success() {
                eprintln!("cleanup: {}", show(&["dpkg", "--purge", "cgnat"], &out));
            }
        }
        if let Some(saved) = self.saved_conf.take() {
            if !Path::new(CONF).exists() {
                if let Err(e) = fs::rename(&saved, CONF) {
                    eprintln!("cleanup: restoring {CONF} from {}: {e}", saved.display());
                }
            }
        }
    }
}

/// A network namespace, deleted on drop.
struct Netns(&'static str);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = output(&["ip", "netns", "del", self.0]);
    }
}

/// A daemon process, killed on drop.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn wait_for(&mut self, what: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.log.push(l);
                    if hit {
                        return Ok(());
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "no \"{what}\" from the daemon within {timeout:?}; its output:\n{}",
                        self.log.join("\n")
                    ))
                }
            }
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `Key=value` entries of a systemd unit, in order (a key may repeat).
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Capability numbers (linux/capability.h) of the names the unit may use.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        _ => panic!("{name}: add it to cap_bit()"),
    }
}

fn cap_bnd(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd in status")
        .trim();
    u64::from_str_radix(hex, 16).expect("CapBnd is hex")
}

/// Runs the installed binary as the unit would: only the unit's bounding
/// set, no_new_privs, the file system read-only but for /proc and /sys
/// (ProtectSystem=strict with ReadWritePaths=/sys/fs/bpf /proc/sys/net), in
/// a scratch network namespace on veth pairs in generic XDP mode.
fn smoke_run_under_unit_limits(caps: &[String], tmp: &Path) {
    const NS: &str = "cgnat-pkgtest";
    let _ = output(&["ip", "netns", "del", NS]);
    run_ok(&["ip", "netns", "add", NS]);
    let _ns = Netns(NS);
    for (a, b) in [("pkin", "pkin-p"), ("pkex", "pkex-p")] {
        run_ok(&[
            "ip", "-n", NS, "link", "add", a, "type", "veth", "peer", "name", b,
        ]);
    }
    for l in ["lo", "pkin", "pkin-p", "pkex", "pkex-p"] {
        run_ok(&["ip", "-n", NS, "link", "set", l, "up"]);
    }
    // As under systemd (RequiresMountsFor=/sys/fs/bpf), the host's bpffs
    // is there before the daemon starts in its own mount namespace.
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let is_bpffs = nix::sys::statfs::statfs("/sys/fs/bpf")
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false);
    if !is_bpffs {
        run_ok(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"]);
    }
    let pin = "/sys/fs/bpf/cgnat-pkgtest";
    let shipped = fs::read_to_string(CONF).expect("reading the installed config");
    let cfg: String = shipped
        .lines()
        .map(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            match key {
                "internal" => "internal = \"pkin\"".to_owned(),
                "external" => "external = \"pkex\"".to_owned(),
                "xdp_mode" => "xdp_mode = \"generic\"".to_owned(),
                "max_sessions" => "max_sessions = 4096".to_owned(),
                "max_bindings" => "max_bindings = 4096".to_owned(),
                "pin_path" => format!("pin_path = \"{pin}\""),
                // the smoke run checks that nothing is left behind
                "detach_on_exit" => "detach_on_exit = true".to_owned(),
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg_path = tmp.join("smoke.toml");
    fs::write(&cfg_path, cfg).expect("writing the smoke config");
    let cfg_s = cfg_path.display().to_string();

    // The bounding set the unit gives, less what this process lacks itself.
    let ours = cap_bnd(std::process::id());
    let mut want = 0u64;
    let mut bset = String::from("-all");
    for c in caps {
        let bit = cap_bit(c);
        if ours & (1 << bit) != 0 {
            want |= 1 << bit;
            bset.push_str(&format!(
                ",+{}",
                c.trim_start_matches("CAP_").to_lowercase()
            ));
        } else {
            eprintln!("note: this process lacks {c}; smoke run without it");
        }
    }
    let mut child = command(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount -o remount,bind,ro / && exec \"$@\"",
        "sh",
        "setpriv",
        "--bounding-set",
        &bset,
        "--inh-caps",
        "-all",
        "--no-new-privs",
        "/usr/bin/cgnat",
        "--netns",
        NS,
        "--config",
        &cfg_s,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting the daemon");
    let (tx, rx) = mpsc::channel();
    for r in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
    }
    let mut d = Daemon {
        child,
        lines: rx,
        log: Vec::new(),
    };
    d.wait_for("attached;", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("smoke run: {e}"));
    let pid = d.child.id();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "cgnat", "the daemon is not the direct child");
    assert_eq!(cap_bnd(pid), want, "the daemon's bounding set");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status
            .lines()
            .any(|l| l.replace(char::is_whitespace, "") == "NoNewPrivs:1"),
        "no_new_privs is not set"
    );
    // The tables were pinned on the host's bpffs (visible outside the
    // daemon's mount namespace): `cgnat stats` reads them.
    let stats = run_ok(&["/usr/bin/cgnat", "--netns", NS, "--config", &cfg_s, "stats"]);
    assert!(!stats.trim().is_empty(), "cgnat stats printed nothing");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let st = d.wait_exit(Duration::from_secs(15));
    while let Ok(l) = d.lines.recv_timeout(Duration::from_millis(200)) {
        d.log.push(l);
    }
    assert!(
        st.is_some_and(|s| s.success()),
        "the daemon did not exit cleanly on SIGTERM ({st:?}):\n{}",
        d.log.join("\n")
    );
    assert!(!Path::new(pin).exists(), "{pin} left behind");
}

/// Starts `cmd` with its output collected line by line.
fn spawn_daemon(mut cmd: Command) -> Daemon {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the daemon");
    let (tx, rx) = mpsc::channel();
    for r in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
    }
    Daemon {
        child,
        lines: rx,
        log: Vec::new(),
    }
}

/// A scratch network namespace with the veth pairs pkin/pkin-p and
/// pkex/pkex-p, all up.
fn scratch_netns(ns: &'static str) -> Netns {
    let _ = output(&["ip", "netns", "del", ns]);
    run_ok(&["ip", "netns", "add", ns]);
    let guard = Netns(ns);
    for (a, b) in [("pkin", "pkin-p"), ("pkex", "pkex-p")] {
        run_ok(&[
            "ip", "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b,
        ]);
    }
    for l in ["lo", "pkin", "pkin-p", "pkex", "pkex-p"] {
        run_ok(&["ip", "-n", ns, "link", "set", l, "up"]);
    }
    guard
}

/// `text` (the shipped config) on pkin/pkex in generic mode, pinned at
/// `pin`; `metrics.listen` removed when `default_metrics`, so the daemon
/// uses its default.
fn scratch_config(text: &str, pin: &str, detach: bool, default_metrics: bool) -> String {
    text.lines()
        .filter(|l| !(default_metrics && l.trim_start().starts_with("listen")))
        .map(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            match key {
                "internal" => "internal = \"pkin\"".to_owned(),
                "external" => "external = \"pkex\"".to_owned(),
                "xdp_mode" => "xdp_mode = \"generic\"".to_owned(),
                "max_sessions" => "max_sessions = 4096".to_owned(),
                "max_bindings" => "max_bindings = 4096".to_owned(),
                "pin_path" => format!("pin_path = \"{pin}\""),
                "detach_on_exit" => format!("detach_on_exit = {detach}"),
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether process `pid` (in its network namespace) listens on TCP
/// `addr:port` (/proc/<pid>/net/tcp: local address as hex, state 0A).
fn listens(pid: u32, addr: [u8; 4], port: u16) -> bool {
    let want = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        addr[3], addr[2], addr[1], addr[0]
    );
    fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
}

/// The daemon as run from a world-writable config without [metrics]
/// listen: it warns about the config, serves metrics on 127.0.0.1:9469,
/// and when a NAT interface is deleted it exits with status 1 within about
/// a second (src/watch.rs polls once a second), with one error naming the
/// interface. Status 1 is what `Restart=on-failure` restarts (the unit's
/// StartLimitIntervalSec=0 keeps it restarting until the interface is
/// back; checked in `deb_package_installs_checks_and_purges`).
#[test]
fn daemon_warns_serves_metrics_and_exits_when_an_interface_is_deleted() {
    if !nix::unistd::geteuid().is_root() {
        return cannot_run("the daemon test needs root (XDP, network namespaces)");
    }
    const NS: &str = "cgnat-pkgexit";
    let _ns = scratch_netns(NS);
    let pin = "/sys/fs/bpf/cgnat-pkgexit";
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("packaging-exit");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).expect("creating the scratch directory");
    let shipped =
        fs::read_to_string(format!("{TOP}/configs/cgnat.toml")).expect("configs/cgnat.toml");
    let cfg = tmp.join("exit.toml");
    fs::write(&cfg, scratch_config(&shipped, pin, true, true)).expect("writing the config");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o666)).expect("chmod 666");
    let cfg_s = cfg.display().to_string();
    let bin_s = bin().display().to_string();

    let mut d = spawn_daemon(command(&[&bin_s, "--netns", NS, "--config", &cfg_s]));
    d.wait_for("attached;", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let warned = d
        .log
        .iter()
        .any(|l| l.contains("warning") && l.contains("world-writable") && l.contains(&cfg_s));
    assert!(
        warned,
        "no world-writable warning for a mode 666 config:\n{}",
        d.log.join("\n")
    );
    let pid = d.child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !listens(pid, [127, 0, 0, 1], 9469) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        listens(pid, [127, 0, 0, 1], 9469),
        "the daemon does not listen on 127.0.0.1:9469 by default:\n{}",
        fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default()
    );

    let t0 = Instant::now();
    run_ok(&["ip", "-n", NS, "link", "del", "pkex"]);
    let st = d.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    while let Ok(l) = d.lines.recv_timeout(Duration::from_millis(200)) {
        d.log.push(l);
    }
    let log = d.log.join("\n");
    let _ = output(&[&bin_s, "stop", "--detach", "--config", &cfg_s]);
    let st = st.unwrap_or_else(|| panic!("still running 10 s after pkex was deleted:\n{log}"));
    assert_eq!(
        st.code(),
        Some(1),
        "exit status after pkex was deleted:\n{log}"
    );
    // "about 1 s": one poll period, plus the loop's own latency
    assert!(
        took < Duration::from_millis(2500),
        "exited {took:?} after pkex was deleted (about 1 s documented):\n{log}"
    );
    let errors: Vec<&String> = d
        .log
        .iter()
        .filter(|l| l.contains("error") && l.contains("pkex"))
        .collect();
    assert_eq!(errors.len(), 1, "one error naming pkex expected:\n{log}");
    eprintln!(
        "exited with status 1 {took:?} after pkex was deleted: {}",
        errors[0]
    );
}

/// The installed daemon stops (SIGTERM) and leaves its programs and
/// tables pinned, as it does to keep forwarding; removing the package then
/// detaches them (prerm: `cgnat stop --detach`), so no NAT runs without its
/// daemon.
fn prerm_detaches_what_a_stopped_daemon_left() {
    const NS: &str = "cgnat-pkgprerm";
    let _ns = scratch_netns(NS);
    let pin = "/sys/fs/bpf/cgnat-pkgprerm";
    let shipped = fs::read_to_string(CONF).expect("reading the installed config");
    fs::write(CONF, scratch_config(&shipped, pin, false, false)).expect("writing the config");
    let mut d = spawn_daemon(command(&[
        "/usr/bin/cgnat",
        "--netns",
        NS,
        "--config",
        CONF,
    ]));
    d.wait_for("attached;", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("prerm run: {e}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let st = d.wait_exit(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "the daemon did not exit cleanly on SIGTERM ({st:?}):\n{}",
        d.log.join("\n")
    );
    let left = fs::read_dir(pin).map(|r| r.count()).unwrap_or(0);
    assert!(left > 0, "{pin}: nothing left pinned after SIGTERM");
    let link = run_ok(&["ip", "-n", NS, "link", "show", "pkin"]);
    assert!(
        link.contains("xdp"),
        "XDP not attached after the daemon stopped: {link}"
    );
    dpkg_ok(&["--remove", "cgnat"]);
    assert!(!Path::new(pin).exists(), "{pin} left behind by prerm");
    let link = run_ok(&["ip", "-n", NS, "link", "show", "pkin"]);
    assert!(
        !link.contains("xdp"),
        "XDP still attached after removal: {link}"
    );
}

#[test]
fn deb_package_installs_checks_and_purges() {
    if !nix::unistd::geteuid().is_root() {
        return cannot_run("the package test needs root (dpkg -i)");
    }
    for tool in ["dpkg-deb", "ip", "unshare", "setpriv"] {
        if !on_path(tool) {
            return cannot_run(&format!("the package test needs `{tool}`"));
        }
    }
    if !on_path("systemd-analyze") {
        // Works without systemd as PID 1.
        let out = output(&[
            "sh",
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
             -o DPkg::Lock::Timeout=120 systemd >/dev/null",
        ]);
        if !out.status.success() {
            return cannot_run(&format!(
                "systemd-analyze is missing and installing systemd failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("packaging");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).expect("creating the scratch directory");
    let tmp_s = tmp.display().to_string();

    // Build: the script `make deb` runs, on the binary of this test run.
    let script = format!("{TOP}/packaging/build-deb.sh");
    let bin_s = bin().display().to_string();
    let built = run_ok(&[&script, "--bin", &bin_s, "--out", &tmp_s]);
    let deb = built
        .lines()
        .last()
        .expect("build-deb.sh prints the package")
        .to_owned();
    let arch = run_ok(&["dpkg", "--print-architecture"]).trim().to_owned();
    let version = format!("{}-1", env!("CARGO_PKG_VERSION").replace('-', "~"));
    assert_eq!(
        Path::new(&deb).file_name().unwrap().to_string_lossy(),
        format!("cgnat_{version}_{arch}.deb")
    );

    // Inspect.
    let field = |f: &str| run_ok(&["dpkg-deb", "-f", &deb, f]).trim().to_owned();
    assert_eq!(field("Package"), "cgnat");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch);
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(
        field("Maintainer").contains('@'),
        "Maintainer without e-mail"
    );
    assert!(!field("Description").is_empty());
    let depends = field("Depends");
    let dep_pkgs: BTreeSet<String> = depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let libs = library_packages(bin()).unwrap_or_else(|e| panic!("{e}"));
    for p in libs.iter().map(String::as_str).chain(["procps"]) {
        assert!(dep_pkgs.contains(p), "Depends ({depends}) lacks {p}");
    }
    let conffiles = run_ok(&["dpkg-deb", "-I", &deb, "conffiles"]);
    assert_eq!(conffiles.trim(), CONF, "DEBIAN/conffiles");
    let listing = run_ok(&["dpkg-deb", "-c", &deb]);
    for f in [
        "./usr/bin/cgnat",
        "./etc/cgnat.toml",
        "./lib/systemd/system/cgnat.service",
        "./usr/share/doc/cgnat/README.md",
        "./usr/share/doc/cgnat/copyright",
        "./usr/share/doc/cgnat/changelog.Debian.gz",
        "./usr/share/doc/cgnat/cluster.md",
        "./usr/share/doc/cgnat/examples/cluster.toml",
        "./usr/share/doc/cgnat/examples/bird/node-common.conf",
        "./usr/share/doc/cgnat/examples/bird/access.conf",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {f}")))
            .unwrap_or_else(|| panic!("{f} not in the package:\n{listing}"));
        assert!(line.contains("root/root"), "{f} not owned by root: {line}");
    }

    // Install into this (disposable) system; purge at the end, whatever
    // happens.
    if is_installed("cgnat") {
        dpkg_ok(&["--purge", "cgnat"]);
    }
    let mut saved_conf = None;
    if Path::new(CONF).exists() {
        let saved = PathBuf::from(format!("{CONF}.packaging-test-saved"));
        fs::rename(CONF, &saved).expect("moving the existing config aside");
        saved_conf = Some(saved);
    }
    let mut installed = Installed {
        saved_conf,
        purged: false,
    };
    dpkg_ok(&["-i", &deb]);
    assert!(
        is_installed("cgnat"),
        "cgnat is not installed after dpkg -i"
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/cgnat.service").exists(),
        "installing the package enabled the unit"
    );
    let v = run_ok(&["/usr/bin/cgnat", "--version"]);
    assert!(
        v.contains(env!("CARGO_PKG_VERSION")),
        "cgnat --version: {v}"
    );
    let check = run_ok(&["/usr/bin/cgnat", "check", "--config", CONF]);
    assert!(check.contains(": ok"), "cgnat check: {check}");

    // The unit: what the daemon needs, and systemd accepts it.
    let unit = fs::read_to_string(UNIT).expect("reading the installed unit");
    let entries = unit_entries(&unit);
    let get = |k: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (k, v) in [
        ("Type", "simple"),
        ("User", "root"),
        (
            "ExecStartPre",
            "/usr/bin/cgnat check --config /etc/cgnat.toml",
        ),
        ("ExecStart", "/usr/bin/cgnat --config /etc/cgnat.toml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("RestartSec", "5"),
        ("StartLimitIntervalSec", "0"),
        ("RequiresMountsFor", "/sys/fs/bpf"),
        ("Wants", "network-online.target"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/sys/fs/bpf /proc/sys/net"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("LimitMEMLOCK", "infinity"),
        (
            "RestrictAddressFamilies",
            "AF_NETLINK AF_UNIX AF_INET AF_INET6 AF_PACKET",
        ),
        ("WantedBy", "multi-user.target"),
    ] {
        assert!(get(k).contains(&v), "{UNIT}: no {k}={v} (has {:?})", get(k));
    }
    // systemd reads the start limit from [Unit] and Restart= from
    // [Service]; in the wrong section either is ignored
    let section_of = |key: &str| -> Vec<String> {
        let mut sec = String::new();
        let mut out = Vec::new();
        for l in unit.lines().map(str::trim) {
            if l.starts_with('[') {
                sec = l.to_owned();
            } else if l.split('=').next().map(str::trim) == Some(key) {
                out.push(sec.clone());
            }
        }
        out
    };
    assert_eq!(section_of("StartLimitIntervalSec"), ["[Unit]"], "{UNIT}");
    assert_eq!(section_of("Restart"), ["[Service]"], "{UNIT}");
    assert_eq!(section_of("RestartSec"), ["[Service]"], "{UNIT}");
    let after = get("After").join(" ");
    assert!(after.contains("network-online.target"), "After={after}");
    let caps: Vec<String> = get("CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<&str> = [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SYS_ADMIN",
        "CAP_PERFMON",
        "CAP_SYS_RESOURCE",
    ]
    .into();
    assert_eq!(
        caps.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        want,
        "CapabilityBoundingSet"
    );
    let out = output(&["systemd-analyze", "verify", UNIT]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}",
        show(&["systemd-analyze", "verify", UNIT], &out)
    );
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("cgnat")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {ours:?}");

    smoke_run_under_unit_limits(&caps, &tmp);
    prerm_detaches_what_a_stopped_daemon_left();

    installed.purge();
    assert!(!is_installed("cgnat"), "cgnat still installed after purge");
    for f in ["/usr/bin/cgnat", CONF, UNIT] {
        assert!(!Path::new(f).exists(), "{f} left behind by dpkg --purge");
    }
    drop(installed);
}
