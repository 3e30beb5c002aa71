//! The NAT as a router (RFC 1812) on a network where nothing is cached:
//! the router's neighbour table starts empty, the switch-side peers of its
//! veths have GRO on and no XDP program (what a container or lab gives),
//! and every test checks what the far end received.
//!
//! - packets toward a next hop being resolved are held, not dropped
//!   (RFC 1812 4.3.3.1, bpf/neigh.h): the first ping, datagram, SYN and
//!   traceroute probe all get through;
//! - TTL is handled before the neighbour (traceroute's first hop);
//! - resolution that fails is answered with ICMP host unreachable and the
//!   hold queue stays bounded;
//! - frames sent back out of their ingress veth arrive at once;
//! - the CLI finds a daemon started with `ip netns exec` and the default
//!   pin path.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapHandle};

use cgnat_kit::testbed::{
    in_pool, tcp_whoami, udp_exchange, udp_recv, Host, IcmpCapture, TcpServer, Testbed,
    TestbedOptions, UdpReflector, EXTERNAL_IF, INTERNAL_IF, ROUTER_INT,
};
use common::{bin, toml_set, Bed};

const T: Duration = Duration::from_secs(5);

/// Switch-side peers with GRO only, as a container runtime leaves them.
fn gro_only() -> TestbedOptions {
    TestbedOptions {
        peer_xdp_pass: false,
    }
}

fn counter(env: &Bed, name: &str) -> u64 {
    env.cgnat()
        .stats()
        .unwrap_or_else(|e| panic!("cgnat stats: {e}"))
        .get(name)
        .map(|c| c.0)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// The router's neighbour entries that are usable or being resolved.
fn router_neighbours(tb: &Testbed) -> String {
    let out = tb
        .ip(Host::Router, &["-4", "neigh", "show"])
        .expect("ip neigh show");
    out.lines()
        .filter(|l| !l.contains("FAILED"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_kernel_forwarding(env: &Bed) {
    let now = env.tb.forw_datagrams().expect("ForwDatagrams");
    assert_eq!(
        now,
        env.forw_before,
        "the kernel forwarded {} datagrams",
        now - env.forw_before
    );
}

#[test]
fn fresh_neighbours_lose_nothing() {
    let Some(env) = Bed::running_with(gro_only(), |t| t) else {
        return;
    };
    let tb = &env.tb;
    assert_eq!(
        router_neighbours(tb),
        "",
        "the router must start with an empty neighbour table"
    );

    // ping: every echo of the first three answered (the first one waits
    // while the router resolves e1)
    let ping = tb.ping(Host::S1, Host::E1.addr(), 3).expect("ping");
    assert_eq!(
        (ping.transmitted, ping.received),
        (3, 3),
        "ping -c 3 s1 -> e1 (fresh neighbour)"
    );

    // the first UDP datagram to a fresh neighbour, sent once
    let refl = UdpReflector::start(tb, Host::E2, Host::E2.sock(7000)).expect("reflector");
    let sock = tb
        .udp_socket(Host::S1, Host::S1.sock(41000))
        .expect("socket");
    sock.send_to(b"first datagram", refl.addr()).expect("send");
    let got = refl
        .wait_for(|d| d.payload == b"first datagram", Duration::from_secs(2))
        .unwrap_or_else(|| panic!("e2 never received the first datagram"));
    assert!(in_pool(*got.from.ip()), "e2 saw {}", got.from);
    // its reflection comes back to s1 (s1's neighbour entry was learnt
    // from its ARP request for the router)
    let back = udp_recv(&sock, Duration::from_secs(2)).expect("the reflection");
    assert_eq!(back.from, refl.addr());

    // the first TCP connection to a fresh neighbour opens without a
    // retransmitted SYN (the kernel's first retransmission is after 1 s)
    let srv = TcpServer::start(tb, Host::E3, Host::E3.sock(8000)).expect("server");
    let started = Instant::now();
    let mut s = tb
        .tcp_connect(Host::S1, None, srv.addr(), T)
        .expect("TCP connect s1 -> e3");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "connect to a fresh neighbour took {took:?}"
    );
    let seen = tcp_whoami(&mut s, T).expect("whoami");
    assert!(in_pool(*seen.ip()), "e3 saw {seen}");
    drop(s);

    // inbound to a subscriber whose neighbour entry is gone: the reply to
    // a single datagram still arrives
    tb.ip(Host::Router, &["neigh", "flush", "dev", INTERNAL_IF])
        .expect("ip neigh flush");
    assert!(
        !router_neighbours(tb).contains(&Host::S1.addr().to_string()),
        "s1 still in the router's neighbour table after the flush"
    );
    sock.send_to(b"after the flush", refl.addr()).expect("send");
    let back =
        udp_recv(&sock, Duration::from_secs(2)).expect("the reflection after the router forgot s1");
    assert!(back.payload.ends_with(b"after the flush"));

    let held = counter(&env, "neigh_held");
    assert!(held >= 4, "neigh_held = {held}: nothing was held?");
    assert_eq!(counter(&env, "drop_no_neigh"), 0, "a held packet was lost");
    assert_eq!(counter(&env, "drop_neigh_failed"), 0);
    assert_no_kernel_forwarding(&env);
}

#[test]
fn first_traceroute_shows_every_hop() {
    let Some(env) = Bed::running_with(gro_only(), |t| t) else {
        return;
    };
    let tb = &env.tb;
    let dst = Host::E1.addr().to_string();
    let out = tb
        .exec_timeout(
            Host::S1,
            &["traceroute", "-n", "-q", "1", "-w", "2", "-m", "4", &dst],
            Duration::from_secs(20),
        )
        .expect("traceroute");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hops: BTreeMap<u32, String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next()?.parse().ok()?;
            Some((n, w.next()?.to_owned()))
        })
        .collect();
    assert_eq!(
        hops.get(&1).map(String::as_str),
        Some(ROUTER_INT.to_string().as_str()),
        "hop 1 must be the NAT\n{text}"
    );
    assert_eq!(
        hops.get(&2).map(String::as_str),
        Some(dst.as_str()),
        "hop 2 must be the destination\n{text}"
    );
    assert!(counter(&env, "icmp_time_exceeded") >= 1);
    assert_no_kernel_forwarding(&env);
}

/// Routes behind next hops that never answer ARP.
fn dead_routes(tb: &Testbed, n: u8) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    (0..n)
        .map(|i| {
            let dst = Ipv4Addr::new(198, 18, i, 0);
            let via = Ipv4Addr::new(198, 51, 100, 100 + i);
            tb.ip(
                Host::Router,
                &[
                    "route",
                    "add",
                    &format!("{dst}/24"),
                    "via",
                    &via.to_string(),
                ],
            )
            .expect("ip route add");
            (dst, via)
        })
        .collect()
}

