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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use crate::bpf::PassLink;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;

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

// ---------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------

/// The router's address on `int0` (the subscribers' gateway).
pub const ROUTER_INT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The router's address on `ext0` (the external hosts' route to the pool).
pub const ROUTER_EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The second address of e1.
pub const E1_SECOND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// The subscribers' prefix.
pub const INTERNAL_PREFIX: &str = "100.64.0.0/10";
/// The external pool of the NAT.
pub const POOL: [&str; 2] = ["203.0.113.0/28", "192.0.2.200/29"];
/// The router's interface toward the subscribers.
pub const INTERNAL_IF: &str = "int0";
/// The router's interface toward the outside.
pub const EXTERNAL_IF: &str = "ext0";

/// True when `a` lies in [`POOL`].
pub fn in_pool(a: Ipv4Addr) -> bool {
    POOL.iter().any(|p| {
        p.parse::<ipnetwork::Ipv4Network>()
            .map(|n| n.contains(a))
            .unwrap_or(false)
    })
}

/// Every address of [`POOL`].
pub fn pool_addrs() -> Vec<Ipv4Addr> {
    POOL.iter()
        .filter_map(|p| p.parse::<ipnetwork::Ipv4Network>().ok())
        .flat_map(|n| n.iter())
        .collect()
}

/// True when `a` lies in [`INTERNAL_PREFIX`].
pub fn in_internal(a: Ipv4Addr) -> bool {
    a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64
}

/// A namespace of the test bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    S1,
    S2,
    Router,
    E1,
    E2,
    E3,
    /// The bridge between the subscribers and `int0`.
    SwitchInt,
    /// The bridge between `ext0` and the external hosts.
    SwitchExt,
}

impl Host {
    pub const ALL: [Host; 8] = [
        Host::S1,
        Host::S2,
        Host::Router,
        Host::E1,
        Host::E2,
        Host::E3,
        Host::SwitchInt,
        Host::SwitchExt,
    ];
    pub const SUBSCRIBERS: [Host; 2] = [Host::S1, Host::S2];
    pub const EXTERNALS: [Host; 3] = [Host::E1, Host::E2, Host::E3];

    /// Short name, used as namespace suffix and as name of the switch port
    /// leading to the host (`r` for the router).
    pub fn name(self) -> &'static str {
        match self {
            Host::S1 => "s1",
            Host::S2 => "s2",
            Host::Router => "r",
            Host::E1 => "e1",
            Host::E2 => "e2",
            Host::E3 => "e3",
            Host::SwitchInt => "si",
            Host::SwitchExt => "se",
        }
    }

    /// The host's (first) address: for the router its `int0` address, for
    /// the switches, which have none, 0.0.0.0.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Host::S1 => Ipv4Addr::new(100, 64, 0, 11),
            Host::S2 => Ipv4Addr::new(100, 64, 0, 12),
            Host::Router => ROUTER_INT,
            Host::E1 => Ipv4Addr::new(198, 51, 100, 10),
            Host::E2 => Ipv4Addr::new(198, 51, 100, 20),
            Host::E3 => Ipv4Addr::new(198, 51, 100, 30),
            Host::SwitchInt | Host::SwitchExt => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The socket address `addr():port`.
    pub fn sock(self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr(), port)
    }

    pub fn is_subscriber(self) -> bool {
        matches!(self, Host::S1 | Host::S2)
    }

    pub fn is_external(self) -> bool {
        matches!(self, Host::E1 | Host::E2 | Host::E3)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The prefix of every namespace and directory of the test bed number `n`
/// of process `pid`: `cg<pid>x<n>` (at most 2 + 10 + 1 + 10 characters).
pub fn testbed_id(pid: u32, n: u32) -> String {
    format!("cg{pid}x{n}")
}

/// The pid in a name made by [`testbed_id`] (optionally followed by `-...`).
pub fn id_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("cg")?;
    let (pid, rest) = rest.split_once('x')?;
    let n_end = rest.find('-').unwrap_or(rest.len());
    let n = &rest[..n_end];
    if pid.is_empty()
        || n.is_empty()
        || !pid.bytes().all(|b| b.is_ascii_digit())
        || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    pid.parse().ok()
}

const WORKDIR_PREFIX: &str = "cgnat-tb-";
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

