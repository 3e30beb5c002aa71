//! End-to-end tests: the real cgnat binary in the router namespace of a
//! [`Testbed`], real traffic, assertions on what the far end saw.
//!
//! Every test but the config check needs root (see `common::require_root`).

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::thread;
use std::time::Duration;

use libbpf_rs::MapCore;

use cgnat_kit::testbed::{
    self, in_internal, in_pool, pool_addrs, tcp_whoami, udp_exchange, udp_recv,
    udp_send_until_received, Host, Reflection, TcpMode, TcpServer, Testbed, TestbedOptions,
    UdpReflector, E1_SECOND, EXTERNAL_IF, INTERNAL_IF,
};
use common::{bin, Bed};

/// Limit of one UDP exchange (the first packet may be dropped while the NAT
/// resolves a neighbour; the helpers resend every 200 ms).
const T: Duration = Duration::from_secs(5);
const MIB: u64 = 1 << 20;

fn exchange(tb: &Testbed, host: Host, port: u16, dst: SocketAddrV4, payload: &str) -> Reflection {
    let sock = tb
        .udp_socket(host, host.sock(port))
        .unwrap_or_else(|e| panic!("{host}: {e}"));
    udp_exchange(&sock, dst, payload.as_bytes(), T)
        .unwrap_or_else(|e| panic!("UDP {host}:{port} -> {dst}: {e}"))
}

#[test]
fn udp_from_both_subscribers_leaves_from_the_pool() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    for (host, port) in [(Host::S1, 40001), (Host::S2, 40002)] {
        // Odd length, so the checksum update covers a padded last word.
        let payload = format!("udp from {host} {}", "x".repeat(1001));
        let r = exchange(tb, host, port, refl.addr(), &payload);
        assert!(
            in_pool(*r.observed.ip()),
            "{host}: e1 saw source {} (not in the pool)",
            r.observed
        );
        assert_eq!(
            r.observed.port(),
            port,
            "{host}: a free source port was not kept"
        );
        assert_eq!(r.reply_from, refl.addr(), "{host}: the reply's source");
        assert_eq!(r.payload, payload.as_bytes(), "{host}: echoed payload");
        let got: Vec<_> = refl
            .received()
            .into_iter()
            .filter(|d| d.payload == payload.as_bytes())
            .collect();
        assert!(!got.is_empty(), "{host}: e1 recorded nothing");
        assert!(
            got.iter().all(|d| d.from == r.observed),
            "{host}: e1 recorded {got:?}, reflected {}",
            r.observed
        );
    }
    let leaked: Vec<_> = refl
        .received()
        .into_iter()
        .filter(|d| !in_pool(*d.from.ip()))
        .collect();
    assert!(
        leaked.is_empty(),
        "e1 received from outside the pool: {leaked:?}"
    );
}

#[test]
fn one_pool_address_per_subscriber() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let r1 = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector e1");
    let r2 = UdpReflector::start(tb, Host::E2, Host::E2.sock(7000)).expect("reflector e2");
    let srv = TcpServer::start(tb, Host::E3, Host::E3.sock(8000)).expect("tcp server e3");
    for host in Host::SUBSCRIBERS {
        let mut seen = BTreeSet::new();
        for (i, refl) in [&r1, &r2, &r1].into_iter().enumerate() {
            let r = exchange(tb, host, 0, refl.addr(), &format!("{host} flow {i}"));
            seen.insert(*r.observed.ip());
        }
        let up = tb
            .tcp_upload(host, None, srv.addr(), 1000, 9, T)
            .unwrap_or_else(|e| panic!("{host}: TCP: {e}"));
        seen.insert(*up.server_saw.ip());
        assert_eq!(
            seen.len(),
            1,
            "{host} used several external addresses: {seen:?}"
        );
        assert!(seen.iter().all(|a| in_pool(*a)), "{host}: {seen:?}");
    }
}

