//! The benchmark suite of issue #7: `make bench` runs it through
//! `benches/datapath.rs`, `tests/bench_smoke.rs` runs it with tiny numbers.
//! Results and their interpretation: docs/performance.md.
//!
//! Sections (each number is the median of `Params::runs` runs or more):
//! - **paths**: per-packet cost of the program loaded as the daemon loads
//!   it (`Datapath::load`, not attached), in a network namespace like the
//!   packet tests' (int0/ext0 veths, addresses, lo forwarding, permanent
//!   neighbours), sessions established by a first packet; and of the floor
//!   forwarder (bpf/bench/floor.bpf.c) on the same frames. BPF_PROG_TEST_RUN
//!   repeats a program on one buffer, which the program rewrites, so the
//!   runs go through `xdp_feed`: it restores the frame and tail-calls the
//!   program under test; its own cost (tail-calling an empty program) is
//!   measured in the same run and subtracted. A second method (single
//!   BPF_PROG_TEST_RUN calls, median, minus the median of an empty program)
//!   cross-checks it. Every cgnat run checks that its verdict counter grew
//!   by exactly `repeat`, so every repetition took the measured path.
//! - **new flows**: one single call per new flow (new source address or
//!   port) against the same number of calls on an established flow.
//! - **scale**: ~1,000 and `scale_subs x scale_ports` live sessions written
//!   into the maps in batches (values as the data path writes them); the
//!   fast path over many flows at both sizes; memory per session from the
//!   maps' `memlock`; expiry sweeps; the fast path while a sweep runs.
//! - **e2e**: three namespaces (generator, router, sink) joined by veths, native
//!   XDP; frames injected by `xdp_gen` with BPF_F_TEST_XDP_LIVE_FRAMES, counted
//!   by `xdp_sink`; router = cgnat attached, the floor, or Linux forwarding
//!   with nftables masquerade. Router NAPI is threaded and pinned to its own
//!   CPU when there are two.
//! - **tcp**: iperf3 throughput and new connections per second (a Rust
//!   client doing connect/close) through cgnat and through nftables.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use nix::sched::{CloneFlags, CpuSet};
use nix::unistd::Pid;

use crate::bpf::floor::{Floor, Prog, Target};
use crate::bpf::{bytes_of, from_bytes, types, Datapath, LoadOptions, Side, Tables};
use crate::config::Config;
use crate::expiry::{monotonic_ns, Sweeper};
use crate::testbed::{check_output, run_command};

// ---------------------------------------------------------------------------
// Errors, parameters, statistics
// ---------------------------------------------------------------------------

/// A benchmark that could not run, with what was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

trait Ctx<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| BenchError(format!("{what}: {e}")))
    }
}

impl From<crate::bpf::BpfError> for BenchError {
    fn from(e: crate::bpf::BpfError) -> BenchError {
        BenchError(e.to_string())
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(BenchError(msg.into()))
}

/// A part of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Paths,
    NewFlows,
    Scale,
    E2e,
    Tcp,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Paths,
        Section::NewFlows,
        Section::Scale,
        Section::E2e,
        Section::Tcp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Paths => "paths",
            Section::NewFlows => "newflows",
            Section::Scale => "scale",
            Section::E2e => "e2e",
            Section::Tcp => "tcp",
        }
    }
}

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Params {
    /// Runs per measurement (the median is reported).
    pub runs: usize,
    /// BPF_PROG_TEST_RUN repetitions per run (paths).
    pub repeat: u32,
    /// Single calls per path for the cross-check.
    pub single_calls: u32,
    /// New flows per run.
    pub new_flows: u32,
    /// Subscribers and ports (sessions) each of the large scale table.
    pub scale_subs: u32,
    pub scale_ports: u32,
    /// Subscribers of the small table (x scale_ports sessions).
    pub small_subs: u32,
    /// Distinct flows the fast path cycles through at large scale.
    pub scale_frames: u32,
    /// Repetitions per run at scale.
    pub scale_repeat: u32,
    /// Time the full expiry (every session, two sweeps).
    pub expire_all: bool,
    /// End to end: measurement window and warm-up per mode, runs.
    pub e2e_secs: f64,
    pub e2e_warmup: f64,
    pub e2e_runs: usize,
    /// Generator flows: subscribers x ports.
    pub e2e_subs: u32,
    pub e2e_ports: u32,
    /// TCP: runs, iperf3 seconds, connection-rate seconds.
    pub tcp_runs: usize,
    pub iperf_secs: u32,
    pub conn_secs: f64,
    pub sections: Vec<Section>,
}

impl Params {
    /// `make bench`: fits in a few minutes on 2 cores.
    pub fn full() -> Params {
        Params {
            runs: 5,
            repeat: 1_000_000,
            single_calls: 20_000,
            new_flows: 50_000,
            scale_subs: 65_536,
            scale_ports: 63,
            small_subs: 16,
            scale_frames: 262_144,
            scale_repeat: 1_000_000,
            expire_all: true,
            e2e_secs: 2.0,
            e2e_warmup: 1.0,
            e2e_runs: 5,
            e2e_subs: 64,
            e2e_ports: 64,
            tcp_runs: 5,
            iperf_secs: 3,
            conn_secs: 2.0,
            sections: Section::ALL.to_vec(),
        }
    }

    /// The smoke test: everything, tiny.
    pub fn smoke() -> Params {
        Params {
            runs: 5,
            repeat: 2_000,
            single_calls: 200,
            new_flows: 500,
            // more sessions than one batch of a sweep's map dump
            scale_subs: 2048,
            scale_ports: 4,
            small_subs: 4,
            scale_frames: 128,
            scale_repeat: 5_000,
            expire_all: true,
            e2e_secs: 0.3,
            e2e_warmup: 0.2,
            e2e_runs: 1,
            e2e_subs: 4,
            e2e_ports: 4,
            tcp_runs: 1,
            iperf_secs: 1,
            conn_secs: 0.3,
            sections: Section::ALL.to_vec(),
        }
    }

    /// Overrides from the environment: `CGNAT_BENCH_ONLY=paths,scale`
    /// (sections), `CGNAT_BENCH_SCALE_SUBS=N`, `CGNAT_BENCH_RUNS=N`.
    pub fn with_env(mut self) -> Params {
        if let Ok(only) = std::env::var("CGNAT_BENCH_ONLY") {
            self.sections = Section::ALL
                .into_iter()
                .filter(|s| only.split(',').any(|w| w.trim() == s.name()))
                .collect();
        }
        if let Some(n) = env_num("CGNAT_BENCH_SCALE_SUBS") {
            self.scale_subs = n as u32;
        }
        if let Some(n) = env_num("CGNAT_BENCH_RUNS") {
            self.runs = n as usize;
            self.e2e_runs = n as usize;
            self.tcp_runs = n as usize;
        }
        self
    }