fn remove_workdir(dir: &Path) {
    let bpf = dir.join("bpf");
    // Not mounted is fine; anything else leaves the directory for later.
    let _ = nix::mount::umount2(&bpf, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGKILLs every process that runs in namespace `ns` (all of them were
/// started by a test bed there).
fn kill_ns_pids(ns: &str) {
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
        let id = testbed_id(std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
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
        let bpf = self.dir.join("bpf");
        std::fs::create_dir_all(&bpf).map_err(io_err(format!("creating {}", bpf.display())))?;
        nix::mount::mount(
            Some("bpf"),
            &bpf,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(sys_err(format!("mounting bpffs on {}", bpf.display())))?;
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
            crate::bpf::attach_pass_program(ifindex)
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
        let path = self.ns_path(host);
        let ns = self.ns(host).to_owned();
        thread::scope(|s| {
            let h = s.spawn(move || -> Result<T> {
                let file =
                    File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
                nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(sys_err(format!("setns into {}", path.display())))?;
                Ok(f())
            });
            match h.join() {
                Ok(r) => r,
                Err(p) => Err(TestbedError::Panicked {
                    ns,
                    message: panic_message(&p),
                }),
            }
        })
    }

    /// A raw socket (`family`: Inet for raw IP or ICMP, Packet for
    /// link-layer capture) in `host`'s namespace.
    pub fn raw_socket(
        &self,
        host: Host,
        family: AddressFamily,
        proto: SockProtocol,
    ) -> Result<OwnedFd> {
        self.in_ns(host, move || {
            socket::socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto)
        })?
        .map_err(sys_err(format!("raw {family:?} socket in {host}")))
    }

    /// A TCP listener on `local` in `host`'s namespace, with SO_REUSEADDR
    /// (so that the host may first connect out from the same port, making
    /// its NAT mapping known).
    pub fn tcp_listen(&self, host: Host, local: SocketAddrV4) -> Result<TcpListener> {
        let fd = self
            .in_ns(host, move || -> nix::Result<OwnedFd> {
                let fd = socket::socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )?;
                socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
                socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
                socket::listen(&fd, socket::Backlog::new(16)?)?;
                Ok(fd)
            })?
            .map_err(sys_err(format!("listen on {local} in {host}")))?;
        Ok(TcpListener::from(fd))
    }

    /// A UDP socket bound to `local` (port 0: any) in `host`'s namespace.
    pub fn udp_socket(&self, host: Host, local: SocketAddrV4) -> Result<UdpSocket> {
        self.in_ns(host, move || UdpSocket::bind(local))?
            .map_err(io_err(format!("binding UDP {local} in {host}")))
    }

    /// A TCP connection from `host` to `dst`. With `local`, the socket is
    /// bound to it first with SO_REUSEADDR, so that several connections can
    /// share one local port. The connect is bounded by `timeout` (the
    /// kernel retransmits the SYN if the NAT dropped the first one).
    pub fn tcp_connect(
        &self,
        host: Host,
        local: Option<SocketAddrV4>,
        dst: SocketAddrV4,
        timeout: Duration,
    ) -> Result<TcpStream> {
        let what = format!("TCP connect {host} {local:?} -> {dst}");
        let fd = self.in_ns(host, move || -> Result<OwnedFd> {
            let fd = socket::socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(sys_err("socket(AF_INET, SOCK_STREAM)"))?;
            if let Some(local) = local {
                socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
                    .map_err(sys_err("SO_REUSEADDR"))?;
                socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))
                    .map_err(sys_err(format!("bind {local}")))?;
            }
            // A blocking connect honours SO_SNDTIMEO.
            socket::setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))
                .map_err(sys_err("SO_SNDTIMEO"))?;
            match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(dst)) {
                Ok(()) => Ok(fd),
                Err(nix::errno::Errno::EINPROGRESS) | Err(nix::errno::Errno::EAGAIN) => {
                    Err(TestbedError::Timeout {
                        what: format!("connect to {dst}"),
                        timeout,
                    })
                }
                Err(e) => Err(TestbedError::Sys {
                    context: format!("connect to {dst}"),
                    source: e,
                }),
            }
        })??;
        let stream = TcpStream::from(fd);
        stream
            .set_write_timeout(None)
            .map_err(io_err(what.clone()))?;
        stream.set_nodelay(true).map_err(io_err(what))?;
        Ok(stream)
    }

    /// Sends `bytes` bytes of the pattern stream `seed` from `host` to the
    /// [`TcpServer`] at `dst`, and returns what the server counted.
    pub fn tcp_upload(
        &self,
        host: Host,
        local: Option<SocketAddrV4>,
        dst: SocketAddrV4,
        bytes: u64,
        seed: u64,
        timeout: Duration,
    ) -> Result<TcpUpload> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut s = self.tcp_connect(host, local, dst, timeout)?;
        let local = sock_v4(s.local_addr().map_err(io_err("local_addr"))?)?;
        write_all_by(&mut s, format!("UP {seed}\n").as_bytes(), deadline)?;
        let mut pat = Pattern::new(seed);
        let mut hash = Fnv64::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pat.fill(&mut buf[..n]);
            hash.update(&buf[..n]);
            write_all_by(&mut s, &buf[..n], deadline)?;
            left -= n as u64;
        }
        s.shutdown(Shutdown::Write)
            .map_err(io_err("shutdown(write)"))?;
        let line = read_line_by(&mut s, deadline, "upload reply")?;
        let (saw, n, h) = parse_upload_reply(&line)?;
        Ok(TcpUpload {
            local,
            server_saw: saw,
            sent_bytes: bytes,
            sent_hash: hash.finish(),
            server_bytes: n,
            server_hash: h,
            elapsed: start.elapsed(),
        })
    }

    /// Asks the [`TcpServer`] at `dst` for `bytes` bytes of pattern stream
    /// `seed` and hashes what arrives.
    pub fn tcp_download(
        &self,
        host: Host,
        dst: SocketAddrV4,
        bytes: u64,
        seed: u64,
        timeout: Duration,
    ) -> Result<TcpDownload> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut s = self.tcp_connect(host, None, dst, timeout)?;
        let local = sock_v4(s.local_addr().map_err(io_err("local_addr"))?)?;
        write_all_by(
            &mut s,
            format!("DOWN {bytes} {seed}\n").as_bytes(),
            deadline,
        )?;
        let line = read_line_by(&mut s, deadline, "download header")?;
        let saw = parse_sock(&line)?;
        let mut hash = Fnv64::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = read_by(&mut s, &mut buf, deadline, "download data")?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            got += n as u64;
        }
        Ok(TcpDownload {
            local,
            server_saw: saw,
            expected_bytes: bytes,
            expected_hash: pattern_hash(seed, bytes),
            got_bytes: got,
            got_hash: hash.finish(),
            elapsed: start.elapsed(),
        })
    }

    /// `ping -c count -W 1 -i 0.2 dst` from `host`.
    pub fn ping(&self, host: Host, dst: Ipv4Addr, count: u32) -> Result<PingStats> {
        let count_s = count.to_string();
        let dst_s = dst.to_string();
        let args = ["ping", "-n", "-c", &count_s, "-W", "1", "-i", "0.2", &dst_s];
        let timeout = Duration::from_millis(200) * count + Duration::from_secs(10);
        let out = self.exec_timeout(host, &args, timeout)?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_ping(&text).ok_or_else(|| TestbedError::Parse {
            what: format!("ping in {host}"),
            detail: format!(
                "{}{}",
                text.trim_end(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
        })
    }

    /// Starts recording the IPv4 packets that cross `host`'s interfaces
    /// (except `lo`), in both directions.
    pub fn sniff(&self, host: Host) -> Result<Sniffer> {
        Sniffer::start(self, host)
    }

    /// `Ip: ForwDatagrams` of the router's namespace (packets the kernel
    /// forwarded).
    pub fn forw_datagrams(&self) -> Result<u64> {
        let text = self.run(Host::Router, &["cat", "/proc/net/snmp"])?;
        parse_snmp(&text, "Ip", "ForwDatagrams").ok_or_else(|| TestbedError::Parse {
            what: "/proc/net/snmp of the router".into(),
            detail: "no Ip: ForwDatagrams".into(),
        })
    }

    /// What the router's kernel has configured that could carry or filter
    /// traffic besides XDP: see [`KernelBypass::problems`].
    pub fn kernel_bypass_report(&self) -> Result<KernelBypass> {
        let r = Host::Router;
        let ip_forward = self
            .run(r, &["cat", "/proc/sys/net/ipv4/ip_forward"])?
            .trim()
            .to_owned();
        let nft_ruleset = self.run(r, &["nft", "list", "ruleset"])?;
        let mut iptables = self.run(r, &["iptables-save"])?;
        // The legacy backend keeps its own tables; look at both if present.
        if let Ok(out) = self.exec(r, &["iptables-legacy-save"]) {
            if out.status.success() {
                iptables.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
        let iptables_rules = iptables_rule_lines(&iptables);
        let ip_rules_text = self.ip(r, &["rule", "show"])?;
        let ip_rules = ip_rules_text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let count_file = "/proc/sys/net/netfilter/nf_conntrack_count";
        let conntrack = if Path::new(count_file).exists() {
            let c = self.run(r, &["conntrack", "-C"])?;
            c.trim().parse().map_err(|_| TestbedError::Parse {
                what: "conntrack -C".into(),
                detail: c.clone(),
            })?
        } else {
            // nf_conntrack is not even loaded: nothing can be tracked.
            0
        };
        Ok(KernelBypass {
            ip_forward,
            nft_ruleset,
            iptables_rules,
            ip_rules,
            conntrack,
        })
    }

    /// The XDP attachment of a router interface as `ip link` shows it:
    /// `Some("xdp")` (native), `Some("xdpgeneric")`, ... or `None`.
    pub fn xdp_mode(&self, ifname: &str) -> Result<Option<String>> {
        let text = self.ip(Host::Router, &["link", "show", "dev", ifname])?;
        Ok(parse_xdp_mode(&text))
    }

    /// A text dump of the router and switches for failure reports.
    pub fn dump_state(&self) -> String {
        let mut s = String::new();
        let items: [(Host, &[&str]); 8] = [
            (Host::Router, &["ip", "-s", "-d", "link", "show"]),
            (Host::Router, &["ethtool", "-S", INTERNAL_IF]),
            (Host::Router, &["ethtool", "-S", EXTERNAL_IF]),
            (Host::Router, &["ip", "neigh", "show"]),
            (Host::Router, &["ip", "route", "show"]),
            (
                Host::Router,
                &[
                    "sysctl",
                    "net.ipv4.ip_forward",
                    "net.ipv4.conf.lo.forwarding",
                ],
            ),
            (Host::SwitchInt, &["ip", "-s", "link", "show"]),
            (Host::SwitchExt, &["ip", "-s", "link", "show"]),
        ];
        for (h, args) in items {
            s.push_str(&format!("--- {h}: {}\n", args.join(" ")));
            match self.exec(h, args) {
                Ok(o) => {
                    s.push_str(&String::from_utf8_lossy(&o.stdout));
                    s.push_str(&String::from_utf8_lossy(&o.stderr));
                }
                Err(e) => s.push_str(&format!("{e}\n")),
            }
        }
        s
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

/// The cgnat configuration for this topology: interfaces `int0`/`ext0` in
/// native mode, [`INTERNAL_PREFIX`], [`POOL`], the RFC default timeouts and
/// `pin_path`.
pub fn config_toml(pin_path: &Path) -> String {
    format!(
        r#"# cgnat configuration for the test bed topology
[interfaces]
internal = "{INTERNAL_IF}"
external = "{EXTERNAL_IF}"
xdp_mode = "native"

[nat]
internal_prefixes = ["{INTERNAL_PREFIX}"]
external_pool = ["{p0}", "{p1}"]
max_sessions = 65536
max_bindings = 65536

[timeouts]
udp = "300s"
tcp_established = "2h4m"
tcp_transitory = "4m"
icmp = "60s"

[daemon]
pin_path = "{pin}"
# each test starts from clean tables (the default keeps them pinned)
detach_on_exit = true
"#,
        p0 = POOL[0],
        p1 = POOL[1],
        pin = pin_path.display(),
    )
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// Runs `argv` with a time limit; the child is killed when it is exceeded.
/// The exit status is not checked (see [`check_output`]).
pub fn run_command(argv: &[&str], timeout: Duration) -> Result<Output> {
    let cmd = argv.join(" ");
    let (prog, args) = argv.split_first().ok_or_else(|| TestbedError::Spawn {
        cmd: cmd.clone(),
        source: io::Error::new(ErrorKind::InvalidInput, "empty command"),
    })?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TestbedError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    for (is_out, pipe) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            let _ = tx.send((is_out, v));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestbedError::CommandTimeout { cmd, timeout });
            }
            Ok(None) => {
                thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(format!("waiting for `{cmd}`"))(e)),
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        // A grandchild holding the pipes open must not block us forever.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match rx.recv_timeout(left) {
            Ok((true, v)) => stdout = v,
            Ok((false, v)) => stderr = v,
            Err(_) => return Err(TestbedError::CommandTimeout { cmd, timeout }),
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Turns a non-zero exit into [`TestbedError::Command`]; else gives stdout.
pub fn check_output(cmd: &str) -> impl FnOnce(Output) -> Result<String> + '_ {
    move |out| {
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TestbedError::Command {
                cmd: cmd.to_owned(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
            })
        }
    }
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    open: u8,
}

/// A background process with its output collected; stopped on drop.
pub struct Background {
    child: Option<Child>,
    cmd: String,
    log: Arc<(Mutex<LogState>, Condvar)>,
}

impl Background {
    fn start(argv: &[&str]) -> Result<Background> {
        let cmd = argv.join(" ");
        let (prog, args) = argv.split_first().ok_or_else(|| TestbedError::Spawn {
            cmd: cmd.clone(),
            source: io::Error::new(ErrorKind::InvalidInput, "empty command"),
        })?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let log = Arc::new((
            Mutex::new(LogState {
                lines: Vec::new(),
                open: 2,
            }),
            Condvar::new(),
        ));
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                if let Some(p) = pipe {
                    for line in BufReader::new(p).lines() {
                        let Ok(line) = line else { break };
                        let (m, cv) = &*log;
                        if let Ok(mut st) = m.lock() {
                            st.lines.push(line);
                        }
                        cv.notify_all();
                    }
                }
                let (m, cv) = &*log;
                if let Ok(mut st) = m.lock() {
                    st.open = st.open.saturating_sub(1);
                }
                cv.notify_all();
            });
        }
        Ok(Background {
            child: Some(child),
            cmd,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        let (m, _) = &*self.log;
        match m.lock() {
            Ok(st) => st.lines.join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Waits until a line satisfies `pred` and returns it. Fails when the
    /// process closes its output first or `timeout` passes.
    pub fn wait_for_line(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut st = m
            .lock()
            .map_err(|_| TestbedError::Protocol("log lock poisoned".into()))?;
        loop {
            if let Some(l) = st.lines.iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            let now = Instant::now();
            if st.open == 0 || now >= deadline {
                let what = if st.open == 0 {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| wait_timeout(c, Duration::from_secs(2)).ok().flatten())
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "still running".into());
                    format!(
                        "`{}` ended its output ({status}) before the expected line",
                        self.cmd
                    )
                } else {
                    format!("`{}` printed no expected line within {timeout:?}", self.cmd)
                };
                return Err(TestbedError::Process {
                    what,
                    log: st.lines.join("\n"),
                });
            }
            st = cv
                .wait_timeout(st, deadline - now)
                .map_err(|_| TestbedError::Protocol("log lock poisoned".into()))?
                .0;
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit (then SIGKILL and
    /// an error).
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(TestbedError::Protocol(format!(
                "`{}` was already stopped",
                self.cmd
            )));
        };
        let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        match wait_timeout(&mut child, timeout) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(TestbedError::Process {
                    what: format!("`{}` did not exit within {timeout:?} of SIGTERM", self.cmd),
                    log: self.log(),
                })
            }
            Err(e) => Err(io_err(format!("waiting for `{}`", self.cmd))(e)),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if !matches!(
                wait_timeout(&mut child, Duration::from_secs(5)),
                Ok(Some(_))
            ) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// True for the daemon's readiness line, `[cgnat:] attached...` (for
/// instance `cgnat: attached; pool 24 addresses ...`), printed once every XDP
/// program is attached. Per-interface lines such as `cgnat: xdp_internal
/// attached to int0` do not count.
pub fn is_attached_line(line: &str) -> bool {
    let l = line.trim_start();
    let l = l.strip_prefix("cgnat:").unwrap_or(l).trim_start();
    l.starts_with("attached")
}

/// The running cgnat daemon (in the router namespace). Stopped on drop.
pub struct Cgnat {
    proc: Background,
    attached: String,
    bin: PathBuf,
    config: PathBuf,
    ns: String,
}

impl Cgnat {
    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The line in which the daemon reported that it had attached.
    pub fn attached_line(&self) -> &str {
        &self.attached
    }

    /// The process (to wait for more log lines, for instance).
    pub fn process(&mut self) -> &mut Background {
        &mut self.proc
    }

    /// Raw output of `cgnat stats --config FILE` (run in the router ns).
    pub fn stats_text(&self) -> Result<String> {
        let bin = self.bin.display().to_string();
        let cfg = self.config.display().to_string();
        let argv = [
            "ip", "netns", "exec", &self.ns, &bin, "stats", "--config", &cfg,
        ];
        let out = run_command(&argv, CMD_TIMEOUT)?;
        check_output(&argv.join(" "))(out)
    }

    /// `cgnat stats` parsed: name → (packets, bytes).
    pub fn stats(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        Ok(parse_stats(&self.stats_text()?))
    }

    /// SIGTERM, and the exit status (within 10 s).
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.proc.stop(Duration::from_secs(10))
    }
}

// ---------------------------------------------------------------------------
// ICMP
// ---------------------------------------------------------------------------

/// An ICMP message a host received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpSeen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub icmp_type: u8,
    pub code: u8,
    /// Everything after the 8-byte ICMP header.
    pub data: Vec<u8>,
}

/// Records the ICMP messages a host receives (a raw ICMP socket in its
/// namespace), until dropped.
pub struct IcmpCapture {
    log: Arc<Mutex<Vec<IcmpSeen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IcmpCapture {
    pub fn start(tb: &Testbed, host: Host) -> IcmpCapture {
        let fd = tb
            .raw_socket(host, AddressFamily::Inet, SockProtocol::Icmp)
            .unwrap_or_else(|e| panic!("{e}"));
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &timeval(Duration::from_millis(50)),
        )
        .unwrap_or_else(|e| panic!("SO_RCVTIMEO: {e}"));
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
        let log: Arc<Mutex<Vec<IcmpSeen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok(n) = socket::recv(fd.as_raw_fd(), &mut buf, socket::MsgFlags::empty())
                else {
                    continue;
                };
                let p = &buf[..n];
                if p.len() < 20 {
                    continue;
                }
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p.len() < ihl + 8 {
                    continue;
                }
                let seen = IcmpSeen {
                    src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                    dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                    icmp_type: p[ihl],
                    code: p[ihl + 1],
                    data: p[ihl + 8..].to_vec(),
                };
                if let Ok(mut v) = log2.lock() {
                    v.push(seen);
                }
            }
        });
        IcmpCapture {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<IcmpSeen> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for IcmpCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------

/// A datagram a [`UdpReflector`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// A UDP server that answers every datagram with `"<src ip:port>\n"` plus
/// the payload, `src` being the source it observed, and records what it
/// received.
pub struct UdpReflector {
    addr: SocketAddrV4,
    host: Host,
    log: Arc<(Mutex<Vec<Datagram>>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpReflector {
    /// Binds `bind` in `host`'s namespace and starts answering.
    pub fn start(tb: &Testbed, host: Host, bind: SocketAddrV4) -> Result<UdpReflector> {
        let sock = tb.udp_socket(host, bind)?;
        let addr = sock_v4(sock.local_addr().map_err(io_err("local_addr"))?)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io_err("SO_RCVTIMEO"))?;
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(_) => continue,
                };
                let SocketAddr::V4(from) = from else { continue };
                let payload = buf[..n].to_vec();
                let reply = encode_reflection(from, &payload);
                // Record first: whoever gets the answer may look at the log.
                let (m, cv) = &*log2;
                if let Ok(mut v) = m.lock() {
                    v.push(Datagram { from, payload });
                }
                cv.notify_all();
                let _ = sock.send_to(&reply, from);
            }
        });
        Ok(UdpReflector {
            addr,
            host,
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    pub fn host(&self) -> Host {
        self.host
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Datagram> {
        let (m, _) = &*self.log;
        m.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The distinct sources seen so far, in order of first appearance.
    pub fn sources(&self) -> Vec<SocketAddrV4> {
        let mut out: Vec<SocketAddrV4> = Vec::new();
        for d in self.received() {
            if !out.contains(&d.from) {
                out.push(d.from);
            }
        }
        out
    }

    /// Waits up to `timeout` for a datagram satisfying `pred`.
    pub fn wait_for(
        &self,
        pred: impl Fn(&Datagram) -> bool,
        timeout: Duration,
    ) -> Option<Datagram> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut v = m.lock().ok()?;
        loop {
            if let Some(d) = v.iter().find(|d| pred(d)) {
                return Some(d.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            v = cv.wait_timeout(v, deadline - now).ok()?.0;
        }
    }
}

impl Drop for UdpReflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reflector's answer: `"<ip:port>\n"` followed by the payload.
pub fn encode_reflection(observed: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{observed}\n").into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Inverse of [`encode_reflection`].
pub fn decode_reflection(data: &[u8]) -> Option<(SocketAddrV4, Vec<u8>)> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let addr = std::str::from_utf8(&data[..nl]).ok()?.parse().ok()?;
    Some((addr, data[nl + 1..].to_vec()))
}

/// What a UDP exchange with a [`UdpReflector`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflection {
    /// The source address the reflector observed (after NAT).
    pub observed: SocketAddrV4,
    /// Where the answer came from (as the client saw it).
    pub reply_from: SocketAddrV4,
    /// The payload echoed back.
    pub payload: Vec<u8>,
    /// How many times the request was sent.
    pub attempts: u32,
}

/// Sends `payload` from `sock` to the reflector at `dst` every 200 ms until
/// an answer from `dst` echoing `payload` arrives or `timeout` passes.
/// Other datagrams arriving meanwhile are ignored.
pub fn udp_exchange(
    sock: &UdpSocket,
    dst: SocketAddrV4,
    payload: &[u8],
    timeout: Duration,
) -> Result<Reflection> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    let mut attempts = 0;
    while Instant::now() < deadline {
        sock.send_to(payload, dst)
            .map_err(io_err(format!("sending UDP to {dst}")))?;
        attempts += 1;
        let resend = (Instant::now() + Duration::from_millis(200)).min(deadline);
        loop {
            let left = resend.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(io_err("SO_RCVTIMEO"))?;
            match sock.recv_from(&mut buf) {
                Ok((n, SocketAddr::V4(from))) if from == dst => {
                    if let Some((observed, echoed)) = decode_reflection(&buf[..n]) {
                        if echoed == payload {
                            return Ok(Reflection {
                                observed,
                                reply_from: from,
                                payload: echoed,
                                attempts,
                            });
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // ICMP errors (port unreachable...) surface here: retry.
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    Err(TestbedError::Timeout {
        what: format!("no reflection from {dst} for UDP from {local} ({attempts} attempts)"),
        timeout,
    })
}

/// Waits up to `timeout` for one datagram on `sock`.
pub fn udp_recv(sock: &UdpSocket, timeout: Duration) -> Result<Datagram> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TestbedError::Timeout {
                what: "no UDP datagram".into(),
                timeout,
            });
        }
        sock.set_read_timeout(Some(left))
            .map_err(io_err("SO_RCVTIMEO"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) => {
                return Ok(Datagram {
                    from,
                    payload: buf[..n].to_vec(),
                })
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends `payload` from `sender` to `dst` every 200 ms until `receiver`
/// gets a datagram carrying exactly `payload` (others are skipped), and
/// returns it with the source the receiver saw.
pub fn udp_send_until_received(
    sender: &UdpSocket,
    dst: SocketAddrV4,
    payload: &[u8],
    receiver: &UdpSocket,
    timeout: Duration,
) -> Result<Datagram> {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    while Instant::now() < deadline {
        sender
            .send_to(payload, dst)
            .map_err(io_err(format!("sending UDP to {dst}")))?;
        attempts += 1;
        let resend = (Instant::now() + Duration::from_millis(200)).min(deadline);
        while let Some(left) =
            Some(resend.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
        {
            match udp_recv(receiver, left) {
                Ok(d) if d.payload == payload => return Ok(d),
                Ok(_) => {}
                Err(TestbedError::Timeout { .. }) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Err(TestbedError::Timeout {
        what: format!("UDP to {dst} never arrived ({attempts} attempts)"),
        timeout,
    })
}

// ---------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------

/// Which request a [`TcpServer`] served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    /// `UP <seed>\n` + data until EOF; reply `<peer> <bytes> <hash>\n`.
    Upload,
    /// `DOWN <bytes> <seed>\n`; reply `<peer>\n` + pattern data, then EOF.
    Download,
    /// `WHO\n`; reply `<peer>\n`, keep the connection until the client closes.
    Whoami,
}

/// One connection a [`TcpServer`] served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRecord {
    pub peer: SocketAddrV4,
    pub mode: TcpMode,
    /// Bytes received (upload) or sent (download).
    pub bytes: u64,
    /// FNV-1a 64 of those bytes.
    pub hash: u64,
    /// Set when the connection failed midway.
    pub error: Option<String>,
}

/// A TCP server speaking the small protocol of [`TcpMode`]; records every
/// connection.
pub struct TcpServer {
    addr: SocketAddrV4,
    log: Arc<Mutex<Vec<TcpRecord>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(tb: &Testbed, host: Host, bind: SocketAddrV4) -> Result<TcpServer> {
        let listener = tb
            .in_ns(host, move || TcpListener::bind(bind))?
            .map_err(io_err(format!("listening on TCP {bind} in {host}")))?;
        let addr = sock_v4(listener.local_addr().map_err(io_err("local_addr"))?)?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("O_NONBLOCK on listener"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, SocketAddr::V4(peer))) => {
                        let log = Arc::clone(&log2);
                        let stop = Arc::clone(&stop2);
                        thread::spawn(move || {
                            let rec = serve_tcp(s, peer, &stop);
                            if let Ok(mut v) = log.lock() {
                                v.push(rec);
                            }
                        });
                    }
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(TcpServer {
            addr,
            log,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Connections completed so far.
    pub fn records(&self) -> Vec<TcpRecord> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(60);

fn serve_tcp(s: TcpStream, peer: SocketAddrV4, stop: &AtomicBool) -> TcpRecord {
    let mut rec = TcpRecord {
        peer,
        mode: TcpMode::Whoami,
        bytes: 0,
        hash: Fnv64::new().finish(),
        error: None,
    };
    if let Err(e) = serve_tcp_inner(s, peer, stop, &mut rec) {
        rec.error = Some(e.to_string());
    }
    rec
}

fn serve_tcp_inner(
    s: TcpStream,
    peer: SocketAddrV4,
    stop: &AtomicBool,
    rec: &mut TcpRecord,
) -> Result<()> {
    let deadline = Instant::now() + SERVER_IO_TIMEOUT;
    s.set_nonblocking(false).map_err(io_err("blocking"))?;
    let mut w = s.try_clone().map_err(io_err("try_clone"))?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let header = {
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if read_by(&mut r, &mut b, deadline, "request header")? == 0 {
                break;
            }
            if b[0] == b'\n' || line.len() > 100 {
                break;
            }
            line.push(b[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    };
    let words: Vec<&str> = header.split_whitespace().collect();
    match words.as_slice() {
        ["UP", _seed] => {
            rec.mode = TcpMode::Upload;
            let mut h = Fnv64::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(TestbedError::Protocol("server stopped".into()));
                }
                let n = read_by(&mut r, &mut buf, deadline, "upload data")?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                rec.bytes += n as u64;
            }
            rec.hash = h.finish();
            let reply = format!("{peer} {} {:016x}\n", rec.bytes, rec.hash);
            write_all_by(&mut w, reply.as_bytes(), deadline)?;
            let _ = w.shutdown(Shutdown::Write);
        }
        ["DOWN", bytes, seed] => {
            rec.mode = TcpMode::Download;
            let parse = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| TestbedError::Protocol(format!("bad request {header:?}")))
            };
            let (bytes, seed) = (parse(bytes)?, parse(seed)?);
            write_all_by(&mut w, format!("{peer}\n").as_bytes(), deadline)?;
            let mut pat = Pattern::new(seed);
            let mut h = Fnv64::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                if stop.load(Ordering::Relaxed) {
                    return Err(TestbedError::Protocol("server stopped".into()));
                }
                let n = left.min(buf.len() as u64) as usize;
                pat.fill(&mut buf[..n]);
                h.update(&buf[..n]);
                write_all_by(&mut w, &buf[..n], deadline)?;
                rec.bytes += n as u64;
                left -= n as u64;
            }
            rec.hash = h.finish();
            let _ = w.shutdown(Shutdown::Write);
        }
        ["WHO"] => {
            rec.mode = TcpMode::Whoami;
            write_all_by(&mut w, format!("{peer}\n").as_bytes(), deadline)?;
        }
        _ => return Err(TestbedError::Protocol(format!("bad request {header:?}"))),
    }
    // Wait for the client's close so that we do not reset the connection.
    let mut buf = [0u8; 4096];
    while read_by(&mut r, &mut buf, deadline, "client close")? > 0 {}
    Ok(())
}

/// Result of [`Testbed::tcp_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpUpload {
    /// The client's own address.
    pub local: SocketAddrV4,
    /// The peer address the server saw.
    pub server_saw: SocketAddrV4,
    pub sent_bytes: u64,
    pub sent_hash: u64,
    pub server_bytes: u64,
    pub server_hash: u64,
    pub elapsed: Duration,
}

/// Result of [`Testbed::tcp_download`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpDownload {
    pub local: SocketAddrV4,
    pub server_saw: SocketAddrV4,
    pub expected_bytes: u64,
    pub expected_hash: u64,
    pub got_bytes: u64,
    pub got_hash: u64,
    pub elapsed: Duration,
}

/// Sends `WHO` on an open connection to a [`TcpServer`] and returns the
/// peer address the server saw. The connection stays open.
pub fn tcp_whoami(s: &mut TcpStream, timeout: Duration) -> Result<SocketAddrV4> {
    let deadline = Instant::now() + timeout;
    write_all_by(s, b"WHO\n", deadline)?;
    let line = read_line_by(s, deadline, "WHO reply")?;
    parse_sock(&line)
}

fn deadline_left(deadline: Instant, what: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(TestbedError::Timeout {
            what: what.to_owned(),
            timeout: Duration::ZERO,
        });
    }
    Ok(left)
}

fn write_all_by(s: &mut TcpStream, mut data: &[u8], deadline: Instant) -> Result<()> {
    while !data.is_empty() {
        let left = deadline_left(deadline, "TCP write")?;
        s.set_write_timeout(Some(left.min(Duration::from_secs(1))))
            .map_err(io_err("SO_SNDTIMEO"))?;
        match s.write(data) {
            Ok(0) => {
                return Err(TestbedError::Protocol(
                    "TCP connection closed while writing".into(),
                ))
            }
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(io_err("TCP write")(e)),
        }
    }
    Ok(())
}

/// Reads into `buf` (0 = EOF) within `deadline`. `r` must wrap a TcpStream
/// so that the read timeout can be set; it is set through `TcpTimeout`.
fn read_by<R: Read + TcpTimeout>(
    r: &mut R,
    buf: &mut [u8],
    deadline: Instant,
    what: &str,
) -> Result<usize> {
    loop {
        let left = deadline_left(deadline, what)?;
        r.set_timeout(left.min(Duration::from_secs(1)))
            .map_err(io_err("SO_RCVTIMEO"))?;
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(io_err(format!("TCP read ({what})"))(e)),
        }
    }
}

trait TcpTimeout {
    fn set_timeout(&self, d: Duration) -> io::Result<()>;
}

impl TcpTimeout for TcpStream {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

impl TcpTimeout for BufReader<TcpStream> {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.get_ref().set_read_timeout(Some(d))
    }
}

fn read_line_by(s: &mut TcpStream, deadline: Instant, what: &str) -> Result<String> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if read_by(s, &mut b, deadline, what)? == 0 || b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 200 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn parse_sock(s: &str) -> Result<SocketAddrV4> {
    s.trim()
        .parse()
        .map_err(|_| TestbedError::Protocol(format!("not an address: {s:?}")))
}

fn parse_upload_reply(line: &str) -> Result<(SocketAddrV4, u64, u64)> {
    let bad = || TestbedError::Protocol(format!("bad upload reply {line:?}"));
    let mut w = line.split_whitespace();
    let saw = parse_sock(w.next().ok_or_else(bad)?)?;
    let n = w.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let h = w
        .next()
        .and_then(|x| u64::from_str_radix(x, 16).ok())
        .ok_or_else(bad)?;
    Ok((saw, n, h))
}

// ---------------------------------------------------------------------------
// Content: FNV-1a 64 and a deterministic pattern
// ---------------------------------------------------------------------------

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Fnv64 {
    pub fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64::new()
    }
}

/// An endless deterministic byte stream (splitmix64 words, little endian);
/// the same seed gives the same bytes however the reads are split.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            state: seed,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() && self.used < 8 {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        while buf.len() - i >= 8 {
            buf[i..i + 8].copy_from_slice(&self.next_word());
            i += 8;
        }
        if i < buf.len() {
            self.word = self.next_word();
            self.used = 0;
            while i < buf.len() {
                buf[i] = self.word[self.used];
                self.used += 1;
                i += 1;
            }
        }
    }
}

/// FNV-1a 64 of the first `bytes` bytes of [`Pattern`] `seed`.
pub fn pattern_hash(seed: u64, bytes: u64) -> u64 {
    let mut p = Pattern::new(seed);
    let mut h = Fnv64::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        left -= n as u64;
    }
    h.finish()
}

// ---------------------------------------------------------------------------
// Packet capture
// ---------------------------------------------------------------------------

/// An IPv4 packet a [`Sniffer`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (1 ICMP, 6 TCP, 17 UDP).
    pub proto: u8,
    /// Ports for TCP/UDP, 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    /// ICMP type and code for ICMP.
    pub icmp: Option<(u8, u8)>,
    /// Sent by this host (rather than received).
    pub outgoing: bool,
}

/// Records IPv4 packets on a host's interfaces (an AF_PACKET socket in its
/// namespace), until dropped.
pub struct Sniffer {
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    fn start(tb: &Testbed, host: Host) -> Result<Sniffer> {
        let fd = tb
            .in_ns(host, || {
                socket::socket(
                    AddressFamily::Packet,
                    SockType::Raw,
                    SockFlag::SOCK_CLOEXEC,
                    SockProtocol::EthAll,
                )
            })?
            .map_err(sys_err(format!("AF_PACKET socket in {host}")))?;
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &timeval(Duration::from_millis(50)),
        )
        .map_err(sys_err("SO_RCVTIMEO"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket::recvfrom::<socket::LinkAddr>(fd.as_raw_fd(), &mut buf)
                else {
                    continue;
                };
                let Some(ll) = from else { continue };
                // ifindex 1 is lo in every namespace.
                if ll.ifindex() == 1 {
                    continue;
                }
                let outgoing = ll.pkttype() == 4; // PACKET_OUTGOING
                if let Some(seen) = parse_ether_ipv4(&buf[..n], outgoing) {
                    if let Ok(mut v) = log2.lock() {
                        v.push(seen);
                    }
                }
            }
        });
        // Let the socket settle before the caller sends anything.
        thread::sleep(Duration::from_millis(20));
        Ok(Sniffer {
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Packets seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses an Ethernet frame carrying IPv4 (no VLAN).
pub fn parse_ether_ipv4(frame: &[u8], outgoing: bool) -> Option<Seen> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 || ip.len() < ihl {
        return None;
    }
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[ihl..];
    let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
    let (mut sport, mut dport, mut icmp) = (0, 0, None);
    if first_fragment {
        match proto {
            6 | 17 if l4.len() >= 4 => {
                sport = u16::from_be_bytes([l4[0], l4[1]]);
                dport = u16::from_be_bytes([l4[2], l4[3]]);
            }
            1 if l4.len() >= 2 => icmp = Some((l4[0], l4[1])),
            _ => {}
        }
    }
    Some(Seen {
        src,
        dst,
        proto,
        sport,
        dport,
        icmp,
        outgoing,
    })
}

// ---------------------------------------------------------------------------
// Parsers of tool output
// ---------------------------------------------------------------------------

/// Result of [`Testbed::ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

/// Parses ping's `N packets transmitted, M received` line.
pub fn parse_ping(text: &str) -> Option<PingStats> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let tx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let rx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some(PingStats {
        transmitted: tx,
        received: rx,
    })
}

/// A value of `/proc/net/snmp`, which comes as pairs of lines
/// `Ip: Forwarding DefaultTTL ...` / `Ip: 2 64 ...`.
pub fn parse_snmp(text: &str, group: &str, field: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let names: Vec<&str> = names[prefix.len()..].split_whitespace().collect();
        let values: Vec<&str> = values[prefix.len()..].split_whitespace().collect();
        if let Some(i) = names.iter().position(|n| *n == field) {
            return values.get(i)?.parse().ok();
        }
    }
    None
}

