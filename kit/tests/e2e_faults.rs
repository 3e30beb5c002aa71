//! End-to-end fault tests: the daemon killed with SIGKILL and
//! started again, reloaded over and over, and sweeping expired sessions,
//! all under steady traffic; interfaces going down and up, the external
//! address changing, the external interface deleted and re-created. The
//! real `cgnat` binary runs in the router namespace of a [`Testbed`];
//! every datagram's source is checked where it arrives (the reflectors
//! echo it back), and the daemon's accounting is reconciled through its
//! `--json` commands and the pinned maps' sizes. Every test prints its case
//! counts.
//!
//! Every test needs root (see `common::require_root`: under `CI=true` a
//! test that cannot run fails).

mod common;
mod hostile;
mod ops;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use cgnat_kit::testbed::{
    in_pool, udp_exchange, udp_send_until_received, Host, UdpReflector, EXTERNAL_IF, INTERNAL_IF,
    POOL, ROUTER_EXT, ROUTER_INT,
};
use hostile::{
    check_flows, counters, delta, get, map_len, pool, status_num, subscribers, wait_until,
    FlowReport, FlowSpec, Traffic,
};
use ops::{q, Bed};

const T: Duration = Duration::from_secs(5);
const REFL: u16 = 7000;

fn report(test: &str, items: &[(&str, u64)]) {
    let s: Vec<String> = items.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!("CASES {test}: {}", s.join(", "));
}

/// SIGKILL: the daemon dies without any clean-up; returns its log.
fn kill9(bed: &mut Bed) -> String {
    bed.signal(Signal::SIGKILL);
    let mut c = bed.daemon.take().expect("cgnat is running");
    let st = c.process().stop(Duration::from_secs(10));
    let log = c.log();
    bed.old_logs.push(log.clone());
    assert!(
        matches!(&st, Ok(s) if !s.success()),
        "cgnat after SIGKILL: {st:?}"
    );
    log
}

/// At the reflectors: every datagram of flow `F<i>` came from that flow's
/// one external endpoint. Returns the number of datagrams checked.
fn check_receivers(refls: &[&UdpReflector], reps: &[FlowReport], specs: &[FlowSpec]) -> u64 {
    let mut checked = 0;
    for refl in refls {
        for d in refl.received() {
            let text = String::from_utf8_lossy(&d.payload).into_owned();
            let Some(i) = text
                .strip_prefix('F')
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            assert_eq!(
                specs[i].dst,
                refl.addr(),
                "flow {i}'s datagram at {}",
                refl.addr()
            );
            let want = reps[i]
                .observed
                .iter()
                .next()
                .expect("an observed endpoint");
            assert_eq!(
                &d.from,
                want,
                "{:?} arrived at {} from {}",
                text,
                refl.addr(),
                d.from
            );
            checked += 1;
        }
    }
    checked
}

/// Short-lived flows opened in the background until stopped: one datagram
/// `C<n>` every 50 ms, each from the next of 400 sockets (even `n` from
/// s1, odd from s2). A socket comes round again after 20 s, long after its
/// session expired (2 s), so each datagram opens a new flow whose session
/// expires while the steady flows live on. Returns the number sent.
struct Churn {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<u64>>,
}