#[test]
fn tcp_8mib_upload_and_download() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let srv1 = TcpServer::start(tb, Host::E1, Host::E1.sock(8000)).expect("server e1");
    let srv2 = TcpServer::start(tb, Host::E2, Host::E2.sock(8000)).expect("server e2");
    let limit = Duration::from_secs(120);

    let up = tb
        .tcp_upload(Host::S1, None, srv1.addr(), 8 * MIB, 1, limit)
        .unwrap_or_else(|e| panic!("upload s1 -> e1: {e}"));
    eprintln!("upload: {up:?}");
    assert!(in_pool(*up.server_saw.ip()), "e1 saw {}", up.server_saw);
    assert_eq!(
        up.server_saw.port(),
        up.local.port(),
        "a free source port was not kept"
    );
    assert_eq!(up.server_bytes, up.sent_bytes, "bytes e1 received");
    assert_eq!(up.server_hash, up.sent_hash, "content e1 received");

    let down = tb
        .tcp_download(Host::S2, srv2.addr(), 8 * MIB, 2, limit)
        .unwrap_or_else(|e| panic!("download e2 -> s2: {e}"));
    eprintln!("download: {down:?}");
    assert!(in_pool(*down.server_saw.ip()), "e2 saw {}", down.server_saw);
    assert_eq!(down.got_bytes, down.expected_bytes, "bytes s2 received");
    assert_eq!(down.got_hash, down.expected_hash, "content s2 received");

    // The servers' own records agree.
    thread::sleep(Duration::from_millis(300));
    let rec = srv1.records();
    assert!(
        rec.iter().any(|r| r.mode == TcpMode::Upload
            && r.peer == up.server_saw
            && r.bytes == 8 * MIB
            && r.hash == up.sent_hash
            && r.error.is_none()),
        "e1 records: {rec:?}"
    );
    let rec = srv2.records();
    assert!(
        rec.iter().any(|r| r.mode == TcpMode::Download
            && r.peer == down.server_saw
            && r.bytes == 8 * MIB
            && r.error.is_none()),
        "e2 records: {rec:?}"
    );
}

#[test]
fn ping_from_both_subscribers() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let sniff_e1 = tb.sniff(Host::E1).expect("sniffer e1");
    let sniff_e2 = tb.sniff(Host::E2).expect("sniffer e2");
    let count = 4;
    for s in Host::SUBSCRIBERS {
        for e in [Host::E1, Host::E2] {
            let p = tb
                .ping(s, e.addr(), count)
                .unwrap_or_else(|err| panic!("ping {s} -> {e}: {err}"));
            // The first echo may be dropped while the NAT resolves e's MAC.
            assert!(
                p.received + 1 >= count,
                "ping {s} -> {e}: {}/{} replies",
                p.received,
                p.transmitted
            );
        }
    }
    for (e, sniff) in [(Host::E1, &sniff_e1), (Host::E2, &sniff_e2)] {
        let seen = sniff.seen();
        let requests: Vec<_> = seen
            .iter()
            .filter(|p| !p.outgoing && p.icmp == Some((8, 0)))
            .collect();
        assert!(
            requests.len() >= 2 * (count as usize - 1),
            "{e} saw {requests:?}"
        );
        assert!(
            requests.iter().all(|p| in_pool(p.src) && p.dst == e.addr()),
            "{e} saw echo requests not from the pool: {requests:?}"
        );
        let sources: BTreeSet<Ipv4Addr> = requests.iter().map(|p| p.src).collect();
        assert!(!sources.is_empty(), "{e}: no echo request at all");
        assert!(
            !seen.iter().any(|p| !p.outgoing && in_internal(p.src)),
            "{e} received packets from internal addresses"
        );
    }
}

