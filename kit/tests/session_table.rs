//! The session table (bpf/sessions.h) against a model: random inserts,
//! updates, upserts, lookups and deletes through the loaded program's
//! `session_ops`, then expiry by the in-kernel sweep (which reclaims
//! tombstones), must always agree with a map kept in Rust. A small table
//! makes probe sequences long and wrap inside their segments; the table
//! refuses beyond its size and never evicts. Bindings' outbound halves
//! share the table with sessions, each kind in its own segments, with its
//! own count and limit. A key whose segment is full spills into the next
//! one.

use std::collections::BTreeMap;
use std::path::Path;

use cgnat::bpf::{types, Datapath, LoadOptions, Tables};
use cgnat::config::Config;
use cgnat::expiry::{compact_time, monotonic_ns, Sweeper};
use cgnat_kit::rng::Rng;
use libbpf_rs::{MapCore, MapFlags};

const SEC: u64 = 1_000_000_000;

type Key = types::cgnat_session_key;
type Session = types::cgnat_session;

fn config(max_sessions: u32) -> Config {
    config_with(max_sessions, 1024)
}

fn config_with(max_sessions: u32, max_bindings: u32) -> Config {
    let text = format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["203.0.113.0/28"]
max_sessions = {max_sessions}
max_bindings = {max_bindings}
[daemon]
pin_path = "/sys/fs/bpf/cgnat-session-table-test-unused"
"#
    );
    Config::parse(&text, Path::new("(session table test)")).expect("test config")
}

