//! The session table (bpf/sessions.h) against a model: random inserts,
//! updates, upserts, lookups and deletes through the loaded program's
//! `session_ops`, then expiry by the in-kernel sweep (which reclaims
//! tombstones), must always agree with a map kept in Rust. A small table
//! makes probe sequences long and wrap inside their segments; the table
//! refuses beyond its size and never evicts.

use std::collections::BTreeMap;
use std::path::Path;

use cgnat::bpf::{types, Datapath, LoadOptions, Tables};
use cgnat::config::Config;
use cgnat::expiry::{compact_time, monotonic_ns, Sweeper};
use cgnat_kit::rng::Rng;

const SEC: u64 = 1_000_000_000;

type Key = types::cgnat_session_key;
type Session = types::cgnat_session;

fn config(max_sessions: u32) -> Config {
    let text = format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["203.0.113.0/28"]
max_sessions = {max_sessions}
max_bindings = 1024
[daemon]
pin_path = "/sys/fs/bpf/cgnat-session-table-test-unused"
"#
    );
    Config::parse(&text, Path::new("(session table test)")).expect("test config")
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

/// Key number i of a universe of keys: UDP sessions of one external
/// endpoint per 64 keys, to remotes that differ by address and port.
fn key(i: u32) -> Key {
    Key {
        ext_addr: u32::from_be_bytes([203, 0, 113, 1 + (i % 14) as u8]).to_be(),
        rem_addr: u32::from_be_bytes([198, 51, 100, (i / 64 % 250) as u8]).to_be(),
        ext_port: (1024 + (i / 14) as u16).to_be(),
        rem_port: (53 + (i % 64) as u16).to_be(),
        proto: 17,
        ..Default::default()
    }
}

fn session(i: u32, seen: u32, flags: u8) -> Session {
    Session {
        int_addr: u32::from_be_bytes([100, 64, 0, (i % 200) as u8]).to_be(),
        int_port: (20000 + (i % 30000) as u16).to_be(),
        flags,
        last_seen: seen,
        ..Default::default()
    }
}

fn bytes<T: cgnat::bpf::Pod>(v: &T) -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(cgnat::bpf::bytes_of(v));
    b
}

/// The table equals the model: every session read back by a dump and by a
/// lookup of its key, and the count.
fn agree(t: &Tables, model: &BTreeMap<[u8; 16], (Key, Session)>, universe: u32, when: &str) {
    let mut dumped: BTreeMap<[u8; 16], [u8; 16]> = BTreeMap::new();
    for (k, s) in t.sessions.dump().expect("dump") {
        assert!(
            dumped.insert(bytes(&k), bytes(&s)).is_none(),
            "{when}: a key is in the table twice"
        );
    }
    let want: BTreeMap<[u8; 16], [u8; 16]> =
        model.iter().map(|(b, (_, s))| (*b, bytes(s))).collect();
    assert_eq!(dumped, want, "{when}: dump differs from the model");
    assert_eq!(
        t.sessions.count().expect("count"),
        model.len() as u64,
        "{when}: count"
    );
    for i in 0..universe {
        let k = key(i);
        let got = t.sessions.get(&k).expect("get");
        assert_eq!(
            got.map(|s| bytes(&s)),
            model.get(&bytes(&k)).map(|(_, s)| bytes(s)),
            "{when}: lookup of key {i}"
        );
    }
}