impl Churn {
    fn start(bed: &Bed, dst: SocketAddrV4) -> Churn {
        // Sockets are made up front (in their namespaces).
        let socks: Vec<(Host, std::net::UdpSocket)> = (0..400)
            .map(|i| {
                let h = if i % 2 == 0 { Host::S1 } else { Host::S2 };
                (h, bed.tb.udp_socket(h, h.sock(0)).expect("churn socket"))
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut n = 0;
            while !stop2.load(Ordering::Relaxed) {
                let (_, s) = &socks[n as usize % socks.len()];
                if s.send_to(format!("C{n}").as_bytes(), dst).is_ok() {
                    n += 1;
                }
                thread::sleep(Duration::from_millis(50));
            }
            n
        });
        Churn {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("churn thread")
    }
}

/// Bindings, ports and sessions reconcile across every view: the
/// subscribers' per-protocol port counts, the pool's per-address binding
/// counts, `status` and the sessions listed. Returns the number of live
/// bindings and of ports in quarantine.
fn reconcile(bed: &Bed, cfg: &Path) -> (u64, u64) {
    let subs = subscribers(bed, cfg);
    let pool = pool(bed, cfg);
    let sessions = bed.sessions(cfg);
    let bindings = status_num(bed, cfg, "bindings");
    let sum = |f: &dyn Fn(&hostile::PoolRow) -> u64| pool.iter().map(f).sum::<u64>();
    let live = sum(&|r| r.tcp + r.udp + r.icmp);
    assert_eq!(
        bindings,
        live + sum(&|r| r.quarantined),
        "status bindings vs pool (live + quarantined): {pool:?}"
    );
    assert_eq!(
        subs.iter().map(|s| s.tcp + s.udp + s.icmp).sum::<u64>(),
        live,
        "ports held by subscribers vs live bindings in the pool:\n{subs:?}\n{pool:?}"
    );
    assert_eq!(
        status_num(bed, cfg, "sessions"),
        sessions.len() as u64,
        "status sessions vs listed"
    );
    for s in &subs {
        let mine: Vec<_> = sessions
            .iter()
            .filter(|x| x.internal.ip() == &s.subscriber)
            .collect();
        let eps: BTreeSet<(SocketAddrV4, SocketAddrV4)> =
            mine.iter().map(|x| (x.internal, x.external)).collect();
        assert_eq!(s.sessions, mine.len() as u64, "{s:?}: sessions {mine:?}");
        assert_eq!(
            s.udp,
            eps.len() as u64,
            "{s:?}: bindings in sessions {eps:?}"
        );
        assert!(
            eps.iter().all(|(_, e)| *e.ip() == s.external),
            "{s:?}: a session left by another address: {eps:?}"
        );
        let row = pool.iter().find(|r| r.address == s.external);
        assert!(row.is_some(), "{s:?}: external address not in the pool");
    }
    let pool_subs: u64 = pool.iter().map(|r| r.subscribers).sum();
    assert_eq!(
        pool_subs,
        subs.len() as u64,
        "pool subscribers vs subscribers"
    );
    (live, bindings - live)
}

/// Steady UDP flows (s1 and s2 to e1 and e2) while the daemon is killed
/// with SIGKILL and started again three times, reloaded with SIGHUP twelve
/// times, and sweeps expire the short-lived flows opened meanwhile: no
/// datagram is answered late or from another endpoint, every datagram
/// arrived from its flow's one external endpoint, and at the end the
/// accounting reconciles and everything expires, leaving no binding, port
/// or subscriber behind.
#[test]
fn kill_reload_and_sweeps_under_traffic_lose_nothing() {
    let Some(mut bed) = Bed::new() else { return };
    let t = bed
        .toml(false)
        .set("timeouts", "udp", &q("2s"))
        .set("daemon", "sweep_interval", &q("200ms"))
        .set("nat", "port_quarantine", &q("1s"));
    let cfg = bed.write("faults.toml", &t);
    bed.start(&cfg);
    let started = Instant::now();
    let e1 = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(REFL)).expect("reflector e1");
    let e2 = UdpReflector::start(&bed.tb, Host::E2, Host::E2.sock(REFL)).expect("reflector e2");
    let specs: Vec<FlowSpec> = (0..6u16)
        .map(|i| {
            let host = if i < 3 { Host::S1 } else { Host::S2 };
            FlowSpec {
                host,
                local: host.sock(5000 + i),
                dst: if i % 2 == 0 { e1.addr() } else { e2.addr() },
            }
        })
        .collect();
    let traffic = Traffic::start(&bed.tb, specs.clone(), Duration::from_millis(25));
    let churn = Churn::start(&bed, e1.addr());
    thread::sleep(Duration::from_millis(500));

