//! End-to-end tests of operations with the real `cgnat` binary
//! in the router namespace of a [`Testbed`]: restart without losing
//! sessions, SIGHUP reload (and rejection of a broken config), refusal of
//! an incompatible restart, the NAT log (file, rotation, port blocks,
//! syslog), the Prometheus endpoint and the `--json` commands, each checked
//! against traffic whose far end recorded what it saw.
//!
//! Every test needs root (see `common::require_root`: under `CI=true` a
//! test that cannot run fails).

mod common;
mod ops;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use cgnat::log::rfc3339;
use cgnat_kit::testbed::{
    in_pool, is_attached_line, tcp_whoami, udp_exchange, udp_send_until_received, Host, TcpServer,
    UdpReflector, EXTERNAL_IF, INTERNAL_IF, ROUTER_EXT, ROUTER_INT,
};
use ops::{
    event, is_mapping, log_records, metric, names_destination, parse_metrics, q, record_external,
    scrape, wait_record, Bed, EchoServer, Json, Pump, SessionRow,
};

/// Limit of one UDP exchange (the helpers resend every 200 ms).
const T: Duration = Duration::from_secs(5);
const KIB: u64 = 1024;

fn exchange(sock: &UdpSocket, dst: SocketAddrV4, payload: &str) -> SocketAddrV4 {
    let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let r = udp_exchange(sock, dst, payload.as_bytes(), T)
        .unwrap_or_else(|e| panic!("UDP {local} -> {dst} ({payload:?}): {e}"));
    r.observed
}

fn udp(bed: &Bed, host: Host, port: u16) -> UdpSocket {
    bed.tb
        .udp_socket(host, host.sock(port))
        .unwrap_or_else(|e| panic!("UDP socket {host}:{port}: {e}"))
}

fn find_session<'a>(
    list: &'a [SessionRow],
    proto: &str,
    internal: SocketAddrV4,
    remote: SocketAddrV4,
) -> &'a SessionRow {
    let hits: Vec<&SessionRow> = list
        .iter()
        .filter(|s| s.proto == proto && s.internal == internal && s.remote == remote)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "sessions {proto} {internal} -> {remote}: {hits:?} in {list:#?}"
    );
    hits[0]
}

fn is_reloaded(l: &str) -> bool {
    l.contains("SIGHUP") && l.contains("reloaded")
}

fn is_rejected(l: &str) -> bool {
    l.contains("SIGHUP") && l.contains("reload rejected")
}

/// Addresses of the external hosts: a NAT log must never name them
/// (RFC 6888 REQ-12).
fn names_a_destination(s: &str) -> bool {
    s.contains("198.51.100.")
}

