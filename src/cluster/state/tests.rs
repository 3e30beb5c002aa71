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
        (17, ext, 40000),
        BindVal {
            int_addr: Ipv4Addr::new(100, 64, 1, 10),
            int_port: 5000,
            flags: 0,
        },
    ));
    s.sessions.push((
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
