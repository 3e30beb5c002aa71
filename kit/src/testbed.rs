//! A network-namespace test bed for cgnat: two subscribers, a router that
//! runs the NAT, three external hosts, and the helpers that drive traffic
//! through it and report what the far end actually saw.
//!
//! ```text
//!  s1 (100.64.0.11/10) \                                          / e1 (198.51.100.10/24, .11/24)
//!                       >- br0 [si] -- int0 [r] ext0 -- br0 [se] -<  e2 (198.51.100.20/24)
//!  s2 (100.64.0.12/10) /                                          \ e3 (198.51.100.30/24)
//!  router r: int0 = 100.64.0.1/10, ext0 = 198.51.100.1/24, ip_forward = 0
//! ```
//!
//! Every host's interface is `eth0`; the switch namespaces `si` and `se`
//! hold a bridge `br0` whose ports are the veth peers, named after the host
//! they lead to (`s1`, `s2`, `e1`, `e2`, `e3`, and `r` for the router).
//! Namespaces are called `cg<pid>x<n>-<host>`, so test beds of parallel
//! tests (and parallel test processes) never collide; no interface is ever
//! created in the caller's namespace.
//!
//! Hosts send full checksums (`ethtool -K eth0 tx off`) and verify the ones
//! they receive themselves (`rx off`), so a packet whose checksum the NAT
//! broke is dropped by the receiving host, whatever the veths and GRO on the
//! way concluded about it.
//! The switch-side peers of `int0` and `ext0` have GRO on and an XDP
//! program that passes everything. A veth only accepts frames that XDP
//! redirects to it (`ndo_xdp_xmit`) when its peer runs NAPI, which GRO or an
//! XDP program turns on; but after XDP_TX the kernel (`veth_xdp_flush`, as of
//! 6.18) wakes the peer only if the peer has an XDP program, so with GRO
//! alone hairpinned frames stay queued until some redirected frame happens
//! to wake the peer. [`TestbedOptions::peer_xdp_pass`] turns that off.
//!
//! The BPF pins of the daemon go to a bpffs the test bed mounts in its own
//! work directory ([`Testbed::pin_path`]): `ip netns exec` mounts a fresh
//! sysfs on `/sys`, which hides any bpffs at `/sys/fs/bpf`, so pins there
//! would not be shared between `cgnat` and a later `cgnat stats`.
//!
//! # API in short
//! * [`Testbed::new`] builds everything; dropping it deletes it (also during
//!   a panic). [`cleanup_stale`] removes what crashed runs left behind.
//! * [`Testbed::ns`], [`Testbed::exec`], [`Testbed::run`],
//!   [`Testbed::spawn`] run commands in a namespace; [`Testbed::in_ns`] runs
//!   a closure on a thread that entered the namespace (sockets created there
//!   stay in it).
//! * Traffic: [`UdpReflector`] + [`udp_exchange`], [`udp_send_until_received`],
//!   [`TcpServer`] + [`Testbed::tcp_upload`] / [`Testbed::tcp_download`] /
//!   [`Testbed::tcp_connect`] + [`tcp_whoami`], [`Testbed::ping`],
//!   [`Sniffer`] (what a host's `eth0` saw, from an AF_PACKET socket).
//! * Router observations: [`Testbed::forw_datagrams`],
//!   [`Testbed::kernel_bypass_report`], [`Testbed::xdp_mode`],
//!   [`Testbed::dump_state`].
//! * The daemon: [`Testbed::config_toml`], [`Testbed::write_config`],
//!   [`Testbed::start_cgnat`] → [`Cgnat`] (logs, `stats`, clean stop).
//!
//! Everything is bounded in time: commands, socket reads and waits all have
//! timeouts and end in [`TestbedError`] rather than hanging.
//!
//! The topology (addresses, [`Host`], namespace names, [`config_toml`])
//! lives in `testbed/topology.rs`; traffic, capture and parsing helpers in
//! the other files of `testbed/`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use crate::floor::PassLink;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;

/// Is this a CI run (`CI` set to anything non-empty)? There every test
/// must run: one that cannot is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A test that cannot run here: under CI it panics with `why`; elsewhere it
/// prints `SKIPPED: why` and the caller returns. The one place every
/// privileged test decides this.
pub fn cannot_run(why: &str) {
    if in_ci() {
        panic!("{why} (CI: failing rather than skipping)");
    }
    eprintln!("SKIPPED: {why}");
}