#[test]
fn udp_endpoint_independent_mapping_and_filtering() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let r1 = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector e1");
    let r1b = UdpReflector::start(tb, Host::E1, SocketAddrV4::new(E1_SECOND, 7100))
        .expect("reflector e1b");
    let r2 = UdpReflector::start(tb, Host::E2, Host::E2.sock(7200)).expect("reflector e2");
    let sock = tb
        .udp_socket(Host::S1, Host::S1.sock(41000))
        .expect("s1 socket");

    let mut mapped = Vec::new();
    for refl in [&r1, &r1b, &r2] {
        let r = udp_exchange(
            &sock,
            refl.addr(),
            format!("eim {}", refl.addr()).as_bytes(),
            T,
        )
        .unwrap_or_else(|e| panic!("s1 -> {}: {e}", refl.addr()));
        mapped.push(r.observed);
    }
    assert!(in_pool(*mapped[0].ip()), "mapping {}", mapped[0]);
    assert!(
        mapped.iter().all(|m| *m == mapped[0]),
        "one socket got different external endpoints: e1 {} / e1' {} / e2 {}",
        mapped[0],
        mapped[1],
        mapped[2]
    );
    let ext = mapped[0];

    // EIF: e3 never heard of s1 but may use the mapping.
    let e3 = tb
        .udp_socket(Host::E3, Host::E3.sock(9999))
        .expect("e3 socket");
    let d = udp_send_until_received(&e3, ext, b"unsolicited but allowed", &sock, T)
        .unwrap_or_else(|e| panic!("e3 -> {ext}: {e}"));
    assert_eq!(
        d.from,
        Host::E3.sock(9999),
        "source s1 saw for e3's datagram"
    );
    // s1 answers e3 through the same mapping.
    sock.send_to(b"hello e3", Host::E3.sock(9999))
        .expect("send to e3");
    let back = udp_recv(&e3, T).expect("e3 gets s1's answer");
    assert_eq!(back.payload, b"hello e3");
    assert_eq!(
        back.from, ext,
        "s1's answer to e3 left from another endpoint"
    );
}

#[test]
fn tcp_endpoint_independent_mapping() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let srv1 = TcpServer::start(tb, Host::E1, Host::E1.sock(8000)).expect("server e1");
    let srv2 = TcpServer::start(tb, Host::E2, Host::E2.sock(8001)).expect("server e2");
    let local = Host::S1.sock(42000);
    let mut c1 = tb
        .tcp_connect(Host::S1, Some(local), srv1.addr(), Duration::from_secs(10))
        .expect("s1:42000 -> e1");
    let mut c2 = tb
        .tcp_connect(Host::S1, Some(local), srv2.addr(), Duration::from_secs(10))
        .expect("s1:42000 -> e2");
    let w1 = tcp_whoami(&mut c1, T).expect("whoami e1");
    let w2 = tcp_whoami(&mut c2, T).expect("whoami e2");
    assert!(in_pool(*w1.ip()), "e1 saw {w1}");
    assert_eq!(
        w1, w2,
        "two connections from s1:42000: e1 saw {w1}, e2 saw {w2}"
    );
    assert_eq!(w1.port(), 42000, "a free source port was not kept");
}

#[test]
fn same_source_port_on_two_subscribers() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = tb
        .udp_socket(Host::S1, Host::S1.sock(5000))
        .expect("s1:5000");
    let s2 = tb
        .udp_socket(Host::S2, Host::S2.sock(5000))
        .expect("s2:5000");
    let a = udp_exchange(&s1, refl.addr(), b"from s1", T).expect("s1:5000 -> e1");
    let b = udp_exchange(&s2, refl.addr(), b"from s2", T).expect("s2:5000 -> e1");
    assert!(
        in_pool(*a.observed.ip()) && in_pool(*b.observed.ip()),
        "{a:?} {b:?}"
    );
    assert_ne!(
        a.observed, b.observed,
        "two subscribers share one external endpoint"
    );
    // Interleaved again: each answer goes to its own subscriber.
    for round in 0..3 {
        let x = udp_exchange(&s1, refl.addr(), format!("s1 round {round}").as_bytes(), T)
            .expect("s1 again");
        let y = udp_exchange(&s2, refl.addr(), format!("s2 round {round}").as_bytes(), T)
            .expect("s2 again");
        assert_eq!(
            (x.observed, y.observed),
            (a.observed, b.observed),
            "round {round}"
        );
    }
    for d in refl.received() {
        let from_s1 = d.payload.starts_with(b"from s1") || d.payload.starts_with(b"s1 ");
        let expect = if from_s1 { a.observed } else { b.observed };
        assert_eq!(
            d.from,
            expect,
            "payload {:?}",
            String::from_utf8_lossy(&d.payload)
        );
    }
}