    fn has(&self, s: Section) -> bool {
        self.sections.contains(&s)
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The values of one measurement over its runs.
#[derive(Debug, Clone, Default)]
pub struct Stat {
    pub runs: Vec<f64>,
}

impl Stat {
    pub fn of(runs: Vec<f64>) -> Stat {
        Stat { runs }
    }

    pub fn median(&self) -> f64 {
        median(&self.runs)
    }

    pub fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NAN, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NAN, f64::max)
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Million packets per second at `ns` per packet.
pub fn mpps(ns: f64) -> f64 {
    1000.0 / ns
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// One packet path through the data path and through the floor.
#[derive(Debug, Clone)]
pub struct PathResult {
    pub name: &'static str,
    pub what: &'static str,
    /// cgnat, ns per packet, feeder overhead subtracted.
    pub cgnat_ns: Stat,
    /// The floor on the same frames, likewise.
    pub floor_ns: Stat,
    /// The feeder itself (restore + tail call + empty program).
    pub feeder_ns: Stat,
    /// Outbound TCP/UDP: the floor plus cgnat's two hash lookups.
    pub probe_ns: Option<Stat>,
    /// Cross-check: median single call minus the median of an empty
    /// program's single call.
    pub single_cgnat_ns: f64,
    pub single_floor_ns: f64,
}

impl PathResult {
    pub fn ratio(&self) -> f64 {
        self.cgnat_ns.median() / self.floor_ns.median()
    }
}

/// Cost of a new flow against an established one (single calls).
#[derive(Debug, Clone)]
pub struct NewFlowResult {
    pub flows_per_run: u32,
    pub subscribers: u32,
    /// Per run: median / mean kernel time of one call, timer overhead
    /// (median single call of an empty program) subtracted.
    pub new_ns: Stat,
    pub new_mean_ns: Stat,
    pub est_ns: Stat,
    pub est_mean_ns: Stat,
    pub overhead_ns: Stat,
}

impl NewFlowResult {
    /// What a new flow costs more than an established one (medians).
    pub fn extra_ns(&self) -> f64 {
        self.new_ns.median() - self.est_ns.median()
    }

    /// New flows one core can set up per second (from the mean cost).
    pub fn flows_per_sec(&self) -> f64 {
        1e9 / self.new_mean_ns.median()
    }
}

/// The kernel memory of one map.
#[derive(Debug, Clone)]
pub struct MapMem {
    pub name: &'static str,
    pub max_entries: u64,
    pub memlock: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ScaleResult {
    pub small_sessions: u64,
    pub large_sessions: u64,
    pub large_frames: u32,
    pub small_ns: Stat,
    pub large_ns: Stat,
    /// The large table, cycling through the small table's flows only.
    pub large_hot_ns: Stat,
    pub small_floor_ns: Stat,
    pub large_floor_ns: Stat,
    /// The floor plus cgnat's two lookups (xdp_probe), same maps' sizes.
    pub small_probe_ns: Stat,
    pub large_probe_ns: Stat,
    pub during_sweep_ns: Stat,
    pub sweeps_during: u64,
    pub preload_secs: f64,
    pub maps: Vec<MapMem>,
    pub sweep_noop_secs: f64,
    pub expire_mark_secs: f64,
    pub expire_delete_secs: f64,
    pub expired: u64,
}

impl ScaleResult {
    pub fn ratio(&self) -> f64 {
        self.large_ns.median() / self.small_ns.median()
    }

    /// memlock of sessions + bind_in + bind_out + subscribers, per live
    /// session.
    pub fn bytes_per_session(&self) -> f64 {
        let total: u64 = self
            .maps
            .iter()
            .filter(|m| SESSION_MAPS.contains(&m.name))
            .map(|m| m.memlock)
            .sum();
        total as f64 / self.large_sessions.max(1) as f64
    }

    /// The part of [`Self::bytes_per_session`] in the subscriber table
    /// (per subscriber, spread over its sessions).
    pub fn subscriber_bytes_per_session(&self) -> f64 {
        let subs: u64 = self
            .maps
            .iter()
            .filter(|m| m.name == "subscribers")
            .map(|m| m.memlock)
            .sum();
        subs as f64 / self.large_sessions.max(1) as f64
    }
}

/// The maps a session costs memory in.
const SESSION_MAPS: [&str; 4] = ["sessions", "bind_in", "bind_out", "subscribers"];

/// One router mode end to end.
#[derive(Debug, Clone, Default)]
pub struct E2eMode {
    /// Received at the sink.
    pub mpps: Stat,
    /// Sent by the generator meanwhile.
    pub gen_mpps: Stat,
    /// CPU time of the router's NAPI thread per packet received at the
    /// sink (ns): the router's cost, whether or not it was saturated.
    pub router_ns: Stat,
    /// Fraction of the window the router's NAPI thread ran.
    pub router_busy: Stat,
}

impl E2eMode {
    /// What one router CPU could forward at this cost (Mpps).
    pub fn capacity_mpps(&self) -> f64 {
        mpps(self.router_ns.median())
    }
}

#[derive(Debug, Clone, Default)]
pub struct E2eResult {
    pub flows: u32,
    pub frame_len: usize,
    pub cgnat: E2eMode,
    pub floor: E2eMode,
    /// The floor plus cgnat's two lookups.
    pub probe: E2eMode,
    pub nft: E2eMode,
    pub pinning: String,
}

impl E2eResult {
    /// cgnat against the floor and against nftables, by router CPU per
    /// packet (capacity of one core).
    pub fn vs_floor(&self) -> f64 {
        self.cgnat.capacity_mpps() / self.floor.capacity_mpps()
    }

    pub fn vs_nft(&self) -> f64 {
        self.cgnat.capacity_mpps() / self.nft.capacity_mpps()
    }
}

#[derive(Debug, Clone, Default)]
pub struct TcpResult {
    pub iperf_cgnat_gbps: Stat,
    pub iperf_nft_gbps: Stat,
    pub conn_cgnat: Stat,
    pub conn_nft: Stat,
    /// Why iperf3 did not run, if it did not.
    pub iperf_skipped: Option<String>,
}

/// Everything one run of the suite found.
#[derive(Debug, Clone)]
pub struct Summary {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub date: String,
    pub params: Params,
    pub paths: Vec<PathResult>,
    pub new_flows: Option<NewFlowResult>,
    pub scale: Option<ScaleResult>,
    pub e2e: Option<E2eResult>,
    pub tcp: Option<TcpResult>,
    pub errors: Vec<String>,
    /// Sections this kernel does not allow, with the reason (the
    /// end-to-end generator needs BPF_F_TEST_XDP_LIVE_FRAMES, which some
    /// kernels refuse with EPERM).
    pub unavailable: Vec<String>,
    pub notes: Vec<String>,
    pub secs: f64,
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

/// Runs the selected sections. A section that fails is recorded in
/// `errors` and the others still run. Needs root.
pub fn run(p: &Params) -> Result<Summary> {
    if !nix::unistd::geteuid().is_root() {
        return fail("the benchmarks need root (BPF programs, network namespaces)");
    }
    cleanup_stale();
    let p = p.clone();
    // A thread of its own: it switches network namespaces.
    thread::spawn(move || run_sections(&p))
        .join()
        .map_err(|e| BenchError(format!("benchmark thread panicked: {}", panic_text(&e))))
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "?".into())
}

/// What the generator's error says when the kernel refuses live frames.
const LIVE_REFUSED: &str = "live-frames BPF_PROG_TEST_RUN: Operation not permitted";

/// Records a failed section.
fn note(s: &mut Summary, sec: Section, r: Result<()>) {
    if let Err(e) = r {
        if e.0.contains(LIVE_REFUSED) {
            eprintln!("bench: {} unavailable: {e}", sec.name());
            s.unavailable.push(format!(
                "{}: this kernel refuses BPF_F_TEST_XDP_LIVE_FRAMES (EPERM)",
                sec.name()
            ));
            return;
        }
        eprintln!("bench: {} failed: {e}", sec.name());
        s.errors.push(format!("{}: {e}", sec.name()));
    }
}

fn run_sections(p: &Params) -> Summary {
    let start = Instant::now();
    let mut s = Summary {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cpu: cpu_model(),
        cpus: thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        date: utc_now(),
        params: p.clone(),
        paths: Vec::new(),
        new_flows: None,
        scale: None,
        e2e: None,
        tcp: None,
        errors: Vec::new(),
        unavailable: Vec::new(),
        notes: Vec::new(),
        secs: 0.0,
    };
    let needs_prog_ns = p.has(Section::Paths) || p.has(Section::NewFlows) || p.has(Section::Scale);
    let ns = if needs_prog_ns {
        match prog_ns() {
            Ok(ns) => Some(ns),
            Err(e) => {
                s.errors.push(format!("setup: {e}"));
                None
            }
        }
    } else {
        None
    };
    if let Some(ns) = &ns {
        if p.has(Section::Paths) {
            let t = Instant::now();
            let r = bench_paths(p, ns).map(|v| s.paths = v);
            note(&mut s, Section::Paths, r);
            eprintln!("bench: paths done in {:.1} s", t.elapsed().as_secs_f64());
        }
        if p.has(Section::NewFlows) {
            let t = Instant::now();
            let r = bench_new_flows(p, ns).map(|v| s.new_flows = Some(v));
            note(&mut s, Section::NewFlows, r);
            eprintln!(
                "bench: new flows done in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        if p.has(Section::Scale) {
            let t = Instant::now();
            let r = bench_scale(p, ns).map(|v| s.scale = Some(v));
            note(&mut s, Section::Scale, r);
            eprintln!("bench: scale done in {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    drop(ns);
    if p.has(Section::E2e) || p.has(Section::Tcp) {
        let t = Instant::now();
        match E2eNet::create() {
            Err(e) => s.errors.push(format!("e2e setup: {e}")),
            Ok(net) => {
                if p.has(Section::E2e) {
                    let mut notes = Vec::new();
                    let r = bench_e2e(p, &net, &mut notes).map(|v| s.e2e = Some(v));
                    s.notes.extend(notes);
                    note(&mut s, Section::E2e, r);
                    eprintln!("bench: e2e done in {:.1} s", t.elapsed().as_secs_f64());
                }
                if p.has(Section::Tcp) {
                    let t = Instant::now();
                    let r = bench_tcp(p, &net).map(|v| s.tcp = Some(v));
                    note(&mut s, Section::Tcp, r);
                    eprintln!("bench: tcp done in {:.1} s", t.elapsed().as_secs_f64());
                }
            }
        }
    }
    s.secs = start.elapsed().as_secs_f64();
    s
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

const CMD_TIMEOUT: Duration = Duration::from_secs(30);
const NS_PREFIX: &str = "cgb";

fn cmd(argv: &[&str]) -> Result<String> {
    let out = run_command(argv, CMD_TIMEOUT).ctx(argv.join(" "))?;
    check_output(&argv.join(" "))(out).ctx("command failed")
}

/// A named network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    fn create(tag: &str) -> Result<Ns> {
        let name = format!("{NS_PREFIX}{}{tag}", std::process::id());
        let _ = run_command(&["ip", "netns", "del", &name], CMD_TIMEOUT);
        cmd(&["ip", "netns", "add", &name])?;
        let ns = Ns { name };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME args` (split on whitespace).
    fn ip(&self, args: &str) -> Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        cmd(&v)
    }

    /// `sh -c script` inside the namespace (sysfs and proc of its own).
    fn sh(&self, script: &str) -> Result<String> {
        cmd(&["ip", "netns", "exec", &self.name, "sh", "-c", script])
    }

    fn argv<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        v
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run_command(&["ip", "netns", "del", &self.name], CMD_TIMEOUT);
    }
}

/// Deletes namespaces of bench processes that no longer run.
fn cleanup_stale() {
    let Ok(out) = cmd(&["ip", "netns", "list"]) else {
        return;
    };
    for line in out.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || digits.len() == rest.len() {
            continue;
        }
        if !Path::new(&format!("/proc/{digits}")).exists() {
            let _ = run_command(&["ip", "netns", "del", name], CMD_TIMEOUT);
        }
    }
}

/// Runs `f` with this thread inside `ns`, then returns it to the namespace
/// it was in.
fn in_ns<T>(ns: &Ns, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let orig = File::open("/proc/thread-self/ns/net").ctx("opening this thread's netns")?;
    let target = File::open(ns.path()).ctx(format!("opening {}", ns.path().display()))?;
    nix::sched::setns(target.as_fd(), CloneFlags::CLONE_NEWNET).ctx("setns")?;
    let r = f();
    nix::sched::setns(orig.as_fd(), CloneFlags::CLONE_NEWNET).ctx("setns back")?;
    r
}

/// Moves this thread into `path` for good (threads of their own).
fn enter(path: &Path) -> Result<()> {
    let f = File::open(path).ctx(format!("opening {}", path.display()))?;
    nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET).ctx("setns")
}

fn ifindex(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).ctx(format!("interface {name}"))
}

type Mac = [u8; 6];

fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// The packet-level topology (as tests/prog_run/netns.rs).
const INT0_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x01];
const EXT0_MAC: Mac = [0x02, 0, 0, 0, 0x02, 0x02];
const SUB_MAC: Mac = [0x02, 0x11, 0, 0, 0, 0x11];
const REM_MAC: Mac = [0x02, 0x22, 0, 0, 0, 0x10];
const H11: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
const H12: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 12);
const R10: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const POOL: &str = "203.0.113.0/26";
const POOL_BASE: u32 = 0xcb00_7100; // 203.0.113.0
const POOL_SIZE: u32 = 64;

fn prog_ns() -> Result<Ns> {
    let ns = Ns::create("p")?;
    ns.ip("link add int0 type veth peer name int0p")?;
    ns.ip("link add ext0 type veth peer name ext0p")?;
    ns.ip(&format!("link set int0 address {}", mac_str(&INT0_MAC)))?;
    ns.ip(&format!("link set ext0 address {}", mac_str(&EXT0_MAC)))?;
    ns.ip("addr add 100.64.0.1/10 dev int0")?;
    ns.ip("addr add 198.51.100.1/24 dev ext0")?;
    for dev in ["int0p", "ext0p", "int0", "ext0"] {
        ns.ip(&format!("link set {dev} up"))?;
    }
    // ip_forward first: writing it resets every device's forwarding
    ns.sh("echo 0 > /proc/sys/net/ipv4/ip_forward && \
         echo 1 > /proc/sys/net/ipv4/conf/lo/forwarding")?;
    for (a, m, dev) in [
        (H11, SUB_MAC, "int0"),
        (H12, [0x02, 0x11, 0, 0, 0, 0x12], "int0"),
        (R10, REM_MAC, "ext0"),
    ] {
        ns.ip(&format!(
            "neigh replace {a} lladdr {} dev {dev} nud permanent",
            mac_str(&m)
        ))?;
    }
    // For the floor, which does not translate: a plain router sends
    // packets for the pool where cgnat sends them after translation (to
    // the subscriber behind int0). cgnat never looks this route up.
    ns.ip(&format!("route add {POOL} via {H11} dev int0"))?;
    Ok(ns)
}

fn prog_config(sessions: u32, bindings: u32, subscribers: u32) -> Result<Config> {
    let text = format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
# what a real NIC uses (the veths here would get "redirect" by default)
send_back = "xdp_tx"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["{POOL}"]
max_sessions = {sessions}
max_bindings = {bindings}
[pool]
max_subscribers = {subscribers}
[daemon]
pin_path = "/sys/fs/bpf/cgnat-bench-unused"
"#
    );
    Config::parse(&text, Path::new("(bench)")).ctx("bench config")
}

fn load_dp(cfg: &Config, attach: bool) -> Result<Datapath> {
    Datapath::load(cfg, LoadOptions { attach, pin: false }).ctx("loading cgnat")
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
/// 18 bytes of UDP payload make a 60-byte frame (64 on the wire with FCS).
const PAYLOAD: &[u8; 18] = b"cgnat-bench-frame!";

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = !fold(sum16(&h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    sum16(&src.octets()) + sum16(&dst.octets()) + u32::from(proto) + len as u32
}

fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut c = !fold(pseudo(*src.ip(), *dst.ip(), PROTO_UDP, len) + sum16(&u));
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let c = !fold(pseudo(*src.ip(), *dst.ip(), PROTO_TCP, t.len()) + sum16(&t));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = !fold(sum16(&m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

fn eth(dst: Mac, src: Mac, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn udp_frame(dmac: Mac, smac: Mac, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    eth(
        dmac,
        smac,
        &ipv4(*src.ip(), *dst.ip(), PROTO_UDP, 64, &udp(src, dst, PAYLOAD)),
    )
}

fn sock(a: Ipv4Addr, p: u16) -> SocketAddrV4 {
    SocketAddrV4::new(a, p)
}

// ---------------------------------------------------------------------------
// Map helpers
// ---------------------------------------------------------------------------

fn be(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

fn counter(t: &Tables, reason: &str) -> Result<u64> {
    let c = crate::stats::read(&t.stats).ctx("reading stats")?;
    Ok(crate::stats::get(&c, reason))
}

/// The external endpoint of an internal one (bind_out).
fn external_of(t: &Tables, int: SocketAddrV4, proto: u8) -> Result<SocketAddrV4> {
    let k = types::cgnat_endpoint {
        addr: be(*int.ip()),
        port: int.port().to_be(),
        proto,
        _pad: 0,
    };
    let v = t
        .bind_out
        .lookup(bytes_of(&k), MapFlags::ANY)
        .ctx("bind_out")?
        .and_then(|v| from_bytes::<types::cgnat_binding>(&v));
    match v {
        Some(b) => Ok(sock(
            Ipv4Addr::from(u32::from_be(b.addr)),
            u16::from_be(b.port),
        )),
        None => fail(format!("no binding for {int}/{proto}")),
    }
}

/// `memlock:` and `max_entries:` of a map, from /proc/self/fdinfo.
fn map_mem(name: &'static str, m: &MapHandle) -> Result<MapMem> {
    let path = format!("/proc/self/fdinfo/{}", m.as_fd().as_raw_fd());
    let text = std::fs::read_to_string(&path).ctx(&path)?;
    let field = |f: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(f))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(MapMem {
        name,
        max_entries: field("max_entries:"),
        memlock: field("memlock:"),
    })
}

fn run_once(dp: &Datapath, side: Side, frame: &[u8], ingress: u32, want: u32) -> Result<()> {
    let (act, _) = dp.test_run(side, frame, ingress).ctx("BPF_PROG_TEST_RUN")?;
    if act != want {
        return fail(format!(
            "setup packet got XDP action {act}, expected {want} (frame {} bytes)",
            frame.len()
        ));
    }
    Ok(())
}

/// One run of the feeder with `target`: (last action, ns per run).
fn feed(fl: &Floor, target: Target<'_>, ingress: u32, repeat: u32) -> Result<(u32, f64)> {
    fl.set_target(target)?;
    let (act, ns) = fl
        .feed_run(ingress, repeat)
        .ctx("BPF_PROG_TEST_RUN of xdp_feed")?;
    Ok((act, ns as f64))
}

/// One feeder run of cgnat whose every repetition must be counted under
/// `reason`; returns its ns per run.
fn feed_cgnat(
    fl: &Floor,
    dp: &Datapath,
    t: &Tables,
    side: Side,
    ingress: u32,
    repeat: u32,
    reason: &str,
) -> Result<f64> {
    let before = counter(t, reason)?;
    let (act, ns) = feed(fl, Target::Cgnat(dp, side), ingress, repeat)?;
    let n = counter(t, reason)? - before;
    if n != u64::from(repeat) || !(act == XDP_TX || act == XDP_REDIRECT) {
        return fail(format!(
            "{n} of {repeat} repetitions counted as {reason} (last action {act}): \
             the runs did not all take the measured path"
        ));
    }
    Ok(ns)
}

/// Median kernel time of `n` single BPF_PROG_TEST_RUN calls.
fn single_median(
    n: u32,
    mut f: impl FnMut() -> std::result::Result<(u32, u64), libbpf_rs::Error>,
) -> Result<f64> {
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        v.push(f().ctx("BPF_PROG_TEST_RUN")?.1 as f64);
    }
    Ok(median(&v))
}

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

struct PathCase {
    name: &'static str,
    what: &'static str,
    side: Side,
    ingress: u32,
    frame: Vec<u8>,
    reason: &'static str,
    action: u32,
    /// Measure xdp_probe too (outbound TCP/UDP: binding, then session).
    probe: bool,
}

fn bench_paths(p: &Params, ns: &Ns) -> Result<Vec<PathResult>> {
    in_ns(ns, || {
        let cfg = prog_config(1 << 20, 1 << 18, 65_536)?;
        let dp = load_dp(&cfg, false)?;
        let t = dp.tables().ctx("tables")?;
        let (int0, ext0, lo) = (ifindex("int0")?, ifindex("ext0")?, ifindex("lo")?);
        let mut fl = Floor::load(lo, 1, (1 << 18, 1 << 20)).ctx("loading the floor")?;
        fl.add_tx_port(int0).ctx("floor tx_ports")?;
        fl.add_tx_port(ext0).ctx("floor tx_ports")?;
        let cases = path_cases(&dp, &t, int0, ext0)?;
        // xdp_probe looks up what cgnat has
        let probe = fl.probe_maps()?;
        for (from, to) in [(&t.bind_out, &probe.0), (&t.sessions, &probe.1)] {
            for (k, v) in crate::bpf::lookup_all(from, 4096).ctx("reading cgnat's maps")? {
                to.update(&k, &v, MapFlags::ANY)
                    .ctx("filling xdp_probe's maps")?;
            }
        }
        let mut out = Vec::new();
        for c in cases {
            fl.set_frames(std::slice::from_ref(&c.frame))
                .ctx("feeder frames")?;
            let (fa, _) = fl
                .run(Prog::Floor, &c.frame, c.ingress, 1)
                .ctx("floor run")?;
            if fa != c.action {
                return fail(format!(
                    "{}: the floor returned action {fa}, cgnat {}",
                    c.name, c.action
                ));
            }
            let (mut cg, mut flr, mut emp, mut prb) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..p.runs {
                let (_, e) = feed(&fl, Target::Empty, c.ingress, p.repeat)?;
                let (fa, f) = feed(&fl, Target::Floor, c.ingress, p.repeat)?;
                if fa != c.action {
                    return fail(format!("{}: floor action {fa} under the feeder", c.name));
                }
                let g = feed_cgnat(&fl, &dp, &t, c.side, c.ingress, p.repeat, c.reason)?;
                if c.probe {
                    let hits = fl.probe_hits();
                    let (_, x) = feed(&fl, Target::Probe, c.ingress, p.repeat)?;
                    if fl.probe_hits() - hits != u64::from(p.repeat) {
                        return fail(format!("{}: xdp_probe missed the session", c.name));
                    }
                    prb.push(x - e);
                }
                emp.push(e);
                flr.push(f - e);
                cg.push(g - e);
            }
            let n = p.single_calls;
            let se = single_median(n, || fl.run(Prog::Empty, &c.frame, c.ingress, 1))?;
            let sf = single_median(n, || fl.run(Prog::Floor, &c.frame, c.ingress, 1))?;
            let sc = single_median(n, || dp.bench_run(c.side, &c.frame, c.ingress, 1))?;
            let r = PathResult {
                name: c.name,
                what: c.what,
                cgnat_ns: Stat::of(cg),
                floor_ns: Stat::of(flr),
                feeder_ns: Stat::of(emp),
                probe_ns: (!prb.is_empty()).then(|| Stat::of(prb)),
                single_cgnat_ns: sc - se,
                single_floor_ns: sf - se,
            };
            eprintln!(
                "bench:   {:<14} cgnat {:6.1} ns  floor {:6.1} ns  ratio {:.2}",
                r.name,
                r.cgnat_ns.median(),
                r.floor_ns.median(),
                r.ratio()
            );
            out.push(r);
        }
        Ok(out)
    })
}

/// Establishes the sessions with first packets and returns the frames to
/// measure, each with its side, verdict counter and action.
fn path_cases(dp: &Datapath, t: &Tables, int0: u32, ext0: u32) -> Result<Vec<PathCase>> {
    let (i, e) = (Side::Internal, Side::External);
    let from_sub =
        |src, dst, l4: Vec<u8>, proto| eth(INT0_MAC, SUB_MAC, &ipv4(src, dst, proto, 64, &l4));
    let from_net =
        |src, dst, l4: Vec<u8>, proto| eth(EXT0_MAC, REM_MAC, &ipv4(src, dst, proto, 64, &l4));

    // UDP
    let (h11, r10) = (sock(H11, 5000), sock(R10, 3478));
    let udp_out = udp_frame(INT0_MAC, SUB_MAC, h11, r10);
    run_once(dp, i, &udp_out, int0, XDP_REDIRECT)?;
    let e11 = external_of(t, h11, PROTO_UDP)?;
    let udp_in = udp_frame(EXT0_MAC, REM_MAC, r10, e11);
    run_once(dp, e, &udp_in, ext0, XDP_REDIRECT)?;

    // TCP: SYN out, SYN-ACK in, then ACKs both ways
    let (h11t, r80) = (sock(H11, 40000), sock(R10, 80));
    run_once(
        dp,
        i,
        &from_sub(H11, R10, tcp(h11t, r80, 0x02, 1000, 0), PROTO_TCP),
        int0,
        XDP_REDIRECT,
    )?;
    let et = external_of(t, h11t, PROTO_TCP)?;
    run_once(
        dp,
        e,
        &from_net(R10, *et.ip(), tcp(r80, et, 0x12, 5000, 1001), PROTO_TCP),
        ext0,
        XDP_REDIRECT,
    )?;
    let tcp_out = from_sub(H11, R10, tcp(h11t, r80, 0x10, 1001, 5001), PROTO_TCP);
    run_once(dp, i, &tcp_out, int0, XDP_REDIRECT)?;
    let tcp_in = from_net(R10, *et.ip(), tcp(r80, et, 0x10, 5001, 1001), PROTO_TCP);
    run_once(dp, e, &tcp_in, ext0, XDP_REDIRECT)?;

    // Hairpin: .12 to .11's external endpoint
    let hair = udp_frame(INT0_MAC, [0x02, 0x11, 0, 0, 0, 0x12], sock(H12, 5000), e11);
    run_once(dp, i, &hair, int0, XDP_TX)?;

    // ICMP echo request out (identifier 0x4242)
    let echo = from_sub(
        H11,
        R10,
        icmp(8, 0, [0x42, 0x42, 0, 1], &PAYLOAD[..]),
        PROTO_ICMP,
    );
    run_once(dp, i, &echo, int0, XDP_REDIRECT)?;

    // ICMP port unreachable from the remote about .11's translated UDP
    // packet (RFC 792 quote: IP header + 8 bytes)
    let sent = ipv4(*e11.ip(), R10, PROTO_UDP, 63, &udp(e11, r10, PAYLOAD));
    let err = from_net(R10, *e11.ip(), icmp(3, 3, [0; 4], &sent[..28]), PROTO_ICMP);
    run_once(dp, e, &err, ext0, XDP_REDIRECT)?;

    let case = |name, what, side, ingress, frame, reason, action| PathCase {
        name,
        what,
        side,
        ingress,
        frame,
        reason,
        action,
        probe: reason == "fwd_out" && side == Side::Internal && name != "icmp_echo_out",
    };
    Ok(vec![
        case(
            "udp_out",
            "UDP outbound, established",
            i,
            int0,
            udp_out,
            "fwd_out",
            XDP_REDIRECT,
        ),
        case(
            "udp_in",
            "UDP inbound, established",
            e,
            ext0,
            udp_in,
            "fwd_in",
            XDP_REDIRECT,
        ),
        case(
            "tcp_out",
            "TCP ACK outbound, established",
            i,
            int0,
            tcp_out,
            "fwd_out",
            XDP_REDIRECT,
        ),
        case(
            "tcp_in",
            "TCP ACK inbound, established",
            e,
            ext0,
            tcp_in,
            "fwd_in",
            XDP_REDIRECT,
        ),
        case(
            "hairpin",
            "UDP subscriber to subscriber via the pool",
            i,
            int0,
            hair,
            "fwd_hairpin",
            XDP_TX,
        ),
        case(
            "icmp_echo_out",
            "ICMP echo request outbound",
            i,
            int0,
            echo,
            "fwd_out",
            XDP_REDIRECT,
        ),
        case(
            "icmp_err_in",
            "ICMP error inbound (3/3 quoting UDP)",
            e,
            ext0,
            err,
            "fwd_in",
            XDP_REDIRECT,
        ),
    ])
}

// ---------------------------------------------------------------------------
// New flows
// ---------------------------------------------------------------------------

/// Subscribers new flows cycle over (100.65.0.0 + n).
const NEW_FLOW_SUBS: u32 = 4096;

fn bench_new_flows(p: &Params, ns: &Ns) -> Result<NewFlowResult> {
    in_ns(ns, || {
        let total = u64::from(p.new_flows) * p.runs as u64;
        let size = (total + 4096).next_power_of_two().max(1024) as u32;
        let cfg = prog_config(size, size, 65_536)?;
        let dp = load_dp(&cfg, false)?;
        let t = dp.tables().ctx("tables")?;
        let int0 = ifindex("int0")?;
        let fl = Floor::load(0, 1, (1, 1)).ctx("loading the floor")?;
        let r10 = sock(R10, 3478);
        let est = udp_frame(INT0_MAC, SUB_MAC, sock(H11, 5000), r10);
        run_once(&dp, Side::Internal, &est, int0, XDP_REDIRECT)?;

        // The daemon drains the event ring (binding log records); so do we.
        let events = std::cell::Cell::new(0u64);
        let mut rb = libbpf_rs::RingBufferBuilder::new();
        rb.add(dp.events(), |_| {
            events.set(events.get() + 1);
            0
        })
        .ctx("ring buffer")?;
        let rb = rb.build().ctx("ring buffer")?;

        let base = u32::from(Ipv4Addr::new(100, 65, 0, 0));
        let n = p.new_flows as usize;
        let mut r = NewFlowResult {
            flows_per_run: p.new_flows,
            subscribers: NEW_FLOW_SUBS,
            new_ns: Stat::default(),
            new_mean_ns: Stat::default(),
            est_ns: Stat::default(),
            est_mean_ns: Stat::default(),
            overhead_ns: Stat::default(),
        };
        for run in 0..p.runs {
            let frames: Vec<Vec<u8>> = (0..n)
                .map(|k| {
                    let g = (run * n + k) as u32;
                    let src = Ipv4Addr::from(base + g % NEW_FLOW_SUBS);
                    let port = 1024 + (g / NEW_FLOW_SUBS) as u16;
                    udp_frame(INT0_MAC, SUB_MAC, sock(src, port), r10)
                })
                .collect();
            let before = counter(&t, "fwd_out")?;
            let mut new = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let (act, ns) = dp
                    .bench_run(Side::Internal, f, int0, 1)
                    .ctx("BPF_PROG_TEST_RUN")?;
                if act != XDP_REDIRECT {
                    return fail(format!("new flow {k} got XDP action {act}"));
                }
                new.push(ns as f64);
                if k % 256 == 255 {
                    let _ = rb.consume();
                }
            }
            let _ = rb.consume();
            let got = counter(&t, "fwd_out")? - before;
            if got != n as u64 {
                return fail(format!("{got} of {n} new flows forwarded"));
            }
            let mut estv = Vec::with_capacity(n);
            let mut emp = Vec::with_capacity(n);
            for _ in 0..n {
                let (_, ns) = dp
                    .bench_run(Side::Internal, &est, int0, 1)
                    .ctx("BPF_PROG_TEST_RUN")?;
                estv.push(ns as f64);
                let (_, ns) = fl
                    .run(Prog::Empty, &est, int0, 1)
                    .ctx("BPF_PROG_TEST_RUN")?;
                emp.push(ns as f64);
            }
            let o = median(&emp);
            r.overhead_ns.runs.push(o);
            r.new_ns.runs.push(median(&new) - o);
            r.new_mean_ns.runs.push(mean(&new) - o);
            r.est_ns.runs.push(median(&estv) - o);
            r.est_mean_ns.runs.push(mean(&estv) - o);
        }
        let _ = events.get();
        eprintln!(
            "bench:   new flow {:.0} ns, established {:.0} ns, {:.0} flows/s",
            r.new_ns.median(),
            r.est_ns.median(),
            r.flows_per_sec()
        );
        Ok(r)
    })
}

// ---------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------

/// Where the preloaded sessions are: subscriber k is 100.66.0.0 + k, its
/// j-th flow leaves from port 20000 + j to 198.51.100.10:3478 (UDP) on
/// pool address k / per_addr, port 1024 + (k % per_addr) * ports + j.
#[derive(Debug, Clone, Copy)]
struct Geo {
    subs: u32,
    ports: u32,
    per_addr: u32,
}

impl Geo {
    fn new(subs: u32, ports: u32) -> Result<Geo> {
        if ports == 0 || ports > 64512 {
            return fail("scale_ports must be 1..=64512");
        }
        let per_addr = 64512 / ports;
        if subs.div_ceil(per_addr) > POOL_SIZE || subs > 1 << 16 {
            return fail(format!(
                "{subs} subscribers x {ports} ports do not fit the pool {POOL}"
            ));
        }
        Ok(Geo {
            subs,
            ports,
            per_addr,
        })
    }

    fn sub(&self, k: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 66, 0, 0)) + k)
    }

    fn pool_idx(&self, k: u32) -> u32 {
        k / self.per_addr
    }

    fn ext(&self, k: u32, j: u32) -> SocketAddrV4 {
        sock(
            Ipv4Addr::from(POOL_BASE + self.pool_idx(k)),
            (1024 + (k % self.per_addr) * self.ports + j) as u16,
        )
    }

    fn int(&self, k: u32, j: u32) -> SocketAddrV4 {
        sock(self.sub(k), 20000 + j as u16)
    }

    fn frame(&self, k: u32, j: u32) -> Vec<u8> {
        udp_frame(INT0_MAC, SUB_MAC, self.int(k, j), sock(R10, 3478))
    }
}

/// The maps a preload writes: cgnat's, or `xdp_probe`'s (no reverse
/// bindings, no subscribers).
struct Dest<'a> {
    bind_in: Option<&'a MapHandle>,
    bind_out: &'a MapHandle,
    sessions: &'a MapHandle,
    subscribers: Option<&'a MapHandle>,
}

impl<'a> Dest<'a> {
    fn cgnat(t: &'a Tables) -> Dest<'a> {
        Dest {
            bind_in: Some(&t.bind_in),
            bind_out: &t.bind_out,
            sessions: &t.sessions,
            subscribers: Some(&t.subscribers),
        }
    }

    fn probe(maps: &'a (MapHandle, MapHandle)) -> Dest<'a> {
        Dest {
            bind_in: None,
            bind_out: &maps.0,
            sessions: &maps.1,
            subscribers: None,
        }
    }
}

/// Writes the bindings, sessions and subscribers of subscribers `subs`
/// as the data path would have created them at `now`.
fn preload(t: &Dest<'_>, g: &Geo, subs: std::ops::Range<u32>, now: u64) -> Result<()> {
    const CHUNK: usize = 1 << 16;
    let mut sk = Vec::new();
    let mut sv = Vec::new();
    let mut ok = Vec::new();
    let mut ov = Vec::new();
    let mut ik = Vec::new();
    let mut iv = Vec::new();
    let mut n = 0usize;
    let flush = |sk: &mut Vec<u8>,
                 sv: &mut Vec<u8>,
                 ok: &mut Vec<u8>,
                 ov: &mut Vec<u8>,
                 ik: &mut Vec<u8>,
                 iv: &mut Vec<u8>,
                 n: &mut usize|
     -> Result<()> {
        if *n == 0 {
            return Ok(());
        }
        let c = *n as u32;
        // reverse binding first, as the data path claims a port
        if let Some(m) = t.bind_in {
            m.update_batch(ik, iv, c, MapFlags::ANY, MapFlags::ANY)
                .ctx("bind_in batch update")?;
        }
        t.bind_out
            .update_batch(ok, ov, c, MapFlags::ANY, MapFlags::ANY)
            .ctx("bind_out batch update")?;
        t.sessions
            .update_batch(sk, sv, c, MapFlags::ANY, MapFlags::ANY)
            .ctx("sessions batch update")?;
        for v in [sk, sv, ok, ov, ik, iv] {
            v.clear();
        }
        *n = 0;
        Ok(())
    };
    let r10 = be(R10);
    for k in subs.clone() {
        for j in 0..g.ports {
            let (int, ext) = (g.int(k, j), g.ext(k, j));
            let ie = types::cgnat_endpoint {
                addr: be(*int.ip()),
                port: int.port().to_be(),
                proto: PROTO_UDP,
                _pad: 0,
            };
            let ee = types::cgnat_endpoint {
                addr: be(*ext.ip()),
                port: ext.port().to_be(),
                proto: PROTO_UDP,
                _pad: 0,
            };
            let to_ext = types::cgnat_binding {
                addr: ee.addr,
                port: ee.port,
                ..Default::default()
            };
            let to_int = types::cgnat_binding {
                addr: ie.addr,
                port: ie.port,
                ..Default::default()
            };
            let key = types::cgnat_session_key {
                ext_addr: ee.addr,
                rem_addr: r10,
                ext_port: ee.port,
                rem_port: 3478u16.to_be(),
                proto: PROTO_UDP,
                _pad: [0; 3],
            };
            let val = types::cgnat_session {
                int_addr: ie.addr,
                int_port: ie.port,
                last_seen: crate::expiry::compact_time(now),
                ..Default::default()
            };
            ik.extend_from_slice(bytes_of(&ee));
            iv.extend_from_slice(bytes_of(&to_int));
            ok.extend_from_slice(bytes_of(&ie));
            ov.extend_from_slice(bytes_of(&to_ext));
            sk.extend_from_slice(bytes_of(&key));
            sv.extend_from_slice(bytes_of(&val));
            n += 1;
            if n == CHUNK {
                flush(&mut sk, &mut sv, &mut ok, &mut ov, &mut ik, &mut iv, &mut n)?;
            }
        }
    }
    flush(&mut sk, &mut sv, &mut ok, &mut ov, &mut ik, &mut iv, &mut n)?;
    // subscribers: paired address, ports and sessions held
    let Some(subscribers) = t.subscribers else {
        return Ok(());
    };
    let (mut keys, mut vals) = (Vec::new(), Vec::new());
    for k in subs {
        let s = types::cgnat_subscriber {
            ext_addr: be(Ipv4Addr::from(POOL_BASE + g.pool_idx(k))),
            pool_idx: g.pool_idx(k),
            ports: [0, g.ports, 0],
            sessions: g.ports,
            rate_stamp_ns: now,
            created_ns: now,
            last_alloc_ns: now,
            ..Default::default()
        };
        keys.extend_from_slice(bytes_of(&be(g.sub(k))));
        vals.extend_from_slice(bytes_of(&s));
    }
    for (kc, vc) in keys
        .chunks(4 * CHUNK)
        .zip(vals.chunks(std::mem::size_of::<types::cgnat_subscriber>() * CHUNK))
    {
        subscribers
            .update_batch(kc, vc, (kc.len() / 4) as u32, MapFlags::ANY, MapFlags::ANY)
            .ctx("subscribers batch update")?;
    }
    Ok(())
}

/// pool_load as the data path keeps it: subscribers per pool address.
fn set_pool_load(t: &Tables, g: &Geo, subs: u32) -> Result<()> {
    for idx in 0..POOL_SIZE {
        let lo = idx * g.per_addr;
        let n = subs.saturating_sub(lo).min(g.per_addr);
        t.pool_load
            .update(bytes_of(&idx), bytes_of(&n), MapFlags::ANY)
            .ctx("pool_load")?;
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn bench_scale(p: &Params, ns: &Ns) -> Result<ScaleResult> {
    in_ns(ns, || {
        let g = Geo::new(p.scale_subs, p.scale_ports)?;
        let small = Geo::new(p.small_subs.min(p.scale_subs), p.scale_ports)?;
        let total = u64::from(g.subs) * u64::from(g.ports);
        let size = total.next_power_of_two().max(1024) as u32;
        let cfg = prog_config(size, size, g.subs.next_power_of_two().max(1024))?;
        let dp = load_dp(&cfg, false)?;
        let t = dp.tables().ctx("tables")?;
        let (int0, ext0, lo) = (ifindex("int0")?, ifindex("ext0")?, ifindex("lo")?);
        let frames_max = p.scale_frames.max(small.subs * small.ports);
        let mut fl = Floor::load(lo, frames_max, (size, size)).ctx("loading the floor")?;
        fl.add_tx_port(int0).ctx("floor tx_ports")?;
        fl.add_tx_port(ext0).ctx("floor tx_ports")?;
        let probe = fl.probe_maps()?;
        let mut r = ScaleResult::default();

        // Fast path over every flow of the small table.
        let now = monotonic_ns();
        let t0 = Instant::now();
        preload(&Dest::cgnat(&t), &g, 0..small.subs, now)?;
        set_pool_load(&t, &g, small.subs)?;
        let mut preload_secs = t0.elapsed().as_secs_f64();
        preload(&Dest::probe(&probe), &g, 0..small.subs, now)?;
        r.small_sessions = u64::from(small.subs) * u64::from(g.ports);
        let frames: Vec<Vec<u8>> = (0..small.subs)
            .flat_map(|k| (0..g.ports).map(move |j| (k, j)))
            .map(|(k, j)| g.frame(k, j))
            .collect();
        fl.set_frames(&frames).ctx("feeder frames")?;
        // cgnat, and optionally the floor and the probe, net of the feeder
        let measure = |fl: &Floor,
                       runs: usize,
                       c: &mut Stat,
                       mut others: Option<(&mut Stat, &mut Stat)>|
         -> Result<()> {
            for _ in 0..runs {
                let (_, e) = feed(fl, Target::Empty, int0, p.scale_repeat)?;
                let cg = feed_cgnat(fl, &dp, &t, Side::Internal, int0, p.scale_repeat, "fwd_out")?;
                c.runs.push(cg - e);
                if let Some((f, pr)) = others.as_mut() {
                    let (_, x) = feed(fl, Target::Floor, int0, p.scale_repeat)?;
                    f.runs.push(x - e);
                    let hits = fl.probe_hits();
                    let (_, x) = feed(fl, Target::Probe, int0, p.scale_repeat)?;
                    if fl.probe_hits() - hits != u64::from(p.scale_repeat) {
                        return fail("xdp_probe did not find every session");
                    }
                    pr.runs.push(x - e);
                }
            }
            Ok(())
        };
        measure(
            &fl,
            p.runs,
            &mut r.small_ns,
            Some((&mut r.small_floor_ns, &mut r.small_probe_ns)),
        )?;

        // The rest of the large table.
        let t1 = Instant::now();
        preload(&Dest::cgnat(&t), &g, small.subs..g.subs, now)?;
        set_pool_load(&t, &g, g.subs)?;
        preload_secs += t1.elapsed().as_secs_f64();
        r.preload_secs = preload_secs;
        preload(&Dest::probe(&probe), &g, small.subs..g.subs, now)?;
        r.large_sessions = total;
        // the large table, the small table's flows: table size alone
        measure(&fl, p.runs, &mut r.large_hot_ns, None)?;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let frames: Vec<Vec<u8>> = (0..p.scale_frames.min(g.subs * g.ports))
            .map(|_| {
                let k = (rng.next() % u64::from(g.subs)) as u32;
                let j = (rng.next() % u64::from(g.ports)) as u32;
                g.frame(k, j)
            })
            .collect();
        r.large_frames = frames.len() as u32;
        fl.set_frames(&frames).ctx("feeder frames")?;
        measure(
            &fl,
            p.runs,
            &mut r.large_ns,
            Some((&mut r.large_floor_ns, &mut r.large_probe_ns)),
        )?;
        eprintln!(
            "bench:   {} sessions {:.1} ns, {} sessions {:.1} ns (preload {:.1} s)",
            r.small_sessions,
            r.small_ns.median(),
            r.large_sessions,
            r.large_ns.median(),
            r.preload_secs
        );

        // Memory.
        for (name, m) in [
            ("sessions", &t.sessions),
            ("bind_in", &t.bind_in),
            ("bind_out", &t.bind_out),
            ("subscribers", &t.subscribers),
            ("frags", &t.frags),
            ("blocks", &t.blocks),
            ("sub_blocks", &t.sub_blocks),
        ] {
            r.maps.push(map_mem(name, m)?);
        }

        // Expiry: a sweep that expires nothing (its `now` is the preload
        // time), then the fast path while such sweeps run on another CPU.
        let sweeper = Sweeper {
            timeouts: cfg.timeouts.clone(),
            quarantine: cfg.port_quarantine,
            blocks: None,
            pool: cfg.pool_addrs.clone(),
        };
        let s0 = Instant::now();
        let rep = sweeper.sweep(&t, now).ctx("sweep")?;
        r.sweep_noop_secs = s0.elapsed().as_secs_f64();
        if rep.sessions_live != total || rep.sessions_dying != 0 || rep.bindings_released != 0 {
            return fail(format!("the no-op sweep changed state: {rep:?}"));
        }
        let stop = AtomicBool::new(false);
        let sweeps = AtomicU64::new(0);
        let t2 = dp.tables().ctx("tables")?;
        let during = thread::scope(|sc| -> Result<Stat> {
            let h = sc.spawn(|| -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    sweeper.sweep(&t2, now).ctx("sweep")?;
                    sweeps.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
            let mut st = Stat::default();
            let res = measure(&fl, p.runs, &mut st, None);
            // keep a sweep running until at least one completed
            while sweeps.load(Ordering::Relaxed) == 0 && !h.is_finished() {
                thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
            h.join()
                .map_err(|e| BenchError(format!("sweeper panicked: {}", panic_text(&e))))??;
            res.map(|()| st)
        })?;
        r.during_sweep_ns = during;
        r.sweeps_during = sweeps.load(Ordering::Relaxed);

        // Expire everything: the first sweep marks every session dying,
        // the second deletes them and releases (quarantines) the ports.
        if p.expire_all {
            let far = now + 10 * 86_400 * 1_000_000_000;
            let s1 = Instant::now();
            let a = sweeper.sweep(&t, far).ctx("sweep")?;
            r.expire_mark_secs = s1.elapsed().as_secs_f64();
            let s2 = Instant::now();
            let b = sweeper.sweep(&t, far + 1_000_000_000).ctx("sweep")?;
            r.expire_delete_secs = s2.elapsed().as_secs_f64();
            r.expired = b.sessions_expired;
            if a.sessions_dying != total || b.sessions_expired != total {
                return fail(format!(
                    "expiring everything: {} marked, {} expired of {total}",
                    a.sessions_dying, b.sessions_expired
                ));
            }
        }
        Ok(r)
    })
}

// ---------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------

const GEN_MAC: Mac = [0x02, 0x33, 0, 0, 0, 0x11];
const SINK_MAC: Mac = [0x02, 0x44, 0, 0, 0, 0x10];
const CLIENT: Ipv4Addr = H11;
const SERVER: Ipv4Addr = R10;

/// generator ns --(rg-ri)-- router ns --(re-rs)-- sink ns
pub struct E2eNet {
    g: Ns,
    r: Ns,
    s: Ns,
    /// Interface names carry the pid: NAPI threads are named after them.
    ri: String,
    re: String,
    rg: String,
    rs: String,
    drop_base: std::sync::Mutex<(u64, u64)>,
}

impl E2eNet {
    fn create() -> Result<E2eNet> {
        let n = std::process::id() % 100_000;
        let net = E2eNet {
            g: Ns::create("g")?,
            r: Ns::create("r")?,
            s: Ns::create("s")?,
            ri: format!("ri{n}"),
            re: format!("re{n}"),
            rg: format!("rg{n}"),
            rs: format!("rs{n}"),
            drop_base: std::sync::Mutex::new((0, 0)),
        };
        let (r, g, s) = (&net.r, &net.g, &net.s);
        r.ip(&format!(
            "link add {} type veth peer name {} netns {}",
            net.ri, net.rg, g.name
        ))?;
        r.ip(&format!(
            "link add {} type veth peer name {} netns {}",
            net.re, net.rs, s.name
        ))?;
        for (ns, dev, mac) in [
            (r, &net.ri, INT0_MAC),
            (r, &net.re, EXT0_MAC),
            (g, &net.rg, GEN_MAC),
            (s, &net.rs, SINK_MAC),
        ] {
            ns.ip(&format!("link set {dev} address {}", mac_str(&mac)))?;
        }
        r.ip(&format!("addr add 100.64.0.1/10 dev {}", net.ri))?;
        r.ip(&format!("addr add 198.51.100.1/24 dev {}", net.re))?;
        g.ip(&format!("addr add {CLIENT}/10 dev {}", net.rg))?;
        s.ip(&format!("addr add {SERVER}/24 dev {}", net.rs))?;
        for (ns, dev) in [(r, &net.ri), (r, &net.re), (g, &net.rg), (s, &net.rs)] {
            ns.ip(&format!("link set {dev} up"))?;
        }
        for (ns, dev) in [(r, &net.ri), (r, &net.re), (g, &net.rg), (s, &net.rs)] {
            // GRO gives a veth the NAPI that frames sent to it by XDP
            // need, and makes its peer a redirect target; only a change
            // while the device is up does (it is "on" after creation).
            ns.sh(&format!(
                "ethtool -K {dev} gro off >/dev/null && ethtool -K {dev} gro on >/dev/null"
            ))?;
        }
        for (ns, dev) in [(g, &net.rg), (s, &net.rs)] {
            ns.sh(&format!("ethtool -K {dev} tx off >/dev/null"))?;
        }
        g.ip("route add default via 100.64.0.1")?;
        s.ip(&format!("route add {POOL} via 198.51.100.1"))?;
        r.ip(&format!(
            "neigh replace {SERVER} lladdr {} dev {} nud permanent",
            mac_str(&SINK_MAC),
            net.re
        ))?;
        r.ip(&format!(
            "neigh replace {CLIENT} lladdr {} dev {} nud permanent",
            mac_str(&GEN_MAC),
            net.ri
        ))?;
        net.router_plain()?;
        // NAPI in kernel threads, so that they can be pinned
        r.sh(&format!("echo 1 > /sys/class/net/{}/threaded", net.ri))?;
        s.sh(&format!("echo 1 > /sys/class/net/{}/threaded", net.rs))?;
        Ok(net)
    }

    /// Forwarding off (cgnat and the floor forward by themselves), lo
    /// forwarding on for bpf_fib_lookup.
    fn router_plain(&self) -> Result<()> {
        self.r
            .sh("echo 0 > /proc/sys/net/ipv4/ip_forward && \
                 echo 1 > /proc/sys/net/ipv4/conf/lo/forwarding")
            .map(|_| ())
    }

    fn nft_on(&self) -> Result<()> {
        self.r.sh(&format!(
            "echo 1 > /proc/sys/net/ipv4/ip_forward && \
             nft add table ip cgbench && \
             nft 'add chain ip cgbench post {{ type nat hook postrouting priority srcnat; }}' && \
             nft add rule ip cgbench post oifname {} masquerade",
            self.re
        ))?;
        Ok(())
    }

    fn nft_off(&self) -> Result<()> {
        let _ = self.r.sh("nft delete table ip cgbench");
        let _ = self.r.sh("conntrack -F >/dev/null 2>&1");
        self.router_plain()
    }

    fn cgnat_config(&self) -> Result<Config> {
        let text = format!(
            r#"
[interfaces]
internal = "{}"
external = "{}"
xdp_mode = "native"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["{POOL}"]
[daemon]
pin_path = "/sys/fs/bpf/cgnat-bench-unused"
"#,
            self.ri, self.re
        );
        Config::parse(&text, Path::new("(bench e2e)")).ctx("e2e config")
    }

    /// Pins the router's NAPI thread to the last CPU and the sink's to the
    /// first (with the generator). Returns what was done.
    fn pin(&self) -> String {
        let cpus = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if cpus < 2 {
            return "one CPU: nothing pinned".into();
        }
        let mut done = Vec::new();
        for (dev, cpu) in [(&self.ri, cpus - 1), (&self.rs, 0)] {
            let pids = napi_threads(dev);
            let ok = !pids.is_empty() && pids.iter().all(|&pid| pin_to(pid, cpu).is_ok());
            // SCHED_FIFO: the router's CPU is its own while it has work
            // (the machine may be busy), and the sink preempts the
            // generator it shares a CPU with as soon as frames arrive.
            let rt = ok
                && pids.iter().all(|pid| {
                    run_command(&["chrt", "-f", "-p", "50", &pid.to_string()], CMD_TIMEOUT)
                        .map(|o| o.status.success())
                        .unwrap_or(false)
                });
            done.push(match (ok, rt) {
                (true, true) => format!("NAPI thread of {dev} on CPU {cpu}, SCHED_FIFO 50"),
                (true, false) => format!("NAPI thread of {dev} on CPU {cpu}"),
                _ => format!("NAPI of {dev} not pinned (no thread found)"),
            });
        }
        done.push("generator on CPU 0".into());
        done.join(", ")
    }
}

impl E2eNet {
    /// Frames the veths could not pass on (their peer's ring was full),
    /// generator -> router and router -> sink, since `reset_drops`.
    fn drops(&self) -> String {
        let now = self.drop_counts();
        let before = *self.drop_base.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "frames lost generator->router {}, router->sink {}",
            now.0.saturating_sub(before.0),
            now.1.saturating_sub(before.1)
        )
    }

    fn reset_drops(&self) {
        let now = self.drop_counts();
        *self.drop_base.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    fn drop_counts(&self) -> (u64, u64) {
        let errors = |ns: &Ns, dev: &str| -> u64 {
            ns.sh(&format!("ethtool -S {dev}"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("xdp_xmit_err") || l.contains("xdp_tx_err"))
                .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
                .sum()
        };
        (errors(&self.g, &self.rg), errors(&self.r, &self.re))
    }
}

/// CPU time (ns) the threads `pids` have run (/proc/PID/schedstat).
fn cpu_ns(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok())
        .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Threaded-NAPI kernel threads of `dev` ("napi/DEV-ID").
fn napi_threads(dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            if comm.trim().starts_with(&prefix) {
                out.push(pid);
            }
        }
    }
    out
}

fn pin_to(pid: i32, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).ctx("cpu set")?;
    nix::sched::sched_setaffinity(Pid::from_raw(pid), &set).ctx("sched_setaffinity")
}

/// The live-frames generator, on a thread of its own in the generator
/// namespace.
struct Generator {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<Result<()>>>,
}

impl Generator {
    fn start(net: &E2eNet, subs: u32, ports: u32) -> Result<Generator> {
        const CHUNK: u32 = 1 << 16;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (st, se) = (Arc::clone(&stop), Arc::clone(&sent));
        let path = net.g.path();
        let dev = net.rg.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let handle = thread::spawn(move || -> Result<()> {
            let setup = || -> Result<(Floor, u32, Vec<u8>)> {
                enter(&path)?;
                let _ = pin_to(0, 0);
                let idx = ifindex(&dev)?;
                let mut fl = Floor::load(0, 1, (1, 1)).ctx("loading the generator")?;
                let base = Ipv4Addr::new(100, 65, 0, 0);
                let frame = udp_frame(INT0_MAC, GEN_MAC, sock(base, 10000), sock(SERVER, 9));
                fl.set_generator(&frame, base, subs, 10000, ports)
                    .ctx("generator")?;
                Ok((fl, idx, frame))
            };
            let (fl, idx, frame) = match setup() {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    v
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(BenchError(e.0.clone())));
                    return Err(e);
                }
            };
            while !st.load(Ordering::Relaxed) {
                fl.generate(&frame, idx, CHUNK)
                    .ctx("live-frames BPF_PROG_TEST_RUN")?;
                se.fetch_add(u64::from(CHUNK), Ordering::Relaxed);
            }
            Ok(())
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(Generator {
                stop,
                sent,
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => fail("the generator did not start"),
        }
    }

    fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(e)) => fail(format!("generator panicked: {}", panic_text(&e))),
            None => Ok(()),
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Cgnat,
    Floor,
    /// The floor plus cgnat's two lookups (xdp_probe).
    Probe,
    Nft,
}

/// The bindings and sessions cgnat would hold for the generator's flows,
/// in xdp_probe's maps.
fn fill_probe(fl: &Floor, subs: u32, ports: u32) -> Result<()> {
    let maps = fl.probe_maps()?;
    let (mut bk, mut bv, mut sk, mut sv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let base = u32::from(Ipv4Addr::new(100, 65, 0, 0));
    for sub in 0..subs {
        for port in 0..ports {
            let ext_addr = be(Ipv4Addr::from(POOL_BASE + sub % POOL_SIZE));
            let ext_port = (1024 + (sub / POOL_SIZE) * ports + port) as u16;
            let ik = types::cgnat_endpoint {
                addr: be(Ipv4Addr::from(base + sub)),
                port: (10000 + port as u16).to_be(),
                proto: PROTO_UDP,
                _pad: 0,
            };
            let b = types::cgnat_binding {
                addr: ext_addr,
                port: ext_port.to_be(),
                ..Default::default()
            };
            let k = types::cgnat_session_key {
                ext_addr,
                rem_addr: be(SERVER),
                ext_port: ext_port.to_be(),
                rem_port: 9u16.to_be(),
                proto: PROTO_UDP,
                _pad: [0; 3],
            };
            let v = types::cgnat_session {
                int_addr: ik.addr,
                int_port: ik.port,
                ..Default::default()
            };
            bk.extend_from_slice(bytes_of(&ik));
            bv.extend_from_slice(bytes_of(&b));
            sk.extend_from_slice(bytes_of(&k));
            sv.extend_from_slice(bytes_of(&v));
        }
    }
    let n = subs * ports;
    maps.0
        .update_batch(&bk, &bv, n, MapFlags::ANY, MapFlags::ANY)
        .ctx("probe_bind")?;
    maps.1
        .update_batch(&sk, &sv, n, MapFlags::ANY, MapFlags::ANY)
        .ctx("probe_sess")
}

/// What the router runs while it lives; dropping it detaches.
enum Router {
    Cgnat { _dp: Box<Datapath> },
    Floor { _fl: Box<Floor> },
    Nft,
}

impl E2eNet {
    /// Sets the router up in `mode`; `flows` (subscribers, ports) are the
    /// generator's, whose bindings and sessions xdp_probe gets.
    fn router(&self, mode: Mode, flows: (u32, u32)) -> Result<Router> {
        match mode {
            Mode::Cgnat => {
                let cfg = self.cgnat_config()?;
                in_ns(&self.r, || load_dp(&cfg, true)).map(|d| Router::Cgnat { _dp: Box::new(d) })
            }
            Mode::Floor => in_ns(&self.r, || {
                let mut fl = Floor::load(ifindex("lo")?, 1, (1, 1)).ctx("loading the floor")?;
                fl.add_tx_port(ifindex(&self.re)?).ctx("floor tx_ports")?;
                fl.attach(Prog::Floor, ifindex(&self.ri)?)
                    .ctx("attaching the floor")?;
                Ok(Router::Floor { _fl: Box::new(fl) })
            }),
            Mode::Probe => in_ns(&self.r, || {
                let (subs, ports) = flows;
                // sized as cgnat's maps with the e2e config's defaults
                let cfg = self.cgnat_config()?;
                let mut fl = Floor::load(ifindex("lo")?, 1, (cfg.max_bindings, cfg.max_sessions))
                    .ctx("loading the probe")?;
                fill_probe(&fl, subs, ports)?;
                fl.add_tx_port(ifindex(&self.re)?).ctx("floor tx_ports")?;
                fl.attach(Prog::Probe, ifindex(&self.ri)?)
                    .ctx("attaching the probe")?;
                Ok(Router::Floor { _fl: Box::new(fl) })
            }),
            Mode::Nft => {
                self.nft_on()?;
                Ok(Router::Nft)
            }
        }
    }

    fn router_off(&self, r: Router) -> Result<()> {
        let nft = matches!(r, Router::Nft);
        drop(r);
        if nft {
            self.nft_off()?;
        }
        Ok(())
    }
}

fn bench_e2e(p: &Params, net: &E2eNet, notes: &mut Vec<String>) -> Result<E2eResult> {
    let mut sink = in_ns(&net.s, || {
        let mut f = Floor::load(0, 1, (1, 1)).ctx("loading the sink")?;
        f.attach(Prog::Sink, ifindex(&net.rs)?)
            .ctx("attaching the sink")?;
        Ok(f)
    })?;
    let mut r = E2eResult {
        flows: p.e2e_subs * p.e2e_ports,
        frame_len: 60,
        ..Default::default()
    };
    for run in 0..p.e2e_runs {
        let first = run == 0;
        for mode in [Mode::Cgnat, Mode::Floor, Mode::Probe, Mode::Nft] {
            let router = net.router(mode, (p.e2e_subs, p.e2e_ports))?;
            r.pinning = net.pin();
            net.reset_drops();
            let gen = Generator::start(net, p.e2e_subs, p.e2e_ports)?;
            thread::sleep(Duration::from_secs_f64(p.e2e_warmup));
            let napi = napi_threads(&net.ri);
            let (c0, g0, u0, t0) = (
                sink.sink_packets()?,
                gen.sent.load(Ordering::Relaxed),
                cpu_ns(&napi),
                Instant::now(),
            );
            thread::sleep(Duration::from_secs_f64(p.e2e_secs));
            let (c1, g1, u1) = (
                sink.sink_packets()?,
                gen.sent.load(Ordering::Relaxed),
                cpu_ns(&napi),
            );
            let dt = t0.elapsed().as_secs_f64();
            gen.stop()?;
            if first {
                notes.push(format!("e2e {mode:?}: {}", net.drops()));
                if let Router::Cgnat { _dp: dp } = &router {
                    let t = dp.tables().ctx("tables")?;
                    let c = crate::stats::read(&t.stats).ctx("stats")?;
                    let nz: Vec<String> = c
                        .iter()
                        .filter(|c| c.packets > 0)
                        .map(|c| format!("{}={}", c.name, c.packets))
                        .collect();
                    notes.push(format!("e2e cgnat verdicts (first run): {}", nz.join(" ")));
                }
            }
            net.router_off(router)?;
            let rate = (c1 - c0) as f64 / dt / 1e6;
            let grate = (g1 - g0) as f64 / dt / 1e6;
            let busy = (u1 - u0) as f64 / 1e9 / dt;
            let per_pkt = (u1 - u0) as f64 / (c1 - c0).max(1) as f64;
            let m = match mode {
                Mode::Cgnat => &mut r.cgnat,
                Mode::Floor => &mut r.floor,
                Mode::Probe => &mut r.probe,
                Mode::Nft => &mut r.nft,
            };
            m.mpps.runs.push(rate);
            m.gen_mpps.runs.push(grate);
            m.router_ns.runs.push(per_pkt);
            m.router_busy.runs.push(busy);
            eprintln!(
                "bench:   e2e {mode:?}: {rate:.3} Mpps received, {grate:.3} Mpps sent, \
                 router NAPI thread busy {:.0}%, {per_pkt:.0} ns per packet",
                busy * 100.0
            );
            if rate <= 0.0 {
                return fail(format!("e2e {mode:?}: nothing reached the sink"));
            }
        }
    }
    sink.detach_all();
    for (name, m) in [
        ("cgnat", &r.cgnat),
        ("floor", &r.floor),
        ("nftables", &r.nft),
    ] {
        if m.router_busy.median() < 0.9 {
            notes.push(format!(
                "e2e {name}: the router's NAPI thread was busy {:.0}% of the time: its \
                 throughput ({:.2} Mpps of {:.2} sent) is bounded by the generator; compare \
                 router CPU per packet",
                m.router_busy.median() * 100.0,
                m.mpps.median(),
                m.gen_mpps.median()
            ));
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------

fn bench_tcp(p: &Params, net: &E2eNet) -> Result<TcpResult> {
    let mut r = TcpResult::default();
    let has_iperf = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_iperf {
        r.iperf_skipped = Some("iperf3 is not installed (apt-get install iperf3)".into());
    }
    for _ in 0..p.tcp_runs {
        for mode in [Mode::Cgnat, Mode::Nft] {
            let router = net.router(mode, (1, 1))?;
            let res = (|| -> Result<()> {
                if has_iperf {
                    let gbps = iperf(net, p.iperf_secs)?;
                    match mode {
                        Mode::Cgnat => r.iperf_cgnat_gbps.runs.push(gbps),
                        _ => r.iperf_nft_gbps.runs.push(gbps),
                    }
                }
                let cps = conn_rate(net, p.conn_secs)?;
                match mode {
                    Mode::Cgnat => r.conn_cgnat.runs.push(cps),
                    _ => r.conn_nft.runs.push(cps),
                }
                Ok(())
            })();
            net.router_off(router)?;
            res.ctx(format!("{mode:?}"))?;
        }
    }
    eprintln!(
        "bench:   iperf3 cgnat {:.2} Gbit/s, nftables {:.2} Gbit/s; connections/s cgnat {:.0}, nftables {:.0}",
        r.iperf_cgnat_gbps.median(),
        r.iperf_nft_gbps.median(),
        r.conn_cgnat.median(),
        r.conn_nft.median()
    );
    Ok(r)
}

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// iperf3 from the generator namespace to the sink namespace; Gbit/s
/// received.
fn iperf(net: &E2eNet, secs: u32) -> Result<f64> {
    let server = SERVER.to_string();
    let argv = net
        .s
        .argv(&["iperf3", "-s", "-1", "-B", &server, "-p", "5201"]);
    let _srv = Reaped(
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ctx("starting iperf3 -s")?,
    );
    let secs_s = secs.to_string();
    let argv = net
        .g
        .argv(&["iperf3", "-c", &server, "-p", "5201", "-t", &secs_s, "-J"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = run_command(&argv, Duration::from_secs(u64::from(secs) + 30)).ctx("iperf3 -c")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !text.contains("\"error\"") {
            return json_number_after(&text, "\"sum_received\"", "\"bits_per_second\"")
                .map(|b| b / 1e9)
                .ok_or_else(|| {
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(400)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    BenchError(format!("iperf3: no sum_received in its output: ...{tail}"))
                });
        }
        // the server may not listen yet ("Connection refused")
        if Instant::now() > deadline {
            return fail(format!("iperf3 -c failed: {}", text.trim()));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The number after `key` that follows `section` in a JSON text.
fn json_number_after(text: &str, section: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(section)?..];
    let rest = &rest[rest.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// New TCP connections per second from the generator namespace to the
/// sink namespace: connect, then an abortive close (RST, so that no
/// TIME_WAIT state limits the rate), in a loop for `secs`.
fn conn_rate(net: &E2eNet, secs: f64) -> Result<f64> {
    let addr = SocketAddr::V4(sock(SERVER, 5301));
    let stop = Arc::new(AtomicBool::new(false));
    let listener = in_ns(&net.s, || TcpListener::bind(addr).ctx("listen"))?;
    let st = Arc::clone(&stop);
    let server = thread::spawn(move || {
        for c in listener.incoming() {
            if st.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(mut c) = c {
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = c.read(&mut [0u8; 1]);
            }
        }
    });
    let gpath = net.g.path();
    let client = thread::spawn(move || -> Result<(u64, f64)> {
        enter(&gpath)?;
        let start = Instant::now();
        let (mut ok, mut errors) = (0u64, 0u64);
        while start.elapsed().as_secs_f64() < secs {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => {
                    let l = nix::libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &l);
                    ok += 1;
                }
                Err(e) => {
                    errors += 1;
                    if errors > 50 {
                        return fail(format!("connect to {addr}: {e}"));
                    }
                }
            }
        }
        Ok((ok, start.elapsed().as_secs_f64()))
    });
    let res = client
        .join()
        .map_err(|e| BenchError(format!("client panicked: {}", panic_text(&e))));
    stop.store(true, Ordering::Relaxed);
    // wake the server's accept
    let _ = in_ns(&net.g, || {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        Ok(())
    });
    let _ = server.join();
    let (ok, dt) = res??;
    Ok(ok as f64 / dt)
}

// ---------------------------------------------------------------------------
// Machine
// ---------------------------------------------------------------------------

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The current UTC time, ISO 8601.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil from days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------
// Report: table and JSON
// ---------------------------------------------------------------------------

/// Goals of issue #7.
pub const GOAL_PATH_RATIO: f64 = 1.4;
pub const GOAL_SCALE_RATIO: f64 = 1.3;
pub const GOAL_BYTES_PER_SESSION: f64 = 256.0;
pub const GOAL_E2E_VS_FLOOR: f64 = 0.85;
pub const GOAL_E2E_VS_NFT: f64 = 4.0;

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

impl Summary {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "cgnat benchmark: kernel {}, {} ({} CPUs), {}, {} runs per measurement (median), {:.0} s",
            self.kernel, self.cpu, self.cpus, self.date, self.params.runs, self.secs
        );
        if !self.paths.is_empty() {
            let _ = writeln!(
                o,
                "\nPer-packet cost, BPF_PROG_TEST_RUN x {} (feeder overhead subtracted; single-call cross-check in brackets)",
                self.params.repeat
            );
            let _ = writeln!(
                o,
                "{:<14} {:>9} {:>7} {:>9} {:>7} {:>6}  {:<6}  {:>17}  {:>10}",
                "path",
                "cgnat ns",
                "Mpps",
                "floor ns",
                "Mpps",
                "ratio",
                "<=1.4",
                "[single cg/floor]",
                "floor+2lkp"
            );
            for r in &self.paths {
                let _ = writeln!(
                    o,
                    "{:<14} {:>9.1} {:>7.2} {:>9.1} {:>7.2} {:>6.2}  {:<6}  [{:>6.1} / {:>6.1}]  {:>10}",
                    r.name,
                    r.cgnat_ns.median(),
                    mpps(r.cgnat_ns.median()),
                    r.floor_ns.median(),
                    mpps(r.floor_ns.median()),
                    r.ratio(),
                    verdict(r.ratio() <= GOAL_PATH_RATIO),
                    r.single_cgnat_ns,
                    r.single_floor_ns,
                    r.probe_ns
                        .as_ref()
                        .map(|s| format!("{:.1}", s.median()))
                        .unwrap_or_else(|| "-".into())
                );
            }
            let feeder: Vec<f64> = self.paths.iter().map(|r| r.feeder_ns.median()).collect();
            let _ = writeln!(o, "(feeder overhead {:.1} ns per run)", median(&feeder));
        }
        if let Some(n) = &self.new_flows {
            let _ = writeln!(
                o,
                "\nNew flows ({} per run over {} subscribers, single calls):",
                n.flows_per_run, n.subscribers
            );
            let _ = writeln!(
                o,
                "  new flow {:.0} ns (mean {:.0}), established {:.0} ns (mean {:.0}): a new flow costs {:.0} ns more; {:.0} new flows/s per core",
                n.new_ns.median(),
                n.new_mean_ns.median(),
                n.est_ns.median(),
                n.est_mean_ns.median(),
                n.extra_ns(),
                n.flows_per_sec()
            );
        }
        if let Some(s) = &self.scale {
            let _ = writeln!(o, "\nScale (UDP outbound, established):");
            let _ = writeln!(
                o,
                "  {:>9} sessions: cgnat {:.1} ns ({:.2} Mpps), floor {:.1} ns, floor+2 lookups {:.1} ns",
                s.small_sessions,
                s.small_ns.median(),
                mpps(s.small_ns.median()),
                s.small_floor_ns.median(),
                s.small_probe_ns.median()
            );
            let _ = writeln!(
                o,
                "  {:>9} sessions: cgnat {:.1} ns ({:.2} Mpps), floor {:.1} ns, floor+2 lookups {:.1} ns  ({} flows cycled)",
                s.large_sessions,
                s.large_ns.median(),
                mpps(s.large_ns.median()),
                s.large_floor_ns.median(),
                s.large_probe_ns.median(),
                s.large_frames
            );
            let _ = writeln!(
                o,
                "  {:>9} sessions, only the {} flows above: cgnat {:.1} ns (table size alone)",
                s.large_sessions,
                s.small_sessions,
                s.large_hot_ns.median()
            );
            let _ = writeln!(
                o,
                "  large/small {:.2} (goal <= {GOAL_SCALE_RATIO}: {})",
                s.ratio(),
                verdict(s.ratio() <= GOAL_SCALE_RATIO)
            );
            let _ = writeln!(
                o,
                "  memory: {:.1} bytes per session (sessions+bind_in+bind_out+subscribers memlock, {:.1} of it subscribers; goal <= {GOAL_BYTES_PER_SESSION}: {})",
                s.bytes_per_session(),
                s.subscriber_bytes_per_session(),
                verdict(s.bytes_per_session() <= GOAL_BYTES_PER_SESSION)
            );
            for m in &s.maps {
                let _ = writeln!(
                    o,
                    "    {:<12} max_entries {:>9}  memlock {:>11} B  ({:.1} B per entry)",
                    m.name,
                    m.max_entries,
                    m.memlock,
                    m.memlock as f64 / m.max_entries.max(1) as f64
                );
            }
            let _ = writeln!(
                o,
                "  preload {:.1} s; sweep (nothing expires) {:.2} s; fast path during sweeps {:.1} ns ({:.2}x, {} sweeps)",
                s.preload_secs,
                s.sweep_noop_secs,
                s.during_sweep_ns.median(),
                s.during_sweep_ns.median() / s.large_ns.median(),
                s.sweeps_during
            );
            if s.expired > 0 {
                let _ = writeln!(
                    o,
                    "  expire all {}: mark sweep {:.2} s + delete sweep {:.2} s = {:.2} s",
                    s.expired,
                    s.expire_mark_secs,
                    s.expire_delete_secs,
                    s.expire_mark_secs + s.expire_delete_secs
                );
            }
        }
        if let Some(e) = &self.e2e {
            let _ = writeln!(
                o,
                "\nEnd to end, native XDP on veth, {}-byte UDP frames, {} flows ({}):",
                e.frame_len, e.flows, e.pinning
            );
            let _ = writeln!(
                o,
                "  {:<9} {:>13} {:>13} {:>11} {:>13} {:>13}",
                "router",
                "received Mpps",
                "sent Mpps",
                "router busy",
                "router ns/pkt",
                "capacity Mpps"
            );
            for (name, m) in [
                ("cgnat", &e.cgnat),
                ("floor", &e.floor),
                ("floor+2lkp", &e.probe),
                ("nftables", &e.nft),
            ] {
                let _ = writeln!(
                    o,
                    "  {name:<9} {:>13.3} {:>13.3} {:>10.0}% {:>13.0} {:>13.3}",
                    m.mpps.median(),
                    m.gen_mpps.median(),
                    m.router_busy.median() * 100.0,
                    m.router_ns.median(),
                    m.capacity_mpps()
                );
            }
            let (vf, vn) = (e.vs_floor(), e.vs_nft());
            let _ = writeln!(
                o,
                "  by router capacity: cgnat/floor {vf:.2} (goal >= {GOAL_E2E_VS_FLOOR}: {}), cgnat/nftables {vn:.2} (goal >= {GOAL_E2E_VS_NFT}: {})",
                verdict(vf >= GOAL_E2E_VS_FLOOR),
                verdict(vn >= GOAL_E2E_VS_NFT)
            );
            let _ = writeln!(
                o,
                "  by received Mpps:   cgnat/floor {:.2}, cgnat/nftables {:.2}",
                e.cgnat.mpps.median() / e.floor.mpps.median(),
                e.cgnat.mpps.median() / e.nft.mpps.median()
            );
        }
        if let Some(t) = &self.tcp {
            let _ = writeln!(o, "\nTCP through the router:");
            match &t.iperf_skipped {
                Some(why) => {
                    let _ = writeln!(o, "  iperf3: skipped: {why}");
                }
                None => {
                    let _ = writeln!(
                        o,
                        "  iperf3: cgnat {:.2} Gbit/s, nftables {:.2} Gbit/s",
                        t.iperf_cgnat_gbps.median(),
                        t.iperf_nft_gbps.median()
                    );
                }
            }
            let _ = writeln!(
                o,
                "  new connections/s: cgnat {:.0}, nftables {:.0}",
                t.conn_cgnat.median(),
                t.conn_nft.median()
            );
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        for u in &self.unavailable {
            let _ = writeln!(o, "UNAVAILABLE: {u}");
        }
        for e in &self.errors {
            let _ = writeln!(o, "ERROR: {e}");
        }
        o
    }

    /// The summary as one JSON object (target/bench/summary.json).
    pub fn to_json(&self) -> String {
        let mut root = vec![
            ("kernel", J::s(&self.kernel)),
            ("cpu", J::s(&self.cpu)),
            ("cpus", J::n(self.cpus as f64)),
            ("date", J::s(&self.date)),
            ("seconds", J::n(self.secs)),
            (
                "params",
                J::o(vec![
                    ("runs", J::n(self.params.runs as f64)),
                    ("repeat", J::n(f64::from(self.params.repeat))),
                    ("single_calls", J::n(f64::from(self.params.single_calls))),
                    ("new_flows", J::n(f64::from(self.params.new_flows))),
                    ("scale_subs", J::n(f64::from(self.params.scale_subs))),
                    ("scale_ports", J::n(f64::from(self.params.scale_ports))),
                    ("scale_frames", J::n(f64::from(self.params.scale_frames))),
                    ("scale_repeat", J::n(f64::from(self.params.scale_repeat))),
                    ("e2e_secs", J::n(self.params.e2e_secs)),
                    ("e2e_runs", J::n(self.params.e2e_runs as f64)),
                ]),
            ),
        ];
        let paths: Vec<(&str, J)> = self
            .paths
            .iter()
            .map(|r| {
                (
                    r.name,
                    J::o(vec![
                        ("what", J::s(r.what)),
                        ("cgnat_ns", J::n(r.cgnat_ns.median())),
                        ("cgnat_mpps", J::n(mpps(r.cgnat_ns.median()))),
                        ("floor_ns", J::n(r.floor_ns.median())),
                        ("floor_mpps", J::n(mpps(r.floor_ns.median()))),
                        ("ratio", J::n(r.ratio())),
                        ("goal_ratio_le_1_4", J::Bool(r.ratio() <= GOAL_PATH_RATIO)),
                        ("feeder_ns", J::n(r.feeder_ns.median())),
                        (
                            "floor_plus_lookups_ns",
                            r.probe_ns
                                .as_ref()
                                .map(|s| J::n(s.median()))
                                .unwrap_or(J::Null),
                        ),
                        ("single_call_cgnat_ns", J::n(r.single_cgnat_ns)),
                        ("single_call_floor_ns", J::n(r.single_floor_ns)),
                        ("cgnat_ns_runs", J::arr(&r.cgnat_ns.runs)),
                        ("floor_ns_runs", J::arr(&r.floor_ns.runs)),
                    ]),
                )
            })
            .collect();
        root.push(("paths", J::o(paths)));
        if let Some(n) = &self.new_flows {
            root.push((
                "new_flows",
                J::o(vec![
                    ("flows_per_run", J::n(f64::from(n.flows_per_run))),
                    ("subscribers", J::n(f64::from(n.subscribers))),
                    ("new_flow_ns", J::n(n.new_ns.median())),
                    ("new_flow_mean_ns", J::n(n.new_mean_ns.median())),
                    ("established_ns", J::n(n.est_ns.median())),
                    ("established_mean_ns", J::n(n.est_mean_ns.median())),
                    ("extra_ns", J::n(n.extra_ns())),
                    ("flows_per_sec_per_core", J::n(n.flows_per_sec())),
                    ("timer_overhead_ns", J::n(n.overhead_ns.median())),
                ]),
            ));
        }
        if let Some(s) = &self.scale {
            let maps: Vec<(&str, J)> = s
                .maps
                .iter()
                .map(|m| {
                    (
                        m.name,
                        J::o(vec![
                            ("max_entries", J::n(m.max_entries as f64)),
                            ("memlock", J::n(m.memlock as f64)),
                        ]),
                    )
                })
                .collect();
            root.push((
                "scale",
                J::o(vec![
                    ("small_sessions", J::n(s.small_sessions as f64)),
                    ("large_sessions", J::n(s.large_sessions as f64)),
                    ("large_flows_cycled", J::n(f64::from(s.large_frames))),
                    ("small_ns", J::n(s.small_ns.median())),
                    ("small_mpps", J::n(mpps(s.small_ns.median()))),
                    ("large_ns", J::n(s.large_ns.median())),
                    ("large_mpps", J::n(mpps(s.large_ns.median()))),
                    ("large_table_small_flows_ns", J::n(s.large_hot_ns.median())),
                    ("small_floor_ns", J::n(s.small_floor_ns.median())),
                    ("large_floor_ns", J::n(s.large_floor_ns.median())),
                    (
                        "small_floor_plus_lookups_ns",
                        J::n(s.small_probe_ns.median()),
                    ),
                    (
                        "large_floor_plus_lookups_ns",
                        J::n(s.large_probe_ns.median()),
                    ),
                    ("ratio", J::n(s.ratio())),
                    ("goal_ratio_le_1_3", J::Bool(s.ratio() <= GOAL_SCALE_RATIO)),
                    ("bytes_per_session", J::n(s.bytes_per_session())),
                    (
                        "subscriber_bytes_per_session",
                        J::n(s.subscriber_bytes_per_session()),
                    ),
                    (
                        "goal_bytes_le_256",
                        J::Bool(s.bytes_per_session() <= GOAL_BYTES_PER_SESSION),
                    ),
                    ("maps", J::o(maps)),
                    ("preload_secs", J::n(s.preload_secs)),
                    ("sweep_noop_secs", J::n(s.sweep_noop_secs)),
                    ("during_sweep_ns", J::n(s.during_sweep_ns.median())),
                    ("sweeps_during", J::n(s.sweeps_during as f64)),
                    ("expire_all_mark_secs", J::n(s.expire_mark_secs)),
                    ("expire_all_delete_secs", J::n(s.expire_delete_secs)),
                    ("expired", J::n(s.expired as f64)),
                ]),
            ));
        }
        if let Some(e) = &self.e2e {
            let (vf, vn) = (e.vs_floor(), e.vs_nft());
            let mode = |m: &E2eMode| {
                J::o(vec![
                    ("received_mpps", J::n(m.mpps.median())),
                    ("sent_mpps", J::n(m.gen_mpps.median())),
                    ("router_ns_per_packet", J::n(m.router_ns.median())),
                    ("router_capacity_mpps", J::n(m.capacity_mpps())),
                    ("router_busy", J::n(m.router_busy.median())),
                    ("received_mpps_runs", J::arr(&m.mpps.runs)),
                    ("router_ns_runs", J::arr(&m.router_ns.runs)),
                ])
            };
            root.push((
                "e2e",
                J::o(vec![
                    ("frame_bytes", J::n(e.frame_len as f64)),
                    ("flows", J::n(f64::from(e.flows))),
                    ("cgnat", mode(&e.cgnat)),
                    ("floor", mode(&e.floor)),
                    ("floor_plus_lookups", mode(&e.probe)),
                    ("nft", mode(&e.nft)),
                    ("cgnat_vs_floor", J::n(vf)),
                    ("cgnat_vs_nft", J::n(vn)),
                    (
                        "cgnat_vs_floor_received",
                        J::n(e.cgnat.mpps.median() / e.floor.mpps.median()),
                    ),
                    (
                        "cgnat_vs_nft_received",
                        J::n(e.cgnat.mpps.median() / e.nft.mpps.median()),
                    ),
                    ("goal_vs_floor_ge_0_85", J::Bool(vf >= GOAL_E2E_VS_FLOOR)),
                    ("goal_vs_nft_ge_4", J::Bool(vn >= GOAL_E2E_VS_NFT)),
                    ("pinning", J::s(&e.pinning)),
                ]),
            ));
        }
        if let Some(t) = &self.tcp {
            root.push((
                "tcp",
                J::o(vec![
                    ("iperf_cgnat_gbps", J::n(t.iperf_cgnat_gbps.median())),
                    ("iperf_nft_gbps", J::n(t.iperf_nft_gbps.median())),
                    (
                        "iperf_skipped",
                        t.iperf_skipped.as_deref().map(J::s).unwrap_or(J::Null),
                    ),
                    ("connections_per_sec_cgnat", J::n(t.conn_cgnat.median())),
                    ("connections_per_sec_nft", J::n(t.conn_nft.median())),
                ]),
            ));
        }
        root.push((
            "unavailable",
            J::Arr(self.unavailable.iter().map(|n| J::s(n)).collect()),
        ));
        root.push((
            "notes",
            J::Arr(self.notes.iter().map(|n| J::s(n)).collect()),
        ));
        root.push((
            "errors",
            J::Arr(self.errors.iter().map(|n| J::s(n)).collect()),
        ));
        format!("{}\n", J::o(root))
    }
}

/// A minimal JSON value (no dependency for one file).
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn n(v: f64) -> J {
        J::Num(v)
    }

    fn s(v: &str) -> J {
        J::Str(v.to_owned())
    }

    fn arr(v: &[f64]) -> J {
        J::Arr(v.iter().map(|x| J::Num(*x)).collect())
    }

    fn o(v: Vec<(&str, J)>) -> J {
        J::Obj(v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

fn json_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl fmt::Display for J {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            J::Null => f.write_str("null"),
            J::Bool(b) => write!(f, "{b}"),
            J::Num(v) if !v.is_finite() => f.write_str("null"),
            J::Num(v) if v.fract() == 0.0 && v.abs() < 1e15 => write!(f, "{}", *v as i64),
            J::Num(v) => write!(f, "{}", (v * 1000.0).round() / 1000.0),
            J::Str(s) => json_str(f, s),
            J::Arr(a) => {
                f.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            J::Obj(o) => {
                f.write_char('{')?;
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    json_str(f, k)?;
                    write!(f, ": {v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_valid_checksums() {
        let f = udp_frame(INT0_MAC, SUB_MAC, sock(H11, 5000), sock(R10, 3478));
        assert_eq!(f.len(), 60);
        assert_eq!(fold(sum16(&f[14..34])), 0xffff, "IP header checksum");
        let l4 = &f[34..];
        assert_eq!(
            fold(pseudo(H11, R10, PROTO_UDP, l4.len()) + sum16(l4)),
            0xffff,
            "UDP checksum"
        );
    }

    #[test]
    fn median_and_json() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let j = J::o(vec![
            ("a", J::n(1.0)),
            ("b", J::n(f64::NAN)),
            ("c", J::s("x\"y")),
            ("d", J::arr(&[0.5])),
        ]);
        assert_eq!(
            j.to_string(),
            r#"{"a": 1, "b": null, "c": "x\"y", "d": [0.5]}"#
        );
        assert_eq!(
            json_number_after(
                r#"{"sum_received": {"x": 1, "bits_per_second": 9.5e9}}"#,
                "\"sum_received\"",
                "\"bits_per_second\""
            ),
            Some(9.5e9)
        );
    }

    #[test]
    fn date_is_iso() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z'), "{d}");
    }

    #[test]
    fn geometry_fills_the_pool() {
        let g = Geo::new(65_536, 63).unwrap();
        assert_eq!(g.per_addr, 1024);
        assert_eq!(g.pool_idx(65_535), 63);
        assert_eq!(g.ext(65_535, 62).port(), 65_535);
        assert_eq!(g.ext(0, 0).port(), 1024);
        assert!(Geo::new(65_536, 64).is_err());
    }
}
