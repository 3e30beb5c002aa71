//! The state kept for one peer: replay protection of what it sends
//! ([`Inbound`]), reliable sending of what we send it ([`Outbox`]) and
//! whether it is alive ([`Liveness`]). No I/O: the caller passes the time.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::wire::{Record, Reject};

/// Seqs accepted below the highest seen: a seq is accepted if it is at
/// most `WINDOW - 1` below the highest (and not seen before).
pub const WINDOW: u64 = 2048;
const WINDOW_WORDS: usize = (WINDOW / 64) as usize;

/// Replay protection for the datagrams of one peer. Call [`Inbound::accept`]
/// only for datagrams whose tag verified: a forged epoch would otherwise
/// reset the window.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// The peer's current epoch; None before its first datagram.
    epoch: Option<u64>,
    /// The highest seq accepted in the epoch (0: none yet).
    highest: u64,
    /// Bit `seq % WINDOW` is set if `seq` (within the window) was accepted.
    seen: [u64; WINDOW_WORDS],
    /// Set when an epoch is adopted, until [`Inbound::take_new_epoch`].
    new_epoch: bool,
}

impl Inbound {
    /// No epoch known yet.
    pub fn new() -> Inbound {
        Inbound::default()
    }

    /// Whether a datagram of `epoch` and `seq` is new, recording it if so.
    /// A larger epoch than the current one (the peer restarted) starts
    /// afresh; a smaller one is [`Reject::StaleEpoch`]. Within the epoch
    /// each seq is accepted once, in any order within [`WINDOW`] of the
    /// highest; a seq seen before, older than the window, or 0 (never
    /// sent) is [`Reject::Replayed`]. A rejected datagram changes nothing.
    pub fn accept(&mut self, epoch: u64, seq: u64) -> Result<(), Reject> {
        if seq == 0 {
            return Err(Reject::Replayed);
        }
        match self.epoch {
            Some(current) if epoch < current => return Err(Reject::StaleEpoch),
            Some(current) if epoch == current => {}
            _ => self.adopt(epoch),
        }
        if seq > self.highest {
            self.advance(seq);
        } else if self.highest - seq >= WINDOW || self.is_seen(seq) {
            return Err(Reject::Replayed);
        }
        self.mark(seq);
        Ok(())
    }

    /// The peer's current epoch, if it has sent anything.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// Whether a new epoch (the first, or a restart) was adopted since the
    /// last call: the peer's view of us is then empty and it needs a
    /// resync. Clears the flag.
    pub fn take_new_epoch(&mut self) -> bool {
        std::mem::take(&mut self.new_epoch)
    }

    /// Forgets the previous epoch's seqs.
    fn adopt(&mut self, epoch: u64) {
        *self = Inbound {
            epoch: Some(epoch),
            new_epoch: true,
            ..Inbound::default()
        };
    }

    /// Makes `seq` (above the highest) the highest, clearing the bits of
    /// the seqs the window moves onto.
    fn advance(&mut self, seq: u64) {
        let gap = seq - self.highest;
        if gap >= WINDOW {
            self.seen = [0; WINDOW_WORDS];
        } else {
            for s in self.highest + 1..=seq {
                self.set_bit(s, false);
            }
        }
        self.highest = seq;
    }

    fn is_seen(&self, seq: u64) -> bool {
        let (word, bit) = Inbound::position(seq);
        self.seen[word] & bit != 0
    }

    fn mark(&mut self, seq: u64) {
        self.set_bit(seq, true);
    }

    fn set_bit(&mut self, seq: u64, on: bool) {
        let (word, bit) = Inbound::position(seq);
        if on {
            self.seen[word] |= bit;
        } else {
            self.seen[word] &= !bit;
        }
    }

    /// The word and bit mask of `seq` in the ring.
    fn position(seq: u64) -> (usize, u64) {
        let slot = seq % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }
}

/// Retransmission timeout after the first send.
pub const RTO_INITIAL: Duration = Duration::from_millis(200);
/// The timeout doubles per try up to this.
pub const RTO_MAX: Duration = Duration::from_secs(2);