/// Frames held per next hop (the pinned neigh_hold map).
fn held_per_hop(hold: &MapHandle) -> BTreeMap<[u8; 4], usize> {
    let mut per = BTreeMap::new();
    for k in hold.keys() {
        let hop: [u8; 4] = k[..4].try_into().expect("key");
        *per.entry(hop).or_default() += 1;
    }
    per
}

#[test]
fn unresolvable_next_hop_answers_host_unreachable() {
    let Some(env) = Bed::running_with(gro_only(), |t| t) else {
        return;
    };
    let tb = &env.tb;
    let routes = dead_routes(tb, 80);
    let icmp = IcmpCapture::start(tb, Host::S1);

    // one datagram toward a dead next hop
    let sock = tb
        .udp_socket(Host::S1, Host::S1.sock(42000))
        .expect("socket");
    let target = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 5), 9);
    let sent = Instant::now();
    sock.send_to(b"to nowhere", target).expect("send");
    let hold = MapHandle::from_pinned_path(tb.pin_path().join("neigh_hold")).expect("neigh_hold");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(hold.keys().count(), 1, "the datagram must be held");

    // the kernel gives up after its probes (3 x 1 s): the sender is told
    let unreach = common::wait_for(Duration::from_secs(8), || {
        icmp.seen().into_iter().find(|m| {
            m.icmp_type == 3
                && m.code == 1
                && m.data.len() >= 28
                && m.data[16..20] == [198, 18, 0, 5]
        })
    })
    .unwrap_or_else(|| panic!("no ICMP host unreachable; seen {:?}", icmp.seen()));
    eprintln!("host unreachable after {:?}", sent.elapsed());
    assert_eq!(unreach.src, ROUTER_INT, "the error comes from the NAT");
    // it quotes the datagram as the subscriber sent it
    assert_eq!(&unreach.data[12..16], &Host::S1.addr().octets());
    assert_eq!(&unreach.data[20..22], &42000u16.to_be_bytes());
    assert_eq!(hold.keys().count(), 0, "the held datagram is gone");
    assert_eq!(
        counter(&env, "icmp_host_unreach") + counter(&env, "drop_neigh_failed"),
        1
    );

    // a flood toward 80 dead next hops: 30 datagrams each, far more than
    // the queue holds (16 per next hop, 1024 in all)
    let flood = tb
        .udp_socket(Host::S1, Host::S1.sock(42001))
        .expect("socket");
    let mut max_total = 0;
    for round in 0..30u32 {
        for (dst, _) in &routes[1..] {
            let o = dst.octets();
            let to = SocketAddrV4::new(Ipv4Addr::new(o[0], o[1], o[2], 7), 9);
            flood.send_to(&round.to_be_bytes(), to).expect("send");
        }
        // paced, so that no round overruns the veth's ring (256 frames)
        thread::sleep(Duration::from_millis(5));
        let per = held_per_hop(&hold);
        let total: usize = per.values().sum();
        max_total = max_total.max(total);
        assert!(total <= 1024, "{total} frames held");
        if let Some((hop, n)) = per.iter().find(|(_, n)| **n > 16) {
            panic!("{n} frames held for next hop {hop:?}");
        }
    }
    assert!(max_total >= 1000, "the queue never filled up ({max_total})");
    let queued_full = counter(&env, "drop_no_neigh");
    assert!(queued_full > 0, "a full queue must be counted");
    // every held frame is settled once the kernel fails them
    common::wait_for(Duration::from_secs(10), || {
        (hold.keys().count() == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("{} frames still held", hold.keys().count()));
    let held = counter(&env, "neigh_held");
    let settled = counter(&env, "icmp_host_unreach") + counter(&env, "drop_neigh_failed");
    assert_eq!(
        held, settled,
        "every held frame ends as ICMP host unreachable or a counted drop"
    );
    assert_eq!(
        held + queued_full,
        1 + 30 * (routes.len() as u64 - 1),
        "every datagram sent is held or counted as queue-full"
    );
    assert_no_kernel_forwarding(&env);
}

#[test]
fn veth_gro_only_peers_get_hairpin_and_icmp_at_once() {
    let Some(env) = Bed::running_with(gro_only(), |t| t) else {
        return;
    };
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");

    // s2 learns its external endpoint, then s1 sends it one datagram
    let s2 = tb.udp_socket(Host::S2, Host::S2.sock(43000)).expect("s2");
    let x2 = udp_exchange(&s2, refl.addr(), b"who am i", T)
        .expect("s2 exchange")
        .observed;
    let s1 = tb.udp_socket(Host::S1, Host::S1.sock(43001)).expect("s1");
    let x1 = udp_exchange(&s1, refl.addr(), b"who am i", T)
        .expect("s1 exchange")
        .observed;
    for i in 0..3u8 {
        let sent = Instant::now();
        s1.send_to(&[i; 16], x2).expect("send");
        let d = udp_recv(&s2, Duration::from_millis(500))
            .unwrap_or_else(|e| panic!("hairpinned datagram {i} did not arrive in 500 ms: {e}"));
        assert_eq!(d.payload, [i; 16]);
        assert_eq!(d.from, x1, "REQ-9a: the hairpinned source is s1's mapping");
        eprintln!("hairpin {i}: {:?}", sent.elapsed());
    }

    // TCP hairpin: s2 makes its mapping known from the port it listens on
    let e1 = TcpServer::start(tb, Host::E1, Host::E1.sock(8000)).expect("server on e1");
    let mut m = tb
        .tcp_connect(Host::S2, Some(Host::S2.sock(8080)), e1.addr(), T)
        .expect("s2 -> e1 from its listening port");
    let x2_tcp = tcp_whoami(&mut m, T).expect("whoami");
    let listener = tb
        .tcp_listen(Host::S2, Host::S2.sock(8080))
        .expect("listen on s2");
    let started = Instant::now();
    let c = tb
        .tcp_connect(Host::S1, None, x2_tcp, Duration::from_secs(2))
        .expect("TCP hairpin s1 -> s2's mapping");
    let took = started.elapsed();
    listener.set_nonblocking(true).expect("O_NONBLOCK");
    let peer = common::wait_for(Duration::from_secs(2), || listener.accept().ok())
        .map(|(_, peer)| peer)
        .expect("s2 accepts the hairpinned connection");
    assert!(
        matches!(peer, std::net::SocketAddr::V4(p) if in_pool(*p.ip())),
        "s2 saw {peer}"
    );
    assert!(
        took < Duration::from_millis(500),
        "TCP hairpin took {took:?}"
    );
    drop((m, c, listener));

    // a generated time exceeded comes back at once
    let out = tb
        .exec(
            Host::S1,
            &[
                "ping",
                "-n",
                "-c",
                "1",
                "-t",
                "1",
                "-W",
                "1",
                &Host::E1.addr().to_string(),
            ],
        )
        .expect("ping -t 1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("From {ROUTER_INT}")) && text.contains("Time to live exceeded"),
        "{text}"
    );
    assert!(
        env.cgnat().log().contains("is a veth"),
        "the daemon must warn about veth"
    );
    assert_no_kernel_forwarding(&env);
}

#[test]
fn cli_reads_daemon_started_with_ip_netns_exec() {
    let Some(env) = Bed::running_with(TestbedOptions::default(), |t| {
        toml_set(&t, "daemon", "pin_path", "\"/sys/fs/bpf/cgnat\"")
    }) else {
        return;
    };
    let tb = &env.tb;
    assert!(
        env.cgnat().log().contains("/sys/fs/bpf/cgnat"),
        "the daemon must use the default pin path"
    );
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = tb.udp_socket(Host::S1, Host::S1.sock(44000)).expect("s1");
    let x1 = udp_exchange(&s1, refl.addr(), b"cli", T)
        .expect("exchange")
        .observed;

    let ns = tb.ns(Host::Router).to_owned();
    let config = env.config.display().to_string();
    let cli = |args: &[&str]| -> String {
        let mut argv = vec!["--netns", ns.as_str(), "--config", config.as_str()];
        argv.extend_from_slice(args);
        let out = Command::new(bin())
            .args(&argv)
            .output()
            .unwrap_or_else(|e| panic!("cgnat {argv:?}: {e}"));
        assert!(
            out.status.success(),
            "cgnat {argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stats = cli(&["stats"]);
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("fwd_out ") && !l.starts_with("fwd_out 0 ")),
        "{stats}"
    );
    let sessions = cli(&["sessions", "--subscriber", &Host::S1.addr().to_string()]);
    assert!(sessions.contains(&x1.to_string()), "{sessions}");
    let status = cli(&["status"]);
    assert!(
        status.contains(INTERNAL_IF) && status.contains(EXTERNAL_IF),
        "{status}"
    );
    let pool = cli(&["pool"]);
    assert!(pool.contains(&x1.ip().to_string()), "{pool}");
    let subs = cli(&["subscribers"]);
    assert!(subs.contains(&Host::S1.addr().to_string()), "{subs}");
    let fwd = cli(&["forward", &Host::S1.addr().to_string()]);
    assert!(fwd.contains(&x1.ip().to_string()), "{fwd}");
    let rev = cli(&["reverse", &x1.to_string()]);
    assert!(rev.contains(&Host::S1.addr().to_string()), "{rev}");
    for json in [
        &["stats", "--json"][..],
        &["status", "--json"],
        &["pool", "--json"],
    ] {
        let out = cli(json);
        assert!(out.trim_start().starts_with(['{', '[']), "{json:?}: {out}");
    }
}
