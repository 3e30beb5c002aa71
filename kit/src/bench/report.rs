//! Report: table and JSON.

use serde_json::Value;

use super::*;

pub(super) fn verdict(ok: bool) -> &'static str {
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
                "<=1.3",
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
        if let Some(y) = &self.sync {
            let _ = writeln!(
                o,
                "\nCluster sync ({} new UDP flows per run on each data path; sync of node 1's {} sessions, {} bindings, {} subscribers to node 2):",
                y.flows_per_run, y.sessions, y.bindings, y.subscribers
            );
            let _ = writeln!(
                o,
                "  data path, new flow: single-node {:.0} ns (mean {:.0}, {:.0}/s), 2-node cluster {:.0} ns (mean {:.0}, {:.0}/s)",
                y.single_new_ns.median(),
                y.single_new_mean_ns.median(),
                y.single_new_flows_per_sec(),
                y.cluster_new_ns.median(),
                y.cluster_new_mean_ns.median(),
                y.new_flows_per_sec()
            );
            let _ = writeln!(
                o,
                "  cluster minus single-node, paired per run: mean {:+.0} ns ({:+.1} %; runs {}), median {:+.0} ns",
                y.cluster_extra_ns(),
                100.0 * y.cluster_extra_ns() / y.single_new_mean_ns.median(),
                y.extra_mean_ns
                    .runs
                    .iter()
                    .map(|x| format!("{x:+.0}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                y.extra_median_ns.median()
            );
            let _ = writeln!(
                o,
                "  data path, udp_out established: single-node {:.1} ns, cluster {:.1} ns ({:+.1} ns)",
                y.single_est_ns.median(),
                y.cluster_est_ns.median(),
                y.cluster_est_ns.median() - y.single_est_ns.median()
            );
            let _ = writeln!(
                o,
                "  wire: {} records in {} datagrams, {} bytes: {:.1} records per datagram, {:.1} bytes per session",
                y.records,
                y.datagrams,
                y.bytes,
                y.records_per_datagram(),
                y.bytes_per_session()
            );
            let _ = writeln!(
                o,
                "  send (scan {:.3} + diff {:.3} + batch/encode {:.3} = {:.3} s CPU, {:.3} s wall): {:.0} records/s, {:.0} datagrams/s, {:.0} sessions/s per core = {:.2}x the new-session rate",
                y.scan_secs.median(),
                y.diff_secs.median(),
                y.encode_secs.median(),
                y.send_secs.median(),
                y.send_wall_secs.median(),
                y.send_records_per_sec(),
                y.send_datagrams_per_sec(),
                y.send_sessions_per_sec(),
                y.send_ratio()
            );
            let _ = writeln!(
                o,
                "  next interval, nothing new (scan + diff): {:.3} s CPU at {} sessions (reading the maps alone {:.3} s): one core's whole 250 ms interval at {:.0} sessions",
                y.idle_secs.median(),
                y.sessions,
                y.read_secs.median(),
                y.idle_full_core_sessions(Duration::from_millis(250))
            );
            let _ = writeln!(
                o,
                "  receive (decode {:.3} + install {:.3} = {:.3} s CPU, {:.3} s wall): {:.0} records/s, {:.0} datagrams/s, {:.0} sessions/s per core = {:.2}x the new-session rate",
                y.decode_secs.median(),
                y.install_secs.median(),
                y.recv_secs.median(),
                y.recv_wall_secs.median(),
                y.recv_records_per_sec(),
                y.recv_datagrams_per_sec(),
                y.recv_sessions_per_sec(),
                y.recv_ratio()
            );
            let _ = writeln!(
                o,
                "  receiver holds {} sessions, {} bind_in, {} outbound halves, {} subscribers ({} conflicts); at {:.0} new sessions/s one 250 ms interval is {:.0} datagrams",
                y.recv_sessions,
                y.recv_bind_in,
                y.recv_bind_out,
                y.recv_subscribers,
                y.conflicts,
                y.new_flows_per_sec(),
                y.datagrams_per_interval(Duration::from_millis(250))
            );
        }
        if let Some(s) = &self.scale {
            let _ = writeln!(o, "\nScale (UDP outbound, established):");
            let _ = writeln!(
                o,
                "  {:>9} sessions: cgnat {:.1} ns ({:.2} Mpps), floor {:.1} ns, floor+2 lookups {:.1} ns, floor+1 line {:.1} ns",
                s.small_sessions,
                s.small_ns.median(),
                mpps(s.small_ns.median()),
                s.small_floor_ns.median(),
                s.small_probe_ns.median(),
                s.small_line_ns.median()
            );
            let _ = writeln!(
                o,
                "  {:>9} sessions: cgnat {:.1} ns ({:.2} Mpps), floor {:.1} ns, floor+2 lookups {:.1} ns, floor+1 line {:.1} ns  ({} flows cycled)",
                s.large_sessions,
                s.large_ns.median(),
                mpps(s.large_ns.median()),
                s.large_floor_ns.median(),
                s.large_probe_ns.median(),
                s.large_line_ns.median(),
                s.large_frames
            );
            let _ = writeln!(
                o,
                "    (floor+1 line: one lookup in a table of 64-byte slots, the layout of a one-lookup fast path; large/small {:.2})",
                s.large_line_ns.median() / s.small_line_ns.median()
            );
            let _ = writeln!(
                o,
                "  {:>9} sessions, only the {} flows above: cgnat {:.1} ns (table size alone), floor {:.1} ns, floor+2 lookups {:.1} ns, floor+1 line {:.1} ns",
                s.large_sessions,
                s.small_sessions,
                s.large_hot_ns.median(),
                s.large_hot_floor_ns.median(),
                s.large_hot_probe_ns.median(),
                s.large_hot_line_ns.median()
            );
            let _ = writeln!(
                o,
                "  {:>9} sessions, Zipf(1.0) over all of them: cgnat {:.1} ns ({:.2} Mpps; {} distinct of {} frames), {:.2}x uniform",
                s.large_sessions,
                s.zipf_ns.median(),
                mpps(s.zipf_ns.median()),
                s.zipf_flows,
                s.large_frames,
                s.zipf_ns.median() / s.large_ns.median()
            );
            let _ = writeln!(
                o,
                "  new session on an existing binding (a new remote; single calls): {} sessions {:.0} ns (mean {:.0}), {} sessions {:.0} ns (mean {:.0}, {} bindings spread over it): {:.0} new sessions/s per core at that size",
                s.small_sessions,
                s.small_new_ns.median(),
                s.small_new_mean_ns.median(),
                s.large_sessions,
                s.large_new_ns.median(),
                s.large_new_mean_ns.median(),
                s.large_new_sessions,
                1e9 / s.large_new_mean_ns.median()
            );
            let _ = writeln!(
                o,
                "  large/small {:.2} (goal <= {GOAL_SCALE_RATIO}: {})",
                s.ratio(),
                verdict(s.ratio() <= GOAL_SCALE_RATIO)
            );
            let _ = writeln!(
                o,
                "  memory: {:.1} bytes per session (session table+subscribers memlock, {:.1} of it subscribers; goal <= {GOAL_BYTES_PER_SESSION}: {})",
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
                "  preload {:.1} s; sweep (nothing expires) {:.2} s, {:.2} s CPU, its session pass {:.2} s (goal <= {GOAL_SWEEP_NOOP_CPU_SECS}: {}; in user space {:.2} s, {:.2} s CPU)",
                s.preload_secs,
                s.sweep_noop_secs,
                s.sweep_noop_cpu_secs,
                s.sweep_noop_session_pass_secs,
                verdict(s.sweep_noop_cpu_secs <= GOAL_SWEEP_NOOP_CPU_SECS),
                s.sweep_noop_user_secs,
                s.sweep_noop_user_cpu_secs
            );
            let _ = writeln!(
                o,
                "    no-op sweeps alternating ({} each, median CPU): live bindings marked in port bits {:.2} s, in their inbound halves {:.2} s ({:.2}x)",
                s.sweep_noop_bits_cpu.runs.len(),
                s.sweep_noop_bits_cpu.median(),
                s.sweep_noop_marks_cpu.median(),
                s.sweep_noop_bits_cpu.median() / s.sweep_noop_marks_cpu.median()
            );
            let _ = writeln!(
                o,
                "  reading the whole table: a metrics scrape {:.3} s, a `cgnat top` sample {:.3} s",
                s.scrape_secs, s.top_sample_secs
            );
            let _ = writeln!(
                o,
                "  fast path during sweeps {:.1} ns ({:.2}x, {} sweeps)",
                s.during_sweep_ns.median(),
                s.during_sweep_ns.median() / s.large_ns.median(),
                s.sweeps_during
            );
            if s.expired > 0 {
                let gone = s.expire_sessions_secs();
                let _ = writeln!(
                    o,
                    "  expire all {}: mark sweep {:.2} s + delete sweep's session pass {:.2} s = {:.2} s until every session is gone (goal <= {GOAL_EXPIRE_ALL_SECS}: {})",
                    s.expired,
                    s.expire_mark_secs,
                    s.expire_session_pass_secs,
                    gone,
                    verdict(gone <= GOAL_EXPIRE_ALL_SECS)
                );
                let _ = writeln!(
                    o,
                    "    and their {} bindings released at the end of the delete sweep ({:.2} s): {:.2} s until every session and binding is gone ({:.2} s CPU)",
                    s.expired_bindings,
                    s.expire_delete_secs,
                    s.expire_all_state_secs(),
                    s.expire_mark_cpu_secs + s.expire_delete_cpu_secs,
                );
            }
        }
        if let Some(e) = &self.e2e {
            let _ = writeln!(
                o,
                "\nEnd to end, native XDP on veth, {}-byte UDP frames, {} flows ({}):",
                e.frame_len, e.flows, e.pinning
            );
            let _ = writeln!(o, "  generator: {}", e.generator);
            let _ = writeln!(
                o,
                "  {:<10} {:>13} {:>13} {:>11} {:>13} {:>13}",
                "router",
                "received Mpps",
                "sent Mpps",
                "router busy",
                "router ns/pkt",
                "capacity Mpps"
            );
            for (name, m) in [
                ("cgnat", &e.cgnat),
                ("cgnat-fit", &e.cgnat_fit),
                ("floor", &e.floor),
                ("floor+2lkp", &e.probe),
                ("floor+line", &e.line),
                ("nftables", &e.nft),
            ] {
                let _ = writeln!(
                    o,
                    "  {name:<10} {:>13.3} {:>13.3} {:>10.0}% {:>13.0} {:>13.3}",
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
            // What each router adds to the floor's CPU per packet: the
            // costs all routers share (the veths, the wake-ups of a
            // router that is not saturated) cancel out.
            let above = |m: &E2eMode| m.router_ns.median() - e.floor.router_ns.median();
            let _ = writeln!(
                o,
                "  router CPU per packet above the floor's: cgnat {:+.0} ns, cgnat-fit {:+.0} ns, floor+2lkp {:+.0} ns, floor+line {:+.0} ns, nftables {:+.0} ns",
                above(&e.cgnat),
                above(&e.cgnat_fit),
                above(&e.probe),
                above(&e.line),
                above(&e.nft)
            );
            let _ = writeln!(
                o,
                "  (cgnat: the config's default tables; cgnat-fit: tables of {} sessions and bindings, cgnat/floor {:.2}: \
                 the difference is what spreading the flows over the default tables' pages costs; \
                 floor+line: one lookup per packet in a table of that size, floor+line/floor {:.2}, the best a one-lookup design reaches)",
                e.fit_sessions,
                e.fit_vs_floor(),
                e.line_vs_floor()
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
                    for (name, gbps, cpu) in [
                        ("cgnat", &t.iperf_cgnat_gbps, &t.iperf_cgnat_cpu),
                        ("nftables", &t.iperf_nft_gbps, &t.iperf_nft_cpu),
                    ] {
                        let c = tcp::CpuTimes::median_of(cpu);
                        let _ = writeln!(
                            o,
                            "    {name:<8} router NAPI thread {:.2} CPU, machine {:.2} of {} CPUs busy: {:.1} Gbit/s per router CPU-second",
                            c.router,
                            c.machine,
                            self.cpus,
                            gbps.median() / c.router.max(1e-9)
                        );
                    }
                }
            }
            let _ = writeln!(
                o,
                "  new connections/s: cgnat {:.0}, nftables {:.0} ({} connection loops)",
                t.conn_cgnat.median(),
                t.conn_nft.median(),
                t.conn_clients
            );
            for (name, cps, cpu) in [
                ("cgnat", &t.conn_cgnat, &t.conn_cgnat_cpu),
                ("nftables", &t.conn_nft, &t.conn_nft_cpu),
            ] {
                let c = tcp::CpuTimes::median_of(cpu);
                let _ = writeln!(
                    o,
                    "    {name:<8} router NAPI threads {:.2} CPU ({:.1} us per connection), machine {:.2} of {} CPUs busy, {:.1} context switches per connection",
                    c.router + c.router_back,
                    (c.router + c.router_back) / cps.median().max(1e-9) * 1e6,
                    c.machine,
                    self.cpus,
                    c.switches / cps.median().max(1e-9)
                );
            }
        }
        if let Some(r) = &self.rfc9693 {
            rfc9693::table(&mut o, r);
        }
        self.goals_table(&mut o);
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
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
                    ("sync_sessions", J::n(f64::from(self.params.sync_sessions))),
                    ("scale_subs", J::n(f64::from(self.params.scale_subs))),
                    ("scale_ports", J::n(f64::from(self.params.scale_ports))),
                    ("scale_frames", J::n(f64::from(self.params.scale_frames))),
                    ("scale_repeat", J::n(f64::from(self.params.scale_repeat))),
                    ("e2e_secs", J::n(self.params.e2e_secs)),
                    ("e2e_runs", J::n(self.params.e2e_runs as f64)),
                ]),
            ),
        ];
        let paths: Vec<(&str, Value)> = self
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
                        ("goal_met", Value::Bool(r.ratio() <= GOAL_PATH_RATIO)),
                        ("feeder_ns", J::n(r.feeder_ns.median())),
                        (
                            "floor_plus_lookups_ns",
                            r.probe_ns
                                .as_ref()
                                .map(|s| J::n(s.median()))
                                .unwrap_or(Value::Null),
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
        if let Some(y) = &self.sync {
            root.push((
                "sync",
                J::o(vec![
                    ("flows_per_run", J::n(f64::from(y.flows_per_run))),
                    ("sessions", J::n(y.sessions as f64)),
                    ("bindings", J::n(y.bindings as f64)),
                    ("subscribers", J::n(y.subscribers as f64)),
                    ("records", J::n(y.records as f64)),
                    ("datagrams", J::n(y.datagrams as f64)),
                    ("bytes", J::n(y.bytes as f64)),
                    ("bytes_per_session", J::n(y.bytes_per_session())),
                    ("records_per_datagram", J::n(y.records_per_datagram())),
                    ("send_scan_cpu_secs", J::n(y.scan_secs.median())),
                    ("send_diff_cpu_secs", J::n(y.diff_secs.median())),
                    ("send_encode_cpu_secs", J::n(y.encode_secs.median())),
                    ("send_cpu_secs", J::n(y.send_secs.median())),
                    ("send_wall_secs", J::n(y.send_wall_secs.median())),
                    ("send_records_per_sec", J::n(y.send_records_per_sec())),
                    ("send_datagrams_per_sec", J::n(y.send_datagrams_per_sec())),
                    ("send_sessions_per_sec", J::n(y.send_sessions_per_sec())),
                    ("send_vs_new_session_rate", J::n(y.send_ratio())),
                    ("idle_interval_cpu_secs", J::n(y.idle_secs.median())),
                    ("map_read_cpu_secs", J::n(y.read_secs.median())),
                    (
                        "idle_interval_full_core_sessions_250ms",
                        J::n(y.idle_full_core_sessions(Duration::from_millis(250))),
                    ),
                    ("recv_decode_cpu_secs", J::n(y.decode_secs.median())),
                    ("recv_install_cpu_secs", J::n(y.install_secs.median())),
                    ("recv_cpu_secs", J::n(y.recv_secs.median())),
                    ("recv_wall_secs", J::n(y.recv_wall_secs.median())),
                    ("recv_records_per_sec", J::n(y.recv_records_per_sec())),
                    ("recv_datagrams_per_sec", J::n(y.recv_datagrams_per_sec())),
                    ("recv_sessions_per_sec", J::n(y.recv_sessions_per_sec())),
                    ("recv_vs_new_session_rate", J::n(y.recv_ratio())),
                    ("recv_sessions", J::n(y.recv_sessions as f64)),
                    ("recv_bind_in", J::n(y.recv_bind_in as f64)),
                    ("recv_bind_out", J::n(y.recv_bind_out as f64)),
                    ("recv_subscribers", J::n(y.recv_subscribers as f64)),
                    ("recv_conflicts", J::n(y.conflicts as f64)),
                    ("single_new_flow_ns", J::n(y.single_new_ns.median())),
                    (
                        "single_new_flow_mean_ns",
                        J::n(y.single_new_mean_ns.median()),
                    ),
                    ("cluster_new_flow_ns", J::n(y.cluster_new_ns.median())),
                    (
                        "cluster_new_flow_mean_ns",
                        J::n(y.cluster_new_mean_ns.median()),
                    ),
                    ("cluster_extra_new_flow_ns", J::n(y.cluster_extra_ns())),
                    (
                        "cluster_extra_new_flow_median_ns",
                        J::n(y.extra_median_ns.median()),
                    ),
                    (
                        "cluster_extra_new_flow_ns_runs",
                        J::arr(&y.extra_mean_ns.runs),
                    ),
                    ("new_flows_per_sec_per_core", J::n(y.new_flows_per_sec())),
                    (
                        "single_new_flows_per_sec_per_core",
                        J::n(y.single_new_flows_per_sec()),
                    ),
                    ("single_udp_out_ns", J::n(y.single_est_ns.median())),
                    ("cluster_udp_out_ns", J::n(y.cluster_est_ns.median())),
                    ("feeder_ns", J::n(y.feeder_ns.median())),
                    ("timer_overhead_ns", J::n(y.overhead_ns.median())),
                    (
                        "datagrams_per_250ms_at_new_session_rate",
                        J::n(y.datagrams_per_interval(Duration::from_millis(250))),
                    ),
                    ("send_cpu_secs_runs", J::arr(&y.send_secs.runs)),
                    ("recv_cpu_secs_runs", J::arr(&y.recv_secs.runs)),
                    (
                        "single_new_flow_mean_ns_runs",
                        J::arr(&y.single_new_mean_ns.runs),
                    ),
                    (
                        "cluster_new_flow_mean_ns_runs",
                        J::arr(&y.cluster_new_mean_ns.runs),
                    ),
                ]),
            ));
        }
        if let Some(s) = &self.scale {
            let maps: Vec<(&str, Value)> = s
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
                    (
                        "large_table_small_flows_floor_plus_lookups_ns",
                        J::n(s.large_hot_probe_ns.median()),
                    ),
                    (
                        "large_table_small_flows_floor_plus_line_ns",
                        J::n(s.large_hot_line_ns.median()),
                    ),
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
                    ("small_floor_plus_line_ns", J::n(s.small_line_ns.median())),
                    ("large_floor_plus_line_ns", J::n(s.large_line_ns.median())),
                    ("ratio", J::n(s.ratio())),
                    ("goal_met", Value::Bool(s.ratio() <= GOAL_SCALE_RATIO)),
                    ("bytes_per_session", J::n(s.bytes_per_session())),
                    (
                        "subscriber_bytes_per_session",
                        J::n(s.subscriber_bytes_per_session()),
                    ),
                    (
                        "bytes_goal_met",
                        Value::Bool(s.bytes_per_session() <= GOAL_BYTES_PER_SESSION),
                    ),
                    ("maps", J::o(maps)),
                    ("preload_secs", J::n(s.preload_secs)),
                    ("zipf_ns", J::n(s.zipf_ns.median())),
                    ("zipf_mpps", J::n(mpps(s.zipf_ns.median()))),
                    ("zipf_distinct_flows", J::n(f64::from(s.zipf_flows))),
                    ("small_new_session_ns", J::n(s.small_new_ns.median())),
                    ("large_new_session_ns", J::n(s.large_new_ns.median())),
                    (
                        "large_new_session_mean_ns",
                        J::n(s.large_new_mean_ns.median()),
                    ),
                    (
                        "large_new_sessions_per_sec",
                        J::n(1e9 / s.large_new_mean_ns.median()),
                    ),
                    ("sweep_noop_secs", J::n(s.sweep_noop_secs)),
                    ("sweep_noop_cpu_secs", J::n(s.sweep_noop_cpu_secs)),
                    (
                        "sweep_noop_session_pass_secs",
                        J::n(s.sweep_noop_session_pass_secs),
                    ),
                    ("sweep_noop_user_secs", J::n(s.sweep_noop_user_secs)),
                    ("sweep_noop_user_cpu_secs", J::n(s.sweep_noop_user_cpu_secs)),
                    ("metrics_scrape_secs", J::n(s.scrape_secs)),
                    ("top_sample_secs", J::n(s.top_sample_secs)),
                    (
                        "sweep_noop_bits_cpu_secs",
                        J::n(s.sweep_noop_bits_cpu.median()),
                    ),
                    (
                        "sweep_noop_marks_cpu_secs",
                        J::n(s.sweep_noop_marks_cpu.median()),
                    ),
                    (
                        "sweep_noop_goal_met",
                        Value::Bool(s.sweep_noop_cpu_secs <= GOAL_SWEEP_NOOP_CPU_SECS),
                    ),
                    ("expire_all_mark_cpu_secs", J::n(s.expire_mark_cpu_secs)),
                    ("expire_all_delete_cpu_secs", J::n(s.expire_delete_cpu_secs)),
                    ("during_sweep_ns", J::n(s.during_sweep_ns.median())),
                    ("sweeps_during", J::n(s.sweeps_during as f64)),
                    ("expire_all_mark_secs", J::n(s.expire_mark_secs)),
                    ("expire_all_delete_secs", J::n(s.expire_delete_secs)),
                    ("expired", J::n(s.expired as f64)),
                    ("expired_bindings", J::n(s.expired_bindings as f64)),
                    (
                        "expire_all_session_pass_secs",
                        J::n(s.expire_session_pass_secs),
                    ),
                    ("expire_all_state_secs", J::n(s.expire_all_state_secs())),
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
                    ("generator", J::s(&e.generator)),
                    ("frame_bytes", J::n(e.frame_len as f64)),
                    ("flows", J::n(f64::from(e.flows))),
                    ("cgnat", mode(&e.cgnat)),
                    ("cgnat_fit", mode(&e.cgnat_fit)),
                    ("cgnat_fit_sessions", J::n(f64::from(e.fit_sessions))),
                    ("cgnat_fit_vs_floor", J::n(e.fit_vs_floor())),
                    ("floor", mode(&e.floor)),
                    ("floor_plus_lookups", mode(&e.probe)),
                    ("floor_plus_line", mode(&e.line)),
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
                    ("vs_floor_goal_met", Value::Bool(vf >= GOAL_E2E_VS_FLOOR)),
                    ("vs_nft_goal_met", Value::Bool(vn >= GOAL_E2E_VS_NFT)),
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
                    ("iperf_cgnat_cpu", cpu_json(&t.iperf_cgnat_cpu)),
                    ("iperf_nft_cpu", cpu_json(&t.iperf_nft_cpu)),
                    (
                        "iperf_skipped",
                        t.iperf_skipped.as_deref().map(J::s).unwrap_or(Value::Null),
                    ),
                    ("connections_per_sec_cgnat", J::n(t.conn_cgnat.median())),
                    ("connections_per_sec_nft", J::n(t.conn_nft.median())),
                    ("connections_cgnat_cpu", cpu_json(&t.conn_cgnat_cpu)),
                    ("connections_nft_cpu", cpu_json(&t.conn_nft_cpu)),
                ]),
            ));
        }
        if let Some(r) = &self.rfc9693 {
            let mode = |m: &rfc9693::Rfc9693Mode| {
                J::o(vec![
                    ("establish_fps", J::n(m.establish_fps)),
                    (
                        "establish_at_generator_top",
                        Value::Bool(m.establish_at_top),
                    ),
                    ("throughput_fps", J::n(m.throughput_fps)),
                    (
                        "throughput_at_generator_top",
                        Value::Bool(m.throughput_at_top),
                    ),
                    ("establish_loop_fps", J::n(m.establish_loop.fps)),
                    ("establish_loop_lost", J::n(m.establish_loop.lost as f64)),
                    ("throughput_loop_fps", J::n(m.throughput_loop.fps)),
                    ("throughput_loop_lost", J::n(m.throughput_loop.lost as f64)),
                    ("teardown_secs", J::n(m.teardown_secs)),
                    ("teardown_per_sec", J::n(m.teardown_per_sec)),
                    ("capacity", J::n(m.capacity as f64)),
                    ("beyond_capacity", J::s(&m.beyond)),
                ])
            };
            root.push((
                "rfc9693",
                J::o(vec![
                    ("generator", J::s(&r.generator)),
                    ("generator_fps", J::n(r.generator_fps)),
                    ("top_fps", J::n(r.top_fps)),
                    ("trial_secs", J::n(r.trial_secs)),
                    ("search_steps", J::n(f64::from(r.steps))),
                    ("teardown_connections", J::n(f64::from(r.teardown))),
                    ("capacity_table", J::n(f64::from(r.capacity_table))),
                    ("cgnat", mode(&r.cgnat)),
                    ("nft", mode(&r.nft)),
                ]),
            ));
        }
        root.push(("goals", self.goals_json()));
        root.push((
            "notes",
            Value::Array(self.notes.iter().map(|n| J::s(n)).collect()),
        ));
        root.push((
            "errors",
            Value::Array(self.errors.iter().map(|n| J::s(n)).collect()),
        ));
        format!("{:#}\n", J::o(root))
    }
}

fn cpu_json(runs: &[tcp::CpuTimes]) -> Value {
    let c = tcp::CpuTimes::median_of(runs);
    J::o(vec![
        ("router_cpus", J::n(c.router)),
        ("router_back_cpus", J::n(c.router_back)),
        ("machine_cpus", J::n(c.machine)),
        ("context_switches_per_sec", J::n(c.switches)),
    ])
}

/// Constructors of summary.json's values (serde_json): numbers rounded
/// to 3 decimals and whole ones written as integers, a number that is not
/// finite as null, objects from named fields.
pub(super) struct J;

impl J {
    pub(super) fn n(v: f64) -> Value {
        if !v.is_finite() {
            Value::Null
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            Value::from(v as i64)
        } else {
            Value::from((v * 1000.0).round() / 1000.0)
        }
    }

    pub(super) fn s(v: &str) -> Value {
        Value::from(v)
    }

    pub(super) fn arr(v: &[f64]) -> Value {
        Value::Array(v.iter().map(|x| J::n(*x)).collect())
    }

    pub(super) fn o(v: Vec<(&str, Value)>) -> Value {
        Value::Object(v.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}
