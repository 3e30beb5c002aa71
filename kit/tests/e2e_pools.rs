//! End-to-end tests of carrier-grade address management: paired
//! pooling at scale, port blocks, deterministic NAT (RFC 7422),
//! per-subscriber limits, static mappings and NAT exemptions, with the real
//! cgnat binary on real TOML configs in a network-namespace test bed,
//! asserting what the far ends observe.
//!
//! Simulated subscribers are extra addresses on s1 and s2 that sockets and
//! pings bind to. Every test needs root (`common::require_root`: under
//! `CI=true` a test that cannot run fails).

mod common;
mod pools;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use cgnat_kit::testbed::{
    in_pool, pool_addrs, tcp_whoami, udp_exchange, udp_send_until_received, Host, TcpServer,
    UdpReflector, ROUTER_INT,
};
use pools::{
    add_addrs, addrs, cli_direct, contains_bytes, par_in_ns, parse_placement, ping_from,
    ping_marker, probe, tcp_from, testbed, udp_flow, wait_until, Bed, Checks, IcmpCapture,
    Keepalive, Placement, Probe, Toml,
};

/// Limit of one exchange (the first packet of a flow may be dropped while
/// the NAT resolves a neighbour; the helpers resend every 200 ms).
const T: Duration = Duration::from_secs(5);
const REFLECTOR_PORT: u16 = 7000;
const TCP_PORT: u16 = 8000;

fn e1_reflector() -> SocketAddrV4 {
    Host::E1.sock(REFLECTOR_PORT)
}

fn e1_tcp() -> SocketAddrV4 {
    Host::E1.sock(TCP_PORT)
}

fn counter(m: &BTreeMap<String, u64>, name: &str) -> u64 {
    m.get(name).copied().unwrap_or(0)
}

fn sa(a: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(a, port)
}

/// A connected UDP socket from `local` to `dst`, made in `host`'s namespace.
fn flow_in(env: &Bed, host: Host, local: SocketAddrV4, dst: SocketAddrV4) -> UdpSocket {
    env.tb
        .in_ns(host, move || udp_flow(local, dst))
        .unwrap_or_else(|e| panic!("{host}: {e}"))
}

// ---------------------------------------------------------------------------
// 1. Paired pooling at scale
// ---------------------------------------------------------------------------

/// What one simulated subscriber's flows showed.
#[derive(Debug)]
struct SubResult {
    addr: Ipv4Addr,
    udp: Probe,
    tcp: Result<SocketAddrV4, String>,
    ping: Result<u32, String>,
}

/// UDP to e1's reflector, TCP (WHO) to e1's server and a ping to e1, all
/// from `a`. Runs in the subscriber's namespace.
fn subscriber_flows(a: Ipv4Addr) -> SubResult {
    let sock = udp_flow(sa(a, 0), e1_reflector());
    let udp = probe(
        &sock,
        format!("scale {a}").as_bytes(),
        Duration::from_secs(8),
    );
    let tcp = tcp_from(sa(a, 0), e1_tcp(), Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))
        .and_then(|mut s| tcp_whoami(&mut s, T).map_err(|e| format!("WHO: {e}")));
    let ping = ping_from(a, Host::E1.addr(), 5);
    SubResult {
        addr: a,
        udp,
        tcp,
        ping,
    }
}

/// Seed of the extra subscribers' addresses of [`paired_pooling_at_scale`].
const PLACEMENT_SEED: u64 = 0x5eed_0202;
/// Extra subscribers on each of s1 and s2 in [`paired_pooling_at_scale`].
const PLACEMENT_EXTRA: usize = 100;
/// The most subscribers above ⌈average⌉ + 1, summed over the pool
/// addresses, that the placement may leave (see
/// [`placement_bound_separates_two_choices_from_one`]).
const PLACEMENT_EXCESS: usize = 4;

/// Subscribers beyond ⌈average⌉ + 1 per pool address, summed.
fn placement_excess(load: &[usize]) -> usize {
    let total: usize = load.iter().sum();
    let level = total.div_ceil(load.len()) + 1;
    load.iter().map(|n| n.saturating_sub(level)).sum()
}

/// The subscribers of [`paired_pooling_at_scale`]: s1, s2 and the extra
/// addresses (the first half on s1, the second on s2).
fn placement_subscribers() -> Vec<Ipv4Addr> {
    let mut subs = vec![Host::S1.addr(), Host::S2.addr()];
    subs.extend(pools::scattered_addrs(PLACEMENT_SEED, 2 * PLACEMENT_EXTRA));
    subs
}