#[test]
fn restart_and_reload_keep_sessions_and_external_endpoints() {
    let Some(mut bed) = Bed::new() else { return };
    let natlog = bed.tb.dir().join("nat.jsonl");
    let base = bed.toml(false);
    let keep = |udp: &str| {
        base.clone()
            .set("timeouts", "udp", &q(udp))
            .set("log", "output", &q("file"))
            .set("log", "file", &q(natlog.display()))
    };
    let cfg = bed.write("keep.toml", &keep("300s"));
    bed.start(&cfg);
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let srv = EchoServer::start(&bed.tb, Host::E1, Host::E1.sock(8000));
    let sniff = bed.tb.sniff(Host::E1).expect("sniffer on e1");
    let s1 = udp(&bed, Host::S1, 5000);

    // A UDP flow and a TCP connection through the running daemon.
    let udp_ext = exchange(&s1, refl.addr(), "before the restart");
    assert!(in_pool(*udp_ext.ip()), "e1 saw UDP from {udp_ext}");
    let stream = bed
        .tb
        .tcp_connect(Host::S1, None, srv.addr(), Duration::from_secs(10))
        .expect("TCP s1 -> e1");
    let tcp_local = match stream.local_addr().expect("local_addr") {
        SocketAddr::V4(a) => a,
        a => panic!("local address {a}"),
    };
    let pump = Pump::start(stream, 0x6_2024);
    pump.progress(64 * KIB, Duration::from_secs(10))
        .expect("TCP echo through the running daemon");
    let conns = srv.conns();
    assert_eq!(conns.len(), 1, "e1's connections: {conns:?}");
    let tcp_ext = conns[0].peer;
    assert!(in_pool(*tcp_ext.ip()), "e1 saw TCP from {tcp_ext}");

    // The daemon stops; the data path stays and keeps forwarding.
    let (status, _) = bed.stop();
    assert!(status.success(), "cgnat exited with {status} on SIGTERM");
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = bed.tb.xdp_mode(ifname).expect("ip link show");
        assert_eq!(
            mode.as_deref(),
            Some("xdp"),
            "{ifname}: XDP gone after the daemon exited (detach_on_exit = false)"
        );
    }
    assert_eq!(
        exchange(&s1, refl.addr(), "while the daemon is down"),
        udp_ext,
        "UDP while the daemon is down: e1 saw another source"
    );
    pump.progress(64 * KIB, Duration::from_secs(10))
        .expect("TCP while the daemon is down");
    // A new flow while nobody reads the data path's events.
    let s1b = udp(&bed, Host::S1, 5001);
    let down_ext = exchange(&s1b, refl.addr(), "new flow while the daemon is down");

    // Started again with the same config: it adopts the state.
    let attached = bed.start(&cfg).attached_line().to_owned();
    assert!(
        attached.contains("adopted"),
        "the restarted daemon does not say it adopted the state: {attached:?}\n{}",
        bed.log()
    );
    assert_eq!(
        exchange(&s1, refl.addr(), "after the restart"),
        udp_ext,
        "the UDP flow changed its external endpoint across the restart"
    );
    pump.progress(64 * KIB, Duration::from_secs(10))
        .expect("TCP after the restart");
    let conns = srv.conns();
    assert_eq!(
        conns.len(),
        1,
        "e1's connections after the restart: {conns:?}"
    );
    assert_eq!(conns[0].peer, tcp_ext);
    // The mapping still admits anyone (endpoint-independent filtering).
    let e2 = udp(&bed, Host::E2, 9000);
    let d = udp_send_until_received(&e2, udp_ext, b"e2 to the adopted mapping", &s1, T)
        .unwrap_or_else(|e| panic!("e2 -> {udp_ext} after the restart: {e}"));
    assert_eq!(
        d.from,
        Host::E2.sock(9000),
        "source s1 saw for e2's datagram"
    );
    // The NAT log has no gap: the flow created while the daemon was down is
    // logged once it is back, and the adopted mapping is not logged twice.
    let sub_b = Host::S1.sock(5001);
    let rec = wait_record(
        &natlog,
        |r| is_mapping(r, "mapping-create", "udp", sub_b),
        T,
    )
    .unwrap_or_else(|e| panic!("mapping made while the daemon was down: {e}"));
    assert_eq!(record_external(&rec), Some(down_ext), "{rec:?}");
    let creates: Vec<Json> = log_records(&natlog)
        .into_iter()
        .filter(|r| is_mapping(r, "mapping-create", "udp", Host::S1.sock(5000)))
        .collect();
    assert_eq!(
        creates.len(),
        1,
        "mapping-create records of s1:5000: {creates:?}"
    );
    assert_eq!(record_external(&creates[0]), Some(udp_ext));

    let sess = bed.sessions(&cfg);
    let u = find_session(&sess, "udp", Host::S1.sock(5000), refl.addr());
    assert_eq!(u.external, udp_ext, "{u:?}");
    assert!(
        u.expires_in_ms > 120_000 && u.expires_in_ms <= 300_000,
        "UDP session under timeouts.udp = 300s: {u:?}"
    );
    let t = find_session(&sess, "tcp", tcp_local, srv.addr());
    assert_eq!(t.external, tcp_ext, "{t:?}");
    assert_eq!(t.state, "established", "{t:?}");

    // SIGHUP with a shorter UDP timeout. (`cgnat sessions` computes
    // expires_in_ms from the timeouts of its own --config, here the same
    // file; reload_rejects_a_broken_config_and_keeps_running checks that
    // the daemon itself applies a reloaded timeout.)
    std::fs::write(&cfg, keep("120s").0).expect("rewriting the config");
    bed.signal(Signal::SIGHUP);
    bed.wait_log(is_reloaded, 1, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("no reload after SIGHUP: {e}"));
    assert!(
        !bed.log().lines().any(is_rejected),
        "the reload was rejected:\n{}",
        bed.log()
    );
    assert_eq!(
        exchange(&s1, refl.addr(), "after the reload"),
        udp_ext,
        "the UDP flow changed its external endpoint across the reload"
    );
    let sess = bed.sessions(&cfg);
    let u = find_session(&sess, "udp", Host::S1.sock(5000), refl.addr());
    assert!(
        u.expires_in_ms <= 120_000 && u.expires_in_ms > 60_000,
        "after reloading timeouts.udp = 120s: {u:?}"
    );
    assert_eq!(u.external, udp_ext);
    pump.progress(64 * KIB, Duration::from_secs(10))
        .expect("TCP after the reload");

    // Everything the client sent across restart and reload arrived, once.
    let res = pump.finish();
    assert!(res.error.is_none(), "TCP stream: {:?}", res.error);
    // A restart or reload that interrupted forwarding would show as a stall
    // of seconds (the daemon takes seconds to start); retransmissions of a
    // lost segment or scheduling noise stay well below.
    assert!(
        res.max_stall < Duration::from_secs(2),
        "the TCP echo stalled for {:?}",
        res.max_stall
    );
    res.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown(write)");
    let conn = srv
        .wait_eof(0, Duration::from_secs(10))
        .expect("e1's connection");
    eprintln!(
        "TCP: {} bytes, longest echo wait {:?}; e1: {conn:?}",
        res.sent_bytes, res.max_stall
    );
    assert!(
        conn.eof && conn.error.is_none(),
        "e1's connection: {conn:?}"
    );
    assert_eq!(conn.peer, tcp_ext);
    assert_eq!(conn.bytes, res.sent_bytes, "bytes e1 received");
    assert_eq!(conn.hash, res.sent_hash, "hash of what e1 received");
    assert_eq!(srv.conns().len(), 1, "{:?}", srv.conns());

    // e1 saw every packet of both flows from the same external endpoints.
    let seen = sniff.seen();
    let tcp_src: BTreeSet<SocketAddrV4> = seen
        .iter()
        .filter(|p| !p.outgoing && p.proto == 6 && p.dport == 8000)
        .map(|p| SocketAddrV4::new(p.src, p.sport))
        .collect();
    let udp_src: BTreeSet<SocketAddrV4> = seen
        .iter()
        .filter(|p| !p.outgoing && p.proto == 17 && p.dport == 7000)
        .map(|p| SocketAddrV4::new(p.src, p.sport))
        .collect();
    assert_eq!(tcp_src, BTreeSet::from([tcp_ext]), "TCP sources e1 saw");
    assert_eq!(
        udp_src,
        BTreeSet::from([udp_ext, down_ext]),
        "UDP sources e1 saw (s1:5000, and s1:5001 from the downtime)"
    );

    // Stop for good: nothing left attached or pinned.
    let (status, _) = bed.stop();
    assert!(status.success(), "cgnat exited with {status}");
    let out = bed.cli_ok(&cfg, &["stop", "--detach"]);
    eprintln!("stop --detach: {out}");
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = bed.wait_xdp(ifname, None, Duration::from_secs(5));
        assert_eq!(
            mode, None,
            "{ifname}: XDP still attached after stop --detach"
        );
    }
    let pin = bed.tb.pin_path();
    let left: Vec<String> = std::fs::read_dir(&pin)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{} still holds {left:?}", pin.display());
    assert!(
        udp_exchange(
            &s1,
            refl.addr(),
            b"after stop --detach",
            Duration::from_secs(1)
        )
        .is_err(),
        "UDP still translated after stop --detach"
    );
    bed.detach_at_end = false;
}

