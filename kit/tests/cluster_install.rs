//! Installing a peer's records in batches (`install::install_all`) against
//! installing them one by one (`install::install`): two loaded data paths
//! take the same random records, chunk by chunk, one each way, and must
//! give every record the same outcome and end with the same tables. The
//! records draw from a few endpoints, so a chunk holds records that
//! conflict with each other and with local entries (a static mapping),
//! quarantines, removals and the same key more than once.
//!
//! And a node's reads of the tables those records leave (`state::scan_into`,
//! which reuses the last read's lists, as the engine does) and its diffs
//! of them (`Sent::diff`).

use std::net::Ipv4Addr;
use std::path::Path;

use cgnat::bpf::{types, Datapath, LoadOptions, Tables};
use cgnat::cluster::install::{install, install_all, Outcome};
use cgnat::cluster::state::{self, Policy, Sent, Snapshot};
use cgnat::cluster::wire::Record;
use cgnat::config::Config;
use cgnat::expiry::monotonic_ns;
use cgnat_kit::rng::Rng;

const UDP: u8 = 17;
const TCP: u8 = 6;

fn config() -> Config {
    let text = r#"
[interfaces]
internal = "int0"
external = "ext0"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["203.0.113.0/28"]
max_sessions = 4096
max_bindings = 1024
[daemon]
pin_path = "/sys/fs/bpf/cgnat-cluster-install-test-unused"
"#;
    Config::parse(text, Path::new("(cluster install test)")).expect("test config")
}

fn load(cfg: &Config) -> Datapath {
    Datapath::load(
        cfg,
        LoadOptions {
            attach: false,
            pin: false,
        },
    )
    .expect("load the program (needs root)")
}

fn pick<T: Copy>(rng: &mut Rng, from: &[T]) -> T {
    from[rng.below(from.len() as u64) as usize]
}

const EXT: [Ipv4Addr; 2] = [Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)];
const INT: [Ipv4Addr; 3] = [
    Ipv4Addr::new(100, 64, 0, 1),
    Ipv4Addr::new(100, 64, 0, 2),
    Ipv4Addr::new(100, 64, 0, 3),
];
const REM: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
];

/// A random record over a small universe of endpoints.
fn record(rng: &mut Rng) -> Record {
    let proto = pick(rng, &[UDP, UDP, TCP]);
    let ext_addr = pick(rng, &EXT);
    let ext_port = 1024 + rng.below(6) as u16;
    let int_port = 5000 + rng.below(4) as u16;
    match rng.below(10) {
        0..=3 => {
            let quarantine = rng.below(5) == 0;
            Record::Binding {
                proto,
                // a quarantine carries its age in milliseconds here
                int_addr: if quarantine {
                    Ipv4Addr::from(rng.below(5000) as u32)
                } else {
                    pick(rng, &INT)
                },
                int_port,
                ext_addr,
                ext_port,
                flags: if quarantine {
                    types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8
                } else {
                    0
                },
            }
        }
        4 => Record::BindingGone {
            proto,
            ext_addr,
            ext_port,
        },
        5..=8 => Record::Session {
            proto,
            ext_addr,
            ext_port,
            rem_addr: pick(rng, &REM),
            rem_port: 80 + rng.below(3) as u16,
            int_addr: pick(rng, &INT),
            int_port,
            flags: rng.below(16) as u8,
            tcp: rng.below(64) as u32,
            idle_ms: rng.below(10_000) as u32,
        },
        _ => Record::SessionGone {
            proto,
            ext_addr,
            ext_port,
            rem_addr: pick(rng, &REM),
            rem_port: 80 + rng.below(3) as u16,
        },
    }
}

/// Rows as bytes (key, then value), sorted.
fn sorted<K: cgnat::bpf::Pod, V: cgnat::bpf::Pod>(rows: Vec<(K, V)>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = rows
        .iter()
        .map(|(k, v)| [cgnat::bpf::bytes_of(k), cgnat::bpf::bytes_of(v)].concat())
        .collect();
    out.sort();
    out
}

/// Everything the records can change: sessions, inbound and outbound
/// halves.
fn contents(t: &Tables) -> [Vec<Vec<u8>>; 3] {
    [
        sorted(t.sessions.dump().expect("sessions")),
        sorted(t.bindings.dump().expect("inbound halves")),
        sorted(t.bindings.dump_out().expect("outbound halves")),
    ]
}

