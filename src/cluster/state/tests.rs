//! Unit tests of `cluster::state`.
use super::*;

const SEC: u64 = 1_000_000_000;

fn snap_with(last_seen: u32, tcp: u32) -> Snapshot {
    let mut s = Snapshot::default();
    let ext = Ipv4Addr::new(203, 0, 113, 9);
    s.subscribers.insert(
        Ipv4Addr::new(100, 64, 1, 10),
        SubVal {
            ext_addr: ext,
            pool_idx: 1,
            det_lo: 0,
        },
    );
    s.bindings.push((
        1000,
        (17, ext, 40000),
        BindVal {
            int_addr: Ipv4Addr::new(100, 64, 1, 10),
            int_port: 5000,
            flags: 0,
        },
    ));
    s.sessions.push((
        10,
        (17, ext, 40000, Ipv4Addr::new(198, 51, 100, 10), 7),
        SessVal {
            int_addr: Ipv4Addr::new(100, 64, 1, 10),
            int_port: 5000,
            flags: 0,
            tcp,
            last_seen,
        },
    ));
    s
}

const ALL: Policy = Policy {
    session_age: Duration::ZERO,
    refresh: Duration::from_secs(2),
};

fn kinds(r: &[Record]) -> Vec<&'static str> {
    r.iter()
        .map(|r| match r {
            Record::Subscriber { .. } => "sub",
            Record::Binding { .. } => "bind",
            Record::BindingGone { .. } => "bind-",
            Record::Session { .. } => "sess",
            Record::SessionGone { .. } => "sess-",
            Record::Block { .. } => "block",
            Record::BlockGone { .. } => "block-",
            _ => "other",
        })
        .collect()
}

#[test]
fn new_state_is_sent_once_in_dependency_order() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    let snap = snap_with(compact_time(now), 0);
    assert_eq!(
        kinds(&sent.diff(&snap, now, ALL, usize::MAX)),
        ["sub", "bind", "sess"]
    );
    assert!(sent.diff(&snap, now + SEC, ALL, usize::MAX).is_empty());
}

#[test]
fn a_refresh_is_sent_only_past_the_threshold_and_as_an_age() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    let later = now + SEC;
    assert!(sent
        .diff(&snap_with(compact_time(later), 0), later, ALL, usize::MAX)
        .is_empty());
    let much_later = now + 3 * SEC;
    let r = sent.diff(
        &snap_with(compact_time(much_later - SEC / 2), 0),
        much_later,
        ALL,
        usize::MAX,
    );
    assert_eq!(kinds(&r), ["sess"]);
    match &r[0] {
        Record::Session { idle_ms, .. } => assert!((450..=550).contains(idle_ms), "{idle_ms}"),
        _ => unreachable!(),
    }
    // a TCP event is sent at once
    let r = sent.diff(
        &snap_with(compact_time(much_later), 3),
        much_later,
        ALL,
        usize::MAX,
    );
    assert_eq!(kinds(&r), ["sess"]);
}

#[test]
fn removals_follow_the_tables() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    let r = sent.diff(&Snapshot::default(), now, ALL, usize::MAX);
    assert_eq!(kinds(&r), ["sess-", "bind-"]);
    assert!(sent
        .diff(&Snapshot::default(), now, ALL, usize::MAX)
        .is_empty());
}

#[test]
fn a_limited_diff_sends_the_rest_next_time_bindings_first() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    let snap = snap_with(compact_time(now), 0);
    assert_eq!(kinds(&sent.diff(&snap, now, ALL, 2)), ["sub", "bind"]);
    assert_eq!(kinds(&sent.diff(&snap, now, ALL, 2)), ["sess"]);
    assert!(sent.diff(&snap, now, ALL, 2).is_empty());
    // forgetting a slice sends no removals
    sent.retain(&|_| false);
    assert!(sent.diff(&Snapshot::default(), now, ALL, 9).is_empty());
}

#[test]
fn a_resync_repeats_exactly_what_was_sent() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    let diff = sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    let all = sent.records(now);
    assert_eq!(kinds(&all), kinds(&diff));
    assert!(all.iter().all(|r| sent.is_current(r)));
}

#[test]
fn a_superseded_record_is_not_current() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    let first = sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    assert!(first.iter().all(|r| sent.is_current(r)));
    let gone = sent.diff(&Snapshot::default(), now, ALL, usize::MAX);
    // the binding and session adds were superseded by their removals
    assert!(first
        .iter()
        .filter(|r| !matches!(r, Record::Subscriber { .. }))
        .all(|r| !sent.is_current(r)));
    assert!(gone.iter().all(|r| sent.is_current(r)));
    // and a removal is superseded by the state coming back
    sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    assert!(gone.iter().all(|r| !sent.is_current(r)));
}