#[test]
fn reload_rejects_a_broken_config_and_keeps_running() {
    let Some(mut bed) = Bed::new() else { return };
    let good = bed.toml(true).set("timeouts", "udp", &q("300s")).set(
        "daemon",
        "sweep_interval",
        &q("200ms"),
    );
    let cfg = bed.write("cgnat.toml", &good);
    // The commands read a config too: give them one that stays valid.
    let cli_cfg = bed.write("cli.toml", &good);
    bed.start(&cfg);
    bed.config = cli_cfg.clone();
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = udp(&bed, Host::S1, 5000);
    let ext = exchange(&s1, refl.addr(), "before");
    let has_session = |bed: &Bed| {
        bed.sessions(&cli_cfg)
            .iter()
            .any(|s| s.proto == "udp" && s.internal == Host::S1.sock(5000))
    };
    // The last two broken configs also shorten the UDP timeout to 2 s: if any of
    // them were taken, the idle flow would expire.
    let short = good.clone().set("timeouts", "udp", &q("2s"));

    // An invalid value.
    std::fs::write(&cfg, good.clone().set("timeouts", "udp", &q("5 parsecs")).0).expect("config");
    bed.signal(Signal::SIGHUP);
    let line = bed
        .wait_log(is_rejected, 1, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("no rejection of udp = \"5 parsecs\": {e}"));
    assert!(
        line.contains("timeouts.udp"),
        "the rejection does not name the field: {line:?}"
    );
    assert!(
        bed.alive(),
        "the daemon died on a broken config:\n{}",
        bed.log()
    );

    // A valid change next to an invalid value.
    std::fs::write(
        &cfg,
        short.clone().set("timeouts", "icmp", &q("5 parsecs")).0,
    )
    .expect("config");
    bed.signal(Signal::SIGHUP);
    let line = bed
        .wait_log(is_rejected, 2, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("no rejection of icmp = \"5 parsecs\": {e}"));
    assert!(
        line.contains("timeouts.icmp"),
        "the rejection does not name the field: {line:?}"
    );
    assert!(
        bed.alive(),
        "the daemon died on a broken config:\n{}",
        bed.log()
    );
    assert_eq!(exchange(&s1, refl.addr(), "after a rejected reload"), ext);

    // Not TOML at all.
    std::fs::write(&cfg, short.0.replace("[timeouts]", "[timeouts")).expect("config");
    bed.signal(Signal::SIGHUP);
    let line = bed
        .wait_log(is_rejected, 3, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("no rejection of a TOML syntax error: {e}"));
    assert!(
        line.contains("cgnat.toml"),
        "the rejection does not name the file: {line:?}"
    );
    assert!(
        bed.alive(),
        "the daemon died on a broken config:\n{}",
        bed.log()
    );
    assert!(!bed.log().lines().any(is_reloaded), "{}", bed.log());
    let last = Instant::now();
    assert_eq!(exchange(&s1, refl.addr(), "after a second rejection"), ext);
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = bed.tb.xdp_mode(ifname).expect("ip link");
        assert_eq!(mode.as_deref(), Some("xdp"), "{ifname}");
    }
    // The running config (udp = 300s) still rules: 3.5 s idle is nothing.
    thread::sleep(Duration::from_millis(3500).saturating_sub(last.elapsed()));
    assert!(
        has_session(&bed),
        "the UDP session expired: a rejected config was applied\n{}",
        bed.log()
    );

    // Control: a valid config is taken, and then the idle flow does expire.
    std::fs::write(&cfg, &short.0).expect("config");
    bed.signal(Signal::SIGHUP);
    bed.wait_log(is_reloaded, 1, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("a valid config was not reloaded: {e}"));
    assert_eq!(exchange(&s1, refl.addr(), "after the reload"), ext);
    let deadline = Instant::now() + Duration::from_secs(10);
    while has_session(&bed) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !has_session(&bed),
        "udp = \"2s\" reloaded, yet the idle session stays"
    );
    let (status, _) = bed.stop();
    assert!(status.success(), "cgnat exited with {status}");
}