#[test]
fn batches_install_what_records_one_by_one_install() {
    let cfg = config();
    let (dp_one, dp_all) = (load(&cfg), load(&cfg));
    let (one, all) = (
        dp_one.tables().expect("tables"),
        dp_all.tables().expect("tables"),
    );
    // a static mapping on both: records for its port conflict
    let ek = types::cgnat_endpoint {
        addr: u32::from(EXT[0]).to_be(),
        port: 1025u16.to_be(),
        proto: UDP,
        _pad: 0,
    };
    let inbound = types::cgnat_binding {
        addr: u32::from(INT[2]).to_be(),
        port: 7000u16.to_be(),
        flags: types::cgnat_binding_flag::CGNAT_BIND_STATIC.0 as u8,
        sweep_sessions: 0,
    };
    let outbound = types::cgnat_binding {
        addr: ek.addr,
        port: ek.port,
        flags: types::cgnat_binding_flag::CGNAT_BIND_STATIC.0 as u8,
        sweep_sessions: 0,
    };
    for t in [&one, &all] {
        t.bindings
            .upsert(&ek, &inbound, &outbound)
            .expect("static mapping");
    }

    let mut rng = Rng(0x5eed_1e57_c1a5_7e42);
    let now_ns = monotonic_ns();
    let mut seen = [0u64; 3];
    for round in 0..400 {
        let n = 1 + rng.below(70) as usize;
        let recs: Vec<Record> = (0..n).map(|_| record(&mut rng)).collect();
        let want: Vec<Outcome> = recs
            .iter()
            .map(|r| install(&one, r, now_ns, 8).expect("install"))
            .collect();
        let got: Vec<Outcome> = install_all(&all, &recs, now_ns, 8)
            .into_iter()
            .map(|r| r.expect("install_all"))
            .collect();
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w, g, "round {round}, record {i} ({:?})", recs[i]);
        }
        assert_eq!(
            contents(&one),
            contents(&all),
            "round {round}: the tables differ"
        );
        for o in want {
            seen[o as usize] += 1;
        }
    }
    // the records did reach every outcome
    assert!(
        seen[Outcome::Applied as usize] > 1000 && seen[Outcome::Conflict as usize] > 100,
        "outcomes applied, conflict, ignored: {seen:?}"
    );
}

#[test]
fn a_reused_read_and_its_diff_follow_the_tables() {
    let cfg = config();
    let dp = load(&cfg);
    let t = dp.tables().expect("tables");
    let all = |_: Ipv4Addr| true;
    let policy = Policy {
        session_age: std::time::Duration::ZERO,
        refresh: std::time::Duration::from_secs(3600),
    };
    let mut rng = Rng(0x5ca7_7e2d_d1ff_0001);
    let now_ns = monotonic_ns();
    let mut reused = Snapshot::default();
    let mut sent = Sent::default();
    for round in 0..200 {
        let n = 1 + rng.below(40) as usize;
        let recs: Vec<Record> = (0..n).map(|_| record(&mut rng)).collect();
        for r in install_all(&t, &recs, now_ns, 8) {
            r.expect("install_all");
        }
        state::scan_into(&t, &all, &mut reused);
        let fresh = state::scan(&t, &all);
        assert_eq!(reused.bindings, fresh.bindings, "round {round}");
        assert_eq!(reused.sessions, fresh.sessions, "round {round}");
        assert!(
            fresh.sessions.windows(2).all(|w| w[0].0 < w[1].0)
                && fresh.bindings.windows(2).all(|w| w[0].0 < w[1].0),
            "round {round}: slots ascend"
        );
        sent.diff(&reused, now_ns, policy, usize::MAX);
        assert!(
            sent.diff(&reused, now_ns, policy, usize::MAX).is_empty(),
            "round {round}: a second diff of the same read"
        );
        // what the peers were told is what the tables hold
        let told = sent.records(now_ns);
        let count = |f: fn(&Record) -> bool| told.iter().filter(|r| f(r)).count();
        assert_eq!(
            count(|r| matches!(r, Record::Binding { .. })),
            fresh.bindings.len(),
            "round {round}"
        );
        assert_eq!(
            count(|r| matches!(r, Record::Session { .. })),
            fresh.sessions.len(),
            "round {round}"
        );
        assert!(told.iter().all(|r| sent.is_current(r)), "round {round}");
    }
    assert!(!reused.sessions.is_empty() && !reused.bindings.is_empty());
}