    let mut kills = 0;
    let mut reloads = 0;
    for round in 0..3 {
        kill9(&mut bed);
        kills += 1;
        // The data path forwards on without a daemon.
        thread::sleep(Duration::from_millis(700));
        let c = bed.start(&cfg);
        assert!(
            c.attached_line().contains("adopted"),
            "restart {round} did not adopt the pinned state: {}",
            c.attached_line()
        );
        for _ in 0..4 {
            bed.signal(Signal::SIGHUP);
            reloads += 1;
            bed.wait_log(
                |l| l.contains("SIGHUP") && l.contains("reloaded"),
                reloads - 4 * round,
                Duration::from_secs(30),
            )
            .unwrap_or_else(|e| panic!("reload {reloads}: {e}"));
            thread::sleep(Duration::from_millis(150));
        }
    }
    // Sweeps ran and expired sessions while daemons were being killed and
    // reloaded (the killed daemons' logs say so).
    let expired_during_faults: u64 = bed
        .old_logs
        .iter()
        .flat_map(|l| l.lines())
        .filter_map(|l| l.split_once("cgnat: sweep: "))
        // "N sessions live, M expired; ..."
        .filter_map(|(_, r)| {
            r.split("live, ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        expired_during_faults > 0,
        "no sweep expired anything in the killed daemons:\n{}",
        bed.old_logs.join("\n---\n")
    );
    // Let sweeps run: the churn's sessions expire (2 s) while the steady
    // flows stay.
    let churned = churn.finish();
    let churn_end = Instant::now();
    // (A binding outlives its last session by up to a sweep.)
    let sweeps_seen = wait_until(Duration::from_secs(8), || {
        status_num(&bed, &cfg, "sessions") == specs.len() as u64
            && subscribers(&bed, &cfg).iter().map(|s| s.udp).sum::<u64>() == specs.len() as u64
    });
    assert!(
        sweeps_seen,
        "the short-lived sessions and bindings did not expire: {:?}\n{:?}",
        bed.sessions(&cfg),
        subscribers(&bed, &cfg)
    );
    // the sweep logs after it has deleted (status may see the tables
    // first)
    assert!(
        wait_until(Duration::from_secs(3), || bed.log().contains("expired")),
        "no sweep reported expired sessions:\n{}",
        bed.log()
    );
    // Mid-run reconciliation: only the steady flows are left.
    let (live_bindings, quarantined) = reconcile(&bed, &cfg);
    eprintln!("mid-run: {live_bindings} live bindings, {quarantined} ports in quarantine, {:?} after the churn", churn_end.elapsed());
    let subs = subscribers(&bed, &cfg);
    for h in [Host::S1, Host::S2] {
        let s = subs
            .iter()
            .find(|s| s.subscriber == h.addr())
            .expect("subscriber");
        assert_eq!((s.udp, s.sessions), (3, 3), "{h}: {s:?}");
    }
    let reps = traffic.finish();
    let (sent, got) = check_flows("steady flows", &reps, &specs);
    let checked = check_receivers(&[&e1, &e2], &reps, &specs);
    assert_eq!(checked, sent, "datagrams at the reflectors of those sent");
    // Paired pooling held: each churn datagram left by its subscriber's
    // one external address.
    let ext_of: BTreeMap<Ipv4Addr, Ipv4Addr> = [Host::S1, Host::S2]
        .iter()
        .map(|h| {
            let i = specs.iter().position(|s| s.host == *h).expect("a flow");
            (
                h.addr(),
                *reps[i].observed.iter().next().expect("observed").ip(),
            )
        })
        .collect();
    let mut churn_checked = 0;
    for d in e1.received() {
        if let Some(i) = std::str::from_utf8(&d.payload)
            .ok()
            .and_then(|t| t.strip_prefix('C'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            let sub = if i % 2 == 0 { Host::S1 } else { Host::S2 };
            assert_eq!(
                Some(d.from.ip()),
                ext_of.get(&sub.addr()),
                "churn datagram {i} of {sub} arrived from {}",
                d.from
            );
            churn_checked += 1;
        }
    }
    assert_eq!(
        churn_checked, churned,
        "churn datagrams arrived of those sent"
    );

    // Everything expires: nothing leaks.
    let empty = wait_until(Duration::from_secs(10), || {
        status_num(&bed, &cfg, "bindings") == 0 && status_num(&bed, &cfg, "subscribers") == 0
    });
    let pin = bed.tb.pin_path();
    assert!(
        empty,
        "left after expiry: status {:?}, pool {:?}",
        hostile::json(&bed, &cfg, "status"),
        pool(&bed, &cfg)
    );
    assert_eq!(reconcile(&bed, &cfg), (0, 0));
    let tables = cgnat::bpf::Tables::open_pinned(&pin).expect("opening the pinned tables");
    let sessions = tables.sessions.count().expect("counting sessions");
    assert_eq!(sessions, 0, "pinned map sessions not empty at the end");
    let bindings = [
        ("bind_in", tables.bindings.count()),
        ("outbound halves", tables.bindings.count_out()),
    ];
    for (m, n) in bindings {
        assert_eq!(
            n.expect("counting bindings"),
            0,
            "pinned map {m} not empty at the end"
        );
    }
    assert_eq!(
        map_len(&pin, "subscribers"),
        0,
        "pinned map subscribers not empty at the end"
    );
    report(
        "kill_reload_and_sweeps_under_traffic_lose_nothing",
        &[
            ("sigkill_restarts", kills),
            ("sighup_reloads", reloads as u64),
            ("steady_sent", sent),
            ("steady_received", got),
            ("checked_at_receivers", checked),
            ("churn_flows", churned),
            ("churn_checked", churn_checked),
            ("live_bindings_mid_run", live_bindings),
            ("quarantined_mid_run", quarantined),
            ("expired_by_killed_daemons", expired_during_faults),
            ("seconds", started.elapsed().as_secs()),
        ],
    );
}

/// Exchanges on `sock` with `refl` until one succeeds (within `within`);
/// the external endpoint it was seen from.
fn recovers(
    sock: &std::net::UdpSocket,
    refl: SocketAddrV4,
    what: &str,
    within: Duration,
) -> SocketAddrV4 {
    let r = udp_exchange(sock, refl, what.as_bytes(), within)
        .unwrap_or_else(|e| panic!("no recovery after {what}: {e}"));
    r.observed
}

/// Waits until the daemon logged that ext0's address is now `addr` (it
/// looks once a second, see src/watch.rs).
fn noticed(bed: &Bed, addr: Ipv4Addr) {
    let last_is = || {
        bed.log()
            .lines()
            .rfind(|l| l.contains("address of ext0 changed"))
            .is_some_and(|l| l.contains(&format!(" to {addr}:")))
    };
    assert!(
        wait_until(Duration::from_secs(5), last_is),
        "cgnat did not notice ext0's address {addr}:\n{}",
        bed.log()
    );
}

/// The router's external address changes under a running cgnat: the ICMP
/// time-exceeded cgnat sends for a packet from e1 that dies at the router
/// must come from the router's current external address. Returns its source.
fn time_exceeded_source(bed: &Bed, ext: SocketAddrV4) -> Option<Ipv4Addr> {
    let sniff = bed.tb.sniff(Host::E1).expect("sniffer e1");
    let s = bed
        .tb
        .udp_socket(Host::E1, Host::E1.sock(7777))
        .expect("socket e1");
    s.set_ttl(1).expect("IP_TTL");
    for _ in 0..5 {
        s.send_to(b"ttl 1", ext).expect("send");
        thread::sleep(Duration::from_millis(200));
        if let Some(p) = sniff
            .seen()
            .into_iter()
            .find(|p| !p.outgoing && p.icmp == Some((11, 0)))
        {
            return Some(p.src);
        }
    }
    None
}

/// Interfaces going down and up (inside, outside) and the external address
/// deleted and restored, moved to another subnet and back, and renumbered
/// within its subnet, all while cgnat runs: the daemon stays up with its
/// programs attached, traffic recovers each time with the same mappings,
/// and the ICMP errors cgnat generates follow the interface's address.
#[test]
fn interfaces_down_up_and_address_changes() {
    let Some(mut bed) = Bed::new() else { return };
    let cfg = bed.write("faults.toml", &bed.toml(true));
    bed.start(&cfg);
    let started = Instant::now();
    let e1 = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(REFL)).expect("reflector e1");
    let s1 = bed
        .tb
        .udp_socket(Host::S1, Host::S1.sock(5000))
        .expect("socket s1");
    let s2 = bed
        .tb
        .udp_socket(Host::S2, Host::S2.sock(5000))
        .expect("socket s2");
    let x1 = recovers(&s1, e1.addr(), "start", T);
    let x2 = recovers(&s2, e1.addr(), "start", T);
    assert!(in_pool(*x1.ip()) && in_pool(*x2.ip()));
    let r = Host::Router;
    let ext_net = format!("{ROUTER_EXT}/24");
    let mut events = 0u64;
    let mut recovered = 0u64;
    let mut slowest = Duration::ZERO;
    let mut check = |bed: &mut Bed, what: &str| {
        events += 1;
        for (s, x, h) in [(&s1, x1, Host::S1), (&s2, x2, Host::S2)] {
            let t0 = Instant::now();
            assert_eq!(
                recovers(s, e1.addr(), what, Duration::from_secs(15)),
                x,
                "{h} after {what}"
            );
            slowest = slowest.max(t0.elapsed());
            recovered += 1;
        }
        assert!(bed.alive(), "cgnat died after {what}:\n{}", bed.log());
        for ifname in [INTERNAL_IF, EXTERNAL_IF] {
            assert_eq!(
                bed.tb.xdp_mode(ifname).expect("ip link").as_deref(),
                Some("xdp"),
                "{ifname} lost its XDP program after {what}"
            );
        }
    };
    for ifname in [INTERNAL_IF, EXTERNAL_IF] {
        bed.tb
            .ip(r, &["link", "set", "dev", ifname, "down"])
            .expect("down");
        thread::sleep(Duration::from_millis(1500));
        bed.tb
            .ip(r, &["link", "set", "dev", ifname, "up"])
            .expect("up");
        check(&mut bed, &format!("{ifname} down/up"));
    }
    bed.tb
        .ip(r, &["addr", "del", &ext_net, "dev", EXTERNAL_IF])
        .expect("addr del");
    thread::sleep(Duration::from_millis(1500));
    bed.tb
        .ip(r, &["addr", "add", &ext_net, "dev", EXTERNAL_IF])
        .expect("addr add");
    check(&mut bed, "the external address deleted and restored");

    bed.tb
        .ip(r, &["addr", "del", &ext_net, "dev", EXTERNAL_IF])
        .expect("addr del");
    bed.tb
        .ip(r, &["addr", "add", "198.18.0.1/24", "dev", EXTERNAL_IF])
        .expect("addr add");
    thread::sleep(Duration::from_millis(2000));
    assert!(
        bed.alive(),
        "cgnat died when ext0 moved to another subnet:\n{}",
        bed.log()
    );
    bed.tb
        .ip(r, &["addr", "del", "198.18.0.1/24", "dev", EXTERNAL_IF])
        .expect("addr del");
    bed.tb
        .ip(r, &["addr", "add", &ext_net, "dev", EXTERNAL_IF])
        .expect("addr add");
    check(&mut bed, "ext0 moved to another subnet and back");

    // Renumbered within the subnet (the upstream follows): ICMP errors
    // cgnat generates on ext0 must use the new address.
    noticed(&bed, ROUTER_EXT);
    assert_eq!(
        time_exceeded_source(&bed, x1),
        Some(ROUTER_EXT),
        "11/0 before renumbering"
    );
    let new_ext = Ipv4Addr::new(198, 51, 100, 2);
    // (Deleting a primary address deletes its secondaries: delete first.)
    bed.tb
        .ip(r, &["addr", "del", &ext_net, "dev", EXTERNAL_IF])
        .expect("addr del");
    bed.tb
        .ip(
            r,
            &["addr", "add", &format!("{new_ext}/24"), "dev", EXTERNAL_IF],
        )
        .expect("addr add");
    for h in Host::EXTERNALS {
        for p in cgnat_kit::testbed::POOL {
            bed.tb
                .ip(h, &["route", "replace", p, "via", &new_ext.to_string()])
                .expect("route");
        }
    }
    check(&mut bed, "ext0 renumbered");
    noticed(&bed, new_ext);
    let src = time_exceeded_source(&bed, x1);
    assert_eq!(
        src,
        Some(new_ext),
        "11/0 after ext0 was renumbered to {new_ext}"
    );
    report(
        "interfaces_down_up_and_address_changes",
        &[
            ("events", events),
            ("flows_recovered_same_mapping", recovered),
            ("slowest_recovery_ms", slowest.as_millis() as u64),
            ("seconds", started.elapsed().as_secs()),
        ],
    );
}

/// Re-creates a router interface as the test bed built it: a veth whose
/// peer `r` sits on `switch`, with the router's address `addr`. Returns the
/// XDP_PASS link on the peer (see `TestbedOptions::peer_xdp_pass`).
fn recreate(
    bed: &Bed,
    ifname: &str,
    switch: Host,
    addr: &str,
    mac: &str,
) -> cgnat_kit::floor::PassLink {
    let r = Host::Router;
    let sw_ns = bed.tb.ns(switch).to_owned();
    // the same MAC, as a NIC that comes back keeps its own: the hosts'
    // neighbour entries stay right (cgnat translates only frames sent to
    // the interface's MAC)
    let peer = [
        "link", "add", ifname, "address", mac, "type", "veth", "peer", "name", "r", "netns", &sw_ns,
    ];
    bed.tb.ip(r, &peer).expect("veth");
    bed.tb
        .ip(switch, &["link", "set", "r", "master", "br0"])
        .expect("bridge port");
    bed.tb.ip(switch, &["link", "set", "r", "up"]).expect("up");
    bed.tb
        .run(switch, &["ethtool", "-K", "r", "gro", "on"])
        .expect("gro");
    let pass = bed
        .tb
        .attach_xdp_pass(switch, "r")
        .expect("xdp_pass on the peer");
    bed.tb
        .ip(r, &["addr", "add", addr, "dev", ifname])
        .expect("address");
    bed.tb.ip(r, &["link", "set", ifname, "up"]).expect("up");
    pass
}

/// A NAT interface is deleted under a running cgnat (the external one,
/// then the internal one): the daemon must not live on silently with its
/// program gone. It exits (status 1) within a few seconds with one message
/// naming the interface; once the interface is back, a new start adopts
/// the pinned tables and every mapping is kept.
#[test]
fn deleted_interface_stops_the_daemon_clearly_and_restart_adopts() {
    let Some(mut bed) = Bed::new() else { return };
    let cfg = bed.write("faults.toml", &bed.toml(false));
    bed.start(&cfg);
    let e1 = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(REFL)).expect("reflector e1");
    let s1 = bed
        .tb
        .udp_socket(Host::S1, Host::S1.sock(5000))
        .expect("socket s1");
    let x1 = recovers(&s1, e1.addr(), "start", T);
    let mut exits = Vec::new();
    let mut kept = 0u64;
    let mut passes = Vec::new();
    for (ifname, switch, addr) in [
        (EXTERNAL_IF, Host::SwitchExt, format!("{ROUTER_EXT}/24")),
        (INTERNAL_IF, Host::SwitchInt, format!("{ROUTER_INT}/10")),
    ] {
        let show = bed
            .tb
            .ip(Host::Router, &["-br", "link", "show", "dev", ifname])
            .expect("link show");
        let mac = show
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no MAC in {show:?}"))
            .to_owned();
        let t0 = Instant::now();
        bed.tb
            .ip(Host::Router, &["link", "del", ifname])
            .expect("link del");
        let exited = wait_until(Duration::from_secs(10), || !bed.alive());
        let log = bed.log();
        assert!(
            exited,
            "cgnat still running 10 s after {ifname} was deleted:\n{log}"
        );
        let took = t0.elapsed();
        let mut c = bed.daemon.take().expect("daemon");
        let status = c
            .process()
            .stop(Duration::from_secs(5))
            .expect("exit status");
        bed.old_logs.push(log.clone());
        assert_eq!(
            status.code(),
            Some(1),
            "exit status after {ifname} was deleted:\n{log}"
        );
        let msgs: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("error") && l.contains(ifname))
            .collect();
        assert_eq!(
            msgs.len(),
            1,
            "one clear error naming {ifname} expected:\n{log}"
        );
        eprintln!(
            "cgnat exited {took:?} after {ifname} was deleted: {}",
            msgs[0]
        );
        exits.push(took);

        passes.push(recreate(&bed, ifname, switch, &addr, &mac));
        let c = bed.start(&cfg);
        assert!(
            c.attached_line().contains("adopted"),
            "{}",
            c.attached_line()
        );
        let what = format!("{ifname} re-created and cgnat restarted");
        assert_eq!(
            recovers(&s1, e1.addr(), &what, Duration::from_secs(15)),
            x1,
            "s1's mapping after {what}"
        );
        kept += 1;
    }
    report(
        "deleted_interface_stops_the_daemon_clearly_and_restart_adopts",
        &[
            ("interfaces_deleted", exits.len() as u64),
            (
                "max_exit_ms",
                exits
                    .iter()
                    .max()
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
            ("mappings_kept_after_restart", kept),
        ],
    );
}

/// The test bed's config with `nat.internal_prefixes` the /32 of each of
/// `hosts`.
fn with_prefixes(bed: &Bed, hosts: &[Host]) -> ops::Toml {
    let list: Vec<String> = hosts
        .iter()
        .map(|h| q(format!("{}/32", h.addr())))
        .collect();
    bed.toml(false).set(
        "nat",
        "internal_prefixes",
        &format!("[{}]", list.join(", ")),
    )
}

/// Reload `n` (counted from the start): `cfg` rewritten with `hosts`'
/// prefixes, SIGHUP, and the daemon says it reloaded.
fn reload_prefixes(bed: &mut Bed, cfg: &Path, hosts: &[Host], n: usize) {
    std::fs::write(cfg, with_prefixes(bed, hosts).0).expect("rewriting the config");
    bed.signal(Signal::SIGHUP);
    bed.wait_log(|l| l.contains("SIGHUP") && l.contains("reloaded"), n, T)
        .unwrap_or_else(|e| panic!("reload {n}: {e}"));
}

fn udp_sock(bed: &Bed, host: Host, port: u16) -> std::net::UdpSocket {
    bed.tb
        .udp_socket(host, host.sock(port))
        .unwrap_or_else(|e| panic!("UDP socket {host}:{port}: {e}"))
}

/// The source the reflector at `to` saw for a datagram of `s`.
fn observed(s: &std::net::UdpSocket, to: SocketAddrV4, what: &str) -> SocketAddrV4 {
    udp_exchange(s, to, what.as_bytes(), T)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .observed
}

/// `nat.internal_prefixes` changed by SIGHUP under running flows. A
/// subscriber whose prefix is removed drains, as a removed pool address
/// does: its established mapping keeps its external endpoint both ways
/// until it expires, and a new flow of it is no subscriber's (dropped and
/// counted `drop_spoofed`, nothing reaches the far end). The other prefix
/// is untouched, and a prefix added back serves new flows at once.
#[test]
fn reloaded_internal_prefixes_drain_what_they_drop() {
    let Some(mut bed) = Bed::new() else { return };
    let cfg = bed.write("prefixes.toml", &with_prefixes(&bed, &[Host::S1, Host::S2]));
    bed.start(&cfg);
    let e1 = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(REFL)).expect("reflector e1");
    let to = e1.addr();
    let s1 = udp_sock(&bed, Host::S1, 5000);
    let s2 = udp_sock(&bed, Host::S2, 5000);
    let x1 = observed(&s1, to, "s1 before the reload");
    let x2 = observed(&s2, to, "s2 before the reload");
    assert!(
        in_pool(*x1.ip()) && in_pool(*x2.ip()),
        "e1 saw {x1} and {x2}"
    );