#[test]
fn hairpin_between_subscribers() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = tb.udp_socket(Host::S1, Host::S1.sock(43001)).expect("s1");
    let s2 = tb.udp_socket(Host::S2, Host::S2.sock(43002)).expect("s2");
    let x1 = udp_exchange(&s1, refl.addr(), b"s1 learns", T)
        .expect("s1 -> e1")
        .observed;
    let x2 = udp_exchange(&s2, refl.addr(), b"s2 learns", T)
        .expect("s2 -> e1")
        .observed;
    let d = udp_send_until_received(&s1, x2, b"hairpin s1 -> s2", &s2, T)
        .unwrap_or_else(|e| panic!("s1 -> {x2} (s2's external endpoint): {e}"));
    assert_eq!(
        d.from, x1,
        "s2 must see s1's external endpoint (RFC 4787 REQ-9)"
    );
    let d = udp_send_until_received(&s2, x1, b"hairpin s2 -> s1", &s1, T)
        .unwrap_or_else(|e| panic!("s2 -> {x1} (s1's external endpoint): {e}"));
    assert_eq!(d.from, x2, "s1 must see s2's external endpoint");
}

#[test]
fn kernel_forwards_nothing() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let srv = TcpServer::start(tb, Host::E2, Host::E2.sock(8000)).expect("server");
    for host in Host::SUBSCRIBERS {
        let r = exchange(tb, host, 0, refl.addr(), &format!("{host} via XDP"));
        assert!(in_pool(*r.observed.ip()), "{r:?}");
    }
    let up = tb
        .tcp_upload(Host::S1, None, srv.addr(), MIB, 3, Duration::from_secs(60))
        .expect("upload");
    assert_eq!(up.server_hash, up.sent_hash);
    let down = tb
        .tcp_download(Host::S2, srv.addr(), MIB, 4, Duration::from_secs(60))
        .expect("download");
    assert_eq!(down.got_hash, down.expected_hash);
    let p = tb.ping(Host::S1, Host::E2.addr(), 3).expect("ping");
    assert!(p.received >= 2, "{p:?}");

    let after = tb.forw_datagrams().expect("ForwDatagrams");
    assert_eq!(
        after,
        env.forw_before,
        "the router's kernel forwarded {} datagrams",
        after.saturating_sub(env.forw_before)
    );
    let report = tb.kernel_bypass_report().expect("bypass report");
    assert!(
        report.problems().is_empty(),
        "the router's kernel is not out of the path: {:#?}",
        report.problems()
    );
}

#[test]
fn stats_count_the_traffic() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let fwd = |m: &std::collections::BTreeMap<String, (u64, u64)>| -> (u64, u64) {
        let get = |k: &str| m.get(k).map_or(0, |v| v.0);
        (get("fwd_out"), get("fwd_in"))
    };
    let before = env.cgnat().stats().expect("cgnat stats");
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let mut attempts = 0u64;
    for i in 0..5 {
        attempts +=
            u64::from(exchange(tb, Host::S1, 0, refl.addr(), &format!("count me {i}")).attempts);
    }
    // Every datagram sent (a retry included) reached e1 and was answered:
    // let the answers to retries come in before counting.
    assert!(
        common::wait_until(T, || refl.received().len() as u64 == attempts),
        "e1 got {} of {attempts} datagrams",
        refl.received().len()
    );
    thread::sleep(Duration::from_millis(200));
    let after = env.cgnat().stats().expect("cgnat stats");
    eprintln!("stats after: {after:?}");
    assert!(
        !after.is_empty(),
        "cgnat stats printed no `name packets bytes` line"
    );
    // Each request went out through XDP once and each answer came in once.
    let (out0, in0) = fwd(&before);
    let (out1, in1) = fwd(&after);
    assert_eq!(
        (out1 - out0, in1 - in0),
        (attempts, attempts),
        "fwd_out, fwd_in for {attempts} datagrams and their answers: before {before:?}, after {after:?}"
    );
}