#[test]
fn young_sessions_wait_for_the_session_age() {
    let now = 100 * SEC;
    let policy = Policy {
        session_age: Duration::from_secs(5),
        refresh: Duration::from_secs(2),
    };
    let mut sent = Sent::default();
    let r = sent.diff(&snap_with(compact_time(now), 0), now, policy, usize::MAX);
    assert_eq!(kinds(&r), ["sub", "bind"]);
    let at = now + 6 * SEC;
    let r = sent.diff(&snap_with(compact_time(at), 0), at, policy, usize::MAX);
    assert_eq!(kinds(&r), ["sess"]);
    // one never sent is never removed either
    let mut fresh = Sent::default();
    fresh.diff(&snap_with(compact_time(now), 0), now, policy, usize::MAX);
    assert_eq!(
        kinds(&fresh.diff(&Snapshot::default(), now, policy, usize::MAX)),
        ["bind-"]
    );
}

#[test]
fn a_quarantined_binding_travels_as_its_age() {
    let now = 500 * SEC;
    let start = compact_time(now - 30 * SEC);
    let v = BindVal {
        int_addr: Ipv4Addr::from(u32::from_be(start)),
        int_port: 0,
        flags: BIND_SYNCED_FLAGS,
    };
    match binding_record((6, Ipv4Addr::new(203, 0, 113, 9), 1), &v, now) {
        Record::Binding { int_addr, .. } => {
            let ms = u32::from(int_addr);
            assert!((29_000..=31_000).contains(&ms), "{ms}");
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_diff_cut_short_removes_nothing_it_did_not_see() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    let first = sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    assert_eq!(kinds(&first), ["sub", "bind", "sess"]);
    // three new bindings before the same session: a limit of 2 stops in
    // the bindings, before the session was seen
    let mut snap = snap_with(compact_time(now), 0);
    let ext = Ipv4Addr::new(203, 0, 113, 9);
    for port in 1..=3u16 {
        snap.bindings.insert(
            0,
            (
                1000 - u32::from(port),
                (17, ext, 41000 + port),
                BindVal {
                    int_addr: Ipv4Addr::new(100, 64, 1, 10),
                    int_port: 6000 + port,
                    flags: 0,
                },
            ),
        );
    }
    assert_eq!(kinds(&sent.diff(&snap, now, ALL, 2)), ["bind", "bind"]);
    assert!(first.iter().all(|r| sent.is_current(r)));
    assert_eq!(kinds(&sent.diff(&snap, now, ALL, usize::MAX)), ["bind"]);
    assert!(sent.diff(&snap, now, ALL, usize::MAX).is_empty());
    // removals over two diffs when they do not fit in one
    let r = sent.diff(&Snapshot::default(), now, ALL, 3);
    assert_eq!(kinds(&r), ["sess-", "bind-", "bind-"]);
    let r = sent.diff(&Snapshot::default(), now, ALL, 3);
    assert_eq!(kinds(&r), ["bind-", "bind-"]);
    assert!(sent
        .diff(&Snapshot::default(), now, ALL, usize::MAX)
        .is_empty());
}

/// The session of `snap_with`, at another slot.
fn moved_to(mut s: Snapshot, slot: u32) -> Snapshot {
    s.sessions[0].0 = slot;
    s
}

#[test]
fn an_entry_at_another_slot_is_neither_removed_nor_sent_again() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    let first = sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    for slot in [20, 3, 10] {
        let snap = moved_to(snap_with(compact_time(now), 0), slot);
        assert!(sent.diff(&snap, now, ALL, usize::MAX).is_empty(), "{slot}");
        assert!(first.iter().all(|r| sent.is_current(r)), "{slot}");
        assert_eq!(kinds(&sent.records(now)), ["sub", "bind", "sess"]);
    }
    // read twice (deleted and made again during the read): once
    let mut snap = snap_with(compact_time(now), 0);
    let again = snap.sessions[0];
    snap.sessions.push((30, again.1, again.2));
    assert!(sent.diff(&snap, now, ALL, usize::MAX).is_empty());
    assert!(sent
        .diff(
            &moved_to(snap_with(compact_time(now), 0), 30),
            now,
            ALL,
            usize::MAX
        )
        .is_empty());
    assert_eq!(kinds(&sent.records(now)), ["sub", "bind", "sess"]);
}

#[test]
fn a_slot_taken_by_another_key_sends_both() {
    let now = 100 * SEC;
    let mut sent = Sent::default();
    sent.diff(&snap_with(compact_time(now), 0), now, ALL, usize::MAX);
    let mut snap = snap_with(compact_time(now), 0);
    snap.sessions[0].1 .4 = 8;
    assert_eq!(
        kinds(&sent.diff(&snap, now, ALL, usize::MAX)),
        ["sess", "sess-"]
    );
}

/// xorshift64: the randomized test's numbers, the same every run.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// What a peer holds after applying `records`.
#[derive(Default, PartialEq, Debug)]
struct Peer {
    bindings: std::collections::BTreeMap<BindKey, (Ipv4Addr, u16)>,
    sessions: std::collections::BTreeMap<SessKey, (Ipv4Addr, u16, u32)>,
}

impl Peer {
    fn apply(&mut self, records: &[Record]) {
        for r in records {
            match *r {
                Record::Binding {
                    proto,
                    int_addr,
                    int_port,
                    ext_addr,
                    ext_port,
                    ..
                } => {
                    self.bindings
                        .insert((proto, ext_addr, ext_port), (int_addr, int_port));
                }
                Record::BindingGone {
                    proto,
                    ext_addr,
                    ext_port,
                } => {
                    self.bindings.remove(&(proto, ext_addr, ext_port));
                }
                Record::Session {
                    proto,
                    ext_addr,
                    ext_port,
                    rem_addr,
                    rem_port,
                    int_addr,
                    int_port,
                    tcp,
                    ..
                } => {
                    self.sessions.insert(
                        (proto, ext_addr, ext_port, rem_addr, rem_port),
                        (int_addr, int_port, tcp),
                    );
                }
                Record::SessionGone {
                    proto,
                    ext_addr,
                    ext_port,
                    rem_addr,
                    rem_port,
                } => {
                    self.sessions
                        .remove(&(proto, ext_addr, ext_port, rem_addr, rem_port));
                }
                _ => {}
            }
        }
    }

    /// What a snapshot says (a key read twice: the later entry).
    fn of(s: &Snapshot) -> Peer {
        let mut p = Peer::default();
        for (_, k, v) in &s.bindings {
            p.bindings.insert(*k, (v.int_addr, v.int_port));
        }
        for (_, k, v) in &s.sessions {
            p.sessions.insert(*k, (v.int_addr, v.int_port, v.tcp));
        }
        p
    }
}

#[test]
fn a_peer_converges_on_tables_whose_entries_come_go_and_move() {
    let now = 100 * SEC;
    let ext = Ipv4Addr::new(203, 0, 113, 9);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut sent = Sent::default();
    let mut peer = Peer::default();
    // 40 keys of each kind over 64 slots; each round, entries are added,
    // deleted, changed, moved and (rarely) read twice
    let mut table: Vec<Option<(u16, u32)>> = vec![None; 64];
    for round in 0..400 {
        for _ in 0..(next(&mut x) % 6) {
            let slot = (next(&mut x) % 64) as usize;
            let key = (next(&mut x) % 40) as u16;
            match next(&mut x) % 4 {
                0 => table[slot] = None,
                _ if table.iter().any(|e| e.is_some_and(|(k, _)| k == key)) => {
                    // change it, or move it to this slot
                    let at = table
                        .iter()
                        .position(|e| e.is_some_and(|(k, _)| k == key))
                        .unwrap();
                    let val = (next(&mut x) % 3) as u32;
                    if table[slot].is_none() && next(&mut x) % 2 == 0 {
                        table[at] = None;
                        table[slot] = Some((key, val));
                    } else {
                        table[at] = Some((key, val));
                    }
                }
                _ => {
                    if table[slot].is_none() {
                        table[slot] = Some((key, (next(&mut x) % 3) as u32));
                    }
                }
            }
        }
        let mut snap = Snapshot::default();
        for (slot, e) in table.iter().enumerate() {
            let Some((key, val)) = *e else { continue };
            let slot = slot as u32;
            snap.bindings.push((
                slot,
                (17, ext, key),
                BindVal {
                    int_addr: Ipv4Addr::new(100, 64, 0, 1),
                    int_port: 1000 + val as u16,
                    flags: 0,
                },
            ));
            snap.sessions.push((
                100 + slot,
                (17, ext, key, Ipv4Addr::new(198, 51, 100, 1), 53),
                SessVal {
                    int_addr: Ipv4Addr::new(100, 64, 0, 1),
                    int_port: 1000,
                    flags: 0,
                    tcp: val,
                    last_seen: compact_time(now),
                },
            ));
        }
        // a key read twice (deleted and made again during the read): an
        // older copy at a lower slot, in the first read of the round only
        let mut first = snap.clone();
        if round % 7 == 0 {
            if let Some(&(slot, k, v)) = first.sessions.last() {
                if slot > 100 && !first.sessions.iter().any(|e| e.0 == slot - 1) {
                    let mut older = v;
                    older.tcp ^= 1;
                    let at = first.sessions.len() - 1;
                    first.sessions.insert(at, (slot - 1, k, older));
                }
            }
        }
        // a limited diff now and then, then until nothing is left to send
        let limit = if round % 3 == 0 { 3 } else { usize::MAX };
        let mut r = sent.diff(&first, now, ALL, limit);
        let mut guard = 0;
        while !r.is_empty() {
            peer.apply(&r);
            r = sent.diff(&snap, now, ALL, limit);
            guard += 1;
            assert!(guard < 100, "round {round}: the diff does not settle");
        }
        assert_eq!(peer, Peer::of(&snap), "round {round}");
        let all = sent.records(now);
        assert!(all.iter().all(|r| sent.is_current(r)), "round {round}");
        let mut resynced = Peer::default();
        resynced.apply(&all);
        assert_eq!(resynced, Peer::of(&snap), "round {round}: resync");
    }
}
