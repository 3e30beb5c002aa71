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
//!   `wire::encode`) and a peer (`wire::decode`, `install::install_all` into a
//!   second data path's maps, checked to hold exactly the sender's
//!   sessions and bindings); and the new-flow and established cost of the
//!   data path with a single-node and with that cluster configuration.
//! - **scale**: ~1,000 and `scale_subs x scale_ports` live sessions written
//!   into the maps in batches (values as the data path writes them); the
//!   fast path over many flows at both sizes; memory per session from the
//!   maps' `memlock`; expiry sweeps; the fast path while a sweep runs.
//! - **e2e**: three namespaces (generator, router, sink) joined by veths, native
//!   XDP; frames seeded by `xdp_gen` (run with BPF_F_TEST_XDP_LIVE_FRAMES,
//!   or fed by a packet socket where the kernel refuses that: `feed.rs`) go
//!   round a closed loop: `xdp_sink` counts each and sends it back into the
//!   router as the generator's next frame; router = cgnat attached (default
//!   or fitted tables), the floor, or Linux forwarding with nftables
//!   masquerade. Router NAPI is threaded and pinned to its own CPU when
//!   there are two.
//! - **tcp**: iperf3 throughput and new connections per second (a Rust
//!   client doing connect/close) through cgnat and through nftables.
//!
//! This file holds errors, parameters, statistics and the suite runner;
//! `bench/results.rs` the result types, `bench/setup.rs` namespaces,
//! topology, configuration and frames, `bench/maps.rs` map and
//! program-run helpers, and one file per section (`paths.rs`,
//! `flows.rs`, `sync.rs`, `scale.rs`, `e2e.rs`, `tcp.rs`) with
//! `report.rs` (table and JSON) and `machine.rs`.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use nix::sched::{CloneFlags, CpuSet};
use nix::unistd::Pid;

use crate::floor::{Floor, FloorError, Prog, Target};
use crate::frame::{Mac, Pkt, L4, PROTO_TCP, PROTO_UDP};
use crate::testbed::{check_output, run_command};
use cgnat::bpf::{bytes_of, types, Bindings, Datapath, LoadOptions, Sessions, Side, Tables};
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
    Rfc9693,
}

impl Section {
    pub const ALL: [Section; 7] = [
        Section::Paths,
        Section::NewFlows,
        Section::Sync,
        Section::Scale,
        Section::E2e,
        Section::Tcp,
        Section::Rfc9693,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Paths => "paths",
            Section::NewFlows => "newflows",
            Section::Sync => "sync",
            Section::Scale => "scale",
            Section::E2e => "e2e",
            Section::Tcp => "tcp",
            Section::Rfc9693 => "rfc9693",
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
    /// New sessions per run on bindings spread over the full table.
    pub scale_new_sessions: u32,
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
    /// Connection loops run at once (`conn_rate`).
    pub conn_clients: usize,
    /// RFC 9693: seconds per trial, trials per binary search, the
    /// generator's top rate (frames/s), connections torn down (at most
    /// 64,512: nftables masquerades to one address, so one destination
    /// gets that many source ports), and the table of the capacity test.
    pub rfc_trial_secs: f64,
    pub rfc_steps: u32,
    pub rfc_top_fps: f64,
    pub rfc_teardown: u32,
    pub rfc_capacity: u32,
    pub sections: Vec<Section>,
    /// The paths section's cases to run, by name (empty: all).
    pub paths: Vec<String>,
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
            scale_new_sessions: 16_384,
            expire_all: true,
            e2e_secs: 2.0,
            e2e_warmup: 1.0,
            e2e_runs: 5,
            e2e_subs: 64,
            e2e_ports: 64,
            tcp_runs: 5,
            iperf_secs: 3,
            conn_secs: 2.0,
            conn_clients: 4,
            rfc_trial_secs: 0.25,
            rfc_steps: 7,
            rfc_top_fps: 2_000_000.0,
            rfc_teardown: 60_000,
            rfc_capacity: 32_768,
            sections: Section::ALL.to_vec(),
            paths: Vec::new(),
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
            scale_new_sessions: 64,
            expire_all: true,
            e2e_secs: 0.3,
            e2e_warmup: 0.2,
            e2e_runs: 1,
            e2e_subs: 4,
            e2e_ports: 4,
            tcp_runs: 1,
            iperf_secs: 1,
            conn_secs: 0.3,
            conn_clients: 2,
            rfc_trial_secs: 0.05,
            rfc_steps: 3,
            rfc_top_fps: 100_000.0,
            rfc_teardown: 2_000,
            rfc_capacity: 1_024,
            sections: Section::ALL.to_vec(),
            paths: Vec::new(),
        }
    }

    /// Overrides from the environment: `CGNAT_BENCH_ONLY=paths,scale`
    /// (sections), `CGNAT_BENCH_PATHS=hairpin,udp_out` (the paths section's
    /// cases), `CGNAT_BENCH_SCALE_SUBS=N`, `CGNAT_BENCH_SYNC_SESSIONS=N`,
    /// `CGNAT_BENCH_RUNS=N`.
    pub fn with_env(mut self) -> Params {
        if let Ok(only) = std::env::var("CGNAT_BENCH_ONLY") {
            self.sections = Section::ALL
                .into_iter()
                .filter(|s| only.split(',').any(|w| w.trim() == s.name()))
                .collect();
        }
        if let Ok(names) = std::env::var("CGNAT_BENCH_PATHS") {
            self.paths = names.split(',').map(|w| w.trim().to_string()).collect();
        }
        if let Some(n) = env_num("CGNAT_BENCH_SCALE_SUBS") {
            self.scale_subs = n as u32;
        }
        if let Some(n) = env_num("CGNAT_BENCH_SYNC_SESSIONS") {
            self.sync_sessions = n as u32;
        }
        if let Some(n) = env_num("CGNAT_BENCH_CONN_CLIENTS") {
            self.conn_clients = (n as usize).max(1);
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
        rfc9693: None,
        errors: Vec::new(),
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
    if p.has(Section::E2e) || p.has(Section::Tcp) || p.has(Section::Rfc9693) {
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
                if p.has(Section::Rfc9693) {
                    let t = Instant::now();
                    let r = rfc9693::bench_rfc9693(p, &net).map(|v| s.rfc9693 = Some(v));
                    note(&mut s, Section::Rfc9693, r);
                    eprintln!("bench: rfc9693 done in {:.1} s", t.elapsed().as_secs_f64());
                }
            }
        }
    }
    s.secs = start.elapsed().as_secs_f64();
    s
}

mod e2e;
mod feed;
mod flows;
mod goals;
mod machine;
mod maps;
mod paths;
mod report;
mod results;
pub mod rfc9693;
mod scale;
mod setup;
mod sync;
pub mod tcp;
pub use e2e::*;
use feed::*;
use flows::*;
pub use goals::*;
use machine::*;
use maps::*;
use paths::*;
pub use results::*;
use scale::*;
pub use setup::Ns;
use setup::*;
use sync::*;
use tcp::*;

#[cfg(test)]
mod tests {
    use super::report::J;
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
        assert_eq!(j.to_string(), r#"{"a":1,"b":null,"c":"x\"y","d":[0.5]}"#);
        assert_eq!(J::n(2.0 / 3.0).to_string(), "0.667");
        assert_eq!(
            received_bits_per_second(
                r#"{"end": {"sum_sent": {"bits_per_second": 1}, "sum_received": {"x": 1, "bits_per_second": 9.5e9}}}"#
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
