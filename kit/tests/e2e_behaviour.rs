//! End-to-end tests of NAT behaviour: native hairpinning, the full TCP/UDP NAT
//! behaviour (RFC 4787, RFC 5382, RFC 7857) and the session lifecycle,
//! with the real `cgnat` binary, a TOML config written per test, and
//! assertions on what the far end actually received.
//!
//! Every test builds its own [`Testbed`] (see `behaviour::Bed`), with
//! short timers (sweeps every 200 ms; the daemon's expiry is two-phase and
//! allows for the data path's once-a-second stamping, so an idle session
//! goes between its timeout and timeout + 1 s + one sweep after its last
//! packet; see [`LATE`]).
//! Every test but the unit tests of the helpers needs root; under CI=true
//! they fail rather than skip when they cannot run.

mod behaviour;
mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use behaviour::*;
use cgnat_kit::testbed::{
    in_internal, in_pool, tcp_whoami, udp_exchange, udp_recv, udp_send_until_received, Host,
    Testbed, UdpReflector, E1_SECOND,
};

/// Limit of one UDP exchange (the first packet may be dropped while the NAT
/// resolves a neighbour; the helpers resend every 200 ms).
const T: Duration = Duration::from_secs(5);
const MIB: u64 = 1 << 20;
/// One sweep of the daemon in these tests (`daemon.sweep_interval`).
const SWEEP: Duration = Duration::from_millis(200);
/// Scheduling slack added to timer bounds.
const SLACK: Duration = Duration::from_millis(1500);
/// The sweeper allows last_seen to be this stale (the data path rewrites
/// it at most once a second), so an idle session goes between its timeout
/// and timeout + this + one sweep after its last packet.
const REFRESH_SLACK: Duration = Duration::from_secs(1);
/// Latest acceptable expiry after the timeout: refresh slack, the two
/// sweeps of the two-phase expiry, scheduling.
const LATE: Duration = REFRESH_SLACK
    .saturating_add(SWEEP)
    .saturating_add(SWEEP)
    .saturating_add(SLACK);
/// The data path rewrites a session's last-seen time at most once a
/// second (REFRESH_NS) for plain traffic. Tests that time a closing timer
/// from the last packet idle this long first, so that the last packet is
/// stamped whatever the stamping policy;
/// `udp_idle_timer_counts_from_the_last_packet` tests the policy itself.
const STAMP_IDLE: Duration = Duration::from_millis(1100);

fn udp(tb: &Testbed, host: Host, port: u16) -> UdpSocket {
    tb.udp_socket(host, host.sock(port))
        .unwrap_or_else(|e| panic!("{host}:{port}: {e}"))
}

fn udp_at(tb: &Testbed, host: Host, addr: SocketAddrV4) -> UdpSocket {
    tb.udp_socket(host, addr)
        .unwrap_or_else(|e| panic!("{host} {addr}: {e}"))
}

/// The external endpoint of `sock` as `refl` observes it.
fn learn(sock: &UdpSocket, refl: &UdpReflector, tag: &str) -> SocketAddrV4 {
    let r = udp_exchange(sock, refl.addr(), tag.as_bytes(), T)
        .unwrap_or_else(|e| panic!("{tag}: exchange with {}: {e}", refl.addr()));
    assert!(in_pool(*r.observed.ip()), "{tag}: observed {}", r.observed);
    r.observed
}

/// Sends `payload` from `from` to `to` and returns the source the plain
/// socket `to` saw (resending every 200 ms until it arrives).
fn send_seen(from: &UdpSocket, dst: SocketAddrV4, to: &UdpSocket, payload: &[u8]) -> SocketAddrV4 {
    udp_send_until_received(from, dst, payload, to, T)
        .unwrap_or_else(|e| panic!("{:?} -> {dst}: {e}", from.local_addr()))
        .from
}