    reload_prefixes(&mut bed, &cfg, &[Host::S2], 1);
    // s1's established mapping drains: same external endpoint, and the
    // replies come back
    assert_eq!(observed(&s1, to, "s1's old flow after the reload"), x1);
    assert_eq!(observed(&s2, to, "s2's old flow after the reload"), x2);
    let sniff = bed.tb.sniff(Host::E1).expect("sniffer on e1");
    let c0 = counters(&bed);
    let s1_new = udp_sock(&bed, Host::S1, 5001);
    for i in 0..10 {
        s1_new
            .send_to(format!("s1 new {i}").as_bytes(), to)
            .expect("send");
        thread::sleep(Duration::from_millis(20));
    }
    let s2_new = udp_sock(&bed, Host::S2, 5001);
    let y2 = observed(&s2_new, to, "s2's new flow after the reload");
    assert!(in_pool(*y2.ip()), "e1 saw s2's new flow from {y2}");
    thread::sleep(Duration::from_millis(300));
    let d = delta(&c0, &counters(&bed));
    assert_eq!(get(&d, "drop_spoofed"), 10, "counters grew by {d:?}");
    let leaked: Vec<_> = e1
        .received()
        .into_iter()
        .filter(|d| d.payload.starts_with(b"s1 new"))
        .collect();
    assert!(leaked.is_empty(), "s1's new flow reached e1: {leaked:?}");
    let seen = sniff.seen();
    assert!(
        !seen.iter().any(|p| p.src == Host::S1.addr()),
        "e1 saw s1's own address: {seen:?}"
    );
    let subs = subscribers(&bed, &cfg);
    assert_eq!(
        subs.iter()
            .find(|s| s.subscriber == Host::S1.addr())
            .map(|s| s.udp),
        Some(1),
        "s1 holds only its old binding: {subs:?}"
    );