/// The lines of `iptables-save` output that are rules (not table headers,
/// chain policies, comments or COMMIT).
pub fn iptables_rule_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with('#')
                || l.starts_with('*')
                || l.starts_with(':')
                || *l == "COMMIT")
        })
        .map(str::to_owned)
        .collect()
}

/// The three rules of a fresh namespace, as `ip rule show` prints them.
pub const DEFAULT_IP_RULES: [&str; 3] = [
    "0:\tfrom all lookup local",
    "32766:\tfrom all lookup main",
    "32767:\tfrom all lookup default",
];

fn norm_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What could have carried or filtered traffic in the router's kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBypass {
    /// `/proc/sys/net/ipv4/ip_forward`.
    pub ip_forward: String,
    /// `nft list ruleset`.
    pub nft_ruleset: String,
    /// Rule lines of `iptables-save` (and `iptables-legacy-save`).
    pub iptables_rules: Vec<String>,
    /// `ip rule show`, one rule per entry.
    pub ip_rules: Vec<String>,
    /// `conntrack -C` (0 when nf_conntrack is not loaded).
    pub conntrack: u64,
}

impl KernelBypass {
    /// Everything that differs from a kernel that forwards nothing itself:
    /// empty when clean.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.ip_forward != "0" {
            p.push(format!("net.ipv4.ip_forward = {}", self.ip_forward));
        }
        if !self.nft_ruleset.trim().is_empty() {
            p.push(format!(
                "nft ruleset not empty:\n{}",
                self.nft_ruleset.trim_end()
            ));
        }
        if !self.iptables_rules.is_empty() {
            p.push(format!("iptables rules: {:?}", self.iptables_rules));
        }
        let defaults: Vec<String> = DEFAULT_IP_RULES.iter().map(|r| norm_ws(r)).collect();
        let rules: Vec<String> = self.ip_rules.iter().map(|r| norm_ws(r)).collect();
        if rules != defaults {
            p.push(format!(
                "ip rules are not the defaults: {:?}",
                self.ip_rules
            ));
        }
        if self.conntrack != 0 {
            p.push(format!("{} conntrack entries", self.conntrack));
        }
        p
    }
}