/// Sends `payload` three times from `sender` to `dst` and asserts that
/// `receiver` gets none of them within 700 ms after the last one.
fn assert_blocked(
    bed: &Bed,
    sender: &UdpSocket,
    dst: SocketAddrV4,
    payload: &[u8],
    receiver: &UdpSocket,
    what: &str,
) {
    for _ in 0..3 {
        sender.send_to(payload, dst).expect("send");
        thread::sleep(Duration::from_millis(100));
    }
    // Other datagrams (late duplicates of earlier exchanges, which resend
    // every 200 ms) are skipped; `payload` is unique to this call.
    let deadline = Instant::now() + Duration::from_millis(700);
    while let Some(left) =
        Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
    {
        match udp_recv(receiver, left) {
            Ok(d) if d.payload == payload => panic!(
                "{what}: {:?} sent to {dst} was delivered (from {}), it must not be\n{}",
                String::from_utf8_lossy(payload),
                d.from,
                bed.evidence()
            ),
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------
// 1. UDP hairpinning (RFC 4787 REQ-9)
// ---------------------------------------------------------------------------

fn udp_hairpin(shared_address: bool) {
    let Some(bed) = Bed::with_conf(|c| {
        if shared_address {
            c.set("nat", "external_pool", "[\"203.0.113.5/32\"]");
        }
    }) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    // The same internal port on both subscribers: with one pool address
    // the second must get another external port.
    let port = 43000;
    let s1 = udp(tb, Host::S1, port);
    let s2 = udp(tb, Host::S2, port);
    let x1 = learn(&s1, &refl, "s1 learns");
    let x2 = learn(&s2, &refl, "s2 learns");
    if shared_address {
        let a = Ipv4Addr::new(203, 0, 113, 5);
        assert_eq!((*x1.ip(), *x2.ip()), (a, a), "one-address pool");
        assert_eq!(x1.port(), port, "s1's free source port was not kept");
        assert_ne!(x2.port(), port, "s2 cannot have s1's external port");
    } else {
        assert_ne!(
            x1.ip(),
            x2.ip(),
            "with the test bed's 24-address pool s1 and s2 hash to different \
             addresses (paired pooling); this test wants that case"
        );
    }
    let sniff1 = tb.sniff(Host::S1).expect("sniff s1");
    let sniff2 = tb.sniff(Host::S2).expect("sniff s2");
    let before = bed.counter("fwd_hairpin");

    for round in 0..3 {
        // Odd and even lengths (the checksum update of an odd one covers a
        // padded last word).
        let p12 = format!("hairpin s1->s2 #{round} {}", "a".repeat(1001 + round));
        let d = udp_send_until_received(&s1, x2, p12.as_bytes(), &s2, T).unwrap_or_else(|e| {
            panic!(
                "s1 -> {x2} (s2's external endpoint): {e}\n{}",
                bed.evidence()
            )
        });
        assert_eq!(d.payload, p12.as_bytes(), "payload s2 received");
        assert_eq!(
            d.from, x1,
            "s2 must see s1's external endpoint as source (RFC 4787 REQ-9b)"
        );
        // s2 answers the source it saw.
        let p21 = format!("hairpin s2->s1 #{round} {}", "b".repeat(777 + round));
        let d = udp_send_until_received(&s2, d.from, p21.as_bytes(), &s1, T).unwrap_or_else(|e| {
            panic!(
                "s2 -> {x1} (s1's external endpoint): {e}\n{}",
                bed.evidence()
            )
        });
        assert_eq!(d.payload, p21.as_bytes(), "payload s1 received");
        assert_eq!(d.from, x2, "s1 must see s2's external endpoint as source");
    }

    let after = bed.counter("fwd_hairpin");
    assert!(
        after >= before + 6,
        "fwd_hairpin grew from {before} to {after} for 6 hairpinned datagrams"
    );
    let sessions = bed.sessions();
    let mine = |internal: SocketAddrV4, remote: SocketAddrV4| {
        sessions
            .iter()
            .find(|s| s.proto == "udp" && s.internal == internal && s.remote == remote)
            .unwrap_or_else(|| panic!("no udp session {internal} -> {remote}: {sessions:#?}"))
            .clone()
    };
    let a = mine(Host::S1.sock(port), x2);
    assert!(
        a.hairpin,
        "s1's session to {x2} is not flagged hairpin: {a:?}"
    );
    assert!(!a.inbound, "s1 opened it: {a:?}");
    assert_eq!(a.external, x1, "{a:?}");
    let b = mine(Host::S2.sock(port), x1);
    assert!(
        b.hairpin,
        "s2's session with {x1} is not flagged hairpin: {b:?}"
    );
    assert!(
        b.inbound,
        "s2's side was opened from outside (by s1): {b:?}"
    );
    assert_eq!(b.external, x2, "{b:?}");

    // Never an internal address on the wire between the subscribers.
    thread::sleep(Duration::from_millis(100));
    for (h, sn) in [(Host::S1, &sniff1), (Host::S2, &sniff2)] {
        let leaked: Vec<_> = sn
            .seen()
            .into_iter()
            .filter(|p| !p.outgoing && p.proto == 17 && in_internal(p.src))
            .collect();
        assert!(
            leaked.is_empty(),
            "{h} received UDP from internal sources: {leaked:?}"
        );
        let got: Vec<_> = sn
            .seen()
            .into_iter()
            .filter(|p| !p.outgoing && p.proto == 17 && p.dport == port)
            .collect();
        assert!(
            got.len() >= 3,
            "{h}'s sniffer saw {got:?}: it proves nothing"
        );
    }
    // Nothing of it went out to the internet: e1 only got the two probes.
    let at_e1: Vec<_> = refl
        .received()
        .into_iter()
        .filter(|d| !d.payload.ends_with(b"learns"))
        .collect();
    assert!(at_e1.is_empty(), "hairpin traffic reached e1: {at_e1:?}");
}

#[test]
fn udp_hairpin_between_two_external_addresses() {
    udp_hairpin(false);
}

#[test]
fn udp_hairpin_on_one_shared_external_address() {
    udp_hairpin(true);
}

/// Hairpinning with address-and-port-dependent filtering behaves as if
/// the packet left the NAT and came back in (RFC 4787 REQ-9): s2's packet
/// to s1's mapping is refused by s1's filter, but it went out from s2's
/// mapping to X1, so s1's answer to X2 is admitted and both then talk
/// (UDP hole punching between two subscribers of the same NAT).
#[test]
fn udp_hairpin_hole_punching_with_port_dependent_filtering() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("filtering", "udp", "address-and-port-dependent");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = udp(tb, Host::S1, 43101);
    let s2 = udp(tb, Host::S2, 43102);
    let x1 = learn(&s1, &refl, "s1 learns");
    let x2 = learn(&s2, &refl, "s2 learns");
    // s2 punches: refused by s1's filter (s1 never sent to X2).
    let before = bed.counter("drop_filtered");
    assert_blocked(
        &bed,
        &s2,
        x1,
        b"punch from s2",
        &s1,
        "APDF hairpin, s2 first",
    );
    assert!(
        bed.counter("drop_filtered") > before,
        "s2's unsolicited hairpin packets were not counted as filtered"
    );
    // s1 answers X2: s2's packets went out to X1, so s2's filter admits it.
    let d = udp_send_until_received(&s1, x2, b"s1 through the hole", &s2, T).unwrap_or_else(|e| {
        panic!(
            "s1 -> {x2} after s2 had sent to {x1}: {e}: s2's refused packets did not \
             open s2's side of the flow (a hairpinned packet leaves s2's mapping like \
             any outbound packet)\n{}",
            bed.evidence()
        )
    });
    assert_eq!(d.from, x1);
    let d = udp_send_until_received(&s2, x1, b"s2 through the hole", &s1, T)
        .unwrap_or_else(|e| panic!("s2 -> {x1}: {e}\n{}", bed.evidence()));
    assert_eq!(d.from, x2);
}

// ---------------------------------------------------------------------------
// 2. TCP hairpinning (RFC 5382 REQ-8)
// ---------------------------------------------------------------------------

#[test]
fn tcp_hairpin_handshake_data_and_close() {
    let Some(bed) = Bed::with_conf(|_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let srv =
        cgnat_kit::testbed::TcpServer::start(tb, Host::E1, Host::E1.sock(8000)).expect("server e1");
    let (p1, p2) = (44001, 44002);
    // s2 makes its TCP mapping known from the port it will listen on.
    let mut w2 = tb
        .tcp_connect(Host::S2, Some(Host::S2.sock(p2)), srv.addr(), T)
        .expect("s2 -> e1");
    let x2 = tcp_whoami(&mut w2, T).expect("whoami s2");
    let listener = tcp_listen(tb, Host::S2, Host::S2.sock(p2));
    let mut w1 = tb
        .tcp_connect(Host::S1, Some(Host::S1.sock(p1)), srv.addr(), T)
        .expect("s1 -> e1");
    let x1 = tcp_whoami(&mut w1, T).expect("whoami s1");
    assert!(in_pool(*x1.ip()) && in_pool(*x2.ip()), "{x1} {x2}");
    assert_ne!(x1, x2);
    let sniff2 = tb.sniff(Host::S2).expect("sniff s2");
    let before = bed.counter("fwd_hairpin");

    let mut c = tb
        .tcp_connect(
            Host::S1,
            Some(Host::S1.sock(p1)),
            x2,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| {
            panic!(
                "s1 -> {x2} (s2's external endpoint): {e}\n{}",
                bed.evidence()
            )
        });
    let (mut a, peer) = accept_within(&listener, T);
    assert_eq!(
        peer, x1,
        "s2 must see s1's external endpoint as its peer (RFC 5382 REQ-8)"
    );
    assert_eq!(peer_v4(&c), x2);

    let sessions = bed.sessions();
    for (internal, remote, ext) in [(Host::S1.sock(p1), x2, x1), (Host::S2.sock(p2), x1, x2)] {
        let s = sessions
            .iter()
            .find(|s| s.proto == "tcp" && s.internal == internal && s.remote == remote)
            .unwrap_or_else(|| panic!("no tcp session {internal} -> {remote}: {sessions:#?}"));
        assert!(s.hairpin, "{s:?}");
        assert_eq!(s.external, ext, "{s:?}");
        assert_eq!(s.state, "established", "{s:?}");
    }

    // s1 -> s2: 4 MiB, then FIN; s2 -> s1: 3 MiB, then FIN.
    let up = 4 * MIB;
    let down = 3 * MIB;
    let limit = Duration::from_secs(60);
    let mut c2 = c.try_clone().expect("clone");
    let mut a2 = a.try_clone().expect("clone");
    let (sent_up, sent_down, got_up, got_down) = thread::scope(|sc| {
        let t1 = sc.spawn(move || {
            let h = send_pattern(&mut c2, 31, up, limit);
            shut_write(&c2);
            h
        });
        let t2 = sc.spawn(move || {
            let h = send_pattern(&mut a2, 32, down, limit);
            shut_write(&a2);
            h
        });
        let got_up = recv_hash(&mut a, None, limit);
        let got_down = recv_hash(&mut c, None, limit);
        (t1.join().unwrap(), t2.join().unwrap(), got_up, got_down)
    });
    assert_eq!(
        got_up,
        (up, sent_up),
        "what s2 received from s1 (bytes, hash)"
    );
    assert_eq!(
        got_down,
        (down, sent_down),
        "what s1 received from s2 (bytes, hash)"
    );
    drop(c);
    drop(a);

    assert!(
        wait_until(T, SWEEP, || {
            let s = bed.sessions();
            [(Host::S1.sock(p1), x2), (Host::S2.sock(p2), x1)]
                .iter()
                .all(|(i, r)| {
                    s.iter().any(|x| {
                        x.proto == "tcp"
                            && x.internal == *i
                            && x.remote == *r
                            && x.state == "closing"
                    })
                })
        }),
        "both hairpin sessions should be closing after FIN both ways\n{}",
        bed.evidence()
    );
    let after = bed.counter("fwd_hairpin");
    assert!(
        after > before + 100,
        "fwd_hairpin {before} -> {after} for 7 MiB"
    );
    let leaked: Vec<_> = sniff2
        .seen()
        .into_iter()
        .filter(|p| !p.outgoing && p.proto == 6 && in_internal(p.src))
        .collect();
    assert!(
        leaked.is_empty(),
        "s2 received TCP from internal sources: {:?}",
        &leaked[..leaked.len().min(5)]
    );
    drop(w1);
    drop(w2);
}

// ---------------------------------------------------------------------------
// 3. RFC 5780 behaviour discovery with coturn
// ---------------------------------------------------------------------------

/// Runs a STUN server on e1 (both addresses, ports 3478 and 3479) and
/// `turnutils_natdiscovery -m -f` from s1; returns its output.
fn nat_discovery(bed: &Bed) -> String {
    let tb = &bed.tb;
    // /etc/turnserver.conf of the Debian package says no-rfc5780: start
    // from an empty file of our own.
    let conf = tb
        .write_config("turnserver.conf", "")
        .expect("turnserver.conf");
    let dir = tb.dir().display().to_string();
    let (a1, a2) = (Host::E1.addr().to_string(), E1_SECOND.to_string());
    let mut server = tb
        .spawn(
            Host::E1,
            &[
                "turnserver",
                "-c",
                &conf.display().to_string(),
                "--stun-only",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "-L",
                &a1,
                "-L",
                &a2,
                "--listening-port",
                "3478",
                "--alt-listening-port",
                "3479",
                "--pidfile",
                &format!("{dir}/turnserver.pid"),
                "--userdb",
                &format!("{dir}/turndb"),
                "--log-file",
                "stdout",
                "--simple-log",
            ],
        )
        .expect("starting turnserver in e1");
    // Ready when all four endpoints answer (asked from e2, not via NAT).
    let probe = udp(tb, Host::E2, 0);
    for (ip, port) in [
        (Host::E1.addr(), 3478),
        (E1_SECOND, 3478),
        (Host::E1.addr(), 3479),
        (E1_SECOND, 3479),
    ] {
        let at = SocketAddrV4::new(ip, port);
        assert!(
            stun_answers(&probe, at, Duration::from_secs(15)),
            "turnserver does not answer at {at}:\n{}",
            server.log()
        );
    }
    // natdiscovery sends each request once: let the router resolve both
    // of e1's addresses (and s1) first.
    for dst in [Host::E1.addr(), E1_SECOND] {
        let p = tb.ping(Host::S1, dst, 2).expect("ping");
        assert!(p.received >= 1, "ping s1 -> {dst}: {p:?}");
    }
    let out = tb
        .exec_timeout(
            Host::S1,
            &["turnutils_natdiscovery", "-m", "-f", &a1],
            Duration::from_secs(60),
        )
        .expect("turnutils_natdiscovery");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- turnutils_natdiscovery -m -f {a1} ---\n{text}");
    server
        .stop(Duration::from_secs(10))
        .expect("stopping turnserver");
    assert!(out.status.success(), "natdiscovery failed: {text}");
    // Every reflexive address is a pool address.
    let reflexive: Vec<SocketAddrV4> = text
        .lines()
        .filter_map(|l| l.split("UDP reflexive addr:").nth(1))
        .filter_map(|a| a.trim().trim_start_matches(':').trim().parse().ok())
        .collect();
    assert!(
        !reflexive.is_empty(),
        "no reflexive address reported:\n{text}"
    );
    assert!(
        reflexive.iter().all(|a| in_pool(*a.ip())),
        "reflexive addresses outside the pool: {reflexive:?}"
    );
    text
}

/// The verdict line `NAT with ...!` of a discovery section.
fn verdicts(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("NAT with") || l.starts_with("No NAT"))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn discovery_case(filtering: Option<&str>, expect_filtering: &str) {
    if !require_tools(&["turnserver", "turnutils_natdiscovery"]) {
        return;
    }
    let Some(bed) = Bed::with_conf(|c| {
        if let Some(f) = filtering {
            c.set_str("filtering", "udp", f);
        }
    }) else {
        return;
    };
    let before = bed.counter("drop_filtered");
    let text = nat_discovery(&bed);
    let v = verdicts(&text);
    assert_eq!(
        v,
        vec![
            "NAT with Endpoint Independent Mapping!".to_owned(),
            expect_filtering.to_owned()
        ],
        "RFC 5780 verdicts (filtering = {filtering:?}):\n{text}\n{}",
        bed.evidence()
    );
    let dropped = bed.counter("drop_filtered") - before;
    match filtering {
        None => assert_eq!(dropped, 0, "EIF filtered {dropped} packets"),
        // ADF refuses the change-IP answer; APDF also the change-port one.
        Some("address-dependent") => assert!(dropped >= 1, "drop_filtered +{dropped}"),
        Some(_) => assert!(dropped >= 2, "drop_filtered +{dropped}"),
    }
}

#[test]
fn rfc5780_discovery_default_is_eim_and_eif() {
    discovery_case(None, "NAT with Endpoint Independent Filtering!");
}

#[test]
fn rfc5780_discovery_address_dependent_filtering() {
    discovery_case(
        Some("address-dependent"),
        "NAT with Address Dependent Filtering!",
    );
}

#[test]
fn rfc5780_discovery_address_and_port_dependent_filtering() {
    discovery_case(
        Some("address-and-port-dependent"),
        "NAT with Address and Port Dependent Filtering!",
    );
}

// ---------------------------------------------------------------------------
// 4. Filtering modes with sockets (RFC 4787 REQ-8, RFC 7857 s6, s7)
// ---------------------------------------------------------------------------

/// s1:5000 -> e1:7000 (plain sockets); returns (s1, e1:7000, mapping).
fn open_mapping(tb: &Testbed) -> (UdpSocket, UdpSocket, SocketAddrV4) {
    let s1 = udp(tb, Host::S1, 5000);
    let e1 = udp(tb, Host::E1, 7000);
    let x = send_seen(&s1, Host::E1.sock(7000), &e1, b"open s1:5000 -> e1:7000");
    assert!(in_pool(*x.ip()), "e1 saw {x}");
    // e1 answers from the endpoint s1 sent to: always admitted.
    let d = send_seen(&e1, x, &s1, b"answer from e1:7000");
    assert_eq!(d, Host::E1.sock(7000));
    (s1, e1, x)
}

#[test]
fn filtering_endpoint_independent() {
    let Some(bed) = Bed::with_conf(|_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let (s1, _e1, x) = open_mapping(tb);
    let before = bed.counter("drop_filtered");
    let e1b = udp(tb, Host::E1, 7001);
    let e1c = udp_at(tb, Host::E1, SocketAddrV4::new(E1_SECOND, 7002));
    let e2 = udp(tb, Host::E2, 7200);
    for (sock, from, tag) in [
        (&e1b, Host::E1.sock(7001), "e1, other port"),
        (
            &e1c,
            SocketAddrV4::new(E1_SECOND, 7002),
            "e1, other address",
        ),
        (&e2, Host::E2.sock(7200), "e2"),
    ] {
        let seen = send_seen(sock, x, &s1, format!("EIF from {tag}").as_bytes());
        assert_eq!(seen, from, "{tag}: source s1 saw");
    }
    // s1 answers e2 through the same mapping.
    let back = send_seen(&s1, Host::E2.sock(7200), &e2, b"s1 answers e2");
    assert_eq!(back, x, "s1's answer to e2 left from another endpoint");
    assert_eq!(
        bed.counter("drop_filtered"),
        before,
        "EIF dropped something"
    );
}

#[test]
fn filtering_address_dependent_and_no_refresh_by_filtered_packets() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("filtering", "udp", "address-dependent")
            .set_str("timeouts", "udp", "3s")
            // Admitted inbound packets refresh: the filtered ones must not
            // (RFC 7857 s7), which only this makes observable.
            .set("nat", "inbound_refresh", "true");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let (s1, _e1, x) = open_mapping(tb);
    // Same address, other port: admitted.
    let e1b = udp(tb, Host::E1, 7001);
    let seen = send_seen(&e1b, x, &s1, b"ADF from e1:7001");
    assert_eq!(seen, Host::E1.sock(7001));
    // Another address (even e1's second one) or another host: refused.
    let before = bed.counter("drop_filtered");
    let e1c = udp_at(tb, Host::E1, SocketAddrV4::new(E1_SECOND, 7002));
    let e2 = udp(tb, Host::E2, 7200);
    assert_blocked(
        &bed,
        &e1c,
        x,
        b"ADF from e1's second address",
        &s1,
        "ADF, e1 second address",
    );
    assert_blocked(&bed, &e2, x, b"ADF from e2", &s1, "ADF, e2");
    let dropped = bed.counter("drop_filtered") - before;
    assert!(
        dropped >= 6,
        "drop_filtered grew by {dropped} for 6 refused datagrams"
    );
    // Once s1 has sent to e2, e2 is admitted from any port.
    send_seen(&s1, Host::E2.sock(9), &udp(tb, Host::E2, 9), b"s1 -> e2:9");
    let seen = send_seen(&e2, x, &s1, b"ADF from e2 after s1 sent to e2");
    assert_eq!(seen, Host::E2.sock(7200));

    // RFC 7857 s7: filtered packets do not refresh the mapping. Mapping A
    // gets refused packets from e2 every 500 ms; control mapping B gets
    // admitted ones (from the e1 endpoint it sent to) every 500 ms.
    let a = udp(tb, Host::S1, 5001);
    let b = udp(tb, Host::S1, 5002);
    let e1_7100 = udp(tb, Host::E1, 7100);
    let xa = send_seen(&a, Host::E1.sock(7100), &e1_7100, b"A opens");
    let opened = Instant::now();
    let xb = send_seen(&b, Host::E1.sock(7100), &e1_7100, b"B opens");
    let e2_refused = udp(tb, Host::E2, 7300);
    let filtered_before = bed.counter("drop_filtered");
    let mut a_gone_at = None;
    let mut sent = 0u32;
    let mut next_send = Instant::now();
    while opened.elapsed() < Duration::from_secs(3) + LATE + Duration::from_secs(1) {
        if Instant::now() >= next_send {
            e2_refused
                .send_to(b"refused, must not refresh", xa)
                .expect("send");
            e1_7100.send_to(b"admitted, refreshes", xb).expect("send");
            sent += 1;
            next_send += Duration::from_millis(500);
        }
        thread::sleep(Duration::from_millis(100));
        if a_gone_at.is_none() && bed.sessions_of("udp", Host::S1.sock(5001)).is_empty() {
            a_gone_at = Some(opened.elapsed());
        }
    }
    let a_gone_at = a_gone_at.unwrap_or_else(|| {
        panic!(
            "mapping A ({xa}) outlived udp = 3s by far although only refused packets \
             reached it ({sent} from e2): they refreshed it (RFC 7857 s7)\n{}",
            bed.evidence()
        )
    });
    assert!(
        a_gone_at >= Duration::from_millis(2900),
        "mapping A vanished {a_gone_at:?} after its only packet, before its 3 s timeout"
    );
    assert!(
        a_gone_at <= Duration::from_secs(3) + LATE,
        "mapping A vanished only after {a_gone_at:?}"
    );
    let filtered = bed.counter("drop_filtered") - filtered_before;
    assert!(
        filtered >= 5,
        "drop_filtered +{filtered}: e2's packets were not filtered"
    );
    // A got nothing from e2; B got the admitted ones and is still there.
    let mut at_a = Vec::new();
    while let Ok(d) = udp_recv(&a, Duration::from_millis(50)) {
        at_a.push(d);
    }
    assert!(
        at_a.iter()
            .all(|d| d.payload != b"refused, must not refresh"),
        "A received e2's refused packets: {at_a:?}"
    );
    let mut at_b = 0;
    while let Ok(d) = udp_recv(&b, Duration::from_millis(50)) {
        at_b += (d.payload == b"admitted, refreshes") as u32;
    }
    assert!(
        at_b + 1 >= sent,
        "B received {at_b} of {sent} admitted packets"
    );
    let bs = bed.sessions_of("udp", Host::S1.sock(5002));
    assert!(
        bs.iter().any(|s| s.external == xb),
        "control mapping B expired although admitted inbound packets refresh it \
         (inbound_refresh = true): the test proves nothing\n{}",
        bed.evidence()
    );
    // A's binding is gone: its port is quarantined and A gets a new one.
    let xa2 = send_seen(&a, Host::E1.sock(7100), &e1_7100, b"A again");
    assert_ne!(
        xa2, xa,
        "A got its old external endpoint back: the mapping did not expire or its \
         port was not quarantined"
    );
}

#[test]
fn filtering_address_and_port_dependent() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("filtering", "udp", "address-and-port-dependent");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let (s1, e1, x) = open_mapping(tb);
    let before = bed.counter("drop_filtered");
    let e1b = udp(tb, Host::E1, 7001);
    let e1c = udp_at(tb, Host::E1, SocketAddrV4::new(E1_SECOND, 7000));
    let e2 = udp(tb, Host::E2, 7000);
    assert_blocked(
        &bed,
        &e1b,
        x,
        b"APDF from e1:7001",
        &s1,
        "APDF, e1 other port",
    );
    assert_blocked(
        &bed,
        &e1c,
        x,
        b"APDF from e1's second address",
        &s1,
        "APDF, e1 second address",
    );
    assert_blocked(&bed, &e2, x, b"APDF from e2:7000", &s1, "APDF, e2");
    let dropped = bed.counter("drop_filtered") - before;
    assert!(
        dropped >= 9,
        "drop_filtered grew by {dropped} for 9 refused datagrams"
    );
    // Only the endpoint s1 sent to gets through.
    let seen = send_seen(&e1, x, &s1, b"APDF from e1:7000");
    assert_eq!(seen, Host::E1.sock(7000));
    // Until s1 sends to e1:7001 too.
    send_seen(&s1, Host::E1.sock(7001), &e1b, b"s1 -> e1:7001");
    let seen = send_seen(&e1b, x, &s1, b"APDF from e1:7001 after s1 sent there");
    assert_eq!(seen, Host::E1.sock(7001));
}

/// RFC 4787 REQ-3a / REQ-4: when the source port is taken, the random one
/// keeps its range (1-1023 or 1024-65535) and, with nat.preserve_parity,
/// its parity. One pool address, so s2 collides with s1 on every port.
#[test]
fn udp_port_range_and_parity_kept_on_collision() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set("nat", "external_pool", "[\"203.0.113.5/32\"]")
            .set("nat", "preserve_parity", "true");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let mut got = Vec::new();
    for port in [5001u16, 5002, 5003, 5004, 5005, 5006, 5007, 5008, 500, 501] {
        let a = udp(tb, Host::S1, port);
        let b = udp(tb, Host::S2, port);
        let xa = learn(&a, &refl, &format!("s1:{port}"));
        let xb = learn(&b, &refl, &format!("s2:{port}"));
        assert_eq!(xa.port(), port, "s1:{port}: a free port is kept");
        assert_eq!(xa.ip(), xb.ip(), "one pool address");
        assert_ne!(xb.port(), port, "s2:{port} cannot share s1's external port");
        got.push((port, xb.port()));
    }
    let wrong_parity: Vec<_> = got.iter().filter(|(i, e)| i % 2 != e % 2).collect();
    assert!(
        wrong_parity.is_empty(),
        "preserve_parity = true, yet (internal, external) ports {wrong_parity:?} (all: {got:?})"
    );
    let wrong_range: Vec<_> = got
        .iter()
        .filter(|(i, e)| (*i < 1024) != (*e < 1024) || *e == 0)
        .collect();
    assert!(
        wrong_range.is_empty(),
        "ports left their range (RFC 4787 REQ-3a): {wrong_range:?} (all: {got:?})"
    );
}

// ---------------------------------------------------------------------------
// 5. TCP lifecycle (RFC 5382, RFC 7857 s2)
// ---------------------------------------------------------------------------

/// TCP timers of the lifecycle tests.
fn tcp_short(c: &mut Conf) {
    c.set_str("timeouts", "tcp_transitory", "3s");
}

#[test]
fn tcp_32mib_each_way_through_the_nat() {
    let Some(bed) = Bed::with_conf(tcp_short) else {
        return;
    };
    let tb = &bed.tb;
    let srv1 =
        cgnat_kit::testbed::TcpServer::start(tb, Host::E1, Host::E1.sock(8000)).expect("server e1");
    let srv2 =
        cgnat_kit::testbed::TcpServer::start(tb, Host::E2, Host::E2.sock(8000)).expect("server e2");
    let limit = Duration::from_secs(120);
    let up = tb
        .tcp_upload(
            Host::S1,
            Some(Host::S1.sock(45001)),
            srv1.addr(),
            32 * MIB,
            41,
            limit,
        )
        .unwrap_or_else(|e| panic!("upload s1 -> e1: {e}\n{}", bed.evidence()));
    eprintln!("upload: {up:?}");
    assert!(in_pool(*up.server_saw.ip()), "e1 saw {}", up.server_saw);
    assert_eq!(
        (up.server_bytes, up.server_hash),
        (up.sent_bytes, up.sent_hash),
        "what e1 received"
    );
    // The upload ended with FIN both ways (checked before its 3 s
    // closing timeout runs out).
    let mut last = None;
    let closing = wait_until(T, Duration::from_millis(50), || {
        last = bed.session("tcp", Host::S1.sock(45001), srv1.addr());
        last.as_ref().is_some_and(|s| s.state == "closing")
    });
    assert!(
        closing,
        "the upload's session should be closing, it is {last:?}\n{}",
        bed.evidence()
    );
    let down = tb
        .tcp_download(Host::S2, srv2.addr(), 32 * MIB, 42, limit)
        .unwrap_or_else(|e| panic!("download e2 -> s2: {e}\n{}", bed.evidence()));
    eprintln!("download: {down:?}");
    assert!(in_pool(*down.server_saw.ip()), "e2 saw {}", down.server_saw);
    assert_eq!(
        (down.got_bytes, down.got_hash),
        (down.expected_bytes, down.expected_hash),
        "what s2 received"
    );
    let mut last = None;
    let closing = wait_until(T, Duration::from_millis(50), || {
        last = bed.session("tcp", down.local, srv2.addr());
        last.as_ref().is_some_and(|s| s.state == "closing")
    });
    assert!(
        closing,
        "the download's session should be closing, it is {last:?}\n{}",
        bed.evidence()
    );
}

/// Sends `bytes` of pattern `seed` from `from` while `to` reads them;
/// returns (hash sent, (bytes, hash) received).
fn transfer(
    from: &mut std::net::TcpStream,
    to: &mut std::net::TcpStream,
    seed: u64,
    bytes: u64,
) -> (u64, (u64, u64)) {
    let limit = Duration::from_secs(30);
    thread::scope(|sc| {
        let t = sc.spawn(move || send_pattern(from, seed, bytes, limit));
        let got = recv_hash(to, Some(bytes), limit);
        (t.join().expect("sender"), got)
    })
}

/// An established connection s1:port -> e1:8100 with its accepted end.
fn tcp_pair(bed: &Bed, port: u16) -> (std::net::TcpStream, std::net::TcpStream, SocketAddrV4) {
    let tb = &bed.tb;
    let l = tcp_listen(tb, Host::E1, Host::E1.sock(8100));
    let c = tb
        .tcp_connect(Host::S1, Some(Host::S1.sock(port)), Host::E1.sock(8100), T)
        .unwrap_or_else(|e| panic!("s1:{port} -> e1:8100: {e}"));
    let (a, peer) = accept_within(&l, T);
    assert!(in_pool(*peer.ip()), "e1 saw {peer}");
    (c, a, peer)
}

/// Waits (up to 3 s) until the session s1:port -> e1:8100 is in `state`.
fn expect_state(bed: &Bed, port: u16, state: &str, why: &str) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        last = bed.session("tcp", Host::S1.sock(port), Host::E1.sock(8100));
        last.as_ref().is_some_and(|s| s.state == state)
    });
    assert!(
        ok,
        "after {why}: expected state {state}, cgnat sessions shows {last:?}\n{}",
        bed.evidence()
    );
}

