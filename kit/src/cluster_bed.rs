//! A network-namespace test bed for a two-node cgnat cluster whose routing
//! is done by BIRD 2 (eBGP + BFD), with the shipped example configs of
//! `configs/bird/`.
//!
//! ```text
//!  s1 100.64.1.10/24 -- sub1 [acc] (100.64.1.1/24)     n1: int0 10.0.1.11  ext0 10.0.2.11  sync0 10.0.3.11
//!  s2 100.64.2.10/24 -- sub2 [acc] (100.64.2.1/24)     n2: int0 10.0.1.12  ext0 10.0.2.12  sync0 10.0.3.12
//!  acc up0 10.0.1.1/24 --[swa: br0]-- n1 int0, n2 int0
//!  upr dn0 10.0.2.1/24 --[swu: br0]-- n1 ext0, n2 ext0
//!                         [sws: br0]-- n1 sync0, n2 sync0
//!  upr ext0 198.51.100.1/24 -- eth0 ext 198.51.100.10/24 (gateway .1)
//! ```
//!
//! * `acc` (access router, AS 65001) and `upr` (upstream router, AS 65002)
//!   forward (`ip_forward=1`) and run BIRD with `configs/bird/access.conf`
//!   and `configs/bird/upstream.conf`.
//! * The nodes `n1` (AS 65011) and `n2` (AS 65012) run BIRD with
//!   `configs/bird/node1.conf` / `node2.conf` (both include
//!   `node-common.conf`) and keep `ip_forward=0`: cgnat forwards in XDP; BGP
//!   and BFD reach the node's own addresses.
//! * The switches `swa`, `swu`, `sws` are namespaces holding a bridge `br0`
//!   whose ports are named after the host they lead to (`acc`, `upr`, `n1`,
//!   `n2`), so a node that dies does not change the carrier of a router's
//!   link: the routers learn of it from BFD only.
//! * Slices: node 1 owns subscribers 100.64.1.0/24 with pool slice
//!   203.0.113.8/29, node 2 owns 100.64.2.0/24 with 203.0.113.16/29
//!   ([`SUBSCRIBERS`], [`POOL_SLICES`]).
//! * Namespaces are `cg<pid>x<n>-<host>` (the same scheme and counter as
//!   [`crate::testbed`], so the beds of parallel tests never collide, and
//!   [`cleanup_stale`] removes what a crashed run left, BIRDs included). The
//!   work directory `<tmp>/cgnat-tb-cg<pid>x<n>` holds the BIRD control
//!   sockets (`<host>.ctl`) and pid files (`<host>.pid`).
//!
//! Routing, as the configs document in detail: cgnat (emulated by the
//! routing test with `ip route`) writes one `unreachable` route per pool
//! slice it serves into kernel table [`CGNAT_TABLE`] of its node, metric
//! [`METRIC_OWNER`] for the slice it owns, [`METRIC_BACKUP`] for the one it
//! backs up. The node's BIRD announces them to both routers (backups with a
//! longer AS path); `upr` routes each slice to the best node; on `acc`,
//! `ip rule from <subscribers of slice i> lookup 10i` and a recursive static
//! default route per slice (`route 0.0.0.0/0 recursive <first address of the
//! slice>`, resolved in master4) send a slice's subscribers to the node whose
//! route for the slice is best. The routers announce only their connected
//! networks; the nodes install those in their main table and never a pool
//! route.
//!
//! Interfaces and offloads, for the XDP program added later: hosts have tx
//! and rx checksum offload off (they send full checksums and check what they
//! receive), routers have tx offload off, and the switch-side peers of the
//! nodes' `int0` and `ext0` have GRO on (a veth accepts XDP_REDIRECTed frames
//! only when its peer runs NAPI; see [`crate::testbed`]).
//!
//! # API in short
//! * [`ClusterBed::new`] builds everything, starts the four BIRDs and waits
//!   until every BGP session is Established and every BFD session Up.
//!   Dropping the bed deletes everything (also during a panic).
//! * [`ClusterBed::ns`], [`ClusterBed::exec`], [`ClusterBed::run`],
//!   [`ClusterBed::spawn`], [`ClusterBed::ip`] run commands in a namespace.
//! * [`ClusterBed::birdc`], [`ClusterBed::routes`],
//!   [`ClusterBed::route_via`], [`ClusterBed::wait_route`] /
//!   [`ClusterBed::wait_route_since`], [`ClusterBed::wait_established`],
//!   [`ClusterBed::dump`].
//! * Faults: [`ClusterBed::kill_node`] (power loss), [`ClusterBed::revive_node`],
//!   [`ClusterBed::sync_link`].
//!
//! Every wait is bounded; a failed wait returns [`ClusterError`] carrying
//! [`ClusterBed::dump`] (`birdc show protocols all`, the BFD sessions, the
//! BIRD logs and the route tables).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use crate::testbed::{
    check_output, cleanup_stale, kill_ns_pids, next_testbed_id, remove_workdir, run_command,
    Background, TestbedError, WORKDIR_PREFIX,
};