/// Random operations and sweeps, checked against the model after each
/// round. The table holds 512 sessions in 16 segments of 64 slots, so
/// segments run full of live slots and tombstones.
#[test]
fn operations_and_sweeps_agree_with_a_model() {
    let cfg = config(512);
    let dp = load(&cfg);
    let t = dp.tables().expect("tables");
    let sweeper = Sweeper {
        timeouts: cfg.timeouts.clone(),
        quarantine: cfg.port_quarantine,
        blocks: None,
        pool: cfg.pool_addrs.clone(),
    };
    let universe = 1500u32;
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut model: BTreeMap<[u8; 16], (Key, Session)> = BTreeMap::new();
    let mut now = monotonic_ns() + 1000 * SEC;
    let (mut full, mut reclaimed_rounds) = (0u32, 0u32);
    for round in 0..12 {
        for _ in 0..2000 {
            let i = r.below(universe as u64) as u32;
            let k = key(i);
            let b = bytes(&k);
            // sessions seen long ago expire at the next two sweeps
            let old = r.below(3) == 0;
            let seen = compact_time(if old { now - 4000 * SEC } else { now });
            let v = session(i + round, seen, 0);
            match r.below(5) {
                0 | 1 => match t.sessions.insert_new(&k, &v) {
                    Ok(true) => {
                        assert!(!model.contains_key(&b), "insert of a present key {i}");
                        model.insert(b, (k, v));
                    }
                    Ok(false) => assert!(model.contains_key(&b), "insert refused key {i}"),
                    Err(e) => {
                        assert!(!model.contains_key(&b), "key {i}: {e}");
                        assert!(format!("{e}").contains("too long"), "key {i}: {e}");
                        full += 1;
                    }
                },
                2 => match t.sessions.upsert(&k, &v) {
                    Ok(()) => {
                        model.insert(b, (k, v));
                    }
                    Err(_) => {
                        assert!(
                            !model.contains_key(&b),
                            "upsert of a present key {i} failed"
                        );
                        full += 1;
                    }
                },
                3 => {
                    let there = t.sessions.update_existing(&k, &v).expect("update");
                    assert_eq!(there, model.contains_key(&b), "update of key {i}");
                    if there {
                        model.insert(b, (k, v));
                    }
                }
                _ => {
                    let there = t.sessions.delete(&k).expect("delete");
                    assert_eq!(there, model.remove(&b).is_some(), "delete of key {i}");
                }
            }
        }
        agree(
            &t,
            &model,
            universe,
            &format!("round {round}, after the operations"),
        );
        // two sweeps: the first marks the old sessions dying, the second
        // deletes them (and reclaims their segments' tombstones)
        let before = t.sessions.count().expect("count");
        let dying = types::cgnat_session_flag::CGNAT_SESS_DYING.0 as u8;
        for pass in 0..2 {
            let rep = sweeper.sweep(&t, now).expect("sweep");
            let limit = compact_time(now - 600 * SEC);
            if pass == 0 {
                for (_, s) in model.values_mut() {
                    if (limit.wrapping_sub(s.last_seen) as i32) > 0 {
                        s.flags |= dying;
                    }
                }
            } else {
                model.retain(|_, (_, s)| s.flags & dying == 0);
                assert_eq!(
                    rep.sessions_expired,
                    before - model.len() as u64,
                    "round {round}: expired"
                );
            }
        }
        if t.sessions.count().expect("count") < before {
            reclaimed_rounds += 1;
        }
        agree(
            &t,
            &model,
            universe,
            &format!("round {round}, after the sweeps"),
        );
        now += 10 * SEC;
    }
    assert!(
        full > 0,
        "the table never ran full: the test did not reach its size"
    );
    assert!(reclaimed_rounds > 0, "no sweep expired anything");
}

/// A full table refuses the next session and keeps every one it has.
#[test]
fn a_full_table_refuses_and_keeps_what_it_has() {
    let cfg = config(16);
    let dp = load(&cfg);
    let t = dp.tables().expect("tables");
    let seen = compact_time(monotonic_ns());
    for i in 0..16 {
        assert!(t
            .sessions
            .insert_new(&key(i), &session(i, seen, 0))
            .expect("insert"));
    }
    let err = t
        .sessions
        .insert_new(&key(16), &session(16, seen, 0))
        .expect_err("a 17th session in a table of 16");
    assert!(format!("{err}").contains("Argument list too long"), "{err}");
    assert!(t.sessions.upsert(&key(17), &session(17, seen, 0)).is_err());
    assert_eq!(t.sessions.count().expect("count"), 16);
    for i in 0..16 {
        assert_eq!(
            t.sessions.get(&key(i)).expect("get").map(|s| bytes(&s)),
            Some(bytes(&session(i, seen, 0))),
            "session {i} kept"
        );
    }
    // one gone, one fits again
    assert!(t.sessions.delete(&key(3)).expect("delete"));
    assert!(t
        .sessions
        .insert_new(&key(16), &session(16, seen, 0))
        .expect("insert"));
    assert_eq!(t.sessions.count().expect("count"), 16);
}