/// Errors of the test bed; each names what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("cannot start `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("`{cmd}` did not finish within {timeout:?}")]
    CommandTimeout { cmd: String, timeout: Duration },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{context}: {source}")]
    Sys { context: String, source: nix::Error },
    #[error("timed out after {timeout:?}: {what}")]
    Timeout { what: String, timeout: Duration },
    #[error("unexpected output from {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("thread in namespace {ns} panicked: {message}")]
    Panicked { ns: String, message: String },
    #[error("{what}\n--- output of the process ---\n{log}")]
    Process { what: String, log: String },
    #[error("{0}")]
    Protocol(String),
}

pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> TestbedError {
    let context = context.into();
    move |source| TestbedError::Io { context, source }
}

fn sys_err(context: impl Into<String>) -> impl FnOnce(nix::Error) -> TestbedError {
    let context = context.into();
    move |source| TestbedError::Sys { context, source }
}

pub(crate) const WORKDIR_PREFIX: &str = "cgnat-tb-";
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces and work directories left by test beds of processes
/// that no longer run (crashed or killed test runs). Returns what it removed.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = id_pid(&name) {
                if !pid_alive(pid) {
                    kill_ns_pids(&name);
                    run_command(&["ip", "netns", "del", &name], CMD_TIMEOUT)
                        .and_then(check_output("ip netns del"))?;
                    removed.push(name);
                }
            }
        }
    }
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix(WORKDIR_PREFIX) else {
                continue;
            };
            if let Some(pid) = id_pid(id) {
                if !pid_alive(pid) {
                    remove_workdir(&e.path());
                    removed.push(e.path().display().to_string());
                }
            }
        }
    }
    Ok(removed)
}

pub(crate) fn remove_workdir(dir: &Path) {
    let bpf = dir.join("bpf");
    // Not mounted is fine; anything else leaves the directory for later.
    let _ = nix::mount::umount2(&bpf, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `f` on a new thread that first entered the named network
/// namespace `ns`. Sockets it creates belong to that namespace and may be
/// used from any thread afterwards.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = Path::new("/run/netns").join(ns);
    thread::scope(|s| {
        let h = s.spawn(|| -> Result<T> {
            let file = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
            nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(sys_err(format!("setns into {}", path.display())))?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(p) => Err(TestbedError::Panicked {
                ns: ns.to_owned(),
                message: panic_message(&p),
            }),
        }
    })
}

/// Mounts a bpffs on `dir` (created first): pins there are visible through
/// `ip netns exec`, unlike `/sys/fs/bpf`. [`remove_workdir`] unmounts it.
pub(crate) fn mount_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(sys_err(format!("mounting bpffs on {}", dir.display())))
}

/// SIGKILLs every process that runs in namespace `ns` (all of them were
/// started by a test bed there).
pub(crate) fn kill_ns_pids(ns: &str) {
    if let Ok(out) = run_command(&["ip", "netns", "pids", ns], Duration::from_secs(10)) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The test bed. See the module documentation.
pub struct Testbed {
    id: String,
    names: Vec<String>,
    created: Vec<String>,
    dir: PathBuf,
    bpffs_mounted: bool,
    options: TestbedOptions,
    /// BPF links of the XDP_PASS programs on the router's switch-side
    /// peers; closing them detaches the programs.
    peer_xdp: Vec<PassLink>,
}

/// Choices for [`Testbed::with_options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestbedOptions {
    /// Attach an XDP program that returns XDP_PASS to the switch-side veth
    /// peers of `int0` and `ext0` (default: true). Without it, frames the
    /// NAT sends back out of the interface they came in on (XDP_TX, used for
    /// hairpinning) are queued at the peer but never processed: the kernel's
    /// veth wakes the peer for XDP_TX only when the peer has an XDP program
    /// (GRO, which is enough for XDP_REDIRECT, is not; see the module docs).
    pub peer_xdp_pass: bool,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            peer_xdp_pass: true,
        }
    }
}

impl fmt::Debug for Testbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Testbed").field("id", &self.id).finish()
    }
}

impl Testbed {
    /// Builds the whole topology. Needs root, `ip`, `ethtool` and `sysctl`.
    /// Also removes stale leftovers of dead test processes first.
    pub fn new() -> Result<Testbed> {
        Testbed::with_options(TestbedOptions::default())
    }