/// Asserts that the sessions s1:port -> e1:8100 of `ports` are removed
/// between `timeout` and `timeout` + 2 sweeps (+ slack) after `since`
/// (their last packets, all within a few milliseconds).
fn expect_removed(bed: &Bed, ports: &[u16], since: Instant, timeout: Duration) {
    let remote = Host::E1.sock(8100);
    let early = timeout.saturating_sub(Duration::from_millis(600));
    assert!(
        since.elapsed() < early,
        "test too slow: {:?} passed before the lower bound could be checked",
        since.elapsed()
    );
    thread::sleep(early.saturating_sub(since.elapsed()));
    for &port in ports {
        assert!(
            bed.session("tcp", Host::S1.sock(port), remote).is_some(),
            "the session of s1:{port} went before its {timeout:?} timeout ({:?} after \
             its last packet)\n{}",
            since.elapsed(),
            bed.evidence()
        );
    }
    let gone = wait_until(
        (since + timeout + LATE).saturating_duration_since(Instant::now()),
        Duration::from_millis(100),
        || {
            ports
                .iter()
                .all(|&p| bed.session("tcp", Host::S1.sock(p), remote).is_none())
        },
    );
    assert!(
        gone,
        "sessions of s1:{ports:?} still listed {:?} after their last packets (timeout \
         {timeout:?})\n{}",
        since.elapsed(),
        bed.evidence()
    );
}