/// Every namespace of the bed, by short name.
pub const HOSTS: [&str; 10] = [
    "s1", "s2", "ext", "acc", "upr", "n1", "n2", "swa", "swu", "sws",
];
/// The namespaces that run BIRD.
pub const BIRD_HOSTS: [&str; 4] = ["acc", "upr", "n1", "n2"];
/// The switches (namespaces with a bridge `br0`).
pub const SWITCHES: [&str; 3] = ["swa", "swu", "sws"];

/// `acc`'s address on `up0`, the nodes' LAN on the subscriber side.
pub const ACC_UP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// `upr`'s address on `dn0`, the nodes' LAN on the internet side.
pub const UPR_DN: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// `upr`'s address on `ext0`, the external host's gateway.
pub const UPR_EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Subscriber `s1` (slice 1).
pub const S1: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 10);
/// Subscriber `s2` (slice 2).
pub const S2: Ipv4Addr = Ipv4Addr::new(100, 64, 2, 10);
/// The external host `ext`.
pub const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The external network behind `upr`.
pub const EXTERNAL_NET: &str = "198.51.100.0/24";
/// Subscriber prefix of slice 1 and 2 (owned by node 1 and 2).
pub const SUBSCRIBERS: [&str; 2] = ["100.64.1.0/24", "100.64.2.0/24"];
/// External pool slice of slice 1 and 2 (owned by node 1 and 2).
pub const POOL_SLICES: [&str; 2] = ["203.0.113.8/29", "203.0.113.16/29"];
/// The kernel table of a node in which cgnat writes the routes to announce.
pub const CGNAT_TABLE: u32 = 200;
/// Metric of a table-200 route whose slice the node actively owns.
pub const METRIC_OWNER: u32 = 100;
/// Metric of a table-200 route whose slice the node only backs up.
pub const METRIC_BACKUP: u32 = 200;
/// `acc`'s kernel tables for the subscribers of slice 1 and 2.
pub const SLICE_TABLES: [u32; 2] = [101, 102];
/// The kernel's main table.
pub const MAIN_TABLE: u32 = 254;

/// How long commands may take.
const CMD: Duration = Duration::from_secs(30);
/// How long all sessions may take to come up (a loaded machine included).
pub const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Route polling period.
const POLL: Duration = Duration::from_millis(5);

fn check_node(n: usize) -> Result<()> {
    if n == 1 || n == 2 {
        Ok(())
    } else {
        Err(ClusterError::NodeState(
            n,
            "there are nodes 1 and 2 only".into(),
        ))
    }
}

/// Node `n`'s (1 or 2) namespace short name: `n1`, `n2`.
pub fn node_name(n: usize) -> &'static str {
    match n {
        1 => "n1",
        2 => "n2",
        _ => panic!("there are nodes 1 and 2 only, not {n}"),
    }
}

/// Node `n`'s address on `int0` (10.0.1.1n).
pub fn node_int(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, 10 + n as u8)
}

/// Node `n`'s address on `ext0` (10.0.2.1n).
pub fn node_ext(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2, 10 + n as u8)
}

/// Node `n`'s address on `sync0` (10.0.3.1n).
pub fn node_sync(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 3, 10 + n as u8)
}

/// The directory of the shipped BIRD configs (`configs/bird`).
pub fn bird_config_dir() -> PathBuf {
    crate::repo_root().join("configs").join("bird")
}