#[test]
fn unsolicited_inbound_is_dropped() {
    let Some(env) = Bed::running() else { return };
    let tb = &env.tb;
    let sinks = [
        UdpReflector::start(tb, Host::S1, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000))
            .expect("sink s1"),
        UdpReflector::start(tb, Host::S2, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000))
            .expect("sink s2"),
    ];
    let sniffers = [
        tb.sniff(Host::S1).expect("sniff s1"),
        tb.sniff(Host::S2).expect("sniff s2"),
    ];
    let e1 = tb
        .udp_socket(Host::E1, Host::E1.sock(6000))
        .expect("e1 socket");
    for _ in 0..2 {
        for a in pool_addrs() {
            for port in [7000, 5000, 40000, 1024] {
                e1.send_to(b"unsolicited", SocketAddrV4::new(a, port))
                    .expect("send");
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_secs(1));
    for (h, sink) in Host::SUBSCRIBERS.iter().zip(&sinks) {
        assert!(
            sink.received().is_empty(),
            "{h} received {:?}",
            sink.received()
        );
    }
    for (h, sn) in Host::SUBSCRIBERS.iter().zip(&sniffers) {
        // Unicast only: the bridges' IGMP reports are not the NAT's doing.
        let inbound: Vec<_> = sn
            .seen()
            .into_iter()
            .filter(|p| !p.outgoing && !p.dst.is_multicast() && !p.dst.is_broadcast())
            .collect();
        assert!(inbound.is_empty(), "{h}'s eth0 received {inbound:?}");
    }
    assert!(
        udp_recv(&e1, Duration::from_millis(100)).is_err(),
        "e1 got an answer"
    );

    // Positive control: the same sniffer does see traffic the NAT forwards.
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let r = exchange(tb, Host::S1, 7001, refl.addr(), "control");
    assert!(in_pool(*r.observed.ip()));
    thread::sleep(Duration::from_millis(100));
    assert!(
        sniffers[0]
            .seen()
            .iter()
            .any(|p| !p.outgoing && p.src == Host::E1.addr() && p.dport == 7001),
        "the sniffer on s1 missed the NATed answer: it proves nothing"
    );
}

#[test]
fn attaches_natively_and_detaches_on_sigterm() {
    let Some(mut env) = Bed::running() else {
        return;
    };
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = env.tb.xdp_mode(ifname).expect("ip link");
        assert_eq!(mode.as_deref(), Some("xdp"), "{ifname}: XDP attachment");
    }
    // The test bed's config sets daemon.detach_on_exit = true.
    let cgnat = env.daemon.take().expect("running");
    let status = cgnat.stop().expect("cgnat stops on SIGTERM");
    assert!(status.success(), "cgnat exited with {status}");
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = env.tb.xdp_mode(ifname).expect("ip link");
        assert_eq!(mode, None, "{ifname}: still attached after exit");
    }
    let report = env.tb.kernel_bypass_report().expect("bypass report");
    assert!(report.problems().is_empty(), "{:#?}", report.problems());

    // By default the programs stay and keep forwarding after the daemon
    // exits, until `cgnat stop --detach`.
    let text = env
        .tb
        .config_toml()
        .replace("detach_on_exit = true", "detach_on_exit = false");
    let cfg = env.tb.write_config("keep.toml", &text).expect("config");
    let bin = cgnat_kit::cgnat_binary();
    let bin_s = bin.to_string_lossy();
    let cgnat = env
        .tb
        .start_cgnat(bin, &cfg, Duration::from_secs(30))
        .expect("cgnat starts");
    // resolves the neighbours while the daemon runs
    let ping = env.tb.ping(Host::S1, Host::E1.addr(), 3).expect("ping");
    assert!(
        ping.received >= 2,
        "no forwarding with the daemon: {ping:?}"
    );
    let status = cgnat.stop().expect("cgnat stops on SIGTERM");
    assert!(status.success(), "cgnat exited with {status}");
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = env.tb.xdp_mode(ifname).expect("ip link");
        assert_eq!(
            mode.as_deref(),
            Some("xdp"),
            "{ifname}: detached by a plain exit"
        );
    }
    let ping = env.tb.ping(Host::S1, Host::E1.addr(), 3).expect("ping");
    assert!(
        ping.received >= 2,
        "no forwarding while the daemon is down: {ping:?}"
    );
    let cfg_s = cfg.to_string_lossy().into_owned();
    env.tb
        .run(
            Host::Router,
            &[&bin_s, "--config", &cfg_s, "stop", "--detach"],
        )
        .expect("cgnat stop --detach");
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        let mode = env.tb.xdp_mode(ifname).expect("ip link");
        assert_eq!(mode, None, "{ifname}: still attached after stop --detach");
    }
}