#[test]
fn tcp_half_close_by_the_subscriber() {
    let Some(bed) = Bed::with_conf(tcp_short) else {
        return;
    };
    let port = 45100;
    let (mut c, mut a, _) = tcp_pair(&bed, port);
    expect_state(&bed, port, "established", "the handshake");
    let h = send_pattern(&mut c, 51, 64 * 1024, T);
    assert_eq!(recv_hash(&mut a, Some(64 * 1024), T), (64 * 1024, h));

    shut_write(&c);
    expect_eof(&mut a, T);
    expect_state(&bed, port, "fin_one", "the subscriber's FIN");
    // The remote still sends: 2 MiB arrive intact through the half-open
    // connection.
    let (h, got) = transfer(&mut a, &mut c, 52, 2 * MIB);
    assert_eq!(got, (2 * MIB, h), "data from e1 after s1's shutdown(Write)");
    expect_state(&bed, port, "fin_one", "data after one FIN");
    thread::sleep(STAMP_IDLE);
    shut_write(&a);
    expect_eof(&mut c, T);
    let closed = Instant::now();
    expect_state(&bed, port, "closing", "FIN both ways");
    drop(c);
    drop(a);
    // tcp_closing = tcp_transitory = 3 s.
    expect_removed(&bed, &[port], closed, Duration::from_secs(3));
}