/// 202 subscribers (s1, s2 and 100 extra addresses on each, scattered over
/// 100.64.0.0/10) send UDP, TCP and ICMP echo to e1. Paired pooling (RFC
/// 6888 REQ-2): e1 sees one external address per subscriber for all three.
/// Placement by two choices (bpf/pool.h): every pool address of both
/// ranges is used and at most [`PLACEMENT_EXCESS`] subscribers lie above
/// ⌈average⌉ + 1 in all, which one hashed or random choice alone
/// almost never meets. `cgnat subscribers --json` agrees with what e1 saw.
#[test]
fn paired_pooling_at_scale() {
    let Some(tb) = testbed() else { return };
    let extra = placement_subscribers().split_off(2);
    let (s1_extra, s2_extra) = extra.split_at(PLACEMENT_EXTRA);
    let (s1_extra, s2_extra) = (s1_extra.to_vec(), s2_extra.to_vec());
    add_addrs(&tb, Host::S1, &s1_extra);
    add_addrs(&tb, Host::S2, &s2_extra);
    let toml = Toml::new(&tb);
    let env = Bed::pools(tb, toml);
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, e1_reflector()).expect("reflector e1");
    let _srv = TcpServer::start(tb, Host::E1, e1_tcp()).expect("tcp server e1");
    let echo = IcmpCapture::start(tb, Host::E1);

    let mut s1_subs = vec![Host::S1.addr()];
    s1_subs.extend(&s1_extra);
    let mut s2_subs = vec![Host::S2.addr()];
    s2_subs.extend(&s2_extra);
    let (ns1, ns2) = (tb.ns_path(Host::S1), tb.ns_path(Host::S2));
    let start = Instant::now();
    let results: Vec<SubResult> = thread::scope(|s| {
        let h = s.spawn(|| par_in_ns(&ns1, s1_subs, 8, subscriber_flows));
        let r2 = par_in_ns(&ns2, s2_subs, 8, subscriber_flows);
        let mut r1 = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        r1.extend(r2);
        r1
    });
    eprintln!(
        "{} subscribers: UDP, TCP and ping in {:?}",
        results.len(),
        start.elapsed()
    );
    thread::sleep(Duration::from_millis(200));
    let requests: Vec<_> = echo
        .seen()
        .into_iter()
        .filter(|m| m.icmp_type == 8)
        .collect();

    let mut failures = Vec::new();
    let mut placed: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
    for r in &results {
        let udp = r.udp.answered();
        let tcp = r.tcp.as_ref().ok().copied();
        let ping_srcs: BTreeSet<Ipv4Addr> = requests
            .iter()
            .filter(|m| contains_bytes(&m.data, &ping_marker(r.addr)))
            .map(|m| m.src)
            .collect();
        let ping_ok = matches!(r.ping, Ok(n) if n >= 1);
        if udp.is_none() || tcp.is_none() || !ping_ok || ping_srcs.is_empty() {
            failures.push(format!(
                "{}: udp {:?}, tcp {:?}, ping {:?}, e1 saw its echo requests from {ping_srcs:?}",
                r.addr, r.udp, r.tcp, r.ping
            ));
            continue;
        }
        let (udp, tcp) = (udp.unwrap(), tcp.unwrap());
        let mut ext: BTreeSet<Ipv4Addr> = ping_srcs.clone();
        ext.insert(*udp.ip());
        ext.insert(*tcp.ip());
        if ext.len() != 1 || !ext.iter().all(|a| in_pool(*a)) {
            failures.push(format!(
                "{}: e1 saw UDP from {udp}, TCP from {tcp}, echo requests from {ping_srcs:?}",
                r.addr
            ));
            continue;
        }
        placed.insert(r.addr, *udp.ip());
    }
    assert!(
        failures.is_empty(),
        "{} of {} subscribers failed (first 20):\n{}",
        failures.len(),
        results.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let leaked: Vec<_> = refl
        .received()
        .into_iter()
        .filter(|d| !in_pool(*d.from.ip()))
        .collect();
    assert!(
        leaked.is_empty(),
        "e1 received from outside the pool: {leaked:?}"
    );

    // Least-loaded placement over the whole pool, both ranges.
    let mut load: BTreeMap<Ipv4Addr, usize> = pool_addrs().into_iter().map(|a| (a, 0)).collect();
    for ext in placed.values() {
        *load.get_mut(ext).expect("in the pool") += 1;
    }
    eprintln!("subscribers per pool address: {load:?}");
    let unused: Vec<_> = load
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(a, _)| *a)
        .collect();
    assert!(
        unused.is_empty(),
        "pool addresses no subscriber got: {unused:?} (load {load:?})"
    );
    let loads: Vec<usize> = load.values().copied().collect();
    let excess = placement_excess(&loads);
    assert!(
        excess <= PLACEMENT_EXCESS,
        "{excess} subscribers above the average + 1 (at most {PLACEMENT_EXCESS} with two choices): \
         not the less loaded of two (load {load:?})"
    );

    // The daemon's view agrees with what e1 saw.
    let subs = env.subscribers();
    let listed: BTreeMap<Ipv4Addr, Ipv4Addr> = subs
        .iter()
        .filter_map(|o| {
            Some((
                o.get("subscriber")?.parse().ok()?,
                o.get("external")?.parse().ok()?,
            ))
        })
        .collect();
    assert!(
        listed.len() >= 200,
        "cgnat subscribers lists {} subscribers, expected >= 200",
        listed.len()
    );
    let wrong: Vec<String> = placed
        .iter()
        .filter(|(s, e)| listed.get(s) != Some(e))
        .map(|(s, e)| {
            format!(
                "{s}: e1 saw {e}, cgnat subscribers says {:?}",
                listed.get(s)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "cgnat subscribers disagrees with e1 for {} subscribers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 2. Port blocks
// ---------------------------------------------------------------------------

/// Port-block mode (RFC 6888 REQ-14), block_size 64, max_blocks 2: a
/// subscriber's ports all lie in the blocks `cgnat forward` reports; a
/// second block is taken when the first is full; it can use all 128 ports
/// of its two blocks and no more (ICMP 3/1 beyond); its flows and other
/// subscribers keep working; `cgnat reverse` names it; idle blocks are
/// released.
#[test]
fn port_blocks() {
    let Some(tb) = testbed() else { return };
    let toml = Toml::new(&tb)
        .fast_expiry()
        .set("pool", "mode", "\"port-block\"")
        .set("pool", "block_size", "64")
        .set("pool", "max_blocks", "2");
    let env = Bed::pools(tb, toml);
    let refl = UdpReflector::start(&env.tb, Host::E1, e1_reflector()).expect("reflector e1");
    let s1 = Host::S1.addr();
    let mut c = Checks::default();
    // udp = "2s": keep the flows alive while the test opens more.
    let keep = Keepalive::start(Duration::from_millis(400));
    let mut flows: Vec<(UdpSocket, SocketAddrV4)> = Vec::new();
    let mut refused_early: Vec<String> = Vec::new();
    let mut attempts = 0usize;
    let mut open =
        |flows: &mut Vec<(UdpSocket, SocketAddrV4)>, target: usize, max_attempts: usize| {
            while flows.len() < target && attempts < max_attempts {
                attempts += 1;
                let s = flow_in(&env, Host::S1, sa(s1, 0), e1_reflector());
                let local = s.local_addr().expect("local_addr");
                match probe(
                    &s,
                    format!("pb {attempts}").as_bytes(),
                    Duration::from_secs(2),
                ) {
                    Probe::Answered(o) => {
                        keep.add(&s);
                        flows.push((s, o));
                    }
                    other => refused_early.push(format!(
                        "attempt {attempts} from {local} while holding {} ports: {other:?}",
                        flows.len()
                    )),
                }
            }
        };
    let ports_in = |p: &Placement, flows: &[(UdpSocket, SocketAddrV4)]| -> Vec<SocketAddrV4> {
        flows
            .iter()
            .map(|(_, o)| *o)
            .filter(|o| !p.contains(*o))
            .collect()
    };

    // 40 flows: one block.
    open(&mut flows, 40, 80);
    let first_ext = flows.first().map(|(_, o)| *o.ip());
    match env.forward(s1) {
        Ok(p) => {
            c.check(p.ranges.len() == 1, || {
                format!(
                    "after 40 flows forward shows {:?}, expected one block of 64",
                    p.ranges
                )
            });
            c.check(
                p.ranges.iter().all(|(lo, hi)| hi - lo == 63 && *lo >= 1024),
                || format!("blocks are not 64 ports above 1023: {:?}", p.ranges),
            );
            c.check(Some(p.external) == first_ext, || {
                format!("forward says {}, e1 saw {first_ext:?}", p.external)
            });
            let out = ports_in(&p, &flows);
            c.check(out.is_empty(), || {
                format!("after 40 flows, e1 saw ports outside {p:?}: {out:?}")
            });
        }
        Err(e) => {
            c.check(false, || format!("cgnat forward {s1} after 40 flows: {e}"));
        }
    }
    // 80 flows: a second block.
    open(&mut flows, 80, 160);
    match env.forward(s1) {
        Ok(p) => {
            c.check(p.ranges.len() == 2, || {
                format!(
                    "after 80 flows forward shows {:?}, expected two blocks",
                    p.ranges
                )
            });
            let out = ports_in(&p, &flows);
            c.check(out.is_empty(), || {
                format!("after 80 flows, e1 saw ports outside {p:?}: {out:?}")
            });
        }
        Err(e) => {
            c.check(false, || format!("cgnat forward {s1} after 80 flows: {e}"));
        }
    }
    // Up to 128: both blocks entirely.
    open(&mut flows, 128, 260);
    c.check(flows.len() == 128 && refused_early.is_empty(), || {
        format!(
            "the subscriber could not use the 128 ports of its 2 blocks: {} flows answered \
             in {attempts} attempts; refused while below 128 ports ({}):\n    {}",
            flows.len(),
            refused_early.len(),
            refused_early.join("\n    ")
        )
    });
    let held = flows.len();
    // Beyond: every further flow fails, and never reaches e1.
    let mut beyond = Vec::new();
    for i in 0..10 {
        let s = flow_in(&env, Host::S1, sa(s1, 0), e1_reflector());
        let payload = format!("beyond {i}");
        let r = probe(&s, payload.as_bytes(), Duration::from_secs(2));
        beyond.push((payload, r));
    }
    if held == 128 {
        let passed: Vec<_> = beyond
            .iter()
            .filter(|(_, r)| r.answered().is_some())
            .collect();
        c.check(passed.is_empty(), || {
            format!("flows beyond the 128 ports of 2 blocks got through: {passed:?}")
        });
        let refused = beyond.iter().filter(|(_, r)| r.host_unreachable()).count();
        c.check(refused > 0, || {
            format!("no flow beyond the limit got ICMP 3/1 (EHOSTUNREACH): {beyond:?}")
        });
    }
    let ext = first_ext.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let seen_ports: BTreeSet<u16> = refl
        .received()
        .iter()
        .filter(|d| *d.from.ip() == ext)
        .map(|d| d.from.port())
        .collect();
    c.check(seen_ports.len() <= 128, || {
        format!(
            "e1 saw {} distinct ports from {ext}, more than 2 blocks of 64",
            seen_ports.len()
        )
    });
    let placement = env.forward(s1);
    match &placement {
        Ok(p) => {
            c.check(p.ranges.len() <= 2, || {
                format!("more than max_blocks: {p:?}")
            });
            let out = ports_in(p, &flows);
            c.check(out.is_empty(), || {
                format!("e1 saw ports outside {p:?}: {out:?}")
            });
            let stray: Vec<_> = seen_ports
                .iter()
                .filter(|port| !p.contains(sa(ext, **port)))
                .collect();
            c.check(stray.is_empty(), || {
                format!(
                    "e1 saw ports of {ext} outside the blocks {:?}: {stray:?}",
                    p.ranges
                )
            });
        }
        Err(e) => {
            c.check(false, || format!("cgnat forward {s1} at the limit: {e}"));
        }
    }
    // The first flows still work, with the same external endpoints.
    for (i, (s, o)) in flows.iter().take(5).enumerate() {
        let r = probe(s, format!("again {i}").as_bytes(), T);
        c.check(r == Probe::Answered(*o), || {
            format!("flow {i} ({o}) at the limit: {r:?}")
        });
    }
    // cgnat reverse names the subscriber for a port of each block.
    if let Ok(p) = &placement {
        for &(lo, hi) in &p.ranges {
            if let Some((_, o)) = flows.iter().find(|(_, o)| (lo..=hi).contains(&o.port())) {
                match env.reverse(*o) {
                    Ok(r) => {
                        c.check(r.subscriber == s1, || {
                            format!("cgnat reverse {o} says {r:?}, expected {s1}")
                        });
                    }
                    Err(e) => {
                        c.check(false, || format!("cgnat reverse {o}: {e}"));
                    }
                }
            }
        }
    }
    // Another subscriber still works, in a block of its own.
    let s2 = Host::S2.addr();
    let s2_sock = flow_in(&env, Host::S2, sa(s2, 0), e1_reflector());
    match probe(&s2_sock, b"s2 while s1 is full", T) {
        Probe::Answered(o) => match env.forward(s2) {
            Ok(p2) => {
                c.check(p2.ranges.len() == 1 && p2.contains(o), || {
                    format!("s2's port {o} is not in its block: {p2:?}")
                });
                if let Ok(p1) = &placement {
                    let overlap = p1.external == p2.external
                        && p1
                            .ranges
                            .iter()
                            .any(|&(a, b)| p2.ranges.iter().any(|&(x, y)| a <= y && x <= b));
                    c.check(!overlap, || format!("s1 {p1:?} and s2 {p2:?} share ports"));
                }
                match env.reverse(o) {
                    Ok(r) => {
                        c.check(r.subscriber == s2, || {
                            format!("cgnat reverse {o} says {r:?}, expected {s2}")
                        });
                    }
                    Err(e) => {
                        c.check(false, || format!("cgnat reverse {o}: {e}"));
                    }
                }
            }
            Err(e) => {
                c.check(false, || format!("cgnat forward {s2}: {e}"));
            }
        },
        other => {
            c.check(false, || format!("s2 while s1 is at its limit: {other:?}"));
        }
    }
    // Idle: sessions expire (udp = 2s), bindings and blocks are released.
    drop(keep);
    let old = flows.first().map(|(_, o)| *o);
    drop(flows);
    drop(s2_sock);
    let idle = Instant::now();
    let released = wait_until(
        Duration::from_secs(12),
        Duration::from_millis(250),
        || match env.forward(s1) {
            Ok(p) if p.ranges.is_empty() => Some(format!("{p:?}")),
            Err(e) if e.contains("holds nothing") => Some(e),
            _ => None,
        },
    );
    eprintln!("blocks released after {:?}: {released:?}", idle.elapsed());
    c.check(released.is_some(), || {
        format!(
            "12 s after the flows went idle (udp = 2s) the blocks are still held: {:?}\n{}",
            env.forward(s1),
            env.report(&[s1, s2])
        )
    });
    if let (Some(_), Some(o)) = (&released, old) {
        let r = env.reverse(o);
        c.check(
            r.as_ref().map(|p| p.subscriber != s1).unwrap_or(true),
            || format!("cgnat reverse {o} still names {s1} after release: {r:?}"),
        );
    }
    if !c.0.is_empty() {
        eprintln!("{}", env.report(&[s1, s2]));
    }
    c.finish();
}

// ---------------------------------------------------------------------------
// 3. Deterministic NAT
// ---------------------------------------------------------------------------

/// Deterministic mode (RFC 7422): every external endpoint e1 observes lies
/// in the range `cgnat forward` gives the subscriber, `cgnat reverse` of it
/// names the subscriber, and both answer from the config alone once the
/// daemon has stopped.
#[test]
fn deterministic_mapping() {
    let Some(tb) = testbed() else { return };
    // 65536 subscribers on 24 addresses would leave 23 ports each.
    let crowded = Toml::new(&tb)
        .set("nat", "internal_prefixes", "[\"100.64.0.0/16\"]")
        .set("pool", "mode", "\"deterministic\"");
    let path = tb
        .write_config("crowded.toml", &crowded.0)
        .expect("write config");
    let (ok, out) = cli_direct(&["check"], &path);
    assert!(
        !ok && out.contains("pool.mode"),
        "cgnat check must refuse deterministic mode with 23 ports per subscriber: {out}"
    );

    let extra: [(Host, Ipv4Addr); 4] = [
        (Host::S1, Ipv4Addr::new(100, 64, 3, 1)),
        (Host::S1, Ipv4Addr::new(100, 64, 42, 200)),
        (Host::S2, Ipv4Addr::new(100, 64, 21, 77)),
        (Host::S2, Ipv4Addr::new(100, 64, 63, 254)),
    ];
    for (h, a) in extra {
        add_addrs(&tb, h, &[a]);
    }
    // 16384 subscribers on 24 addresses: 94 ports each.
    let toml = Toml::new(&tb)
        .set("nat", "internal_prefixes", "[\"100.64.0.0/18\"]")
        .set("pool", "mode", "\"deterministic\"");
    let mut env = Bed::pools(tb, toml);
    let refl = UdpReflector::start(&env.tb, Host::E1, e1_reflector()).expect("reflector e1");
    let _srv = TcpServer::start(&env.tb, Host::E1, e1_tcp()).expect("tcp server e1");
    let mut subs: Vec<(Host, Ipv4Addr)> =
        vec![(Host::S1, Host::S1.addr()), (Host::S2, Host::S2.addr())];
    subs.extend(extra);

    let mut placements: BTreeMap<Ipv4Addr, Placement> = BTreeMap::new();
    let mut observed: Vec<(Ipv4Addr, SocketAddrV4, &str)> = Vec::new();
    for &(h, a) in &subs {
        let p = env
            .forward(a)
            .unwrap_or_else(|e| panic!("cgnat forward {a}: {e}"));
        assert_eq!(p.subscriber, a, "{p:?}");
        assert!(
            in_pool(p.external),
            "{a}: external {} not in the pool",
            p.external
        );
        assert_eq!(p.ranges.len(), 1, "{a}: one port range expected: {p:?}");
        let (lo, hi) = p.ranges[0];
        assert!(
            lo >= 1024 && hi >= lo && u32::from(hi - lo) + 1 >= 64,
            "{a}: range {lo}-{hi} (at least 64 ports above 1023 expected)"
        );
        for i in 0..4 {
            let s = flow_in(&env, h, sa(a, 0), e1_reflector());
            match probe(&s, format!("det {a} {i}").as_bytes(), T) {
                Probe::Answered(o) => observed.push((a, o, "udp")),
                other => panic!("UDP flow {i} from {a}: {other:?}"),
            }
        }
        let who = env
            .tb
            .in_ns(h, move || {
                tcp_from(sa(a, 0), e1_tcp(), Duration::from_secs(10))
                    .map_err(|e| e.to_string())
                    .and_then(|mut s| tcp_whoami(&mut s, T).map_err(|e| e.to_string()))
            })
            .expect("in_ns")
            .unwrap_or_else(|e| panic!("TCP from {a}: {e}"));
        observed.push((a, who, "tcp"));
        placements.insert(a, p);
    }
    eprintln!("placements: {placements:#?}");
    assert!(refl.received().iter().all(|d| in_pool(*d.from.ip())));

    // Distinct subscribers never share ports.
    let list: Vec<&Placement> = placements.values().collect();
    for (i, a) in list.iter().enumerate() {
        for b in &list[i + 1..] {
            let (x, y) = (a.ranges[0], b.ranges[0]);
            assert!(
                a.external != b.external || x.1 < y.0 || y.1 < x.0,
                "{a:?} and {b:?} overlap"
            );
        }
    }
    // What e1 saw lies in the ranges; reverse names the subscriber.
    for (a, o, proto) in &observed {
        let p = &placements[a];
        assert!(
            p.contains(*o),
            "{proto} from {a}: e1 saw {o}, outside {p:?}"
        );
        let r = env
            .reverse(*o)
            .unwrap_or_else(|e| panic!("cgnat reverse {o}: {e}"));
        assert_eq!(r.subscriber, *a, "cgnat reverse {o}: {r:?}");
    }
    // The running daemon placed them there.
    let listed: BTreeMap<String, String> = env
        .subscribers()
        .into_iter()
        .filter_map(|o| Some((o.get("subscriber")?.clone(), o.get("external")?.clone())))
        .collect();
    for (a, p) in &placements {
        assert_eq!(
            listed.get(&a.to_string()),
            Some(&p.external.to_string()),
            "cgnat subscribers vs forward for {a}"
        );
    }

    // Without the daemon: the same answers from the config alone.
    let (status, _) = env.stop();
    assert!(status.success(), "cgnat exited with {status}");
    // With its own config, and with a copy whose pin path holds nothing.
    let alone = Toml(env.config_text.clone()).set(
        "daemon",
        "pin_path",
        &format!("\"{}\"", env.tb.dir().join("no-such-pins").display()),
    );
    let alone = env
        .tb
        .write_config("alone.toml", &alone.0)
        .expect("write config");
    for config in [&env.config, &alone] {
        for (a, p) in &placements {
            let (ok, out) = cli_direct(&["forward", &a.to_string()], config);
            assert!(
                ok,
                "cgnat forward {a} without the daemon ({}): {out}",
                config.display()
            );
            assert_eq!(
                parse_placement(&out).as_ref(),
                Some(p),
                "cgnat forward {a} without the daemon ({}): {out}",
                config.display()
            );
        }
        for (a, o, _) in &observed {
            let (ok, out) = cli_direct(&["reverse", &o.to_string()], config);
            assert!(
                ok,
                "cgnat reverse {o} without the daemon ({}): {out}",
                config.display()
            );
            assert_eq!(
                parse_placement(&out).map(|p| p.subscriber),
                Some(*a),
                "cgnat reverse {o} without the daemon ({}): {out}",
                config.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Per-subscriber limits
// ---------------------------------------------------------------------------

/// `limits.ports = 10`: the 11th and 12th UDP flows of a subscriber are
/// refused with ICMP 3/1 from the router; its first 10 keep working, TCP
/// (another protocol) and other subscribers are unaffected.
#[test]
fn limit_ports_per_subscriber() {
    let Some(tb) = testbed() else { return };
    let toml = Toml::new(&tb).set("limits", "ports", "10");
    let env = Bed::pools(tb, toml);
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, e1_reflector()).expect("reflector e1");
    let _srv = TcpServer::start(tb, Host::E1, e1_tcp()).expect("tcp server e1");
    let sniff = tb.sniff(Host::S1).expect("sniffer s1");
    let before = env.counters();
    let s1 = Host::S1.addr();

    let mut flows = Vec::new();
    for i in 0..12 {
        let s = flow_in(&env, Host::S1, Host::S1.sock(0), e1_reflector());
        let r = probe(&s, format!("lim {i}").as_bytes(), T);
        flows.push((s, r));
    }
    let results: Vec<&Probe> = flows.iter().map(|(_, r)| r).collect();
    for (i, r) in results.iter().enumerate().take(10) {
        assert!(r.answered().is_some(), "flow {i} under the limit: {r:?}");
    }
    for (i, r) in results.iter().enumerate().skip(10) {
        assert!(
            r.host_unreachable(),
            "flow {i} over limits.ports = 10: {r:?} (expected EHOSTUNREACH from ICMP 3/1)\n{}",
            env.report(&[s1])
        );
    }
    let ext = *results[0].answered().expect("answered").ip();
    let through: BTreeSet<SocketAddrV4> = refl
        .received()
        .iter()
        .filter(|d| d.payload.starts_with(b"lim "))
        .map(|d| d.from)
        .collect();
    assert_eq!(through.len(), 10, "e1 saw these sources: {through:?}");
    assert!(
        !refl
            .received()
            .iter()
            .any(|d| d.payload == b"lim 10" || d.payload == b"lim 11"),
        "a refused flow reached e1"
    );
    thread::sleep(Duration::from_millis(100));
    let unreach: Vec<_> = sniff
        .seen()
        .into_iter()
        .filter(|p| !p.outgoing && p.icmp == Some((3, 1)))
        .collect();
    assert!(
        unreach.len() >= 2 && unreach.iter().all(|p| p.src == ROUTER_INT && p.dst == s1),
        "s1 should get ICMP 3/1 from {ROUTER_INT} for each refused flow: {unreach:?}"
    );

    // The first 10 keep their mappings.
    for (i, (s, r)) in flows.iter().take(10).enumerate() {
        let again = probe(s, format!("lim again {i}").as_bytes(), T);
        assert_eq!(&again, r, "flow {i} at the limit");
    }
    let me = env
        .subscribers()
        .into_iter()
        .find(|o| o.get("subscriber").map(String::as_str) == Some("100.64.0.11"))
        .expect("s1 in cgnat subscribers");
    assert_eq!(me.get("udp").map(String::as_str), Some("10"), "{me:?}");
    // The limit is per protocol: TCP still opens, from the same address.
    let mut c = tb
        .tcp_connect(Host::S1, None, e1_tcp(), Duration::from_secs(10))
        .expect("TCP from s1 while its UDP is at the limit");
    let who = tcp_whoami(&mut c, T).expect("WHO");
    assert_eq!(*who.ip(), ext, "TCP left from another address than UDP");
    // Other subscribers are unaffected.
    for i in 0..3 {
        let s = flow_in(&env, Host::S2, Host::S2.sock(0), e1_reflector());
        let r = probe(&s, format!("s2 {i}").as_bytes(), T);
        assert!(r.answered().is_some(), "s2 flow {i}: {r:?}");
    }
    let after = env.counters();
    let grew = |n: &str| counter(&after, n) - counter(&before, n);
    assert!(
        grew("drop_subscriber_limit") + grew("icmp_host_unreach") >= 2,
        "neither drop_subscriber_limit nor icmp_host_unreach counted the refusals: \
         before {before:?}, after {after:?}"
    );
}

/// `limits.new_mappings_per_second = 5`: of a burst of 30 new flows in
/// well under a second, about 5 (at most 10) get through; the rest get
/// ICMP 3/1; a second later new flows open again.
#[test]
fn limit_new_mappings_per_second() {
    let Some(tb) = testbed() else { return };
    let toml = Toml::new(&tb).set("limits", "new_mappings_per_second", "5");
    let env = Bed::pools(tb, toml);
    let tb = &env.tb;
    let refl = UdpReflector::start(tb, Host::E1, e1_reflector()).expect("reflector e1");
    // Neighbours first: the router learns e1 through s2 and s1 through a
    // ping to the router (which creates no mapping for s1).
    let s2 = flow_in(&env, Host::S2, Host::S2.sock(0), e1_reflector());
    assert!(probe(&s2, b"warm up", T).answered().is_some(), "s2 warm-up");
    let p = tb.ping(Host::S1, ROUTER_INT, 2).expect("ping router");
    assert!(p.received >= 1, "s1 cannot ping the router: {p:?}");

    let socks: Vec<UdpSocket> = (0..30)
        .map(|_| flow_in(&env, Host::S1, Host::S1.sock(0), e1_reflector()))
        .collect();
    let t0 = Instant::now();
    for (i, s) in socks.iter().enumerate() {
        s.send(format!("burst {i}").as_bytes()).expect("send");
    }
    let burst = t0.elapsed();
    assert!(
        burst < Duration::from_millis(500),
        "the burst took {burst:?}"
    );
    thread::sleep(Duration::from_millis(600));
    let through: BTreeSet<Vec<u8>> = refl
        .received()
        .into_iter()
        .filter(|d| d.payload.starts_with(b"burst "))
        .map(|d| d.payload)
        .collect();
    let mut refused = 0;
    let mut buf = [0u8; 2048];
    for s in &socks {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        loop {
            match s.recv(&mut buf) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(nix::libc::EHOSTUNREACH) => {
                    refused += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    eprintln!(
        "burst of 30 in {burst:?}: {} reached e1, {refused} refused",
        through.len()
    );
    assert!(
        (5..=10).contains(&through.len()),
        "{} of 30 new flows in {burst:?} reached e1 with new_mappings_per_second = 5\n{}",
        through.len(),
        env.report(&[Host::S1.addr()])
    );
    assert!(
        refused >= 30 - through.len() - 2,
        "only {refused} of the {} refused flows got ICMP 3/1",
        30 - through.len()
    );
    // The bucket refills.
    thread::sleep(Duration::from_millis(1500));
    let s = flow_in(&env, Host::S1, Host::S1.sock(0), e1_reflector());
    let r = probe(&s, b"after the burst", T);
    assert!(
        r.answered().is_some(),
        "a new flow 1.5 s after the burst: {r:?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Static mappings
// ---------------------------------------------------------------------------

const STATIC_TCP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 2222);
const STATIC_UDP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 6000);

/// `[[static]]` tcp 100.64.0.11:2222 = 203.0.113.9:2222 and udp
/// 100.64.0.11:5000 = 203.0.113.9:6000: reachable from outside without
/// prior traffic (whatever the filtering), hairpinnable, used by s1's own
/// outbound traffic from those ports, and never handed to other flows.
fn static_mappings(apdf: bool) {
    let Some(tb) = testbed() else { return };
    let extra = addrs([100, 64, 2], 144);
    add_addrs(&tb, Host::S2, &extra);
    let mut toml = Toml::new(&tb).raw(
        "[[static]]\nproto = \"tcp\"\ninternal = \"100.64.0.11:2222\"\nexternal = \"203.0.113.9:2222\"\n\n\
         [[static]]\nproto = \"udp\"\ninternal = \"100.64.0.11:5000\"\nexternal = \"203.0.113.9:6000\"\n",
    );
    if apdf {
        toml = toml
            .set("filtering", "tcp", "\"address-and-port-dependent\"")
            .set("filtering", "udp", "\"address-and-port-dependent\"");
    }
    let env = Bed::pools(tb, toml);
    let tb = &env.tb;
    let s1_tcp = TcpServer::start(tb, Host::S1, Host::S1.sock(2222)).expect("tcp server s1");
    let s1_udp = UdpReflector::start(tb, Host::S1, Host::S1.sock(5000)).expect("reflector s1");
    let refl = UdpReflector::start(tb, Host::E1, e1_reflector()).expect("reflector e1");
    let _srv = TcpServer::start(tb, Host::E1, e1_tcp()).expect("tcp server e1");

    // From outside, first: s1 has sent nothing yet.
    for e in [Host::E1, Host::E3] {
        let mut c = tb
            .tcp_connect(e, None, STATIC_TCP, Duration::from_secs(10))
            .unwrap_or_else(|err| panic!("{e} -> {STATIC_TCP}: {err}"));
        let local = c.local_addr().expect("local_addr");
        let saw =
            tcp_whoami(&mut c, T).unwrap_or_else(|err| panic!("{e} -> {STATIC_TCP} WHO: {err}"));
        assert_eq!(
            std::net::SocketAddr::V4(saw),
            local,
            "s1's listener must see {e}'s real address"
        );
        let sock = tb.udp_socket(e, e.sock(0)).expect("udp socket");
        let r = udp_exchange(
            &sock,
            STATIC_UDP,
            format!("static udp from {e}").as_bytes(),
            T,
        )
        .unwrap_or_else(|err| panic!("{e} -> {STATIC_UDP} (answers must come from it): {err}"));
        assert_eq!(
            std::net::SocketAddr::V4(r.observed),
            sock.local_addr().unwrap(),
            "s1's UDP server must see {e}'s real address"
        );
    }

    // UDP from s1:2222 is not the static (TCP) mapping: a dynamic one.
    let s1_2222 = flow_in(&env, Host::S1, Host::S1.sock(2222), e1_reflector());
    let x1 = probe(&s1_2222, b"udp from s1:2222", T)
        .answered()
        .expect("UDP from s1:2222 works");
    assert!(in_pool(*x1.ip()), "{x1}");
    assert_ne!(
        x1, STATIC_UDP,
        "UDP from s1:2222 took the UDP static endpoint"
    );

    // Hairpin: s2 reaches both through the pool address and s1 sees s2's
    // external endpoints.
    let s2_tcp_local = Host::S2.sock(45000);
    let mut c = tb
        .tcp_connect(
            Host::S2,
            Some(s2_tcp_local),
            e1_tcp(),
            Duration::from_secs(10),
        )
        .expect("s2 -> e1");
    let x2_tcp = tcp_whoami(&mut c, T).expect("WHO e1");
    let mut c = tb
        .tcp_connect(
            Host::S2,
            Some(s2_tcp_local),
            STATIC_TCP,
            Duration::from_secs(10),
        )
        .expect("s2 -> static TCP (hairpin)");
    let saw = tcp_whoami(&mut c, T).expect("WHO s1 via hairpin");
    assert_eq!(saw, x2_tcp, "s1 must see s2's external TCP endpoint");
    let s2_sock = tb
        .udp_socket(Host::S2, Host::S2.sock(46000))
        .expect("s2 udp");
    let x2_udp = udp_exchange(&s2_sock, e1_reflector(), b"s2 learns", T)
        .expect("s2 -> e1")
        .observed;
    let r = udp_exchange(&s2_sock, STATIC_UDP, b"hairpin to the static UDP", T)
        .expect("s2 -> static UDP (hairpin)");
    assert_eq!(r.observed, x2_udp, "s1 must see s2's external UDP endpoint");

    // The filtering setting is really in force (APDF: e3 never heard of
    // s2's mapping and is dropped; EIF: admitted).
    let e3 = tb.udp_socket(Host::E3, Host::E3.sock(9999)).expect("e3");
    let got = udp_send_until_received(
        &e3,
        x2_udp,
        b"unsolicited",
        &s2_sock,
        Duration::from_millis(1500),
    );
    if apdf {
        assert!(
            got.is_err(),
            "APDF: e3 reached s2's mapping {x2_udp}: {got:?}"
        );
    } else {
        assert!(
            got.is_ok(),
            "EIF: e3 could not reach s2's mapping {x2_udp}: {got:?}"
        );
    }

    // Dynamic flows never get the static endpoints: subscribers placed on
    // 203.0.113.9 that send from the same source ports get other ones.
    let ns2 = tb.ns_path(Host::S2);
    let mut on_static_addr = 0;
    let mut tried = 0;
    for batch in extra.chunks(24) {
        let res = par_in_ns(&ns2, batch.to_vec(), 8, |a| {
            let s = udp_flow(sa(a, 6000), e1_reflector());
            let u = probe(
                &s,
                format!("collide {a}").as_bytes(),
                Duration::from_secs(8),
            );
            let t = tcp_from(sa(a, 2222), e1_tcp(), Duration::from_secs(10))
                .map_err(|e| e.to_string())
                .and_then(|mut s| tcp_whoami(&mut s, T).map_err(|e| e.to_string()));
            (a, u, t)
        });
        for (a, u, t) in res {
            tried += 1;
            let u = u
                .answered()
                .unwrap_or_else(|| panic!("UDP from {a}:6000 failed"));
            let t = t.unwrap_or_else(|e| panic!("TCP from {a}:2222: {e}"));
            assert_ne!(u, STATIC_UDP, "{a}:6000/udp was given the static endpoint");
            assert_ne!(t, STATIC_TCP, "{a}:2222/tcp was given the static endpoint");
            if *u.ip() == *STATIC_UDP.ip() {
                on_static_addr += 1;
            }
        }
        if on_static_addr >= 2 {
            break;
        }
    }
    eprintln!(
        "{on_static_addr} of {tried} subscribers were placed on {}",
        STATIC_UDP.ip()
    );
    assert!(
        on_static_addr >= 1,
        "none of {tried} subscribers was placed on {}: the collision check proved nothing",
        STATIC_UDP.ip()
    );
    // The static mappings still work after all that.
    let sock = tb
        .udp_socket(Host::E2, Host::E2.sock(0))
        .expect("e2 socket");
    udp_exchange(&sock, STATIC_UDP, b"static udp at the end", T).expect("e2 -> static UDP");
    assert!(refl.received().iter().all(|d| in_pool(*d.from.ip())));

    // s1's own outbound traffic from the mapped ports uses the mappings
    // (once its servers have freed the ports).
    drop(s1_tcp);
    drop(s1_udp);
    let mut c = tb
        .tcp_connect(
            Host::S1,
            Some(Host::S1.sock(2222)),
            e1_tcp(),
            Duration::from_secs(10),
        )
        .expect("s1:2222 -> e1");
    assert_eq!(
        tcp_whoami(&mut c, T).expect("WHO"),
        STATIC_TCP,
        "TCP from s1:2222"
    );
    let s1_5000 = flow_in(&env, Host::S1, Host::S1.sock(5000), e1_reflector());
    assert_eq!(
        probe(&s1_5000, b"udp from s1:5000", T),
        Probe::Answered(STATIC_UDP),
        "UDP from s1:5000"
    );
}

#[test]
fn static_mappings_endpoint_independent() {
    static_mappings(false);
}

#[test]
fn static_mappings_address_and_port_dependent() {
    static_mappings(true);
}

// ---------------------------------------------------------------------------
// 6. NAT exemptions
// ---------------------------------------------------------------------------

/// `nat.exempt = ["198.51.100.20/32", "198.51.100.30/32:5353"]`: traffic to
/// e2 (any port) and to e3:5353 leaves untranslated and its replies come
/// back; e1 and e3:5354 are translated; e1, not exempt, still cannot reach
/// a subscriber directly.
#[test]
fn nat_exemptions() {
    let Some(tb) = testbed() else { return };
    for h in Host::EXTERNALS {
        tb.ip(h, &["route", "add", "100.64.0.0/10", "via", "198.51.100.1"])
            .unwrap_or_else(|e| panic!("route on {h}: {e}"));
    }
    let toml = Toml::new(&tb).set(
        "nat",
        "exempt",
        "[\"198.51.100.20/32\", \"198.51.100.30/32:5353\"]",
    );
    let env = Bed::pools(tb, toml);
    let tb = &env.tb;
    let before = env.counters();
    let r_e1 = UdpReflector::start(tb, Host::E1, e1_reflector()).expect("reflector e1");
    let _r_e2 = UdpReflector::start(tb, Host::E2, Host::E2.sock(7000)).expect("reflector e2");
    let _r_e3a = UdpReflector::start(tb, Host::E3, Host::E3.sock(5353)).expect("reflector e3:5353");
    let _r_e3b = UdpReflector::start(tb, Host::E3, Host::E3.sock(5354)).expect("reflector e3:5354");
    let _srv_e2 = TcpServer::start(tb, Host::E2, Host::E2.sock(TCP_PORT)).expect("tcp e2");
    let sniff_e2 = tb.sniff(Host::E2).expect("sniffer e2");

    let local = Host::S1.sock(40100);
    let sock = tb.udp_socket(Host::S1, local).expect("s1 socket");
    let ex = |dst: SocketAddrV4| {
        udp_exchange(&sock, dst, format!("to {dst}").as_bytes(), T)
            .unwrap_or_else(|e| panic!("s1 -> {dst}: {e}"))
            .observed
    };
    assert_eq!(
        ex(Host::E2.sock(7000)),
        local,
        "exempt e2 must see s1 untranslated"
    );
    let x = ex(e1_reflector());
    assert!(in_pool(*x.ip()), "e1 (not exempt) saw {x}");
    assert_eq!(
        ex(Host::E3.sock(5353)),
        local,
        "exempt e3:5353 must see s1 untranslated"
    );
    let y = ex(Host::E3.sock(5354));
    assert!(in_pool(*y.ip()), "e3:5354 (not exempt) saw {y}");
    assert_eq!(
        x, y,
        "one binding, two remotes: endpoint-independent mapping"
    );

    let mut c = tb
        .tcp_connect(
            Host::S1,
            None,
            Host::E2.sock(TCP_PORT),
            Duration::from_secs(10),
        )
        .expect("TCP s1 -> e2");
    let l = c.local_addr().expect("local_addr");
    let saw = tcp_whoami(&mut c, T).expect("WHO e2");
    assert_eq!(
        std::net::SocketAddr::V4(saw),
        l,
        "exempt e2 must see TCP from s1 untranslated"
    );
    let p = tb.ping(Host::S1, Host::E2.addr(), 3).expect("ping e2");
    assert!(p.received >= 2, "ping s1 -> e2: {p:?}");
    thread::sleep(Duration::from_millis(100));
    let echo: Vec<_> = sniff_e2
        .seen()
        .into_iter()
        .filter(|s| !s.outgoing && s.icmp == Some((8, 0)))
        .collect();
    assert!(
        !echo.is_empty() && echo.iter().all(|s| s.src == Host::S1.addr()),
        "e2 must get s1's echo requests untranslated: {echo:?}"
    );
    // No session for exempt traffic; one for e1.
    let sessions = env.sessions();
    let remotes: Vec<String> = sessions
        .iter()
        .filter_map(|s| s.get("remote").cloned())
        .collect();
    assert!(
        !remotes
            .iter()
            .any(|r| r.starts_with("198.51.100.20:") || r == "198.51.100.30:5353"),
        "sessions for exempt traffic: {remotes:?}"
    );
    assert!(
        remotes.iter().any(|r| *r == e1_reflector().to_string()),
        "no session for s1 -> e1: {remotes:?}"
    );
    let mid = env.counters();
    let grew = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, n: &str| {
        counter(b, n) - counter(a, n)
    };
    assert!(
        grew(&before, &mid, "fwd_exempt") >= 8,
        "fwd_exempt grew by {} only: before {before:?}, after {mid:?}",
        grew(&before, &mid, "fwd_exempt")
    );

    // e1 is not exempt: it cannot reach s1's internal address directly.
    let sink = UdpReflector::start(tb, Host::S1, sa(Ipv4Addr::UNSPECIFIED, 7001)).expect("sink s1");
    let sniff_s1 = tb.sniff(Host::S1).expect("sniffer s1");
    let e1 = tb
        .udp_socket(Host::E1, Host::E1.sock(6001))
        .expect("e1 socket");
    for _ in 0..10 {
        e1.send_to(b"direct to a subscriber", Host::S1.sock(7001))
            .expect("send");
        thread::sleep(Duration::from_millis(50));
    }
    let p = tb.ping(Host::E1, Host::S1.addr(), 2).expect("ping from e1");
    thread::sleep(Duration::from_millis(500));
    assert!(
        sink.received().is_empty(),
        "s1 received {:?}",
        sink.received()
    );
    assert_eq!(p.received, 0, "e1 pinged s1's internal address: {p:?}");
    let leaked: Vec<_> = sniff_s1
        .seen()
        .into_iter()
        .filter(|s| !s.outgoing && s.src == Host::E1.addr())
        .collect();
    assert!(
        leaked.is_empty(),
        "s1 received from e1 directly: {leaked:?}"
    );
    let after = env.counters();
    assert!(
        grew(&mid, &after, "drop_to_internal") >= 10,
        "drop_to_internal grew by {}: before {mid:?}, after {after:?}",
        grew(&mid, &after, "drop_to_internal")
    );
    assert!(r_e1.received().iter().all(|d| in_pool(*d.from.ip())));
}

/// The placement of bpf/pool.h, simulated for the subscribers of
/// [`paired_pooling_at_scale`] on the test bed's 24 pool addresses: `two`
/// takes the less loaded of the hashed and a random address (ties to the
/// hashed one), else the hashed one (`hash`) or a random one alone.
/// Returns the loads.
fn simulate_placement(
    subs: &[Ipv4Addr],
    pool: u32,
    rng: &mut pools::SplitMix,
    mode: &str,
) -> Vec<usize> {
    let mut load = vec![0usize; pool as usize];
    let mut order = subs.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for sub in order {
        // pool_choose() in bpf/pool.h
        let a = ((u64::from(u32::from(sub).wrapping_mul(0x9E37_79B1)) * u64::from(pool)) >> 32)
            as usize;
        let b = rng.below(u64::from(pool)) as usize;
        let pick = match mode {
            "two" if load[b] < load[a] => b,
            "two" | "hash" => a,
            _ => b,
        };
        load[pick] += 1;
    }
    load
}

/// Why [`PLACEMENT_EXCESS`] is what it is: over 20,000 seeded placements
/// of the 202 subscribers, two choices leave 0 subscribers above
/// ⌈average⌉ + 1 in 19,000, 1 in 945, 2 in 51, 3 in 4 and never more,
/// while one random choice stays within 4 in 227 (1.1 %) and the hash
/// alone, deterministic for these addresses, leaves 15. The real
/// placements run 16 at a time and may read a load a moment old; the
/// bound is one above the worst simulated for that.
#[test]
fn placement_bound_separates_two_choices_from_one() {
    let subs = placement_subscribers();
    let pool = pool_addrs().len() as u32;
    let mut rng = pools::SplitMix(0x51_u64);
    let runs = 20_000;
    let mut two = vec![0usize; 64];
    let mut one = vec![0usize; 256];
    for _ in 0..runs {
        two[placement_excess(&simulate_placement(&subs, pool, &mut rng, "two")).min(63)] += 1;
        one[placement_excess(&simulate_placement(&subs, pool, &mut rng, "random")).min(255)] += 1;
    }
    let hash = placement_excess(&simulate_placement(&subs, pool, &mut rng, "hash"));
    let within = |h: &[usize]| h[..=PLACEMENT_EXCESS].iter().sum::<usize>();
    eprintln!(
        "excess above the average + 1 over {runs} placements: two choices {:?}; one random choice within {PLACEMENT_EXCESS}: {}; the hash alone: {hash}",
        two.iter().enumerate().filter(|(_, n)| **n > 0).collect::<Vec<_>>(),
        within(&one)
    );
    assert_eq!(within(&two), runs, "two choices exceed the bound");
    assert!(
        within(&one) * 50 < runs,
        "one random choice meets the bound too often"
    );
    assert!(hash > PLACEMENT_EXCESS, "the hash alone meets the bound");
}
