//! End-to-end fault tests (issue #8): the daemon killed with SIGKILL and
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

use cgnat::testbed::{Host, UdpReflector};
use hostile::{map_len, pool, status_num, subscribers, wait_until, FlowReport, FlowSpec, Traffic};
use ops::{q, Bed};

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

/// Each flow: answered (≥ 90 %), one external endpoint all along, no
/// foreign reply, no silence of 2 s or more. Returns (sent, replies).
fn check_flows(what: &str, reps: &[FlowReport], specs: &[FlowSpec]) -> (u64, u64) {
    let (mut sent, mut got) = (0, 0);
    for (r, s) in reps.iter().zip(specs) {
        assert!(
            r.foreign.is_empty(),
            "{what}: {s:?}: foreign replies {:?}",
            r.foreign
        );
        assert_eq!(
            r.observed.len(),
            1,
            "{what}: {s:?} seen as {:?}",
            r.observed
        );
        assert!(
            r.replies * 10 >= r.sent * 9,
            "{what}: {s:?}: {} replies to {} datagrams",
            r.replies,
            r.sent
        );
        assert!(
            r.longest_gap < Duration::from_secs(2),
            "{what}: {s:?}: silent for {:?}",
            r.longest_gap
        );
        sent += r.sent;
        got += r.replies;
    }
    (sent, got)
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

/// Short-lived flows opened in the background (one datagram each, new
/// socket each time), alternating s1 and s2: their sessions expire while
/// the steady flows live on. Returns the number opened.
struct Churn {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<u64>>,
}

impl Churn {
    fn start(bed: &Bed, dst: SocketAddrV4) -> Churn {
        // Sockets are made up front (in their namespaces) and used once.
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
            for (i, (_, s)) in socks.iter().enumerate() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                if s.send_to(format!("C{i}").as_bytes(), dst).is_ok() {
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
/// counts, `status` and the sessions listed. Returns the number of
/// bindings.
fn reconcile(bed: &Bed, cfg: &Path) -> u64 {
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
    bindings
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
    // Let sweeps run: the churn's sessions expire (2 s) while the steady
    // flows stay.
    let churned = churn.finish();
    let sweeps_seen = wait_until(Duration::from_secs(8), || {
        status_num(&bed, &cfg, "sessions") == specs.len() as u64
    });
    assert!(
        sweeps_seen,
        "the short-lived sessions did not expire: {:?}",
        bed.sessions(&cfg)
    );
    assert!(
        bed.log().contains("expired"),
        "no sweep reported expired sessions:\n{}",
        bed.log()
    );
    // Mid-run reconciliation: only the steady flows are left.
    let live_bindings = reconcile(&bed, &cfg);
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
    assert!(
        checked >= sent * 9 / 10,
        "the reflectors saw {checked} of {sent}"
    );
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
    assert!(
        churn_checked * 10 >= churned * 9,
        "churn: {churn_checked} of {churned} arrived"
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
    assert_eq!(reconcile(&bed, &cfg), 0);
    for m in ["sessions", "bind_in", "bind_out", "subscribers"] {
        assert_eq!(map_len(&pin, m), 0, "pinned map {m} not empty at the end");
    }
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
            ("bindings_reconciled_mid_run", live_bindings),
            ("seconds", started.elapsed().as_secs()),
        ],
    );
}