#[test]
fn tcp_half_close_by_the_remote() {
    let Some(bed) = Bed::with_conf(tcp_short) else {
        return;
    };
    let port = 45200;
    let (mut c, mut a, _) = tcp_pair(&bed, port);
    expect_state(&bed, port, "established", "the handshake");
    shut_write(&a);
    expect_eof(&mut c, T);
    expect_state(&bed, port, "fin_one", "the remote's FIN");
    let (h, got) = transfer(&mut c, &mut a, 61, 2 * MIB);
    assert_eq!(got, (2 * MIB, h), "data from s1 after e1's shutdown(Write)");
    thread::sleep(STAMP_IDLE);
    shut_write(&c);
    expect_eof(&mut a, T);
    let closed = Instant::now();
    expect_state(&bed, port, "closing", "FIN both ways");
    drop(c);
    drop(a);
    expect_removed(&bed, &[port], closed, Duration::from_secs(3));
}

#[test]
fn tcp_init_state_and_reset_by_the_subscriber() {
    // Separate opening and closing timers (RFC 7857 s2.1).
    let Some(bed) = Bed::with_conf(|c| {
        tcp_short(c);
        c.set_str("timeouts", "tcp_opening", "2s");
    }) else {
        return;
    };
    let tb = &bed.tb;
    // init: e1 silently drops the SYN, so only s1's SYN was seen.
    nft_drop_syn(tb, Host::E1, 8999);
    let fd = start_connect(tb, Host::S1, Host::S1.sock(45300), Host::E1.sock(8999));
    let mut last = None;
    let ok = wait_until(T, Duration::from_millis(50), || {
        last = bed.session("tcp", Host::S1.sock(45300), Host::E1.sock(8999));
        last.is_some()
    });
    assert!(ok, "no session after s1's SYN\n{}", bed.evidence());
    let s = last.unwrap();
    assert_eq!(s.state, "init", "after a SYN one way: {s:?}");
    assert!(!s.inbound, "{s:?}");
    assert!(
        s.expires_in_ms <= 2000,
        "an opening session has the tcp_opening timeout (2 s): {s:?}"
    );
    assert!(nft_dropped(tb, Host::E1) >= 1, "e1 never saw the SYN");
    drop(fd);
    let syn_dropped = Instant::now();

    // Reset by the subscriber: SO_LINGER 0, then close sends a RST.
    reset_case(&bed, 45301, true);
    // The SYN-only session is gone too (tcp_opening = 2 s after the last
    // SYN, sent before the socket was dropped).
    let syn_gone = wait_until(
        (syn_dropped + Duration::from_secs(2) + LATE).saturating_duration_since(Instant::now()),
        Duration::from_millis(100),
        || {
            bed.session("tcp", Host::S1.sock(45300), Host::E1.sock(8999))
                .is_none()
        },
    );
    assert!(
        syn_gone,
        "the opening session outlived its transitory timeout\n{}",
        bed.evidence()
    );
}