/// The shipped BIRD config a host of the bed runs.
pub fn bird_config(host: &str) -> Option<PathBuf> {
    let file = match host {
        "acc" => "access.conf",
        "upr" => "upstream.conf",
        "n1" => "node1.conf",
        "n2" => "node2.conf",
        _ => return None,
    };
    Some(bird_config_dir().join(file))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Why this process cannot build a [`ClusterBed`] (not root, a tool
/// missing), or `None` when it can. Tests pass the reason to
/// [`crate::testbed::cannot_run`].
pub fn missing_requirements() -> Option<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    for tool in ["ip", "ethtool", "sysctl", "ping", "bird", "birdc"] {
        if !on_path(tool) {
            missing.push(format!("`{tool}`"));
        }
    }
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "the cluster test bed needs {} (BIRD: apt-get install bird2, or make deps)",
            missing.join(", ")
        ))
    }
}

/// Errors of the cluster bed. The waits' errors carry a dump of the BIRDs'
/// state and the route tables ([`ClusterBed::dump`]).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Bed(#[from] TestbedError),
    #[error("no host `{0}` in the cluster bed (hosts: {HOSTS:?})")]
    UnknownHost(String),
    #[error("node {0}: {1}")]
    NodeState(usize, String),
    #[error("`birdc {cmd}` in {host} failed: {detail}")]
    Birdc {
        host: String,
        cmd: String,
        detail: String,
    },
    #[error("timed out after {timeout:?}: {what}\n{dump}")]
    Timeout {
        what: String,
        timeout: Duration,
        dump: String,
    },
    #[error("BIRD in {host} exited\n--- its output ---\n{log}\n{dump}")]
    BirdExited {
        host: String,
        log: String,
        dump: String,
    },
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// The cluster test bed. See the module documentation.
pub struct ClusterBed {
    id: String,
    dir: PathBuf,
    /// Full namespace names, indexed like [`HOSTS`].
    names: Vec<String>,
    /// Whether each namespace currently exists (a killed node's does not).
    exists: Vec<bool>,
    birds: BTreeMap<&'static str, Background>,
    /// Output of BIRDs that were killed, for the dumps.
    dead_logs: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for ClusterBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBed").field("id", &self.id).finish()
    }
}

fn host_index(name: &str) -> Option<usize> {
    HOSTS.iter().position(|h| *h == name)
}

/// True when process `pid` is gone or a zombie (exited, not yet reaped).
fn process_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => true,
    }
}

impl ClusterBed {
    /// Builds the topology, starts the four BIRDs and waits (up to
    /// [`ESTABLISH_TIMEOUT`]) until every BGP session is Established and
    /// every BFD session Up. Needs root, `ip`, `ethtool`, `sysctl`, `bird`
    /// and `birdc` (see [`missing_requirements`]). Removes stale leftovers
    /// of dead test processes first.
    pub fn new() -> Result<ClusterBed> {
        let _ = cleanup_stale();
        let id = next_testbed_id();
        let dir = std::env::temp_dir().join(format!("{WORKDIR_PREFIX}{id}"));
        let mut bed = ClusterBed {
            names: HOSTS.iter().map(|h| format!("{id}-{h}")).collect(),
            exists: vec![false; HOSTS.len()],
            id,
            dir,
            birds: BTreeMap::new(),
            dead_logs: BTreeMap::new(),
        };
        bed.build()?;
        for host in BIRD_HOSTS {
            bed.start_bird(host)?;
        }
        bed.wait_established(ESTABLISH_TIMEOUT)?;
        Ok(bed)
    }

    /// `cg<pid>x<n>`, the prefix of all names of this bed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The full namespace name of host `name` (one of [`HOSTS`]). Panics on
    /// a name that is not a host of the bed.
    pub fn ns(&self, name: &str) -> &str {
        match host_index(name) {
            Some(i) => &self.names[i],
            None => panic!("no host `{name}` in the cluster bed (hosts: {HOSTS:?})"),
        }
    }

    fn ns_checked(&self, name: &str) -> Result<&str> {
        host_index(name)
            .map(|i| self.names[i].as_str())
            .ok_or_else(|| ClusterError::UnknownHost(name.to_owned()))
    }

