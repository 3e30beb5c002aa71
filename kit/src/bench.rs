//! The benchmark suite: `make bench` runs it through
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
//! - **sync**: cluster state sync at the new-session rate: N new UDP
//!   flows through a node of a two-node cluster, then what one sync
//!   interval costs its sender (`state::scan`, `Sent::diff`, batching,
//!   `wire::encode`) and a peer (`wire::decode`, `state::install` into a
//!   second data path's maps, checked to hold exactly the sender's
//!   sessions and bindings); and the new-flow and established cost of the
//!   data path with a single-node and with that cluster configuration.
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

use crate::floor::{Floor, FloorError, Prog, Target};
use crate::frame::{Mac, Pkt, L4, PROTO_TCP, PROTO_UDP};
use crate::testbed::{check_output, run_command};
use cgnat::bpf::{bytes_of, from_bytes, types, Datapath, LoadOptions, Side, Tables};
use cgnat::config::Config;
use cgnat::expiry::{monotonic_ns, Sweeper};

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

impl From<cgnat::bpf::BpfError> for BenchError {
    fn from(e: cgnat::bpf::BpfError) -> BenchError {
        BenchError(e.to_string())
    }
}

impl From<FloorError> for BenchError {
    fn from(e: FloorError) -> BenchError {
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
    Sync,
    Scale,
    E2e,
    Tcp,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::Paths,
        Section::NewFlows,
        Section::Sync,
        Section::Scale,
        Section::E2e,
        Section::Tcp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Paths => "paths",
            Section::NewFlows => "newflows",
            Section::Sync => "sync",
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
    /// Sync: sessions the synced node creates (split over the runs), and
    /// as many on the single-node data path it is compared with.
    pub sync_sessions: u32,
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
            sync_sessions: 200_000,
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
            sync_sessions: 2_000,
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
    /// (sections), `CGNAT_BENCH_SCALE_SUBS=N`, `CGNAT_BENCH_SYNC_SESSIONS=N`,
    /// `CGNAT_BENCH_RUNS=N`.
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
        if let Some(n) = env_num("CGNAT_BENCH_SYNC_SESSIONS") {
            self.sync_sessions = n as u32;
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

/// Cluster sync at the new-session rate (section `sync`).
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    /// New flows per run on each data path (single-node and cluster).
    pub flows_per_run: u32,
    /// What the sender's scan found in its slice (the new flows plus the
    /// one established flow) and sent: sessions, bindings, subscribers.
    pub sessions: u64,
    pub bindings: u64,
    pub subscribers: u64,
    /// Records, datagrams and datagram bytes of one full sync of that.
    pub records: u64,
    pub datagrams: u64,
    pub bytes: u64,
    /// Send side, per run, CPU seconds of the sending thread:
    /// `state::scan`, `Sent::diff`, batching + `wire::encode`, their sum;
    /// and the sum's wall time.
    pub scan_secs: Stat,
    pub diff_secs: Stat,
    pub encode_secs: Stat,
    pub send_secs: Stat,
    pub send_wall_secs: Stat,
    /// The next interval, nothing having changed: scan + diff (no
    /// records), CPU seconds. What every interval costs at this table size.
    pub idle_secs: Stat,
    /// Of a scan: reading the four maps it reads (`lookup_all` of
    /// bind_in, sessions, subscribers, blocks) without decoding, CPU
    /// seconds, measured apart.
    pub read_secs: Stat,
    /// Receive side, likewise: `wire::decode` (with the replay window),
    /// `state::install` of every record, their sum, its wall time.
    pub decode_secs: Stat,
    pub install_secs: Stat,
    pub recv_secs: Stat,
    pub recv_wall_secs: Stat,
    /// The receiver's maps after the install (last run).
    pub recv_sessions: u64,
    pub recv_bind_in: u64,
    pub recv_bind_out: u64,
    pub recv_subscribers: u64,
    /// Records refused by the receiver (expected 0).
    pub conflicts: u64,
    /// Data path, single calls, timer overhead subtracted: new flow
    /// (median and mean per run) with the single-node and the cluster
    /// configuration.
    pub single_new_ns: Stat,
    pub single_new_mean_ns: Stat,
    pub cluster_new_ns: Stat,
    pub cluster_new_mean_ns: Stat,
    /// Per run, cluster minus single-node (same flows, same run): of the
    /// mean and of the median new-flow cost.
    pub extra_mean_ns: Stat,
    pub extra_median_ns: Stat,
    /// Established udp_out, per packet through the feeder (its overhead
    /// subtracted), both configurations.
    pub single_est_ns: Stat,
    pub cluster_est_ns: Stat,
    pub feeder_ns: Stat,
    pub overhead_ns: Stat,
}

impl SyncResult {
    fn per_sec(n: u64, secs: &Stat) -> f64 {
        n as f64 / secs.median()
    }

    /// Records one core of sync produces per second (scan to datagrams).
    pub fn send_records_per_sec(&self) -> f64 {
        Self::per_sec(self.records, &self.send_secs)
    }

    pub fn send_datagrams_per_sec(&self) -> f64 {
        Self::per_sec(self.datagrams, &self.send_secs)
    }

    /// Sessions (with their bindings and subscribers) one core sends per
    /// second.
    pub fn send_sessions_per_sec(&self) -> f64 {
        Self::per_sec(self.sessions, &self.send_secs)
    }

    pub fn recv_records_per_sec(&self) -> f64 {
        Self::per_sec(self.records, &self.recv_secs)
    }

    pub fn recv_datagrams_per_sec(&self) -> f64 {
        Self::per_sec(self.datagrams, &self.recv_secs)
    }

    pub fn recv_sessions_per_sec(&self) -> f64 {
        Self::per_sec(self.sessions, &self.recv_secs)
    }

    /// Datagram bytes per session (its binding and its share of the
    /// subscriber records, headers and tags included).
    pub fn bytes_per_session(&self) -> f64 {
        self.bytes as f64 / self.sessions.max(1) as f64
    }

    pub fn records_per_datagram(&self) -> f64 {
        self.records as f64 / self.datagrams.max(1) as f64
    }

    /// New sessions one core of the data path sets up per second with
    /// the cluster configuration (mean cost, as `newflows`).
    pub fn new_flows_per_sec(&self) -> f64 {
        1e9 / self.cluster_new_mean_ns.median()
    }

    pub fn single_new_flows_per_sec(&self) -> f64 {
        1e9 / self.single_new_mean_ns.median()
    }

    /// Sessions one core of sync sends per second over new sessions one
    /// core of the data path creates: >= 1 means it keeps up.
    pub fn send_ratio(&self) -> f64 {
        self.send_sessions_per_sec() / self.new_flows_per_sec()
    }

    /// Likewise for the receiving peer.
    pub fn recv_ratio(&self) -> f64 {
        self.recv_sessions_per_sec() / self.new_flows_per_sec()
    }

    /// What the cluster configuration adds to a new flow: the median over
    /// the runs of the paired difference of the mean costs (ns).
    pub fn cluster_extra_ns(&self) -> f64 {
        self.extra_mean_ns.median()
    }

    /// Sessions in the table at which an interval with nothing to send
    /// (scan + diff) takes a whole `interval` of one core.
    pub fn idle_full_core_sessions(&self, interval: Duration) -> f64 {
        self.sessions as f64 * interval.as_secs_f64() / self.idle_secs.median()
    }

    /// Datagrams one sync interval carries at the data path's new-session
    /// rate (one core).
    pub fn datagrams_per_interval(&self, interval: Duration) -> f64 {
        self.new_flows_per_sec() * interval.as_secs_f64() * self.datagrams as f64
            / self.sessions.max(1) as f64
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
    /// The large table, packets drawn from a Zipf(1.0) popularity over
    /// all its flows.
    pub zipf_ns: Stat,
    /// Distinct flows among the Zipf frames.
    pub zipf_flows: u32,
    pub sweep_noop_secs: f64,
    /// CPU time of that sweep (the sweeping thread, kernel included).
    pub sweep_noop_cpu_secs: f64,
    /// The same sweep in user space (`Sweeper::sweep_user`), for reference.
    pub sweep_noop_user_secs: f64,
    pub sweep_noop_user_cpu_secs: f64,
    pub expire_mark_secs: f64,
    pub expire_delete_secs: f64,
    pub expire_mark_cpu_secs: f64,
    pub expire_delete_cpu_secs: f64,
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
    pub sync: Option<SyncResult>,
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

/// Records a failed section.
fn note(s: &mut Summary, sec: Section, r: Result<()>) {
    if let Err(e) = r {
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
        sync: None,
        scale: None,
        e2e: None,
        tcp: None,
        errors: Vec::new(),
        unavailable: Vec::new(),
        notes: Vec::new(),
        secs: 0.0,
    };
    let needs_prog_ns = p.has(Section::Paths)
        || p.has(Section::NewFlows)
        || p.has(Section::Sync)
        || p.has(Section::Scale);
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
        if p.has(Section::Sync) {
            let t = Instant::now();
            let r = bench_sync(p, ns).map(|v| s.sync = Some(v));
            note(&mut s, Section::Sync, r);
            eprintln!("bench: sync done in {:.1} s", t.elapsed().as_secs_f64());
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
                // (a floor that does not load fails the section below)
                let live = Floor::load(0, 1, (1, 1))
                    .map(|f| f.live_frames_allowed())
                    .unwrap_or(true);
                if p.has(Section::E2e) && !live {
                    let why = "e2e: this kernel refuses BPF_F_TEST_XDP_LIVE_FRAMES, which the \
                               traffic generator needs";
                    eprintln!("bench: {why}");
                    s.unavailable.push(why.to_owned());
                } else if p.has(Section::E2e) {
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

const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
/// 18 bytes of UDP payload make a 60-byte frame (64 on the wire with FCS).
const PAYLOAD: &[u8; 18] = b"cgnat-bench-frame!";

/// `p` as the bench sends it: IP identification 0 (DF, TTL 64, no
/// options, as `Pkt` builds it).
fn bench_pkt(p: Pkt) -> Pkt {
    Pkt { id: 0, ..p }
}

fn ep(a: SocketAddrV4) -> (Ipv4Addr, u16) {
    (*a.ip(), a.port())
}

/// A UDP datagram carrying [`PAYLOAD`].
fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Pkt {
    bench_pkt(Pkt::udp(ep(src), ep(dst), PAYLOAD))
}

/// A TCP segment without options or payload (window 64240).
fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, seq: u32, ack: u32) -> Pkt {
    let mut p = bench_pkt(Pkt::tcp(ep(src), ep(dst), flags));
    if let L4::Tcp { seq: s, ack: a, .. } = &mut p.l4 {
        (*s, *a) = (seq, ack);
    }
    p
}

/// An ICMP message with a 4-byte rest-of-header.
fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, rest: (u16, u16), body: &[u8]) -> Pkt {
    bench_pkt(Pkt::icmp_msg(src, dst, ty, code, rest, body))
}

/// The Ethernet frame of `p` from `src` to `dst`.
fn eth(dst: Mac, src: Mac, p: Pkt) -> Vec<u8> {
    p.macs(src, dst).bytes()
}

fn udp_frame(dmac: Mac, smac: Mac, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    eth(dmac, smac, udp(src, dst))
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
    let c = cgnat::stats::read(&t.stats).ctx("reading stats")?;
    Ok(cgnat::stats::get(&c, reason))
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

mod e2e;
mod flows;
mod machine;
mod paths;
mod report;
mod scale;
mod sync;
mod tcp;
pub use e2e::*;
use flows::*;
use machine::*;
use paths::*;
pub use report::*;
use scale::*;
use sync::*;
use tcp::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_valid_checksums() {
        let f = udp_frame(INT0_MAC, SUB_MAC, sock(H11, 5000), sock(R10, 3478));
        assert_eq!(f.len(), 60);
        crate::frame::verify_checksums(&f).unwrap();
        crate::frame::verify_with_etherparse(&f).unwrap();
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