fn sweeper(cfg: &Config) -> Sweeper {
    Sweeper {
        timeouts: cfg.timeouts.clone(),
        quarantine: cfg.port_quarantine,
        blocks: None,
        pool: cfg.pool_addrs.clone(),
    }
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
    // dumps read the table through memory, not in batches
    let (_, segments) = t.sessions.maps()[0];
    assert!(
        cgnat::bpf::MappedArray::<types::cgnat_session_seg>::new(segments, "sessions").is_ok(),
        "{when}: the session table cannot be mapped"
    );
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
    let sweeper = sweeper(&cfg);
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

/// An outbound half and an inbound half keyed like a session (an endpoint
/// in the key's external fields, remote 0) are other slots: sessions and
/// the two halves never see each other, each kind is counted and limited
/// on its own, and a full kind refuses without evicting.
#[test]
fn bindings_and_sessions_keep_apart() {
    let cfg = config_with(16, 16);
    let dp = load(&cfg);
    let t = dp.tables().expect("tables");
    let seen = compact_time(monotonic_ns());
    // session i has the fields of outbound half i: remote 0
    let skey = |i: u32| Key {
        rem_addr: 0,
        rem_port: 0,
        ..key(i)
    };
    let ik = |i: u32| types::cgnat_endpoint {
        addr: skey(i).ext_addr,
        port: skey(i).ext_port,
        proto: 17,
        _pad: 0,
    };
    let fwd = |i: u32| types::cgnat_binding {
        addr: u32::from_be_bytes([192, 0, 2, 1]).to_be(),
        port: (30000 + i as u16).to_be(),
        flags: 0,
        sweep_sessions: 0,
    };
    for i in 0..16 {
        assert!(t
            .sessions
            .insert_new(&skey(i), &session(i, seen, 0))
            .expect("insert"));
        t.bindings
            .upsert_out(&ik(i), &fwd(i))
            .expect("outbound half");
        // an inbound half with the same key fields too
        t.bindings.upsert_in(&ik(i), &fwd(i)).expect("inbound half");
    }
    assert_eq!(t.sessions.count().expect("count"), 16);
    assert_eq!(t.bindings.count_out().expect("count"), 16);
    assert_eq!(t.bindings.count().expect("count"), 16);
    // both full: each refuses its 17th, and keeps its 16
    assert!(t
        .sessions
        .insert_new(&skey(16), &session(16, seen, 0))
        .is_err());
    let err = t
        .bindings
        .upsert_out(&ik(16), &fwd(16))
        .expect_err("a 17th outbound half in a table of 16 bindings");
    assert!(format!("{err}").contains("Argument list too long"), "{err}");
    t.bindings
        .upsert_in(&ik(16), &fwd(16))
        .expect_err("a 17th inbound half in a table of 16 bindings");
    let sessions = t.sessions.dump().expect("dump");
    let outs = t.bindings.dump_out().expect("dump");
    let ins = t.bindings.dump().expect("dump");
    assert_eq!((sessions.len(), outs.len(), ins.len()), (16, 16, 16));
    for i in 0..16 {
        assert_eq!(
            t.sessions.get(&skey(i)).expect("get").map(|s| bytes(&s)),
            Some(bytes(&session(i, seen, 0))),
            "session {i}"
        );
        let b = t.bindings.get_out(&ik(i)).expect("get").expect("half kept");
        assert_eq!((b.addr, b.port), (fwd(i).addr, fwd(i).port), "half {i}");
        let b = t.bindings.get_in(&ik(i)).expect("get").expect("half kept");
        assert_eq!(
            (b.addr, b.port),
            (fwd(i).addr, fwd(i).port),
            "inbound half {i}"
        );
        assert!(outs
            .iter()
            .any(|(k, v)| k.addr == ik(i).addr && k.port == ik(i).port && v.port == fwd(i).port));
    }
    // deleting one kind leaves the other
    let ek = types::cgnat_endpoint {
        addr: fwd(3).addr,
        port: fwd(3).port,
        proto: 17,
        _pad: 0,
    };
    let rev = types::cgnat_binding {
        addr: ik(3).addr,
        port: ik(3).port,
        flags: 0,
        sweep_sessions: 0,
    };
    assert!(t.bindings.unbind_out(&ek, &rev).expect("unbind"));
    assert!(!t.bindings.unbind_out(&ek, &rev).expect("unbind"));
    assert!(t.bindings.get_out(&ik(3)).expect("get").is_none());
    assert!(t.sessions.get(&skey(3)).expect("get").is_some());
    assert!(t.bindings.get_in(&ik(3)).expect("get").is_some());
    t.bindings.delete_in_all(&[ik(4)]).expect("delete");
    assert!(t.bindings.get_in(&ik(4)).expect("get").is_none());
    assert!(t.bindings.get_out(&ik(4)).expect("get").is_some());
    assert!(t.sessions.get(&skey(4)).expect("get").is_some());
    assert_eq!(t.bindings.count().expect("count"), 15);
    assert!(t.sessions.delete(&skey(5)).expect("delete"));
    assert!(t.bindings.get_out(&ik(5)).expect("get").is_some());
    assert_eq!(t.sessions.count().expect("count"), 15);
    assert_eq!(t.bindings.count_out().expect("count"), 15);
    // and each kind has room for one again
    t.bindings
        .upsert_out(&ik(16), &fwd(16))
        .expect("room again");
    assert!(t
        .sessions
        .insert_new(&skey(16), &session(16, seen, 0))
        .expect("insert"));
}

/// The sweep that releases bindings leaves no tombstone of their outbound
/// halves: it reclaims the segments it deleted in at the end of its run.
/// Their inbound halves stay, quarantined.
#[test]
fn released_bindings_leave_no_tombstones() {
    let cfg = config_with(64, 512);
    let dp = load(&cfg);
    let t = dp.tables().expect("tables");
    let sweeper = sweeper(&cfg);
    let n = 400u32;
    for i in 0..n {
        let ek = types::cgnat_endpoint {
            addr: u32::from_be_bytes([203, 0, 113, 1 + (i % 14) as u8]).to_be(),
            port: (1024 + i as u16).to_be(),
            proto: 17,
            _pad: 0,
        };
        let rev = types::cgnat_binding {
            addr: u32::from_be_bytes([100, 64, 1, (i % 250) as u8]).to_be(),
            port: (20000 + i as u16).to_be(),
            flags: 0,
            sweep_sessions: 0,
        };
        let fwd = types::cgnat_binding {
            addr: ek.addr,
            port: ek.port,
            flags: 0,
            sweep_sessions: 0,
        };
        t.bindings.upsert(&ek, &rev, &fwd).expect("binding");
    }
    assert_eq!(t.bindings.count_out().expect("count"), n as u64);
    // without sessions: marked idle by the first sweep, released by the
    // second
    let now = monotonic_ns() + 1000 * SEC;
    sweeper.sweep(&t, now).expect("sweep");
    let rep = sweeper.sweep(&t, now + SEC).expect("sweep");
    assert_eq!(rep.bindings_released, n as u64, "{rep:?}");
    assert_eq!(t.bindings.count_out().expect("count"), 0);
    let quarantine = types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8;
    let (mut quarantined, mut live, mut dead) = (0, 0, 0);
    for si in 0u32.. {
        let Some(seg) = segment(&t, si) else {
            break;
        };
        for s in &seg.slot {
            // a half's flags are where a session's are (include/cgnat.h)
            let held = s.key.kind == types::cgnat_slot_kind::CGNAT_KIND_BIND_IN.0 as u8
                && s.s.flags & quarantine != 0;
            match s.key.slot_state {
                1 if held => quarantined += 1,
                1 => live += 1,
                2 => dead += 1,
                _ => {}
            }
        }
    }
    assert_eq!(
        (quarantined, live, dead),
        (n, 0, 0),
        "quarantined inbound halves, other live slots and dead slots left"
    );
}

/// Segment `si` of the table, read whole; `None` past the last.
fn segment(t: &Tables, si: u32) -> Option<types::cgnat_session_seg> {
    let (_, segments) = t.sessions.maps()[0];
    let v = segments
        .lookup(cgnat::bpf::bytes_of(&si), MapFlags::ANY)
        .expect("segment")?;
    Some(cgnat::bpf::from_bytes(&v).expect("a segment"))
}

/// The segment each live session of the sessions' segments is in, by
/// its key.
fn placement(t: &Tables, segments: u32) -> BTreeMap<[u8; 16], u32> {
    let mut at = BTreeMap::new();
    for si in 0..segments {
        let seg = segment(t, si).expect("a segment in the table");
        for s in seg.slot.iter().filter(|s| s.key.slot_state == 1) {
            let k = Key {
                slot_state: 0,
                slot_dist: 0,
                ..s.key
            };
            at.insert(bytes(&k), si);
        }
    }
    at
}

/// (live, dead) slots of segment `si`.
fn slots(t: &Tables, si: u32) -> (usize, usize) {
    let seg = segment(t, si).expect("a segment in the table");
    let n = |st: u8| seg.slot.iter().filter(|s| s.key.slot_state == st).count();
    (n(1), n(2))
}

/// A key whose segment is all live slots goes to the next segment of its
/// region, and is found, refreshed and deleted like any other; it is never
/// added twice. Its own segment keeps its tombstones while it has a key
/// out (so that lookups go on to the next segment), and reclaims them once
/// none is left, whether the daemon deleted them or the sweep expired them.
#[test]
fn a_full_segment_spills_into_the_next() {
    let cfg = config(2048);
    let dp = load(&cfg);
    let t = dp.tables().expect("tables");
    let sweeper = sweeper(&cfg);
    let segments = (2048 * 2 / 64) as u32;
    let now = monotonic_ns() + 1000 * SEC;
    let seen = compact_time(now);
    // which segment keys go to: rounds of 1,500 keys (about 23 in each
    // segment of 64 slots, so none spills), inserted, placed, deleted
    let mut by_seg: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for round in 0..4u32 {
        let rows: Vec<(Key, Session)> = (round * 1500..(round + 1) * 1500)
            .map(|i| (key(i), session(i, seen, 0)))
            .collect();
        t.sessions.insert_batch(&rows).expect("insert");
        let at = placement(&t, segments);
        assert_eq!(at.len(), rows.len(), "every key placed");
        for (n, (k, _)) in rows.iter().enumerate() {
            by_seg
                .entry(at[&bytes(k)])
                .or_default()
                .push(round * 1500 + n as u32);
        }
        let keys: Vec<Key> = rows.iter().map(|r| r.0).collect();
        t.sessions.delete_all(&keys).expect("delete");
    }
    assert_eq!(t.sessions.count().expect("count"), 0);
    let (&s, ids) = by_seg
        .iter()
        .max_by_key(|(_, v)| v.len())
        .expect("segments");
    assert!(ids.len() >= 84, "segment {s} got {} keys", ids.len());
    let next = (s + 1) % segments;
    let value = |i: u32, v: u32| session(i, seen, 0).int_port ^ v as u16;
    let with = |i: u32, v: u32| Session {
        int_port: value(i, v),
        ..session(i, seen, 0)
    };

    // 80 keys of one segment: 64 fill it, 16 spill into the next
    for &i in &ids[..80] {
        assert!(
            t.sessions.insert_new(&key(i), &with(i, 0)).expect("insert"),
            "key {i}"
        );
    }
    assert_eq!(t.sessions.count().expect("count"), 80);
    let at = placement(&t, segments);
    let home: Vec<u32> = ids[..80]
        .iter()
        .copied()
        .filter(|&i| at[&bytes(&key(i))] == s)
        .collect();
    let out: Vec<u32> = ids[..80]
        .iter()
        .copied()
        .filter(|&i| at[&bytes(&key(i))] == next)
        .collect();
    assert_eq!(
        (home.len(), out.len()),
        (64, 16),
        "keys in segment {s} and spilled"
    );
    for &i in &out {
        assert!(
            !t.sessions.insert_new(&key(i), &with(i, 9)).expect("insert"),
            "key {i} added twice"
        );
        t.sessions.upsert(&key(i), &with(i, 1)).expect("upsert");
        assert!(t
            .sessions
            .update_existing(&key(i), &with(i, 2))
            .expect("update"));
    }
    assert_eq!(t.sessions.count().expect("count"), 80, "no key added twice");
    for &i in &ids[..80] {
        let want = if out.contains(&i) { 2 } else { 0 };
        assert_eq!(
            t.sessions.get(&key(i)).expect("get").map(|v| v.int_port),
            Some(value(i, want)),
            "key {i}"
        );
    }

    // deletes at home leave tombstones there while keys are out, and
    // the spilled keys are still found past them
    t.sessions
        .delete_all(&home[..8].iter().map(|&i| key(i)).collect::<Vec<_>>())
        .expect("delete");
    assert_eq!(slots(&t, s), (56, 8), "segment {s}: tombstones kept");
    for &i in &out {
        assert!(
            t.sessions.get(&key(i)).expect("get").is_some(),
            "spilled key {i} lost"
        );
    }
    // new keys of the segment take its tombstones
    for &i in &ids[80..84] {
        assert!(t.sessions.insert_new(&key(i), &with(i, 0)).expect("insert"));
        assert_eq!(placement(&t, segments)[&bytes(&key(i))], s, "key {i}");
    }
    // once no key is out, deleting the rest reclaims both segments
    t.sessions
        .delete_all(&out.iter().map(|&i| key(i)).collect::<Vec<_>>())
        .expect("delete");
    let rest: Vec<Key> = home[8..]
        .iter()
        .chain(&ids[80..84])
        .map(|&i| key(i))
        .collect();
    t.sessions.delete_all(&rest).expect("delete");
    assert_eq!(t.sessions.count().expect("count"), 0);
    assert_eq!(
        (slots(&t, s), slots(&t, next)),
        ((0, 0), (0, 0)),
        "tombstones left"
    );

    // the sweep expires spilled keys too, and then reclaims both segments
    let old = compact_time(now - 4000 * SEC);
    for &i in &ids[..80] {
        assert!(t
            .sessions
            .insert_new(&key(i), &session(i, old, 0))
            .expect("insert"));
    }
    let mut expired = 0;
    for _ in 0..3 {
        expired += sweeper.sweep(&t, now).expect("sweep").sessions_expired;
    }
    assert_eq!((expired, t.sessions.count().expect("count")), (80, 0));
    assert_eq!(
        (slots(&t, s), slots(&t, next)),
        ((0, 0), (0, 0)),
        "tombstones left after the sweeps"
    );
}