/// Parses `cgnat stats` lines `name packets bytes`; other lines are skipped.
pub fn parse_stats(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if let [name, p, b] = w.as_slice() {
            if let (Ok(p), Ok(b)) = (p.parse(), b.parse()) {
                m.insert((*name).to_owned(), (p, b));
            }
        }
    }
    m
}

/// The XDP flag of an `ip link show` line: `xdp`, `xdpgeneric`, `xdpdrv`,
/// `xdpoffload`, `xdpmulti`.
pub fn parse_xdp_mode(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("xdp") && !w.contains(':'))
        .or_else(|| {
            text.split_whitespace()
                .find(|w| w.starts_with("xdp"))
                .and_then(|w| w.split(['/', ':']).next())
        })
        .map(str::to_owned)
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
    fn names() {
        let id = testbed_id(123456, 7);
        assert_eq!(id, "cg123456x7");
        assert_eq!(id_pid(&id), Some(123456));
        assert_eq!(id_pid("cg123456x7-s1"), Some(123456));
        assert_eq!(id_pid("cg4194304x4294967295-se"), Some(4194304));
        assert_eq!(id_pid("cgx7-s1"), None);
        assert_eq!(id_pid("cg12x-s1"), None);
        assert_eq!(id_pid("cg1a2x3"), None);
        assert_eq!(id_pid("other"), None);
        // The longest namespace name still fits comfortably; interface
        // names never carry the prefix.
        assert!(format!("{}-{}", testbed_id(u32::MAX, u32::MAX), "se").len() < 64);
        for h in Host::ALL {
            assert!(h.name().len() <= 15);
        }
    }

    #[test]
    fn pool_membership() {
        assert!(in_pool(Ipv4Addr::new(203, 0, 113, 0)));
        assert!(in_pool(Ipv4Addr::new(203, 0, 113, 15)));
        assert!(!in_pool(Ipv4Addr::new(203, 0, 113, 16)));
        assert!(in_pool(Ipv4Addr::new(192, 0, 2, 207)));
        assert!(!in_pool(Ipv4Addr::new(192, 0, 2, 199)));
        assert_eq!(pool_addrs().len(), 24);
        assert!(in_internal(Host::S1.addr()));
        assert!(in_internal(Ipv4Addr::new(100, 127, 255, 255)));
        assert!(!in_internal(Ipv4Addr::new(100, 128, 0, 0)));
        assert!(!in_internal(Host::E1.addr()));
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