    /// The bed's private work directory (removed on drop): BIRD sockets and
    /// pid files, and whatever a test wants to put there.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// BIRD's control socket of `host`.
    pub fn bird_socket(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}.ctl"))
    }

    /// Whether node `n`'s namespace exists (it does not between
    /// [`ClusterBed::kill_node`] and [`ClusterBed::revive_node`]).
    pub fn node_alive(&self, n: usize) -> bool {
        host_index(node_name(n)).is_some_and(|i| self.exists[i])
    }

    fn cmd(argv: &[&str]) -> Result<String> {
        let out = run_command(argv, CMD)?;
        Ok(check_output(&argv.join(" "))(out)?)
    }

    /// `ip -n <ns> args...`, checked; returns stdout.
    pub fn ip(&self, name: &str, args: &[&str]) -> Result<String> {
        let mut argv = vec!["ip", "-n", self.ns_checked(name)?];
        argv.extend_from_slice(args);
        Self::cmd(&argv)
    }

    fn netns_argv<'a>(&'a self, name: &str, args: &[&'a str]) -> Result<Vec<&'a str>> {
        let mut argv = vec!["ip", "netns", "exec", self.ns_checked(name)?];
        argv.extend_from_slice(args);
        Ok(argv)
    }

    /// Runs `args` in host `name`'s namespace with a 30 s limit; the exit
    /// status is not checked.
    pub fn exec(&self, name: &str, args: &[&str]) -> Result<Output> {
        Ok(run_command(&self.netns_argv(name, args)?, CMD)?)
    }

    /// Runs `args` in host `name`'s namespace; a non-zero exit is an error
    /// carrying stderr. Returns stdout.
    pub fn run(&self, name: &str, args: &[&str]) -> Result<String> {
        Self::cmd(&self.netns_argv(name, args)?)
    }

    /// Runs `f` on a thread inside namespace `name` (see
    /// [`crate::testbed::in_netns`]).
    pub fn in_ns<T, F>(&self, name: &str, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        Ok(crate::testbed::in_netns(self.ns(name), f)?)
    }

    /// A pin directory for node `n`'s cgnat on the bed's private bpffs.
    pub fn pin_path(&self, n: usize) -> PathBuf {
        self.dir.join("bpf").join(node_name(n))
    }

    /// Starts `args` in the background in host `name`'s namespace (output
    /// collected; SIGTERM, then SIGKILL, when the guard is dropped).
    /// [`ClusterBed::kill_node`] SIGKILLs it if it runs on that node.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Result<Background> {
        Ok(Background::start(&self.netns_argv(name, args)?)?)
    }

    /// `birdc -s <socket> <cmd>` for the BIRD of `name` (`acc`, `upr`, `n1`,
    /// `n2`); `cmd` is split at white space. Returns the output.
    pub fn birdc(&self, name: &str, cmd: &str) -> Result<String> {
        if !BIRD_HOSTS.contains(&name) {
            return Err(ClusterError::UnknownHost(format!("{name} (runs no BIRD)")));
        }
        let sock = self.bird_socket(name).display().to_string();
        let mut argv = vec!["birdc", "-s", &sock];
        argv.extend(cmd.split_whitespace());
        let out = run_command(&argv, Duration::from_secs(10))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(ClusterError::Birdc {
                host: name.to_owned(),
                cmd: cmd.to_owned(),
                detail: format!(
                    "{}: {}{}",
                    out.status,
                    stdout.trim_end(),
                    String::from_utf8_lossy(&out.stderr).trim_end()
                ),
            })
        }
    }

    /// `ip -4 route show table <table>` in `name`'s namespace.
    pub fn routes(&self, name: &str, table: u32) -> Result<String> {
        self.ip(name, &["-4", "route", "show", "table", &table.to_string()])
    }

    /// The routes for exactly `prefix` in `table`, best (lowest metric)
    /// first. `prefix` as `ip` takes it (`0.0.0.0/0` for the default).
    pub fn routes_for(&self, name: &str, table: u32, prefix: &str) -> Result<Vec<RouteLine>> {
        let out = self.ip(
            name,
            &[
                "-4",
                "route",
                "show",
                "table",
                &table.to_string(),
                "exact",
                prefix,
            ],
        )?;
        let mut routes = parse_routes(&out);
        routes.sort_by_key(|r| r.metric);
        Ok(routes)
    }

    /// The gateway of the best route for exactly `prefix` in `table`, or
    /// `None` when there is no such route or it has no gateway.
    pub fn route_via(&self, name: &str, table: u32, prefix: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .routes_for(name, table, prefix)?
            .first()
            .and_then(|r| r.via))
    }

    /// Waits until the best route for exactly `prefix` in `name`'s kernel
    /// table `table` goes via `via`, and returns how long that took. Polls
    /// every 5 ms. The error, after `timeout`, carries [`ClusterBed::dump`].
    pub fn wait_route(
        &self,
        name: &str,
        table: u32,
        prefix: &str,
        via: Ipv4Addr,
        timeout: Duration,
    ) -> Result<Duration> {
        self.wait_route_since(Instant::now(), name, table, prefix, via, timeout)
    }

    /// [`ClusterBed::wait_route`] measured from `since` (for instance the
    /// instant [`ClusterBed::kill_node`] returned); gives up at `since +
    /// timeout`.
    pub fn wait_route_since(
        &self,
        since: Instant,
        name: &str,
        table: u32,
        prefix: &str,
        via: Ipv4Addr,
        timeout: Duration,
    ) -> Result<Duration> {
        let mut last;
        loop {
            let routes = self.routes_for(name, table, prefix)?;
            if routes.first().and_then(|r| r.via) == Some(via) {
                return Ok(since.elapsed());
            }
            last = routes;
            if since.elapsed() >= timeout {
                break;
            }
            thread::sleep(POLL);
        }
        let seen = if last.is_empty() {
            "no route".to_owned()
        } else {
            last.iter()
                .map(|r| r.line.trim())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        Err(ClusterError::Timeout {
            what: format!("{name} table {table}: {prefix} via {via} (last seen: {seen})"),
            timeout,
            dump: self.dump(),
        })
    }

    /// What is not up yet: for every pair of a router and a live node, the
    /// BGP session on both sides must be Established and the BFD session on
    /// both sides Up.
    fn pending_sessions(&self) -> Result<Vec<String>> {
        let mut pending = Vec::new();
        // host -> (BGP protocol -> state, BFD peer -> state)
        let mut states = BTreeMap::new();
        for host in BIRD_HOSTS {
            if !self.birds.contains_key(host) {
                continue;
            }
            self.check_bird_running(host)?;
            match (
                self.birdc(host, "show protocols"),
                self.birdc(host, "show bfd sessions"),
            ) {
                (Ok(p), Ok(b)) => {
                    states.insert(host, (parse_bgp_protocols(&p), parse_bfd_sessions(&b)));
                }
                (Err(e), _) | (_, Err(e)) => pending.push(format!("{host}: {e}")),
            }
        }
        let mut expect = |host: &str, proto: &str, peer: Ipv4Addr| {
            let Some((bgp, bfd)) = states.get(host) else {
                return;
            };
            match bgp.get(proto).map(String::as_str) {
                Some("Established") => {}
                other => pending.push(format!("{host}: BGP {proto} is {other:?}")),
            }
            match bfd.get(&peer).map(String::as_str) {
                Some("Up") => {}
                other => pending.push(format!("{host}: BFD to {peer} is {other:?}")),
            }
        };
        for n in [1, 2] {
            if !self.birds.contains_key(node_name(n)) {
                continue;
            }
            let node_proto = format!("node{n}");
            expect("acc", &node_proto, node_int(n));
            expect("upr", &node_proto, node_ext(n));
            expect(node_name(n), "access", ACC_UP);
            expect(node_name(n), "upstream", UPR_DN);
        }
        Ok(pending)
    }

    fn check_bird_running(&self, host: &str) -> Result<()> {
        if let Some(b) = self.birds.get(host) {
            if b.pid().is_none_or(process_exited) {
                return Err(ClusterError::BirdExited {
                    host: host.to_owned(),
                    log: b.log(),
                    dump: self.dump(),
                });
            }
        }
        Ok(())
    }

    /// Waits until, between each router and each live node, both BGP
    /// sessions are Established and both BFD sessions Up. Returns how long
    /// it took.
    pub fn wait_established(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let pending = self.pending_sessions()?;
            if pending.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(ClusterError::Timeout {
                    what: format!("sessions not up: {}", pending.join("; ")),
                    timeout,
                    dump: self.dump(),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A report of everything routing: per BIRD `show protocols all`, `show
    /// bfd sessions` and the end of its log; per router and node the kernel
    /// tables that matter (and `acc`'s rules).
    pub fn dump(&self) -> String {
        let mut s = format!("===== cluster bed {} =====\n", self.id);
        for host in BIRD_HOSTS {
            if let Some(b) = self.birds.get(host) {
                for cmd in ["show protocols all", "show bfd sessions"] {
                    let out = self.birdc(host, cmd).unwrap_or_else(|e| e.to_string());
                    let _ = writeln!(s, "--- {host}: birdc {cmd}\n{}", out.trim_end());
                }
                let _ = writeln!(s, "--- {host}: BIRD log\n{}", tail(&b.log(), 40));
            } else if let Some(log) = self.dead_logs.get(host) {
                let _ = writeln!(s, "--- {host}: BIRD killed; its log\n{}", tail(log, 40));
            }
        }
        let mut tables: Vec<(&str, &[u32])> = vec![
            ("acc", &[MAIN_TABLE, SLICE_TABLES[0], SLICE_TABLES[1]]),
            ("upr", &[MAIN_TABLE]),
        ];
        for n in [1, 2] {
            if self.node_alive(n) {
                tables.push((node_name(n), &[MAIN_TABLE, CGNAT_TABLE]));
            } else {
                let _ = writeln!(s, "--- {}: dead", node_name(n));
            }
        }
        if let Ok(rules) = self.ip("acc", &["-4", "rule", "show"]) {
            let _ = writeln!(s, "--- acc: ip rule\n{}", rules.trim_end());
        }
        for (host, ts) in tables {
            for t in ts {
                let out = self.routes(host, *t).unwrap_or_else(|e| e.to_string());
                let _ = writeln!(s, "--- {host}: ip route show table {t}\n{}", out.trim_end());
            }
        }
        s
    }

    /// Node `n` (1 or 2) dies as on power loss: its switch ports (in `swa`,
    /// `swu`, `sws`) are deleted first, so its interfaces vanish without a
    /// last packet; then every process in its namespace (BIRD, anything
    /// [`ClusterBed::spawn`]ed there) gets SIGKILL, and the namespace is
    /// deleted with all its state (table 200 included). The routers' links
    /// stay up: they learn of it from BFD. Returns the instant just before
    /// the first port was deleted, to measure failover from (see
    /// [`ClusterBed::wait_route_since`]).
    pub fn kill_node(&mut self, n: usize) -> Result<Instant> {
        check_node(n)?;
        if !self.node_alive(n) {
            return Err(ClusterError::NodeState(n, "already dead".into()));
        }
        let node = node_name(n);
        let cut = Instant::now();
        let mut first_err = None;
        for sw in SWITCHES {
            if let Err(e) = self.ip(sw, &["link", "del", node]) {
                first_err.get_or_insert(e);
            }
        }
        let ns = self.ns(node).to_owned();
        kill_ns_pids(&ns);
        if let Some(b) = self.birds.remove(node) {
            self.dead_logs.insert(node, b.log());
            drop(b); // reaps it
        }
        let del = Self::cmd(&["ip", "netns", "del", &ns]);
        if let Some(i) = host_index(node) {
            self.exists[i] = false;
        }
        match first_err {
            Some(e) => Err(e),
            None => del.map(|_| cut),
        }
    }

    /// Rebuilds node `n` after [`ClusterBed::kill_node`]: a fresh namespace
    /// with the same interfaces and addresses, BIRD started again; waits
    /// until all sessions are up again and returns how long that took
    /// (from BIRD's start). Table 200 starts empty, as after a reboot.
    pub fn revive_node(&mut self, n: usize) -> Result<Duration> {
        check_node(n)?;
        if self.node_alive(n) {
            return Err(ClusterError::NodeState(n, "is alive".into()));
        }
        self.build_node(n)?;
        self.start_bird(node_name(n))?;
        self.wait_established(ESTABLISH_TIMEOUT)
    }

    /// Takes node `n`'s port on the sync switch down (`up = false`) or up:
    /// the node's `sync0` loses or regains carrier.
    pub fn sync_link(&self, n: usize, up: bool) -> Result<()> {
        check_node(n)?;
        if !self.node_alive(n) {
            return Err(ClusterError::NodeState(n, "is dead".into()));
        }
        let state = if up { "up" } else { "down" };
        self.ip("sws", &["link", "set", node_name(n), state])?;
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Construction
    // -----------------------------------------------------------------------

    fn add_ns(&mut self, name: &str) -> Result<()> {
        let i = host_index(name).ok_or_else(|| ClusterError::UnknownHost(name.into()))?;
        Self::cmd(&["ip", "netns", "add", &self.names[i]])?;
        self.exists[i] = true;
        let mut sysctls = vec!["sysctl", "-q", "-w"];
        if Path::new("/proc/sys/net/ipv6").exists() {
            // Quiet links: no router solicitations, no MLD.
            sysctls.push("net.ipv6.conf.all.disable_ipv6=1");
            sysctls.push("net.ipv6.conf.default.disable_ipv6=1");
        }
        match name {
            // Routers forward; reverse-path filtering would drop the
            // subscribers' return traffic (acc has no route back to the
            // internet, the nodes deliver it). New namespaces inherit IPv4
            // settings from the initial one, so everything is explicit.
            "acc" | "upr" => sysctls.extend([
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]),
            // cgnat forwards in XDP, never the node's kernel.
            "n1" | "n2" => sysctls.extend([
                "net.ipv4.ip_forward=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]),
            _ => {}
        }
        if sysctls.len() > 3 {
            self.run(name, &sysctls)?;
        }
        self.ip(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth pair: `ifname` in `host`, `peer` in `other`.
    fn veth(&self, host: &str, ifname: &str, other: &str, peer: &str) -> Result<()> {
        let other_ns = self.ns_checked(other)?.to_owned();
        self.ip(
            host,
            &[
                "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", &other_ns,
            ],
        )?;
        Ok(())
    }

    /// A port of switch `sw` (named `host`) leading to `host`'s `ifname`.
    fn switch_port(&self, host: &str, ifname: &str, sw: &str) -> Result<()> {
        self.veth(host, ifname, sw, host)?;
        self.ip(sw, &["link", "set", host, "master", "br0"])?;
        self.ip(sw, &["link", "set", host, "up"])?;
        Ok(())
    }

    fn addr_up(&self, host: &str, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(host, &["addr", "add", cidr, "dev", ifname])?;
        self.ip(host, &["link", "set", ifname, "up"])?;
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| TestbedError::Io {
            context: format!("creating {}", self.dir.display()),
            source,
        })?;
        crate::testbed::mount_bpffs(&self.dir.join("bpf"))?;
        for host in ["s1", "s2", "ext", "acc", "upr", "swa", "swu", "sws"] {
            self.add_ns(host)?;
        }
        for sw in SWITCHES {
            self.ip(sw, &["link", "add", "br0", "type", "bridge"])?;
            self.ip(sw, &["link", "set", "br0", "up"])?;
        }
        // Hosts, each on its own link to its router.
        self.veth("s1", "eth0", "acc", "sub1")?;
        self.veth("s2", "eth0", "acc", "sub2")?;
        self.veth("ext", "eth0", "upr", "ext0")?;
        self.switch_port("acc", "up0", "swa")?;
        self.switch_port("upr", "dn0", "swu")?;

        self.addr_up("s1", "eth0", &format!("{S1}/24"))?;
        self.addr_up("s2", "eth0", &format!("{S2}/24"))?;
        self.addr_up("ext", "eth0", &format!("{EXT}/24"))?;
        self.ip("s1", &["route", "add", "default", "via", "100.64.1.1"])?;
        self.ip("s2", &["route", "add", "default", "via", "100.64.2.1"])?;
        self.ip(
            "ext",
            &["route", "add", "default", "via", &UPR_EXT.to_string()],
        )?;
        self.addr_up("acc", "sub1", "100.64.1.1/24")?;
        self.addr_up("acc", "sub2", "100.64.2.1/24")?;
        self.addr_up("acc", "up0", &format!("{ACC_UP}/24"))?;
        self.addr_up("upr", "dn0", &format!("{UPR_DN}/24"))?;
        self.addr_up("upr", "ext0", &format!("{UPR_EXT}/24"))?;

        // The subscribers of a slice leave by their slice's table, which
        // BIRD fills (see configs/bird/access.conf: the same commands).
        for (subs, table) in SUBSCRIBERS.iter().zip(SLICE_TABLES) {
            self.ip(
                "acc",
                &["rule", "add", "from", subs, "lookup", &table.to_string()],
            )?;
        }

        // Full checksums from hosts and routers (the NAT's incremental
        // updates must start from a real one); hosts check what they get.
        for host in ["s1", "s2", "ext"] {
            self.run(host, &["ethtool", "-K", "eth0", "tx", "off", "rx", "off"])?;
        }
        for (router, ifname) in [
            ("acc", "sub1"),
            ("acc", "sub2"),
            ("acc", "up0"),
            ("upr", "dn0"),
            ("upr", "ext0"),
        ] {
            self.run(router, &["ethtool", "-K", ifname, "tx", "off"])?;
        }
        for n in [1, 2] {
            self.build_node(n)?;
        }
        Ok(())
    }

    /// Node `n`'s namespace, its three switch ports and addresses.
    fn build_node(&mut self, n: usize) -> Result<()> {
        let node = node_name(n);
        self.add_ns(node)?;
        self.switch_port(node, "int0", "swa")?;
        self.switch_port(node, "ext0", "swu")?;
        self.switch_port(node, "sync0", "sws")?;
        self.addr_up(node, "int0", &format!("{}/24", node_int(n)))?;
        self.addr_up(node, "ext0", &format!("{}/24", node_ext(n)))?;
        self.addr_up(node, "sync0", &format!("{}/24", node_sync(n)))?;
        // XDP_REDIRECT into a veth is delivered only if its peer runs NAPI
        // (GRO or an XDP program): the switch side of int0 and ext0.
        for sw in ["swa", "swu"] {
            self.run(sw, &["ethtool", "-K", node, "gro", "on"])?;
        }
        Ok(())
    }

    /// Starts BIRD in `host` with its shipped config:
    /// `bird -f -c <config> -s <dir>/<host>.ctl -P <dir>/<host>.pid`.
    fn start_bird(&mut self, host: &'static str) -> Result<()> {
        let config = bird_config(host)
            .ok_or_else(|| ClusterError::UnknownHost(format!("{host} (runs no BIRD)")))?;
        let sock = self.bird_socket(host);
        // A SIGKILLed BIRD leaves its socket behind.
        let _ = std::fs::remove_file(&sock);
        let pid = self.dir.join(format!("{host}.pid"));
        let (config, sock, pid) = (
            config.display().to_string(),
            sock.display().to_string(),
            pid.display().to_string(),
        );
        let bird = self.spawn(
            host,
            &["bird", "-f", "-c", &config, "-s", &sock, "-P", &pid],
        )?;
        self.dead_logs.remove(host);
        self.birds.insert(host, bird);
        Ok(())
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Drop for ClusterBed {
    fn drop(&mut self) {
        // Everything goes: no graceful BIRD shutdown needed.
        for (i, ns) in self.names.iter().enumerate() {
            if self.exists[i] {
                kill_ns_pids(ns);
            }
        }
        self.birds.clear();
        for (i, ns) in self.names.iter().enumerate().rev() {
            if !self.exists[i] {
                continue;
            }
            if let Err(e) =
                run_command(&["ip", "netns", "del", ns], CMD).and_then(check_output("ip netns del"))
            {
                eprintln!("cluster bed: cannot delete namespace {ns}: {e}");
            }
        }
        if self.dir.exists() {
            remove_workdir(&self.dir);
        }
    }
}

mod parse;
pub use parse::{parse_bfd_sessions, parse_bgp_protocols, parse_routes, RouteLine};
