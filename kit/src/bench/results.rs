//! Results: what each section measured, the figures derived from it, and
//! the [`Summary`] of a suite run (printed and written by `report.rs`).

use super::*;

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
    /// Of a scan: reading the four tables it reads (`Bindings::dump`,
    /// `lookup_all` of subscribers and blocks without decoding,
    /// `Sessions::dump`), CPU seconds, measured apart.
    pub read_secs: Stat,
    /// Receive side, likewise: `wire::decode` (with the replay window),
    /// `install::install_all` of every datagram, their sum, its wall time.
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
    /// The floor plus one lookup in a table of cache lines
    /// (`xdp_probe_line`): a fast path with one lookup per packet.
    pub small_line_ns: Stat,
    pub large_line_ns: Stat,
    /// The floor and both probes with the large tables loaded and only
    /// the small set of flows active (table size alone).
    pub large_hot_floor_ns: Stat,
    pub large_hot_probe_ns: Stat,
    pub large_hot_line_ns: Stat,
    /// A new session on an existing binding (a new remote), single calls:
    /// on the small table's bindings, and on `large_new_sessions` bindings
    /// spread over the full table.
    pub small_new_ns: Stat,
    pub small_new_mean_ns: Stat,
    pub large_new_ns: Stat,
    pub large_new_mean_ns: Stat,
    pub large_new_sessions: u32,
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
    /// Of that sweep, its walk of the sessions (timed inside the sweep
    /// program); the rest is the walk of the bindings and the filters.
    pub sweep_noop_session_pass_secs: f64,
    /// The same sweep in user space (`Sweeper::sweep_user`), for reference.
    pub sweep_noop_user_secs: f64,
    pub sweep_noop_user_cpu_secs: f64,
    /// CPU seconds of no-op sweeps run alternately in the same run: live
    /// bindings marked in the port bits (`sweep_live`), and marked in
    /// `bind_in` itself (a sweeper without `sweep_live` slots, as for the
    /// addresses beyond them).
    pub sweep_noop_bits_cpu: Stat,
    pub sweep_noop_marks_cpu: Stat,
    /// One metrics scrape (`cgnat::metrics::render`) and one `cgnat top`
    /// sample of the full table, wall seconds.
    pub scrape_secs: f64,
    pub top_sample_secs: f64,
    pub expire_mark_secs: f64,
    pub expire_delete_secs: f64,
    pub expire_mark_cpu_secs: f64,
    pub expire_delete_cpu_secs: f64,
    pub expired: u64,
    /// Bindings the same two sweeps released (their ports quarantined).
    pub expired_bindings: u64,
    /// The delete sweep's walk of the sessions, at whose end every
    /// session is gone (its bindings are released after it).
    pub expire_session_pass_secs: f64,
}

impl ScaleResult {
    /// Seconds from the first expiring sweep's start until every session
    /// is gone.
    pub fn expire_sessions_secs(&self) -> f64 {
        self.expire_mark_secs + self.expire_session_pass_secs
    }

    /// Seconds until every session and binding is gone.
    pub fn expire_all_state_secs(&self) -> f64 {
        self.expire_mark_secs + self.expire_delete_secs
    }

    pub fn ratio(&self) -> f64 {
        self.large_ns.median() / self.small_ns.median()
    }

    /// memlock of the session table (sessions and both halves of every
    /// binding) + subscribers, per live session.
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
const SESSION_MAPS: [&str; 4] = ["sessions", "session_locks", "session_count", "subscribers"];

/// One router mode end to end.
#[derive(Debug, Clone, Default)]
pub struct E2eMode {
    /// Received at the sink.
    pub mpps: Stat,
    /// Sent round the loop again by the sink meanwhile.
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

    /// The router's NAPI thread was idle for a tenth of the window or
    /// more: the loop's other stage (the sink sending each frame round
    /// again), not the router, set the pace.
    pub fn unsaturated(&self) -> bool {
        self.router_busy.median() < 0.9
    }
}

#[derive(Debug, Clone, Default)]
pub struct E2eResult {
    /// How the generator's frames enter the network (`feed.rs`).
    pub generator: String,
    pub flows: u32,
    /// Sessions and bindings of `cgnat_fit`'s tables.
    pub fit_sessions: u32,
    pub frame_len: usize,
    /// cgnat with the config's default tables.
    pub cgnat: E2eMode,
    /// cgnat with tables sized to the flows: what the size of the default
    /// tables costs (the flows' entries spread over more pages).
    pub cgnat_fit: E2eMode,
    pub floor: E2eMode,
    /// The floor plus cgnat's two lookups.
    pub probe: E2eMode,
    /// The floor plus one lookup in a table of cache lines of cgnat's
    /// default size.
    pub line: E2eMode,
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

    /// cgnat with tables fitted to the flows against the floor, by router
    /// CPU per packet.
    pub fn fit_vs_floor(&self) -> f64 {
        self.cgnat_fit.capacity_mpps() / self.floor.capacity_mpps()
    }

    /// One lookup in a table of cgnat's default size against the floor,
    /// by router CPU per packet.
    pub fn line_vs_floor(&self) -> f64 {
        self.line.capacity_mpps() / self.floor.capacity_mpps()
    }
}

#[derive(Debug, Clone, Default)]
pub struct TcpResult {
    pub iperf_cgnat_gbps: Stat,
    pub iperf_nft_gbps: Stat,
    /// CPUs busy during each iperf3 run: the router's NAPI thread, the
    /// whole machine.
    pub iperf_cgnat_cpu: Vec<tcp::CpuTimes>,
    pub iperf_nft_cpu: Vec<tcp::CpuTimes>,
    pub conn_cgnat: Stat,
    pub conn_nft: Stat,
    /// CPUs busy during each connection run: both router NAPI threads,
    /// the whole machine.
    pub conn_cgnat_cpu: Vec<tcp::CpuTimes>,
    pub conn_nft_cpu: Vec<tcp::CpuTimes>,
    /// Connection loops run at once.
    pub conn_clients: usize,
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
    pub rfc9693: Option<rfc9693::Rfc9693Result>,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    pub secs: f64,
}