/// `cgnat check` on `text` written to `dir/name`: success, stdout + stderr.
fn run_check(dir: &std::path::Path, name: &str, text: &str) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("running cgnat check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_rejects_pool_overlapping_internal_prefixes() {
    // Needs no privilege: `check` only validates the file.
    let dir = std::env::temp_dir().join(format!("cgnat-e2e-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let check = |name: &str, text: &str| run_check(&dir, name, text);
    let good = testbed::config_toml(&dir.join("pins"));
    let bad = good.replace("\"203.0.113.0/28\"", "\"100.64.1.0/24\"");
    assert_ne!(good, bad);
    let (good_ok, good_text) = check("good.toml", &good);
    let (bad_ok, bad_text) = check("bad.toml", &bad);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        good_ok,
        "cgnat check refused the test bed's own config:\n{good_text}"
    );
    assert!(
        !bad_ok,
        "cgnat check accepted an overlapping pool:\n{bad_text}"
    );
    assert!(
        bad_text.contains("nat.external_pool"),
        "the message does not name the field:\n{bad_text}"
    );
}

/// The route cache follows routing changes through the daemon's rtnetlink
/// watcher, not through its lifetime: with `interfaces.route_cache = "30s"`
/// a blackhole route, its removal and a neighbour's new MAC address each
/// take effect for a packet sent 300 ms later.
#[test]
fn route_cache_follows_routing_changes() {
    let Some(bed) = Bed::running_with(TestbedOptions::default(), |t| {
        common::toml_set(&t, "interfaces", "route_cache", "\"30s\"")
    }) else {
        return;
    };
    let (tb, cgnat) = (&bed.tb, bed.cgnat());
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7100)).expect("reflector");
    let sock = tb
        .udp_socket(Host::S1, Host::S1.sock(41000))
        .expect("socket");
    let quick = Duration::from_millis(1500);
    let ok = |what: &str| {
        udp_exchange(&sock, refl.addr(), what.as_bytes(), quick).unwrap_or_else(|e| {
            panic!(
                "{what}: {e}\n{}\n{}",
                cgnat.log(),
                cgnat.stats_text().unwrap_or_default()
            )
        })
    };
    // The watcher bumps the cache's generation as soon as rtnetlink reports
    // a change (src/routes.rs): one datagram sent `settle` after a change
    // must take the new route, with no retry. Its answer may take longer
    // on a loaded machine (T); that is not the watcher's doing.
    let settle = Duration::from_millis(300);
    let once = |what: &str| -> SocketAddrV4 {
        sock.send_to(what.as_bytes(), refl.addr())
            .unwrap_or_else(|e| panic!("{what}: send: {e}"));
        let deadline = std::time::Instant::now() + T;
        let mut buf = [0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("SO_RCVTIMEO");
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                match testbed::decode_reflection(&buf[..n]) {
                    Some((observed, echoed)) if echoed == what.as_bytes() => return observed,
                    _ => continue,
                }
            }
        }
        panic!(
            "{what}: the one datagram sent {} ms after the change was not answered\n{}\n{}",
            settle.as_millis(),
            cgnat.log(),
            cgnat.stats_text().unwrap_or_default()
        )
    };
    let before = ok("warm the route cache");
    // the cache is really in use: e1's route is in it, under the current
    // generation, and the cache is on
    let pins = tb.pin_path();
    let routes = libbpf_rs::MapHandle::from_pinned_path(pins.join("routes")).expect("routes pin");
    let gen =
        libbpf_rs::MapHandle::from_pinned_path(pins.join("route_gen")).expect("route_gen pin");
    let g = gen
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .expect("route_gen")
        .and_then(|b| cgnat::bpf::from_bytes::<cgnat::bpf::types::cgnat_route_gen>(&b))
        .expect("route_gen value");
    assert_eq!(g.enabled, 1, "the route cache is off");
    // the array's slots that hold an answer (seq even, a destination)
    let cached: Vec<cgnat::bpf::types::cgnat_route> = routes
        .keys()
        .filter_map(|k| routes.lookup(&k, libbpf_rs::MapFlags::ANY).ok().flatten())
        .filter_map(|v| cgnat::bpf::from_bytes::<cgnat::bpf::types::cgnat_route>(&v))
        .filter(|r| r.seq % 2 == 0 && r.daddr != 0)
        .collect();
    assert!(
        cached
            .iter()
            .any(|k| Ipv4Addr::from(u32::from_be(k.daddr)) == Host::E1.addr()),
        "e1 is not in the route cache: {} entries",
        cached.len()
    );

    let e1 = Host::E1.addr().to_string();
    tb.ip(
        Host::Router,
        &["route", "add", "blackhole", &format!("{e1}/32")],
    )
    .expect("ip route add");
    thread::sleep(settle);
    let no_route = |c: &testbed::Cgnat| {
        c.stats()
            .ok()
            .and_then(|s| s.get("drop_no_route").map(|v| v.0))
            .unwrap_or(0)
    };
    let dropped_before = no_route(cgnat);
    let r = udp_exchange(
        &sock,
        refl.addr(),
        b"blackholed",
        Duration::from_millis(800),
    );
    assert!(
        r.is_err(),
        "a blackhole route 300 ms old did not stop the flow (cache lifetime 30 s)"
    );
    assert!(
        no_route(cgnat) > dropped_before,
        "nothing counted as drop_no_route:\n{}",
        cgnat.stats_text().unwrap_or_default()
    );
    tb.ip(
        Host::Router,
        &["route", "del", "blackhole", &format!("{e1}/32")],
    )
    .expect("ip route del");
    thread::sleep(settle);
    let after = once("route removed");
    assert_eq!(after, before.observed, "the mapping changed");

    // e1 gets a new MAC address and the router's neighbour entry follows
    // (as a gratuitous ARP would make it): frames to the old address would
    // be dropped by e1.
    let mac = "02:99:00:00:00:10";
    tb.ip(Host::E1, &["link", "set", "dev", "eth0", "address", mac])
        .expect("set e1's MAC");
    tb.ip(
        Host::Router,
        &[
            "neigh",
            "replace",
            &e1,
            "lladdr",
            mac,
            "dev",
            EXTERNAL_IF,
            "nud",
            "reachable",
        ],
    )
    .expect("ip neigh replace");
    thread::sleep(settle);
    let moved = once("new neighbour MAC");
    assert_eq!(moved, before.observed, "the mapping changed");
    println!(
        "route cache: blackhole, removal and MAC change each followed within {} ms",
        settle.as_millis()
    );
}