/// An established connection s1:port -> e1:8100 idles (so that its last
/// packet before the RST is stamped), then one side closes with
/// SO_LINGER 0: a RST. The session must show `reset`, restart its idle
/// timer at the RST and go tcp_closing (3 s) later (RFC 7857 s2.2: hold
/// the state for the transitory time after a RST).
fn reset_case(bed: &Bed, port: u16, by_subscriber: bool) {
    let (c, a, _) = tcp_pair(bed, port);
    expect_state(bed, port, "established", "the handshake");
    let (who, closer, mut other) = if by_subscriber {
        ("s1", c, a)
    } else {
        ("e1", a, c)
    };
    set_linger_zero(&closer);
    thread::sleep(STAMP_IDLE);
    drop(closer);
    let reset = Instant::now();
    let mut buf = [0u8; 16];
    other.set_read_timeout(Some(T)).unwrap();
    let r = std::io::Read::read(&mut other, &mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the peer should see the connection reset by {who}'s RST, got {r:?}"
    );
    expect_state(bed, port, "reset", &format!("{who}'s RST"));
    let s = bed
        .session("tcp", Host::S1.sock(port), Host::E1.sock(8100))
        .unwrap();
    let since_rst = reset.elapsed().as_millis() as u64;
    assert!(
        s.idle_ms <= since_rst + 300,
        "{who}'s RST {since_rst} ms ago did not restart the session's idle timer \
         (idle {} ms, the connection had idled {STAMP_IDLE:?} before it): the state \
         after a RST must be held for tcp_closing from the RST (RFC 7857 s2.2): {s:?}\n{}",
        s.idle_ms,
        bed.evidence()
    );
    assert!(
        s.expires_in_ms <= 3000 && s.expires_in_ms > 2000,
        "after a RST tcp_closing (3 s) applies: {s:?}"
    );
    drop(other);
    expect_removed(bed, &[port], reset, Duration::from_secs(3));
}

#[test]
fn tcp_reset_by_the_remote() {
    let Some(bed) = Bed::with_conf(tcp_short) else {
        return;
    };
    reset_case(&bed, 45302, false);
}

// ---------------------------------------------------------------------------
// 6. TCP simultaneous open (RFC 5382 REQ-2)
// ---------------------------------------------------------------------------

/// s1 (bound to `p`, its mapping learned over TCP from e1) and e2 (bound
/// to `q`) connect to each other. `s1_first`: s1's SYN leaves first and is
/// lost at e2 (an nft rule there drops it, as when e2's socket does not
/// exist yet), then e2 connects; else e2's SYN reaches the NAT first.
fn simultaneous_open(bed: &Bed, p: u16, q: u16, s1_first: bool) {
    let tb = &bed.tb;
    let srv = cgnat_kit::testbed::TcpServer::start(tb, Host::E1, Host::E1.sock(8000 + p % 100))
        .expect("server e1");
    let mut w = tb
        .tcp_connect(Host::S1, Some(Host::S1.sock(p)), srv.addr(), T)
        .expect("s1 -> e1 whoami");
    let x1 = tcp_whoami(&mut w, T).expect("whoami");
    let e2_at = Host::E2.sock(q);
    let s1_sock = bound_tcp_socket(tb, Host::S1, Host::S1.sock(p), false);
    let e2_sock = bound_tcp_socket(tb, Host::E2, e2_at, false);
    let limit = Duration::from_secs(10);
    let filtered_before = bed.counter("drop_filtered");

    let (c1, c2) = thread::scope(|sc| {
        let (first, second) = if s1_first {
            nft_drop_syn(tb, Host::E2, q);
            let t1 = sc.spawn(move || blocking_connect(s1_sock, e2_at, limit));
            assert!(
                wait_until(T, Duration::from_millis(20), || nft_dropped(tb, Host::E2)
                    >= 1),
                "s1's SYN never reached e2\n{}",
                bed.evidence()
            );
            let t2 = sc.spawn(move || blocking_connect(e2_sock, x1, limit));
            (t1, t2)
        } else {
            let t2 = sc.spawn(move || blocking_connect(e2_sock, x1, limit));
            // The NAT drops e2's SYN (no session for e2 yet): wait for it.
            assert!(
                wait_until(T, Duration::from_millis(20), || bed
                    .counter("drop_filtered")
                    > filtered_before),
                "e2's SYN was not dropped by the filter\n{}",
                bed.evidence()
            );
            let t1 = sc.spawn(move || blocking_connect(s1_sock, e2_at, limit));
            (t1, t2)
        };
        (first.join().unwrap(), second.join().unwrap())
    });
    if s1_first {
        nft_clear(tb, Host::E2);
    }
    let mut c1 = c1.unwrap_or_else(|e| panic!("s1:{p} -> {e2_at}: {e}\n{}", bed.evidence()));
    let mut c2 = c2.unwrap_or_else(|e| panic!("e2:{q} -> {x1}: {e}\n{}", bed.evidence()));
    assert_eq!(peer_v4(&c2), x1);
    assert_eq!(local_v4(&c1), Host::S1.sock(p));
    // Data both ways.
    let (h, got) = transfer(&mut c1, &mut c2, 71, 256 * 1024);
    assert_eq!(got, (256 * 1024, h), "s1 -> e2");
    let (h, got) = transfer(&mut c2, &mut c1, 72, 256 * 1024);
    assert_eq!(got, (256 * 1024, h), "e2 -> s1");
    let s = bed
        .session("tcp", Host::S1.sock(p), e2_at)
        .unwrap_or_else(|| panic!("no session s1:{p} <-> {e2_at}\n{}", bed.evidence()));
    assert_eq!(s.state, "established", "{s:?}");
    assert_eq!(s.external, x1, "{s:?}");
    drop(w);
}

#[test]
fn tcp_simultaneous_open_endpoint_independent_filtering() {
    let Some(bed) = Bed::with_conf(|_| {}) else {
        return;
    };
    simultaneous_open(&bed, 46001, 46101, true);
}

#[test]
fn tcp_simultaneous_open_address_and_port_dependent_filtering() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("filtering", "tcp", "address-and-port-dependent");
    }) else {
        return;
    };
    // The inbound SYN first: silently dropped, then s1's SYN opens the
    // session and the crossing SYN/SYN-ACK complete the handshake.
    simultaneous_open(&bed, 46002, 46102, false);
    // And the other order.
    simultaneous_open(&bed, 46003, 46103, true);
}