    /// [`Testbed::new`] with explicit [`TestbedOptions`].
    pub fn with_options(options: TestbedOptions) -> Result<Testbed> {
        // Leftovers of other runs must not break this one.
        let _ = cleanup_stale();
        let id = next_testbed_id();
        let dir = std::env::temp_dir().join(format!("{WORKDIR_PREFIX}{id}"));
        let mut tb = Testbed {
            names: Host::ALL
                .iter()
                .map(|h| format!("{id}-{}", h.name()))
                .collect(),
            id,
            created: Vec::new(),
            dir,
            bpffs_mounted: false,
            options,
            peer_xdp: Vec::new(),
        };
        tb.build()?;
        Ok(tb)
    }

    fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        mount_bpffs(&self.dir.join("bpf"))?;
        self.bpffs_mounted = true;

        let ipv6 = Path::new("/proc/sys/net/ipv6").exists();
        for h in Host::ALL {
            let ns = self.ns(h).to_owned();
            self.cmd(&["ip", "netns", "add", &ns])?;
            self.created.push(ns);
            let mut sysctls = vec!["sysctl", "-q", "-w"];
            if ipv6 {
                // Keep the links quiet: no router solicitations, no MLD.
                sysctls.push("net.ipv6.conf.all.disable_ipv6=1");
                sysctls.push("net.ipv6.conf.default.disable_ipv6=1");
            }
            if h == Host::Router {
                sysctls.push("net.ipv4.ip_forward=0");
            }
            if sysctls.len() > 3 {
                self.run(h, &sysctls)?;
            }
            self.ip(h, &["link", "set", "lo", "up"])?;
        }

        for sw in [Host::SwitchInt, Host::SwitchExt] {
            self.ip(sw, &["link", "add", "br0", "type", "bridge"])?;
            self.ip(sw, &["link", "set", "br0", "up"])?;
        }
        let links: [(Host, &str, Host); 7] = [
            (Host::S1, "eth0", Host::SwitchInt),
            (Host::S2, "eth0", Host::SwitchInt),
            (Host::Router, INTERNAL_IF, Host::SwitchInt),
            (Host::Router, EXTERNAL_IF, Host::SwitchExt),
            (Host::E1, "eth0", Host::SwitchExt),
            (Host::E2, "eth0", Host::SwitchExt),
            (Host::E3, "eth0", Host::SwitchExt),
        ];
        for (h, ifname, sw) in links {
            let sw_ns = self.ns(sw).to_owned();
            let port = h.name();
            self.ip(
                h,
                &[
                    "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", &sw_ns,
                ],
            )?;
            self.ip(sw, &["link", "set", port, "master", "br0"])?;
            self.ip(sw, &["link", "set", port, "up"])?;
        }

        for h in [Host::S1, Host::S2] {
            self.ip(
                h,
                &["addr", "add", &format!("{}/10", h.addr()), "dev", "eth0"],
            )?;
            self.ip(h, &["link", "set", "eth0", "up"])?;
            self.ip(
                h,
                &["route", "add", "default", "via", &ROUTER_INT.to_string()],
            )?;
        }
        for h in Host::EXTERNALS {
            self.ip(
                h,
                &["addr", "add", &format!("{}/24", h.addr()), "dev", "eth0"],
            )?;
            if h == Host::E1 {
                self.ip(
                    h,
                    &["addr", "add", &format!("{E1_SECOND}/24"), "dev", "eth0"],
                )?;
            }
            self.ip(h, &["link", "set", "eth0", "up"])?;
            for p in POOL {
                self.ip(h, &["route", "add", p, "via", &ROUTER_EXT.to_string()])?;
            }
        }
        let r = Host::Router;
        self.ip(
            r,
            &[
                "addr",
                "add",
                &format!("{ROUTER_INT}/10"),
                "dev",
                INTERNAL_IF,
            ],
        )?;
        self.ip(
            r,
            &[
                "addr",
                "add",
                &format!("{ROUTER_EXT}/24"),
                "dev",
                EXTERNAL_IF,
            ],
        )?;
        self.ip(r, &["link", "set", INTERNAL_IF, "up"])?;
        self.ip(r, &["link", "set", EXTERNAL_IF, "up"])?;