#[test]
fn check_validates_the_cluster_example_and_names_each_mistake() {
    // Needs no privilege: `check` only validates the file.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("cgnat-e2e-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = dir.join("cluster.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let example = include_str!("../../configs/cluster.toml")
        .replace("/etc/cgnat/cluster.key", &key.display().to_string());
    let check = |name: &str, text: &str| run_check(&dir, name, text);
    let (ok, text) = check("good.toml", &example);
    assert!(ok, "the shipped cluster example is refused:\n{text}");
    assert!(text.contains("cluster: this is node 1 of 2"), "{text}");
    let mistakes = [
        (
            example.replace(
                r#"subscribers = ["100.64.2.0/24"]"#,
                r#"subscribers = ["100.64.1.128/25"]"#,
            ),
            "cluster.nodes.subscribers",
        ),
        (
            example.replace(
                r#"pool = ["203.0.113.16/29"]"#,
                r#"pool = ["203.0.113.16/30"]"#,
            ),
            "cluster.nodes.pool",
        ),
        (
            example.replace("id = 1\n# The shared", "id = 9\n# The shared"),
            "cluster.id",
        ),
    ];
    for (i, (text, field)) in mistakes.iter().enumerate() {
        assert_ne!(text, &example, "mistake {i} changed nothing");
        let (ok, out) = check(&format!("bad{i}.toml"), text);
        assert!(!ok, "mistake {i} accepted:\n{out}");
        assert!(
            out.contains(field) && out.contains(&format!("bad{i}.toml")),
            "{out}"
        );
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, out) = check("key.toml", &example);
    assert!(
        !ok && out.contains("cluster.key_file") && out.contains("chmod 600"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