/// Between two subscribers, hairpinned (RFC 5382 REQ-2 and REQ-8); the
/// filtering makes the first SYN's refusal deterministic.
#[test]
fn tcp_hairpin_simultaneous_open() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("filtering", "tcp", "address-and-port-dependent")
            .set_str("timeouts", "tcp_transitory", "3s");
    }) else {
        return;
    };
    hairpin_simultaneous_open(&bed, 46004, 46104);
}

/// s2 connects to s1's external endpoint first (its SYN is refused by
/// s1's filter, but opens s2's side), then s1 connects to s2's: the
/// crossing SYNs complete a simultaneous open through the hairpin.
fn hairpin_simultaneous_open(bed: &Bed, p1: u16, p2: u16) {
    let tb = &bed.tb;
    let srv =
        cgnat_kit::testbed::TcpServer::start(tb, Host::E1, Host::E1.sock(8200)).expect("server");
    let mut w1 = tb
        .tcp_connect(Host::S1, Some(Host::S1.sock(p1)), srv.addr(), T)
        .expect("s1 -> e1 whoami");
    let x1 = tcp_whoami(&mut w1, T).expect("whoami s1");
    let mut w2 = tb
        .tcp_connect(Host::S2, Some(Host::S2.sock(p2)), srv.addr(), T)
        .expect("s2 -> e1 whoami");
    let x2 = tcp_whoami(&mut w2, T).expect("whoami s2");
    let s1_sock = bound_tcp_socket(tb, Host::S1, Host::S1.sock(p1), false);
    let s2_sock = bound_tcp_socket(tb, Host::S2, Host::S2.sock(p2), false);
    let limit = Duration::from_secs(10);
    let filtered_before = bed.counter("drop_filtered");
    let (c1, c2) = thread::scope(|sc| {
        let t2 = sc.spawn(move || blocking_connect(s2_sock, x1, limit));
        assert!(
            wait_until(T, Duration::from_millis(20), || bed
                .counter("drop_filtered")
                > filtered_before),
            "s2's hairpinned SYN to {x1} was not refused by s1's filter\n{}",
            bed.evidence()
        );
        let t1 = sc.spawn(move || blocking_connect(s1_sock, x2, limit));
        (t1.join().unwrap(), t2.join().unwrap())
    });
    let mut c1 = c1.unwrap_or_else(|e| panic!("s1:{p1} -> {x2}: {e}\n{}", bed.evidence()));
    let mut c2 = c2.unwrap_or_else(|e| panic!("s2:{p2} -> {x1}: {e}\n{}", bed.evidence()));
    let (h, got) = transfer(&mut c1, &mut c2, 73, 256 * 1024);
    assert_eq!(got, (256 * 1024, h), "s1 -> s2 through the hairpin");
    let (h, got) = transfer(&mut c2, &mut c1, 74, 256 * 1024);
    assert_eq!(got, (256 * 1024, h), "s2 -> s1 through the hairpin");
    // Only this connection holds the two mappings now; it idles longer
    // than tcp_transitory (3 s, + 1 s refresh slack + sweeps), far less
    // than tcp_established (2h4m).
    drop(w1);
    drop(w2);
    let before_idle = bed.sessions_text();
    thread::sleep(Duration::from_secs(6));
    let (mut c1b, mut c2b) = (c1.try_clone().unwrap(), c2.try_clone().unwrap());
    for (dir, from, to, seed) in [
        ("s1 -> s2", &mut c1, &mut c2, 75),
        ("s2 -> s1", &mut c2b, &mut c1b, 76),
    ] {
        let h = send_pattern(from, seed, 1000, T);
        to.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 1000];
        let r = std::io::Read::read_exact(to, &mut buf);
        let mut f = cgnat_kit::testbed::Fnv64::new();
        f.update(&buf);
        assert!(
            r.is_ok() && f.finish() == h,
            "{dir}: 1000 bytes after 6 s idle did not arrive ({r:?}): the established \
             hairpinned connection was cut after tcp_transitory\n--- sessions before \
             the idle time ---\n{before_idle}\n{}",
            bed.evidence()
        );
    }
    // Both sides saw SYNs both ways: both sessions are established (and
    // so get tcp_established, not the transitory timeout).
    for (internal, remote) in [(Host::S1.sock(p1), x2), (Host::S2.sock(p2), x1)] {
        let s = bed
            .session("tcp", internal, remote)
            .unwrap_or_else(|| panic!("no session {internal} <-> {remote}\n{}", bed.evidence()));
        assert!(s.hairpin, "{s:?}");
        assert_eq!(s.state, "established", "{s:?}");
    }
}

// ---------------------------------------------------------------------------
// 7. Timers (RFC 4787 REQ-5, REQ-6; RFC 5382 REQ-5; RFC 6888 REQ-8)
// ---------------------------------------------------------------------------

/// Waits until `internal` has no `proto` session left; returns when
/// that was first seen (None if not within `timeout`). Returns two sweeps
/// later, so that the sweep that deleted the session has also released
/// the binding (a packet landing between the two could otherwise open a
/// new session on the old binding).
fn wait_gone(bed: &Bed, proto: &str, internal: SocketAddrV4, timeout: Duration) -> Option<Instant> {
    let mut at = None;
    wait_until(timeout, Duration::from_millis(100), || {
        if bed.sessions_of(proto, internal).is_empty() {
            at = Some(Instant::now());
            true
        } else {
            false
        }
    });
    if at.is_some() {
        thread::sleep(2 * SWEEP);
    }
    at
}

#[test]
fn udp_mapping_expires_after_its_timeout() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("timeouts", "udp", "3s");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let s1 = udp(tb, Host::S1, 46500);
    let e1 = udp(tb, Host::E1, 7000);
    let x = send_seen(&s1, Host::E1.sock(7000), &e1, b"open");
    let last_out = Instant::now();
    let s = bed
        .session("udp", Host::S1.sock(46500), Host::E1.sock(7000))
        .expect("session");
    assert!(
        s.expires_in_ms <= 3000 && s.expires_in_ms > 2000,
        "udp = 3s: {s:?}"
    );
    // e1 keeps sending to the mapping: delivered while it lives, but with
    // nat.inbound_refresh = false (the default) that must not keep it alive
    // (RFC 4787 REQ-6). It stops before the expiry window so that no packet
    // races with the sweep.
    let mut sent = 0;
    while last_out.elapsed() < Duration::from_millis(2500) {
        let p = format!("inbound {sent}");
        let d = send_seen(&e1, x, &s1, p.as_bytes());
        assert_eq!(d, Host::E1.sock(7000), "{p}");
        sent += 1;
        thread::sleep(Duration::from_millis(400));
    }
    assert!(sent >= 4, "only {sent} inbound packets");
    assert!(
        !bed.sessions_of("udp", Host::S1.sock(46500)).is_empty(),
        "the mapping went before its 3 s timeout"
    );
    let gone =
        wait_gone(&bed, "udp", Host::S1.sock(46500), Duration::from_secs(5)).unwrap_or_else(|| {
            panic!(
                "mapping {x} still listed {:?} after its last packet\n{}",
                last_out.elapsed(),
                bed.evidence()
            )
        });
    let after = gone - last_out;
    assert!(
        after >= Duration::from_secs(3) && after <= Duration::from_secs(3) + LATE,
        "the mapping went {after:?} after its last outbound packet (udp = 3s; \
         e1's inbound packets until 2.5 s must not have refreshed it)"
    );
    // The old external endpoint no longer leads to s1.
    let before = bed.counter("drop_no_binding");
    assert_blocked(&bed, &e1, x, b"after expiry", &s1, "expired mapping");
    let dropped = bed.counter("drop_no_binding") - before;
    assert!(
        dropped >= 3,
        "drop_no_binding +{dropped} for 3 datagrams to the expired {x}"
    );
}