    // s1's prefix back: a new flow is translated at once, the old one kept
    reload_prefixes(&mut bed, &cfg, &[Host::S1, Host::S2], 2);
    let y1 = observed(&s1_new, to, "s1's new flow with its prefix back");
    assert!(
        in_pool(*y1.ip()) && y1 != x1,
        "e1 saw s1's new flow from {y1}"
    );
    assert_eq!(observed(&s1, to, "s1's old flow with its prefix back"), x1);
    report(
        "reloaded_internal_prefixes_drain_what_they_drop",
        &[
            ("reloads", 2),
            ("new_flows_refused", get(&d, "drop_spoofed")),
        ],
    );
}

/// `nat.external_pool` changed by SIGHUP under a running flow. The pool
/// prefix of the flow's external address is removed: it drains while a
/// binding uses it (the flow keeps its external endpoint, its replies
/// still arrive, and another subscriber still reaches it hairpinned), and
/// a new subscriber gets an address of the prefix that stays.
#[test]
fn reloaded_pool_drains_the_prefix_it_drops() {
    let Some(mut bed) = Bed::new() else { return };
    let cfg = bed.write("pool.toml", &bed.toml(false));
    bed.start(&cfg);
    let e1 = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(REFL)).expect("reflector e1");
    let to = e1.addr();
    let s1 = udp_sock(&bed, Host::S1, 5000);
    let x1 = observed(&s1, to, "s1 before the reload");
    let in_prefix = |p: &str, a: Ipv4Addr| {
        p.parse::<ipnetwork::Ipv4Network>()
            .is_ok_and(|n| n.contains(a))
    };
    let (kept, dropped): (Vec<&str>, Vec<&str>) =
        POOL.iter().partition(|p| !in_prefix(p, *x1.ip()));
    assert_eq!(dropped.len(), 1, "{x1} is in one prefix of {POOL:?}");

    std::fs::write(
        &cfg,
        bed.toml(false)
            .set("nat", "external_pool", &format!("[{}]", q(kept[0])))
            .0,
    )
    .expect("rewriting the config");
    bed.signal(Signal::SIGHUP);
    bed.wait_log(|l| l.contains("SIGHUP") && l.contains("reloaded"), 1, T)
        .unwrap_or_else(|e| panic!("reload: {e}"));
    assert_eq!(
        observed(&s1, to, "s1's flow after its pool prefix was removed"),
        x1,
        "s1's flow changed its external endpoint"
    );
    let s2 = udp_sock(&bed, Host::S2, 5000);
    let y2 = observed(&s2, to, "a new subscriber after the reload");
    assert!(
        in_prefix(kept[0], *y2.ip()),
        "s2 got {y2}, outside the prefix left, {}",
        kept[0]
    );
    // the drained address is still the pool's: s2 reaches s1 through it
    let d = udp_send_until_received(&s2, x1, b"s2 to s1's drained mapping", &s1, T)
        .unwrap_or_else(|e| panic!("s2 -> {x1} hairpinned after the reload: {e}"));
    assert_eq!(d.from, y2, "s1 saw s2's hairpinned datagram from");
    report(
        "reloaded_pool_drains_the_prefix_it_drops",
        &[("reloads", 1), ("flows_kept", 1), ("hairpinned", 1)],
    );
}