/// The timeout after a message was sent `tries` + 1 times.
pub fn rto(tries: u32) -> Duration {
    RTO_INITIAL
        .checked_mul(1u32.checked_shl(tries).unwrap_or(u32::MAX))
        .map_or(RTO_MAX, |rto| rto.min(RTO_MAX))
}

/// A reliable message waiting for its acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    records: Vec<Record>,
    /// The seq of its last send (an ack of an earlier one is not matched).
    seq: u64,
    last_sent: Instant,
    /// Resends so far.
    tries: u32,
}

/// Counters of an [`Outbox`], each only ever growing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Reliable messages sent the first time.
    pub sent: u64,
    /// Resends.
    pub resent: u64,
    /// Messages acknowledged (and so removed).
    pub acked: u64,
    /// Messages dropped unacknowledged for lack of room (or by `clear`).
    pub dropped: u64,
}

/// What we send one peer: the seq counter of every datagram, and the
/// reliable messages until the peer acknowledges them, resent on a timeout
/// of [`RTO_INITIAL`] doubling per try up to [`RTO_MAX`]. Bounded: past
/// the capacity the oldest messages are dropped and [`Outbox::overflowed`]
/// is set, so the engine can fall back to a full resync.
#[derive(Debug, Clone)]
pub struct Outbox {
    capacity: usize,
    /// The last seq handed out (0: none).
    last_seq: u64,
    /// By order of first send, oldest first.
    pending: BTreeMap<u64, Pending>,
    /// The seq of each pending message's last send, to its order key.
    by_seq: HashMap<u64, u64>,
    /// The order key of the next first send.
    next_order: u64,
    overflowed: bool,
    stats: OutboxStats,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            capacity: capacity.max(1),
            last_seq: 0,
            pending: BTreeMap::new(),
            by_seq: HashMap::new(),
            next_order: 0,
            overflowed: false,
            stats: OutboxStats::default(),
        }
    }

    /// The seq for the next datagram to this peer, reliable or not:
    /// 1 first, then strictly increasing.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Records that a reliable message of `records` went out as `seq` at
    /// `now` (its first send). If the outbox is full the oldest message is
    /// dropped and the overflow flag set.
    pub fn sent(&mut self, seq: u64, records: Vec<Record>, now: Instant) {
        while self.pending.len() >= self.capacity {
            self.drop_oldest();
            self.overflowed = true;
        }
        let order = self.next_order;
        self.next_order += 1;
        self.by_seq.insert(seq, order);
        self.pending.insert(
            order,
            Pending {
                records,
                seq,
                last_sent: now,
                tries: 0,
            },
        );
        self.stats.sent += 1;
    }

    /// The peer acknowledged `seq`: its message is done. Returns whether
    /// `seq` was the last send of a waiting message (an unknown or
    /// repeated ack changes nothing).
    pub fn acked(&mut self, seq: u64) -> bool {
        let Some(order) = self.by_seq.remove(&seq) else {
            return false;
        };
        self.pending.remove(&order);
        self.stats.acked += 1;
        true
    }

    /// The messages whose last send is at least their timeout old, oldest
    /// first, each with the new seq it must be sent under now. They stay
    /// in the outbox under that seq (an ack of an earlier send of theirs
    /// no longer counts) with their timeout doubled.
    pub fn due(&mut self, now: Instant) -> Vec<(u64, Vec<Record>)> {
        let orders: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_sent) >= rto(p.tries))
            .map(|(order, _)| *order)
            .collect();
        orders
            .into_iter()
            .filter_map(|order| self.resend(order, now))
            .collect()
    }

    /// Moves a pending message to a new seq, counting the try.
    fn resend(&mut self, order: u64, now: Instant) -> Option<(u64, Vec<Record>)> {
        let seq = self.next_seq();
        let pending = self.pending.get_mut(&order)?;
        self.by_seq.remove(&pending.seq);
        self.by_seq.insert(seq, order);
        pending.seq = seq;
        pending.last_sent = now;
        pending.tries = pending.tries.saturating_add(1);
        self.stats.resent += 1;
        Some((seq, pending.records.clone()))
    }

    /// When the next message falls due (None if none waits).
    pub fn next_due(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.last_sent + rto(p.tries))
            .min()
    }

    /// Messages waiting for their ack.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether messages were dropped for lack of room since the last
    /// [`Outbox::take_overflow`].
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether messages were dropped for lack of room; clears the flag.
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.overflowed)
    }

    /// Drops every waiting message (the peer restarted or a full resync
    /// replaces them), counting them as dropped. The seq counter goes on.
    pub fn clear(&mut self) {
        self.stats.dropped += self.pending.len() as u64;
        self.pending.clear();
        self.by_seq.clear();
    }

    /// The counters.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }

    fn drop_oldest(&mut self) {
        if let Some((_, oldest)) = self.pending.pop_first() {
            self.by_seq.remove(&oldest.seq);
            self.stats.dropped += 1;
        }
    }
}