#[test]
fn incompatible_restart_is_refused_and_old_programs_keep_forwarding() {
    let Some(mut bed) = Bed::new() else { return };
    let a = bed.toml(false).set("nat", "max_sessions", "65536");
    let cfg_a = bed.write("a.toml", &a);
    bed.start(&cfg_a);
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = udp(&bed, Host::S1, 5000);
    let ext = exchange(&s1, refl.addr(), "first daemon");
    let (status, _) = bed.stop();
    assert!(status.success(), "cgnat exited with {status}");

    let cfg_b = bed.write("b.toml", &a.clone().set("nat", "max_sessions", "32768"));
    let b = common::bin().display().to_string();
    let c = cfg_b.display().to_string();
    let out = bed
        .tb
        .exec_timeout(Host::Router, &[&b, "--config", &c], Duration::from_secs(20))
        .unwrap_or_else(|e| {
            panic!("cgnat with another nat.max_sessions did not exit (it must refuse): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("refused start ({}):\n{text}", out.status);
    assert!(
        !out.status.success(),
        "cgnat started over incompatible pinned state:\n{text}"
    );
    assert!(
        text.contains("nat.max_sessions"),
        "the refusal does not name nat.max_sessions:\n{text}"
    );
    assert!(
        text.contains("cgnat stop --detach"),
        "the refusal does not mention `cgnat stop --detach`:\n{text}"
    );
    assert!(
        !text.lines().any(is_attached_line),
        "it says it attached:\n{text}"
    );
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = bed.tb.xdp_mode(ifname).expect("ip link");
        assert_eq!(
            mode.as_deref(),
            Some("xdp"),
            "{ifname}: the refused start removed the old programs"
        );
    }
    assert_eq!(
        exchange(&s1, refl.addr(), "after the refused start"),
        ext,
        "the old programs no longer forward the old session"
    );

    // The state is still adoptable by a compatible daemon.
    let attached = bed.start(&cfg_a).attached_line().to_owned();
    assert!(attached.contains("adopted"), "{attached:?}\n{}", bed.log());
    assert_eq!(exchange(&s1, refl.addr(), "compatible restart"), ext);
}

#[test]
fn nat_log_file_records_mappings_and_reopens_on_sigusr1() {
    let Some(mut bed) = Bed::new() else { return };
    let path = bed.tb.dir().join("nat.jsonl");
    let cfg = bed.write(
        "log.toml",
        &bed.toml(true)
            .set("pool", "mode", &q("dynamic"))
            .set("timeouts", "udp", &q("2s"))
            .set("daemon", "sweep_interval", &q("200ms"))
            .set("log", "output", &q("file"))
            .set("log", "file", &q(path.display())),
    );
    bed.start(&cfg);
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = udp(&bed, Host::S1, 5000);
    let sub = Host::S1.sock(5000);

    let before = SystemTime::now();
    let ext = exchange(&s1, refl.addr(), "log me");
    let last_sent = Instant::now();
    let after = SystemTime::now();
    let create = wait_record(&path, |r| is_mapping(r, "mapping-create", "udp", sub), T)
        .unwrap_or_else(|e| panic!("mapping-create for {sub}: {e}"));
    assert_eq!(
        record_external(&create),
        Some(ext),
        "{create:?}; e1 saw {ext}"
    );
    let ts = create.get("ts").and_then(Json::str).unwrap_or("");
    let lo = rfc3339(before - Duration::from_secs(2));
    let hi = rfc3339(after + Duration::from_secs(2));
    assert!(
        ts.len() == lo.len() && ts.ends_with('Z') && *ts >= *lo.as_str() && *ts <= *hi.as_str(),
        "ts {ts:?} is not an RFC 3339 time between {lo} and {hi}"
    );

    // Released once the session has idled out (2 s + sweeps + grace), not before.
    thread::sleep(Duration::from_millis(1500).saturating_sub(last_sent.elapsed()));
    let early: Vec<Json> = log_records(&path)
        .into_iter()
        .filter(|r| is_mapping(r, "mapping-release", "udp", sub))
        .collect();
    assert!(early.is_empty(), "released before its timeout: {early:?}");
    let release = wait_record(
        &path,
        |r| is_mapping(r, "mapping-release", "udp", sub),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("mapping-release for {sub}: {e}"));
    eprintln!("released {:?} after the last packet", last_sent.elapsed());
    assert_eq!(record_external(&release), Some(ext), "{release:?}");

    // Rotation: the file is renamed, SIGUSR1 makes the daemon reopen its path.
    let rotated = bed.tb.dir().join("nat.jsonl.1");
    std::fs::rename(&path, &rotated).expect("rename");
    bed.signal(Signal::SIGUSR1);
    let deadline = Instant::now() + T;
    while !path.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(path.exists(), "SIGUSR1 did not reopen {}", path.display());
    assert!(bed.alive(), "the daemon died on SIGUSR1:\n{}", bed.log());
    let s1b = udp(&bed, Host::S1, 5001);
    let sub_b = Host::S1.sock(5001);
    let ext_b = exchange(&s1b, refl.addr(), "after rotation");
    let create_b = wait_record(&path, |r| is_mapping(r, "mapping-create", "udp", sub_b), T)
        .unwrap_or_else(|e| panic!("mapping-create for {sub_b} in the new file: {e}"));
    assert_eq!(record_external(&create_b), Some(ext_b));
    let old = log_records(&rotated);
    assert!(
        !old.iter()
            .any(|r| is_mapping(r, "mapping-create", "udp", sub_b)),
        "a record after SIGUSR1 went to the rotated file: {old:?}"
    );
    assert!(
        old.iter()
            .any(|r| is_mapping(r, "mapping-create", "udp", sub))
            && old
                .iter()
                .any(|r| is_mapping(r, "mapping-release", "udp", sub)),
        "the rotated file lost its records: {old:?}"
    );

    // Never a destination (RFC 6888 REQ-12).
    for p in [&path, &rotated] {
        let text = std::fs::read_to_string(p).expect("log file");
        assert!(
            !names_a_destination(&text) && !log_records(p).iter().any(names_destination),
            "{} names a destination:\n{text}",
            p.display()
        );
    }
}

#[test]
fn nat_log_port_block_mode_logs_one_record_per_block() {
    let Some(mut bed) = Bed::new() else { return };
    let path = bed.tb.dir().join("nat.jsonl");
    let cfg = bed.write(
        "pba.toml",
        &bed.toml(true)
            .set("pool", "mode", &q("port-block"))
            .set("pool", "block_size", "256")
            .set("pool", "max_blocks", "4")
            .set("log", "output", &q("file"))
            .set("log", "file", &q(path.display())),
    );
    bed.start(&cfg);
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let mut seen = Vec::new();
    for i in 0..20 {
        let s = udp(&bed, Host::S1, 0);
        seen.push(exchange(&s, refl.addr(), &format!("flow {i}")));
    }
    let ext_ip = *seen[0].ip();
    assert!(
        seen.iter().all(|e| *e.ip() == ext_ip),
        "one subscriber, several addresses: {seen:?}"
    );
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        20,
        "flows share external endpoints: {seen:?}"
    );
    wait_record(&path, |r| event(r) == "block-alloc", T)
        .unwrap_or_else(|e| panic!("no block-alloc record: {e}"));
    thread::sleep(Duration::from_millis(500));
    let recs = log_records(&path);
    let blocks: Vec<&Json> = recs.iter().filter(|r| event(r) == "block-alloc").collect();
    assert_eq!(blocks.len(), 1, "20 flows: {recs:#?}");
    let b = blocks[0];
    assert_eq!(
        b.get("subscriber").and_then(Json::str),
        Some("100.64.0.11"),
        "{b:?}"
    );
    assert_eq!(
        b.get("external").and_then(Json::str),
        Some(ext_ip.to_string().as_str()),
        "{b:?}"
    );
    let first = b.get("port_first").and_then(Json::u64).expect("port_first");
    let last = b.get("port_last").and_then(Json::u64).expect("port_last");
    assert_eq!(last + 1 - first, 256, "block size: {b:?}");
    for e in &seen {
        assert!(
            (first..=last).contains(&u64::from(e.port())),
            "e1 saw {e}, outside the logged block {first}-{last}"
        );
    }
    let per_flow: Vec<&Json> = recs
        .iter()
        .filter(|r| event(r) == "mapping-create")
        .collect();
    assert!(
        per_flow.is_empty(),
        "per-flow records in port-block mode: {per_flow:?}"
    );
    let text = std::fs::read_to_string(&path).expect("log");
    assert!(
        !names_a_destination(&text) && !recs.iter().any(names_destination),
        "the log names a destination:\n{text}"
    );
}

#[test]
fn nat_log_syslog_is_rfc5424() {
    let Some(mut bed) = Bed::new() else { return };
    let sock_path = bed.tb.dir().join("log.sock");
    let listener = UnixDatagram::bind(&sock_path).expect("binding the syslog socket");
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("SO_RCVTIMEO");
    let cfg = bed.write(
        "syslog.toml",
        &bed.toml(true).set("log", "output", &q("syslog")).set(
            "log",
            "syslog",
            &q(sock_path.display()),
        ),
    );
    bed.start(&cfg);
    let pid = bed.pid();
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = udp(&bed, Host::S1, 5000);
    let ext = exchange(&s1, refl.addr(), "syslog me");

    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    let mut buf = vec![0u8; 8192];
    let msg = loop {
        if let Ok(n) = listener.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if let Some(m) = got
            .iter()
            .find(|m| m.contains("MAPPING-CREATE") && m.contains("subscriber_port=\"5000\""))
        {
            break m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no MAPPING-CREATE message for s1:5000; received {got:#?}"
        );
    };
    eprintln!("syslog: {msg}");
    assert!(
        msg.starts_with("<134>1 "),
        "not local0.info RFC 5424: {msg:?}"
    );
    let parts: Vec<&str> = msg.splitn(7, ' ').collect();
    assert_eq!(parts.len(), 7, "{msg:?}");
    let ts = parts[1];
    assert!(
        ts.len() == "2026-01-01T00:00:00.000Z".len() && ts.ends_with('Z') && ts.contains('T'),
        "TIMESTAMP {ts:?}"
    );
    assert_eq!(parts[3], "cgnat", "APP-NAME in {msg:?}");
    assert_eq!(parts[4], pid.to_string(), "PROCID in {msg:?}");
    assert_eq!(parts[5], "MAPPING-CREATE", "MSGID in {msg:?}");
    assert_eq!(
        parts[6],
        format!(
            "[cgnat@32473 proto=\"udp\" subscriber=\"100.64.0.11\" subscriber_port=\"5000\" \
             external=\"{}\" external_port=\"{}\"]",
            ext.ip(),
            ext.port()
        ),
        "STRUCTURED-DATA; e1 saw {ext}"
    );
    thread::sleep(Duration::from_millis(300));
    while let Ok(n) = listener.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !got.iter()
            .any(|m| names_a_destination(m) || m.contains("=\"7000\"")),
        "a message names a destination: {got:#?}"
    );
}

/// The Prometheus endpoint and the `--json` commands against the same
/// known traffic: 3 UDP flows, 1 TCP connection, 1 ping.
#[test]
fn metrics_and_cli_agree_with_known_traffic() {
    let Some(mut bed) = Bed::new() else { return };
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9469);
    let cfg = bed.write(
        "obs.toml",
        &bed.toml(true).set("metrics", "listen", &q(listen)).set(
            "daemon",
            "sweep_interval",
            &q("200ms"),
        ),
    );
    bed.start(&cfg);
    bed.wait_log(|l| l.contains("metrics on"), 1, T)
        .unwrap_or_else(|e| panic!("no metrics endpoint: {e}"));
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let srv = TcpServer::start(&bed.tb, Host::E1, Host::E1.sock(8000)).expect("TCP server");
    let mut flows = Vec::new();
    for p in 5000..5003 {
        let s = udp(&bed, Host::S1, p);
        let e = exchange(&s, refl.addr(), &format!("flow {p}"));
        flows.push((s, Host::S1.sock(p), e));
    }
    let mut udp_sent = 3u64;
    for round in 1..3 {
        for (s, _, e) in &flows {
            assert_eq!(exchange(s, refl.addr(), &format!("round {round}")), *e);
            udp_sent += 1;
        }
    }
    let mut conn = bed
        .tb
        .tcp_connect(Host::S1, None, srv.addr(), Duration::from_secs(10))
        .expect("TCP s1 -> e1");
    let tcp_local = match conn.local_addr().expect("local_addr") {
        SocketAddr::V4(a) => a,
        a => panic!("{a}"),
    };
    let tcp_ext = tcp_whoami(&mut conn, T).expect("whoami");
    let ping = bed.tb.ping(Host::S1, Host::E1.addr(), 3).expect("ping");
    assert!(ping.received >= 2, "{ping:?}");
    let ext_ip = *flows[0].2.ip();
    assert!(
        flows.iter().all(|f| *f.2.ip() == ext_ip) && *tcp_ext.ip() == ext_ip,
        "{flows:?} {tcp_ext}"
    );
    // datagrams, SYN + ACK + request, echo requests answered
    let out_min = udp_sent + 3 + u64::from(ping.received);
    // reflections, SYN-ACK + reply, echo replies
    let in_min = udp_sent + 2 + u64::from(ping.received);

    // cgnat sessions --json
    let list = bed.sessions(&cfg);
    assert_eq!(list.len(), 5, "3 UDP, 1 TCP, 1 ICMP: {list:#?}");
    for (_, internal, e) in &flows {
        let s = find_session(&list, "udp", *internal, refl.addr());
        assert_eq!(s.external, *e, "{s:?}");
        assert_eq!(s.state, "active", "{s:?}");
    }
    let t = find_session(&list, "tcp", tcp_local, srv.addr());
    assert_eq!(t.external, tcp_ext, "{t:?}");
    assert_eq!(t.state, "established", "{t:?}");
    let icmp: Vec<&SessionRow> = list.iter().filter(|s| s.proto == "icmp").collect();
    assert!(
        icmp.len() == 1
            && *icmp[0].internal.ip() == Host::S1.addr()
            && *icmp[0].remote.ip() == Host::E1.addr()
            && *icmp[0].external.ip() == ext_ip,
        "ICMP sessions: {icmp:?}"
    );

    // cgnat subscribers --json (recounted at each sweep)
    let deadline = Instant::now() + T;
    let (rows, text) = loop {
        let text = bed.cli_ok(&cfg, &["subscribers", "--json"]);
        let j = Json::parse(&text).unwrap_or_else(|e| panic!("subscribers --json: {e}: {text}"));
        let rows = j
            .arr()
            .unwrap_or_else(|| panic!("not an array: {text}"))
            .to_vec();
        let n = |r: &Json, k: &str| r.get(k).and_then(Json::u64);
        let done = rows.len() == 1
            && n(&rows[0], "udp") == Some(3)
            && n(&rows[0], "tcp") == Some(1)
            && n(&rows[0], "icmp") == Some(1);
        if done || Instant::now() >= deadline {
            break (rows, text);
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rows.len(), 1, "{text}");
    let r = &rows[0];
    let s = |k: &str| r.get(k).and_then(Json::str).map(str::to_owned);
    let n = |k: &str| r.get(k).and_then(Json::u64);
    assert_eq!(s("subscriber").as_deref(), Some("100.64.0.11"), "{text}");
    assert_eq!(s("external"), Some(ext_ip.to_string()), "{text}");
    assert_eq!(
        (n("udp"), n("tcp"), n("icmp"), n("sessions")),
        (Some(3), Some(1), Some(1), Some(5)),
        "udp, tcp, icmp, sessions: {text}"
    );

    // cgnat stats --json
    let text = bed.cli_ok(&cfg, &["stats", "--json"]);
    let st = Json::parse(&text).unwrap_or_else(|e| panic!("stats --json: {e}: {text}"));
    assert!(!st.keys().is_empty(), "{text}");
    for k in st.keys() {
        let c = st.get(k).unwrap();
        assert!(
            c.get("packets").and_then(Json::u64).is_some()
                && c.get("bytes").and_then(Json::u64).is_some(),
            "{k}: {c:?}"
        );
    }
    let packets = |k: &str| {
        st.get(k)
            .and_then(|c| c.get("packets"))
            .and_then(Json::u64)
            .unwrap_or_else(|| panic!("no {k}.packets in {text}"))
    };
    assert!(packets("fwd_out") >= out_min, "fwd_out < {out_min}: {text}");
    assert!(packets("fwd_in") >= in_min, "fwd_in < {in_min}: {text}");

    // cgnat reverse / forward
    let owner = format!("100.64.0.11 -> {ext_ip}");
    for e in [flows[0].2, tcp_ext] {
        let out = bed.cli_ok(&cfg, &["reverse", &e.to_string()]);
        assert!(out.starts_with(&owner), "reverse {e}: {out:?}");
    }
    let out = bed.cli_ok(&cfg, &["forward", "100.64.0.11"]);
    assert!(out.starts_with(&owner), "forward 100.64.0.11: {out:?}");
    // and what nobody holds
    let unused = SocketAddrV4::new(ext_ip, 1);
    let out = bed.cli_with(&cfg, &["reverse", &unused.to_string()]);
    assert!(
        !out.status.success(),
        "reverse {unused} named someone: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = bed.cli_with(&cfg, &["forward", "100.64.0.12"]);
    assert!(
        !out.status.success(),
        "forward of an idle subscriber: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Prometheus
    let body = scrape(&bed.tb, listen).unwrap_or_else(|e| panic!("scrape: {e}"));
    let m = parse_metrics(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let get = |name: &str, labels: &[(&str, &str)]| {
        metric(&m, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{body}"))
    };
    let fwd_out = get("cgnat_packets_total", &[("reason", "fwd_out")]);
    let fwd_in = get("cgnat_packets_total", &[("reason", "fwd_in")]);
    assert!(fwd_out >= out_min as f64, "fwd_out {fwd_out} < {out_min}");
    assert!(fwd_in >= in_min as f64, "fwd_in {fwd_in} < {in_min}");
    let udp_active = get("cgnat_sessions", &[("proto", "udp"), ("state", "active")]);
    assert_eq!(udp_active, 3.0, "UDP sessions (3 flows)");
    let tcp_est = get(
        "cgnat_sessions",
        &[("proto", "tcp"), ("state", "established")],
    );
    assert_eq!(tcp_est, 1.0, "established TCP sessions");
    let ext_s = ext_ip.to_string();
    let used = get("cgnat_pool_ports_used", &[("address", &ext_s)]);
    assert_eq!(used, 5.0, "bindings on {ext_ip} (3 UDP, 1 TCP, 1 ICMP)");
    let subs = get("cgnat_subscribers", &[]);
    assert_eq!(subs, 1.0, "cgnat_subscribers (s1 only)");
    let sweeps1 = get("cgnat_sweeps_total", &[]);
    thread::sleep(Duration::from_millis(800));
    let body2 = scrape(&bed.tb, listen).unwrap_or_else(|e| panic!("second scrape: {e}"));
    let m2 = parse_metrics(&body2).unwrap_or_else(|e| panic!("{e}\n{body2}"));
    let sweeps2 = metric(&m2, "cgnat_sweeps_total", &[])
        .unwrap_or_else(|| panic!("no cgnat_sweeps_total in:\n{body2}"));
    assert!(
        sweeps2 > sweeps1,
        "cgnat_sweeps_total did not grow in 800 ms (sweep_interval 200ms): {sweeps1} -> {sweeps2}"
    );
    // the sweeps' CPU time is counted: positive, and below their wall time
    let cpu = metric(&m2, "cgnat_sweep_cpu_seconds_total", &[])
        .unwrap_or_else(|| panic!("no cgnat_sweep_cpu_seconds_total in:\n{body2}"));
    assert!(
        cpu > 0.0 && cpu < sweeps2 * 1.0,
        "cgnat_sweep_cpu_seconds_total {cpu} after {sweeps2} sweeps of a few sessions"
    );
    assert!(
        metric(&m2, "cgnat_last_sweep_cpu_microseconds", &[]).is_some(),
        "no cgnat_last_sweep_cpu_microseconds in:\n{body2}"
    );

    // Only the router itself can scrape.
    for (host, addr) in [(Host::E1, ROUTER_EXT), (Host::S1, ROUTER_INT)] {
        let target = SocketAddr::V4(SocketAddrV4::new(addr, listen.port()));
        let r = bed
            .tb
            .in_ns(host, move || {
                TcpStream::connect_timeout(&target, Duration::from_secs(2)).map(|_| ())
            })
            .expect("thread in namespace");
        assert!(
            r.is_err(),
            "{host} reached the metrics endpoint at {target}"
        );
    }
    drop(conn);
}