        for h in Host::SUBSCRIBERS.into_iter().chain(Host::EXTERNALS) {
            self.run(h, &["ethtool", "-K", "eth0", "tx", "off", "rx", "off"])?;
        }
        // XDP_REDIRECT into a veth needs NAPI on its peer (GRO or XDP);
        // XDP_TX needs an XDP program there (see TestbedOptions).
        for sw in [Host::SwitchInt, Host::SwitchExt] {
            self.run(sw, &["ethtool", "-K", Host::Router.name(), "gro", "on"])?;
            if self.options.peer_xdp_pass {
                let link = self.attach_xdp_pass(sw, Host::Router.name())?;
                self.peer_xdp.push(link);
            }
        }
        Ok(())
    }

    /// Attaches an XDP program that passes everything to `ifname` in
    /// `host`'s namespace, through a BPF link: the program stays attached
    /// while the returned fd is open.
    pub fn attach_xdp_pass(&self, host: Host, ifname: &str) -> Result<PassLink> {
        let ifname = ifname.to_owned();
        self.in_ns(host, move || -> Result<PassLink> {
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str())
                .map_err(sys_err(format!("if_nametoindex({ifname}) in {host}")))?;
            crate::floor::attach_pass_program(ifindex)
                .map_err(|e| TestbedError::Protocol(format!("xdp_pass on {ifname} in {host}: {e}")))
        })?
    }

    /// `cg<pid>x<n>`, the prefix of all names of this test bed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name of `host`'s namespace.
    pub fn ns(&self, host: Host) -> &str {
        &self.names[host.index()]
    }

    /// `/run/netns/<ns>`.
    pub fn ns_path(&self, host: Host) -> PathBuf {
        Path::new("/run/netns").join(self.ns(host))
    }

    /// A private work directory (removed on drop): configs, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A pin directory for cgnat on a bpffs private to this test bed,
    /// visible through `ip netns exec` (unlike `/sys/fs/bpf`).
    pub fn pin_path(&self) -> PathBuf {
        self.dir.join("bpf").join("cgnat")
    }

    fn cmd(&self, argv: &[&str]) -> Result<String> {
        let out = run_command(argv, CMD_TIMEOUT)?;
        check_output(&argv.join(" "))(out)
    }

    /// `ip -n <ns> args...`, checked.
    pub fn ip(&self, host: Host, args: &[&str]) -> Result<String> {
        let mut argv = vec!["ip", "-n", self.ns(host)];
        argv.extend_from_slice(args);
        self.cmd(&argv)
    }

    fn netns_argv<'a>(&'a self, host: Host, args: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec!["ip", "netns", "exec", self.ns(host)];
        argv.extend_from_slice(args);
        argv
    }

    /// Runs `args` in `host`'s namespace (`ip netns exec`) with a 30 s
    /// limit; the exit status is not checked.
    pub fn exec(&self, host: Host, args: &[&str]) -> Result<Output> {
        self.exec_timeout(host, args, CMD_TIMEOUT)
    }

    /// [`Testbed::exec`] with an explicit limit.
    pub fn exec_timeout(&self, host: Host, args: &[&str], timeout: Duration) -> Result<Output> {
        run_command(&self.netns_argv(host, args), timeout)
    }

    /// Runs `args` in `host`'s namespace; a non-zero exit is an error that
    /// carries stderr. Returns stdout.
    pub fn run(&self, host: Host, args: &[&str]) -> Result<String> {
        let argv = self.netns_argv(host, args);
        let out = run_command(&argv, CMD_TIMEOUT)?;
        check_output(&argv.join(" "))(out)
    }

    /// Starts `args` in the background in `host`'s namespace. Its stdout and
    /// stderr are collected line by line; the process gets SIGTERM (then
    /// SIGKILL) when the guard is dropped.
    pub fn spawn(&self, host: Host, args: &[&str]) -> Result<Background> {
        Background::start(&self.netns_argv(host, args))
    }

    /// Runs `f` on a new thread that first entered `host`'s network
    /// namespace. Sockets it creates belong to that namespace and may be
    /// used from any thread afterwards.
    pub fn in_ns<T, F>(&self, host: Host, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        in_netns(self.ns(host), f)
    }

    /// The cgnat configuration for this topology (see [`config_toml`]) with
    /// this test bed's private pin path.
    pub fn config_toml(&self) -> String {
        config_toml(&self.pin_path())
    }

    /// Writes `text` to `<dir>/<name>` and returns the path.
    pub fn write_config(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// Starts `bin --config config` in the router namespace and waits (up to
    /// `timeout`) for its readiness line (see [`is_attached_line`]).
    pub fn start_cgnat(&self, bin: &Path, config: &Path, timeout: Duration) -> Result<Cgnat> {
        let bin_s = bin.display().to_string();
        let cfg_s = config.display().to_string();
        let mut proc = self.spawn(Host::Router, &[&bin_s, "--config", &cfg_s])?;
        let attached = proc.wait_for_line(is_attached_line, timeout)?;
        Ok(Cgnat {
            proc,
            attached,
            bin: bin.to_owned(),
            config: config.to_owned(),
            ns: self.ns(Host::Router).to_owned(),
        })
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            kill_ns_pids(ns);
            if let Err(e) = run_command(&["ip", "netns", "del", ns], CMD_TIMEOUT)
                .and_then(check_output("ip netns del"))
            {
                eprintln!("testbed: cannot delete namespace {ns}: {e}");
            }
        }
        if self.bpffs_mounted || self.dir.exists() {
            remove_workdir(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn timeval(d: Duration) -> TimeVal {
    let d = d.max(Duration::from_millis(1));
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

fn sock_v4(a: SocketAddr) -> Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(TestbedError::Protocol(format!(
            "unexpected IPv6 address {a}"
        ))),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".into()
    }
}

mod capture;
mod content;
mod icmp;
mod parsers;
mod tcp;
mod udp;
pub use capture::*;
pub use content::*;
pub use icmp::*;
pub use parsers::*;
pub use tcp::*;
pub use udp::*;

mod commands;
mod observe;
mod sockets;
mod topology;
pub use commands::*;
pub use topology::*;

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos\n\
Ip: 2 64 1234 0 0 17 0\n\
Icmp: InMsgs InErrors\n\
Icmp: 5 0\n\
Udp: InDatagrams NoPorts\n\
Udp: 9 1\n";

    #[test]
    fn snmp() {
        assert_eq!(parse_snmp(SNMP, "Ip", "ForwDatagrams"), Some(17));
        assert_eq!(parse_snmp(SNMP, "Ip", "InReceives"), Some(1234));
        assert_eq!(parse_snmp(SNMP, "Udp", "NoPorts"), Some(1));
        assert_eq!(parse_snmp(SNMP, "Ip", "Nope"), None);
        assert_eq!(parse_snmp(SNMP, "Tcp", "ForwDatagrams"), None);
        // IcmpMsg must not be mistaken for Icmp.
        let t = "IcmpMsg: InType3\nIcmpMsg: 4\nIcmp: InMsgs\nIcmp: 7\n";
        assert_eq!(parse_snmp(t, "Icmp", "InMsgs"), Some(7));
    }

    #[test]
    fn fnv_known_vectors() {
        let h = |s: &[u8]| {
            let mut f = Fnv64::new();
            f.update(s);
            f.finish()
        };
        assert_eq!(h(b""), 0xcbf29ce484222325);
        assert_eq!(h(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(h(b"foobar"), 0x85944171f73967e8);
        let mut f = Fnv64::new();
        f.update(b"foo");
        f.update(b"bar");
        assert_eq!(f.finish(), h(b"foobar"));
    }

    #[test]
    fn pattern_is_independent_of_chunking() {
        let mut whole = vec![0u8; 1000];
        Pattern::new(7).fill(&mut whole);
        let mut p = Pattern::new(7);
        let mut parts = Vec::new();
        for n in [1usize, 3, 8, 13, 64, 0, 911] {
            let mut b = vec![0u8; n];
            p.fill(&mut b);
            parts.extend_from_slice(&b);
        }
        assert_eq!(parts, whole);
        let mut other = vec![0u8; 1000];
        Pattern::new(8).fill(&mut other);
        assert_ne!(other, whole);
        let mut f = Fnv64::new();
        f.update(&whole);
        assert_eq!(pattern_hash(7, 1000), f.finish());
        assert_ne!(pattern_hash(7, 1000), pattern_hash(7, 999));
    }

    #[test]
    fn ping_output() {
        let t = "PING 198.51.100.10 (198.51.100.10) 56(84) bytes of data.\n\
64 bytes from 198.51.100.10: icmp_seq=2 ttl=63 time=0.1 ms\n\n\
--- 198.51.100.10 ping statistics ---\n\
5 packets transmitted, 4 received, 20% packet loss, time 803ms\n";
        assert_eq!(
            parse_ping(t),
            Some(PingStats {
                transmitted: 5,
                received: 4
            })
        );
        let t = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2ms\n";
        assert_eq!(parse_ping(t).map(|p| p.received), Some(0));
        assert_eq!(parse_ping("ping: connect: Network is unreachable"), None);
    }

    #[test]
    fn iptables_and_rules() {
        let t = "# Generated by iptables-nft-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\nCOMMIT\n# Completed\n";
        assert!(iptables_rule_lines(t).is_empty());
        let t = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o ext0 -j MASQUERADE\nCOMMIT\n";
        assert_eq!(
            iptables_rule_lines(t),
            vec!["-A POSTROUTING -o ext0 -j MASQUERADE"]
        );

        let clean = KernelBypass {
            ip_forward: "0".into(),
            nft_ruleset: String::new(),
            iptables_rules: vec![],
            ip_rules: DEFAULT_IP_RULES
                .iter()
                .map(|s| s.replace('\t', " "))
                .collect(),
            conntrack: 0,
        };
        assert_eq!(clean.problems(), Vec::<String>::new());
        let mut dirty = clean.clone();
        dirty
            .ip_rules
            .insert(1, "100:\tfrom 100.64.0.0/10 lookup 7".into());
        dirty.conntrack = 3;
        dirty.ip_forward = "1".into();
        dirty.nft_ruleset = "table ip nat {\n}\n".into();
        assert_eq!(dirty.problems().len(), 4);
    }

    #[test]
    fn reflection_roundtrip() {
        let a: SocketAddrV4 = "203.0.113.4:5000".parse().unwrap();
        let v = encode_reflection(a, b"hello\nworld");
        assert_eq!(decode_reflection(&v), Some((a, b"hello\nworld".to_vec())));
        assert_eq!(decode_reflection(b"garbage"), None);
        assert_eq!(decode_reflection(b"1.2.3.4\nx"), None);
    }

    #[test]
    fn stats_and_xdp_parsing() {
        let t = "counter packets bytes\nfwd_out 12 1180\ndrop_no_binding 0 0\nbad line\n";
        let m = parse_stats(t);
        assert_eq!(m.get("fwd_out"), Some(&(12, 1180)));
        assert_eq!(m.get("drop_no_binding"), Some(&(0, 0)));
        assert_eq!(m.len(), 2);
        let l = "5: int0@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdp qdisc noqueue state UP\n    link/ether 0a:0b brd ff:ff\n    prog/xdp id 42 tag abc jited\n";
        assert_eq!(parse_xdp_mode(l).as_deref(), Some("xdp"));
        let l = "5: int0@if6: <UP> mtu 1500 xdpgeneric qdisc noqueue\n    prog/xdp id 42\n";
        assert_eq!(parse_xdp_mode(l).as_deref(), Some("xdpgeneric"));
        assert_eq!(
            parse_xdp_mode("5: int0@if6: <UP> mtu 1500 qdisc noqueue\n"),
            None
        );
    }

    #[test]
    fn readiness_line() {
        assert!(is_attached_line(
            "cgnat: attached; pool 24 addresses in 2 ranges, 1 internal prefixes"
        ));
        assert!(is_attached_line("attached"));
        assert!(!is_attached_line(
            "cgnat: xdp_internal attached to int0 (ifindex 2, native mode)"
        ));
        assert!(!is_attached_line("cgnat: error: not attached"));
    }

    #[test]
    fn ether_parsing() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[14 + 12..14 + 16].copy_from_slice(&[100, 64, 0, 11]);
        f[14 + 16..14 + 20].copy_from_slice(&[198, 51, 100, 10]);
        f[34..36].copy_from_slice(&5000u16.to_be_bytes());
        f[36..38].copy_from_slice(&7000u16.to_be_bytes());
        let s = parse_ether_ipv4(&f, true).unwrap();
        assert_eq!(
            (s.src, s.dst, s.proto, s.sport, s.dport),
            (Host::S1.addr(), Host::E1.addr(), 17, 5000, 7000)
        );
        assert!(s.outgoing);
        f[13] = 0x06; // ARP
        f[12] = 0x08;
        assert_eq!(parse_ether_ipv4(&f, false), None);
    }
}