/// When a peer was last heard from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liveness {
    last_heard: Option<Instant>,
}

impl Liveness {
    /// Never heard from.
    pub fn new() -> Liveness {
        Liveness::default()
    }

    /// An authenticated, accepted datagram arrived at `now`. An earlier
    /// `now` than a previous one does not move the time back.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(self.last_heard.map_or(now, |last| last.max(now)));
    }

    /// When the peer was last heard from.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// Whether the peer was heard from less than `dead_after` before
    /// `now`; never heard from is not alive.
    pub fn is_alive(&self, now: Instant, dead_after: Duration) -> bool {
        self.last_heard
            .is_some_and(|last| now.saturating_duration_since(last) < dead_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const E1: u64 = 1_700_000_000_000_000_000;
    const E2: u64 = E1 + 5_000_000_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn gone(block: u32) -> Vec<Record> {
        vec![Record::BlockGone {
            ext_addr: Ipv4Addr::new(192, 0, 2, 1),
            block,
        }]
    }

    #[test]
    fn duplicates_are_replays() {
        let mut inbound = Inbound::new();
        assert_eq!(inbound.accept(E1, 1), Ok(()));
        assert_eq!(inbound.accept(E1, 1), Err(Reject::Replayed));
        assert_eq!(inbound.accept(E1, 2), Ok(()));
        assert_eq!(inbound.accept(E1, 1), Err(Reject::Replayed));
        assert_eq!(inbound.accept(E1, 2), Err(Reject::Replayed));
        assert_eq!(inbound.accept(E1, 0), Err(Reject::Replayed));
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut inbound = Inbound::new();
        for seq in [5, 3, 4, 1, 9, 2, 6, 8, 7] {
            assert_eq!(inbound.accept(E1, seq), Ok(()), "seq {seq}");
        }
        for seq in 1..=9 {
            assert_eq!(inbound.accept(E1, seq), Err(Reject::Replayed), "seq {seq}");
        }
        // Far ahead, then back to the oldest seq still in the window.
        let top = 10 + 5 * WINDOW;
        assert_eq!(inbound.accept(E1, top), Ok(()));
        assert_eq!(inbound.accept(E1, top - (WINDOW - 1)), Ok(()));
        assert_eq!(
            inbound.accept(E1, top - (WINDOW - 1)),
            Err(Reject::Replayed)
        );
        assert_eq!(inbound.accept(E1, top - 1), Ok(()));
        // The window is more than 1024 seqs deep.
        assert_eq!(inbound.accept(E1, top - 1024), Ok(()));
    }

    #[test]
    fn seqs_older_than_the_window_are_replays() {
        let mut inbound = Inbound::new();
        let top = 3 * WINDOW;
        assert_eq!(inbound.accept(E1, top), Ok(()));
        assert_eq!(inbound.accept(E1, top - WINDOW), Err(Reject::Replayed));
        // Just out of the window, where the ring holds no mark.
        for back in WINDOW + 1..WINDOW + 64 {
            assert_eq!(inbound.accept(E1, top - back), Err(Reject::Replayed));
        }
        assert_eq!(inbound.accept(E1, 1), Err(Reject::Replayed));
        assert_eq!(inbound.accept(E1, top - WINDOW + 1), Ok(()));
    }

    #[test]
    fn the_ring_forgets_nothing_it_should_remember() {
        // Every seq of a long run, each arriving up to 1500 late, is
        // accepted exactly once; replaying the whole run accepts none.
        let mut inbound = Inbound::new();
        let order: Vec<u64> = (1..=20_000u64)
            .map(|s| (s / 1500 * 1500) + (1500 - 1 - s % 1500))
            .filter(|&s| s > 0)
            .collect();
        let mut accepted = 0;
        for &seq in &order {
            if inbound.accept(E1, seq).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, order.len());
        for &seq in &order {
            assert_eq!(inbound.accept(E1, seq), Err(Reject::Replayed));
        }
    }

    #[test]
    fn a_new_epoch_starts_afresh_and_an_old_one_is_stale() {
        let mut inbound = Inbound::new();
        assert_eq!(inbound.epoch(), None);
        assert!(!inbound.take_new_epoch());
        assert_eq!(inbound.accept(E1, 500), Ok(()));
        assert!(inbound.take_new_epoch());
        assert!(!inbound.take_new_epoch());
        assert_eq!(inbound.accept(E1, 501), Ok(()));
        // The peer restarted: its seqs begin again at 1.
        assert_eq!(inbound.accept(E2, 1), Ok(()));
        assert_eq!(inbound.epoch(), Some(E2));
        assert!(inbound.take_new_epoch());
        assert_eq!(inbound.accept(E2, 1), Err(Reject::Replayed));
        assert_eq!(inbound.accept(E2, 2), Ok(()));
        // Its previous life is stale, even with fresh seqs.
        assert_eq!(inbound.accept(E1, 502), Err(Reject::StaleEpoch));
        assert_eq!(inbound.accept(E1 - 1, 1), Err(Reject::StaleEpoch));
        assert_eq!(inbound.epoch(), Some(E2));
        assert!(!inbound.take_new_epoch());
        assert_eq!(inbound.accept(E2, 3), Ok(()));
    }

    #[test]
    fn seqs_start_at_one_and_increase() {
        let mut outbox = Outbox::new(8);
        let seqs: Vec<u64> = (0..5).map(|_| outbox.next_seq()).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn rto_doubles_up_to_the_cap() {
        let expected = [200, 400, 800, 1600, 2000, 2000];
        for (tries, ms_) in expected.into_iter().enumerate() {
            assert_eq!(rto(tries as u32), ms(ms_));
        }
        assert_eq!(rto(31), RTO_MAX);
        assert_eq!(rto(u32::MAX), RTO_MAX);
    }

    #[test]
    fn unacked_messages_are_resent_with_doubling_timeouts() {
        let t0 = Instant::now();
        let mut outbox = Outbox::new(8);
        let seq = outbox.next_seq();
        outbox.sent(seq, gone(1), t0);
        assert_eq!(outbox.next_due(), Some(t0 + ms(200)));
        assert!(outbox.due(t0 + ms(199)).is_empty());
        let mut last = t0;
        let mut last_seq = seq;
        for wait in [200, 400, 800, 1600, 2000, 2000] {
            assert!(outbox.due(last + ms(wait - 1)).is_empty(), "wait {wait}");
            let now = last + ms(wait);
            let due = outbox.due(now);
            assert_eq!(due.len(), 1, "wait {wait}");
            let (new_seq, records) = &due[0];
            assert!(*new_seq > last_seq);
            assert_eq!(records, &gone(1));
            last = now;
            last_seq = *new_seq;
        }
        assert_eq!(outbox.len(), 1);
        let stats = outbox.stats();
        assert_eq!((stats.sent, stats.resent, stats.acked), (1, 6, 0));
        // Only the last send's seq acknowledges it.
        assert!(!outbox.acked(seq));
        assert!(outbox.acked(last_seq));
        assert!(outbox.is_empty());
        assert_eq!(outbox.next_due(), None);
        assert!(outbox.due(last + ms(60_000)).is_empty());
    }

    #[test]
    fn acks_remove_only_their_message() {
        let t0 = Instant::now();
        let mut outbox = Outbox::new(8);
        let seqs: Vec<u64> = (0..4).map(|_| outbox.next_seq()).collect();
        for (i, &seq) in seqs.iter().enumerate() {
            outbox.sent(seq, gone(i as u32), t0 + ms(i as u64));
        }
        assert_eq!(outbox.len(), 4);
        assert!(outbox.acked(seqs[1]));
        assert!(!outbox.acked(seqs[1]));
        assert!(!outbox.acked(999));
        assert_eq!(outbox.len(), 3);
        let due = outbox.due(t0 + ms(1000));
        let blocks: Vec<Vec<Record>> = due.into_iter().map(|(_, r)| r).collect();
        assert_eq!(blocks, [gone(0), gone(2), gone(3)]);
        assert_eq!(outbox.stats().acked, 1);
    }

    #[test]
    fn only_messages_past_their_timeout_are_due() {
        let t0 = Instant::now();
        let mut outbox = Outbox::new(8);
        let a = outbox.next_seq();
        outbox.sent(a, gone(0), t0);
        let b = outbox.next_seq();
        outbox.sent(b, gone(1), t0 + ms(150));
        let due = outbox.due(t0 + ms(200));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, gone(0));
        assert_eq!(outbox.next_due(), Some(t0 + ms(350)));
        let due = outbox.due(t0 + ms(350));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, gone(1));
        // The first is now on its 400 ms timeout.
        assert_eq!(outbox.next_due(), Some(t0 + ms(600)));
    }

    #[test]
    fn overflow_drops_the_oldest_and_raises_the_flag() {
        let t0 = Instant::now();
        let mut outbox = Outbox::new(3);
        for i in 0..3 {
            let seq = outbox.next_seq();
            outbox.sent(seq, gone(i), t0);
        }
        assert!(!outbox.overflowed());
        assert!(!outbox.take_overflow());
        let seq = outbox.next_seq();
        outbox.sent(seq, gone(3), t0);
        assert_eq!(outbox.len(), 3);
        assert!(outbox.overflowed());
        assert!(outbox.take_overflow());
        assert!(!outbox.overflowed());
        // The oldest went: seq 1 acknowledges nothing now.
        assert!(!outbox.acked(1));
        let left: Vec<Vec<Record>> = outbox
            .due(t0 + ms(200))
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(left, [gone(1), gone(2), gone(3)]);
        assert_eq!(outbox.stats().dropped, 1);
        // Oldest means first sent, even if resent since.
        let seq = outbox.next_seq();
        outbox.sent(seq, gone(4), t0 + ms(200));
        let left: Vec<Vec<Record>> = outbox
            .due(t0 + ms(5000))
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(left, [gone(2), gone(3), gone(4)]);
        outbox.clear();
        assert!(outbox.is_empty());
        assert_eq!(outbox.stats().dropped, 5);
        assert!(outbox.next_seq() > seq);
        assert_eq!(Outbox::new(0).capacity, 1);
    }

    #[test]
    fn liveness_follows_the_last_datagram() {
        let t0 = Instant::now();
        let dead_after = Duration::from_secs(3);
        let mut live = Liveness::new();
        assert!(!live.is_alive(t0, dead_after));
        live.heard(t0);
        assert!(live.is_alive(t0, dead_after));
        assert!(live.is_alive(t0 + ms(2999), dead_after));
        assert!(!live.is_alive(t0 + ms(3000), dead_after));
        live.heard(t0 + ms(2500));
        assert!(live.is_alive(t0 + ms(5000), dead_after));
        live.heard(t0 + ms(100));
        assert_eq!(live.last_heard(), Some(t0 + ms(2500)));
        // A `now` before the last datagram (clock skew between callers).
        assert!(live.is_alive(t0, dead_after));
    }
}