/// The idle timer runs from the LAST packet: two outbound datagrams
/// 0.8 s apart, then silence; with udp = 3s the mapping must still be
/// there 2.9 s after the second one (expiry is between timeout and
/// timeout + one sweep; RFC 4787 REQ-5: the timer must not expire in less
/// than its value).
#[test]
fn udp_idle_timer_counts_from_the_last_packet() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("timeouts", "udp", "3s");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let internal = Host::S1.sock(46550);
    let s1 = udp(tb, Host::S1, internal.port());
    let e1 = udp(tb, Host::E1, 7000);
    // Resolve the router's neighbours first, so both datagrams go through
    // at their first attempt.
    let warm = udp(tb, Host::S1, 46551);
    send_seen(&warm, Host::E1.sock(7000), &e1, b"warm-up");
    let x = send_seen(&s1, Host::E1.sock(7000), &e1, b"first");
    let first = Instant::now();
    thread::sleep(Duration::from_millis(800));
    assert_eq!(send_seen(&s1, Host::E1.sock(7000), &e1, b"second"), x);
    let last = Instant::now();
    let spacing = last - first;
    thread::sleep(Duration::from_millis(2900).saturating_sub(last.elapsed()));
    let present = bed.session("udp", internal, Host::E1.sock(7000));
    assert!(
        present.is_some(),
        "the mapping {x} was deleted {:?} after its last outbound packet (udp = 3s; \
         the previous packet was {spacing:?} earlier): the idle timer did not \
         restart at the last packet\n{}",
        last.elapsed(),
        bed.evidence()
    );
    let gone = wait_gone(&bed, "udp", internal, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("mapping {x} never expired\n{}", bed.evidence()));
    assert!(
        gone - last <= Duration::from_secs(3) + LATE,
        "the mapping went {:?} after its last packet",
        gone - last
    );
}

#[test]
fn udp_port_quarantined_then_reissued() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set("nat", "external_pool", "[\"203.0.113.5/32\"]")
            .set_str("nat", "port_quarantine", "4s")
            .set_str("timeouts", "udp", "3s");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let port = 47000;
    let s1 = udp(tb, Host::S1, port);
    let e1 = udp(tb, Host::E1, 7000);
    let x = send_seen(&s1, Host::E1.sock(7000), &e1, b"first");
    assert_eq!(
        x,
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), port),
        "a free port is kept"
    );
    let gone1 = wait_gone(&bed, "udp", Host::S1.sock(port), Duration::from_secs(6))
        .unwrap_or_else(|| panic!("first mapping never expired\n{}", bed.evidence()));
    // Same internal socket again: its old port is in quarantine.
    let x2 = send_seen(&s1, Host::E1.sock(7000), &e1, b"second");
    assert_eq!(x2.ip(), x.ip());
    assert_ne!(
        x2.port(),
        port,
        "the released port was reissued at once, not quarantined (RFC 6888 REQ-8)\n{}",
        bed.evidence()
    );
    // The quarantined port leads nowhere.
    assert_blocked(
        &bed,
        &e1,
        x,
        b"to the quarantined port",
        &s1,
        "quarantined port",
    );
    // After the quarantine (4 s from the release, which came at most one
    // sweep after the session went) and the second mapping's expiry the
    // port is free again, and port preservation picks it.
    let gone2 = wait_gone(&bed, "udp", Host::S1.sock(port), Duration::from_secs(6))
        .unwrap_or_else(|| panic!("second mapping never expired\n{}", bed.evidence()));
    let free_at = (gone1 + Duration::from_secs(4) + 3 * SWEEP).max(gone2 + 2 * SWEEP);
    thread::sleep(free_at.saturating_duration_since(Instant::now()));
    let x3 = send_seen(&s1, Host::E1.sock(7000), &e1, b"third");
    assert_eq!(
        x3,
        x,
        "after the quarantine the port should be free and kept again\n{}",
        bed.evidence()
    );
}

#[test]
fn udp_mapping_kept_alive_by_outbound_traffic() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("timeouts", "udp", "3s");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = udp(tb, Host::S1, 46600);
    let x = learn(&s1, &refl, "start");
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(8) {
        thread::sleep(Duration::from_secs(1));
        i += 1;
        let seen = learn(&s1, &refl, &format!("keepalive {i}"));
        assert_eq!(seen, x, "after {:?} the mapping changed", start.elapsed());
        let s = bed.sessions_of("udp", Host::S1.sock(46600));
        assert!(
            s.iter().any(|s| s.external == x && s.remote == refl.addr()),
            "after {:?} the refreshed session is gone: {s:?}",
            start.elapsed()
        );
    }
    assert!(i >= 7);
    // Every datagram e1 got came from the one mapping.
    assert_eq!(refl.sources(), vec![x]);
}

#[test]
fn tcp_established_survives_idle_longer_than_transitory() {
    let Some(bed) = Bed::with_conf(tcp_short) else {
        return;
    };
    let port = 46700;
    let (mut c, mut a, peer) = tcp_pair(&bed, port);
    let h = send_pattern(&mut c, 81, 1000, T);
    assert_eq!(recv_hash(&mut a, Some(1000), T), (1000, h));
    expect_state(&bed, port, "established", "the handshake");
    // Longer than tcp_transitory + the refresh slack + two sweeps.
    thread::sleep(Duration::from_secs(6));
    let s = bed
        .session("tcp", Host::S1.sock(port), Host::E1.sock(8100))
        .unwrap_or_else(|| {
            panic!(
                "established session gone after 6 s idle (tcp_transitory = 3s)\n{}",
                bed.evidence()
            )
        });
    assert_eq!(s.state, "established");
    assert!(s.idle_ms >= 5500, "{s:?}");
    assert!(
        s.expires_in_ms > 3600 * 1000,
        "tcp_established is 2h4m: {s:?}"
    );
    assert_eq!(s.external, peer);
    // Data still flows both ways.
    let (h, got) = transfer(&mut c, &mut a, 82, 100_000);
    assert_eq!(got, (100_000, h), "s1 -> e1 after idling");
    let (h, got) = transfer(&mut a, &mut c, 83, 100_000);
    assert_eq!(got, (100_000, h), "e1 -> s1 after idling");
}

#[test]
fn udp_timeout_by_destination_port() {
    let Some(bed) = Bed::with_conf(|c| {
        c.set_str("timeouts", "udp", "10s")
            .set_str("timeouts.udp_ports", "53", "2s");
    }) else {
        return;
    };
    let tb = &bed.tb;
    let a = udp(tb, Host::S1, 46800);
    let b = udp(tb, Host::S1, 46801);
    let e53 = udp(tb, Host::E1, 53);
    let e54 = udp(tb, Host::E1, 54);
    let xa = send_seen(&a, Host::E1.sock(53), &e53, b"to 53");
    let xb = send_seen(&b, Host::E1.sock(54), &e54, b"to 54");
    let sent = Instant::now();
    let sa = bed
        .session("udp", Host::S1.sock(46800), Host::E1.sock(53))
        .expect("session to 53");
    let sb = bed
        .session("udp", Host::S1.sock(46801), Host::E1.sock(54))
        .expect("session to 54");
    assert!(
        sa.expires_in_ms <= 2000,
        "port 53 has a 2 s timeout: {sa:?}"
    );
    assert!(
        sb.expires_in_ms > 8000,
        "port 54 has the 10 s default: {sb:?}"
    );
    let gone =
        wait_gone(&bed, "udp", Host::S1.sock(46800), Duration::from_secs(5)).unwrap_or_else(|| {
            panic!(
                "the flow to port 53 outlived its 2 s timeout\n{}",
                bed.evidence()
            )
        });
    assert!(
        gone - sent >= Duration::from_millis(1900),
        "the flow to port 53 went after {:?}",
        gone - sent
    );
    thread::sleep(Duration::from_secs(4).saturating_sub(sent.elapsed()));
    assert!(
        bed.session("udp", Host::S1.sock(46801), Host::E1.sock(54))
            .is_some(),
        "the flow to port 54 went within 4 s (udp = 10s)\n{}",
        bed.evidence()
    );
    assert_blocked(
        &bed,
        &e53,
        xa,
        b"53 after expiry",
        &a,
        "expired port-53 mapping",
    );
    let d = send_seen(&e54, xb, &b, b"54 still mapped");
    assert_eq!(d, Host::E1.sock(54));
}
