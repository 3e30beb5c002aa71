//! The benchmark suite (src/bench.rs) with tiny repeat counts: it must
//! complete and produce sane numbers. No timing is asserted: the machine
//! may be slow or busy. Needs root and iperf3 (`make deps`); without them
//! the test (or its iperf3 part) is skipped, except under CI where it fails
//! (`cgnat_kit::testbed::cannot_run`).

use cgnat_kit::bench::{mpps, Params, Stat};

fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    cgnat_kit::testbed::cannot_run(
        "bench_smoke: the benchmarks need root (BPF programs, network namespaces)",
    );
    false
}

fn sane(what: &str, s: &Stat, runs: usize) {
    assert_eq!(
        s.runs.len(),
        runs,
        "{what}: {} runs, expected {runs}",
        s.runs.len()
    );
    let m = s.median();
    assert!(
        m.is_finite() && m > 0.0,
        "{what}: median {m} ({:?})",
        s.runs
    );
}

#[test]
fn bench_suite_runs() {
    if !privileged() {
        return;
    }
    let p = Params::smoke();
    let s = cgnat_kit::bench::run(&p).expect("the suite runs");
    println!("{}", s.table());
    assert!(s.errors.is_empty(), "sections failed: {:#?}", s.errors);

    assert_eq!(s.paths.len(), 7, "every packet path measured");
    for r in &s.paths {
        sane(&format!("{} cgnat", r.name), &r.cgnat_ns, p.runs);
        sane(&format!("{} floor", r.name), &r.floor_ns, p.runs);
        assert!(
            r.ratio().is_finite() && r.ratio() > 0.0,
            "{}: ratio",
            r.name
        );
        assert!(mpps(r.cgnat_ns.median()) > 0.0);
        assert!(r.single_cgnat_ns.is_finite(), "{}: single-call", r.name);
        if let Some(pr) = &r.probe_ns {
            sane(&format!("{} floor+lookups", r.name), pr, p.runs);
        }
    }

    let n = s.new_flows.as_ref().expect("new-flow results");
    sane("new flows", &n.new_mean_ns, p.runs);
    assert!(n.flows_per_sec().is_finite() && n.flows_per_sec() > 0.0);

    let y = s.sync.as_ref().expect("sync results");
    for (what, st) in [
        ("sync new flow single-node", &y.single_new_mean_ns),
        ("sync new flow cluster", &y.cluster_new_mean_ns),
        ("sync udp_out single-node", &y.single_est_ns),
        ("sync udp_out cluster", &y.cluster_est_ns),
        ("sync send", &y.send_secs),
        ("sync idle interval", &y.idle_secs),
        ("sync receive", &y.recv_secs),
    ] {
        sane(what, st, p.runs);
    }
    // every new flow of the cluster node, and its one established flow
    let flows = u64::from(y.flows_per_run) * p.runs as u64;
    assert!(flows >= u64::from(p.sync_sessions), "{flows} flows");
    assert_eq!(y.sessions, flows + 1, "sessions node 1 sent");
    assert_eq!(y.bindings, flows + 1, "bindings node 1 sent");
    assert!(y.subscribers > 0 && y.records > y.sessions && y.datagrams > 0);
    assert!(y.bytes_per_session() > 0.0 && y.send_ratio() > 0.0 && y.recv_ratio() > 0.0);
    assert_eq!(y.recv_sessions, y.sessions, "sessions node 2 holds");
    assert_eq!(y.recv_bind_in, y.bindings, "bind_in entries node 2 holds");
    assert_eq!(y.recv_bind_out, y.bindings, "bind_out entries node 2 holds");
    assert_eq!(
        y.recv_subscribers, y.subscribers,
        "subscribers node 2 holds"
    );
    assert_eq!(y.conflicts, 0);

    let sc = s.scale.as_ref().expect("scale results");
    let total = u64::from(p.scale_subs) * u64::from(p.scale_ports);
    assert_eq!(sc.large_sessions, total);
    sane("scale small", &sc.small_ns, p.runs);
    sane("scale large", &sc.large_ns, p.runs);
    sane("scale new session, small", &sc.small_new_ns, p.runs);
    sane("scale new session, large", &sc.large_new_ns, p.runs);
    assert_eq!(sc.large_new_sessions, p.scale_new_sessions);
    sane("scale large table, small flows", &sc.large_hot_ns, p.runs);
    sane("scale floor+lookups", &sc.large_probe_ns, p.runs);
    sane("scale floor+line, small", &sc.small_line_ns, p.runs);
    sane("scale floor+line", &sc.large_line_ns, p.runs);
    sane(
        "scale floor+lookups, table size alone",
        &sc.large_hot_probe_ns,
        p.runs,
    );
    sane(
        "scale floor+line, table size alone",
        &sc.large_hot_line_ns,
        p.runs,
    );
    sane("scale during sweep", &sc.during_sweep_ns, p.runs);
    assert!(sc.sweeps_during >= 1);
    assert_eq!(sc.expired, total, "the expire-everything sweeps");
    assert_eq!(
        sc.expired_bindings, total,
        "bindings released by those sweeps"
    );
    assert!(
        sc.expire_session_pass_secs > 0.0 && sc.expire_session_pass_secs <= sc.expire_delete_secs,
        "the session pass ({} s) is part of the delete sweep ({} s)",
        sc.expire_session_pass_secs,
        sc.expire_delete_secs
    );
    let b = sc.bytes_per_session();
    assert!(b.is_finite() && b > 0.0, "bytes per session {b}");

    // The end-to-end generator runs on every kernel: live frames where
    // the kernel allows them, a socket-fed veth where it does not.
    let e = s.e2e.as_ref().expect("end-to-end results");
    assert!(!e.generator.is_empty(), "the e2e generator is named");
    for (what, m) in [
        ("e2e cgnat", &e.cgnat),
        ("e2e cgnat, fitted tables", &e.cgnat_fit),
        ("e2e floor", &e.floor),
        ("e2e floor+lookups", &e.probe),
        ("e2e floor+line", &e.line),
        ("e2e nftables", &e.nft),
    ] {
        sane(what, &m.mpps, p.e2e_runs);
        sane(what, &m.router_ns, p.e2e_runs);
    }

    let r = s.rfc9693.as_ref().expect("RFC 9693 results");
    assert!(
        r.generator_fps.is_finite() && r.generator_fps > 0.0 && r.top_fps <= p.rfc_top_fps,
        "rfc9693: generator {} fps, searches up to {} fps",
        r.generator_fps,
        r.top_fps
    );
    for (what, m) in [("cgnat", &r.cgnat), ("nftables", &r.nft)] {
        for (figure, v) in [
            ("establishment rate", m.establish_fps),
            ("throughput", m.throughput_fps),
            ("tear-down rate", m.teardown_per_sec),
            ("establishment rate, closed loop", m.establish_loop.fps),
            ("throughput, closed loop", m.throughput_loop.fps),
        ] {
            assert!(v.is_finite() && v > 0.0, "rfc9693 {what} {figure}: {v}");
        }
        assert!(
            m.capacity > 0 && !m.beyond.is_empty(),
            "rfc9693 {what} capacity"
        );
    }
    assert_eq!(
        r.cgnat.capacity,
        u64::from(r.capacity_table),
        "cgnat lets exactly its table's worth of new connections through ({})",
        r.cgnat.beyond
    );

    let t = s.tcp.as_ref().expect("tcp results");
    sane("connections/s cgnat", &t.conn_cgnat, p.tcp_runs);
    sane("connections/s nftables", &t.conn_nft, p.tcp_runs);
    for (what, cpu) in [("cgnat", &t.conn_cgnat_cpu), ("nftables", &t.conn_nft_cpu)] {
        assert_eq!(cpu.len(), p.tcp_runs, "{what}: CPU of each connection run");
        for c in cpu {
            let router = c.router + c.router_back;
            assert!(
                router.is_finite() && router > 0.0 && c.machine > 0.0,
                "{what}: router NAPI threads busy {router}, machine {} during connections",
                c.machine
            );
        }
    }
    // iperf3 comes with `make deps`; without it the throughput section is
    // skipped, which under CI is a failure like any test that cannot run.
    match &t.iperf_skipped {
        None => {
            sane("iperf3 cgnat", &t.iperf_cgnat_gbps, p.tcp_runs);
            sane("iperf3 nftables", &t.iperf_nft_gbps, p.tcp_runs);
        }
        Some(why) => cgnat_kit::testbed::cannot_run(&format!("bench_smoke: iperf3 section: {why}")),
    }

    let json = s.to_json();
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'));
    assert!(json.contains("\"paths\"") && json.contains("\"kernel\""));
    // every figure with a goal whose section ran is reported against its
    // goal, with a met flag
    let goals = s.goals();
    let names: Vec<&str> = goals.iter().map(|g| g.name).collect();
    for want in [
        "new_flows_per_sec",
        "hairpin_ratio",
        "path_ratio_max",
        "scale_uniform_ratio",
        "scale_table_size_ratio",
        "bytes_per_session",
    ] {
        assert!(names.contains(&want), "goal {want} missing from {names:?}");
    }
    assert!(
        goals
            .iter()
            .all(|g| g.measured.is_finite() && g.measured > 0.0),
        "{goals:?}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("summary.json parses");
    let listed = parsed["goals"].as_array().expect("goals array");
    assert_eq!(listed.len(), goals.len());
    assert!(listed.iter().all(|g| g["met"].is_boolean()), "{listed:?}");
}
