//! The NAT state a node sends its peers and installs from them: bindings
//! (the inbound half, which also holds quarantined ports), sessions,
//! subscribers (their paired external address) and port blocks.
//!
//! A node sends what belongs to the slices it serves now: it reads its
//! tables every `sync_interval`, compares them with what it sent last
//! ([`Sent`]) and sends the differences. Records are idempotent (an
//! upsert or a removal of one key), so a resend, a reordering or a full
//! resync after lost messages all converge on the sender's tables.
//!
//! Times cross nodes as ages (milliseconds before the send), never as
//! clock readings: two nodes' monotonic clocks are unrelated.

use std::net::Ipv4Addr;
use std::time::Duration;

use self::rows::Rows;
use super::wire::Record;
use crate::bpf::{from_bytes, lookup_all, types, Tables};
use crate::expiry::{compact_time, idle_ns};

/// The maps of what was sent: millions of keys at carrier scale, looked up
/// once per key and interval. Hashed with foldhash (a random seed per
/// process and per map: keys hold remote endpoints, which outsiders
/// choose), which halves a sync interval's time against std's SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

type Bf = types::cgnat_binding_flag;
type Sf = types::cgnat_session_flag;

/// Binding flags that mean the same on every node (the others are one
/// sweep's scratch marks).
pub(super) const BIND_SYNCED_FLAGS: u8 = Bf::CGNAT_BIND_QUARANTINE.0 as u8;
/// Session flags that mean the same on every node.
pub(super) const SESS_SYNCED_FLAGS: u8 =
    (Sf::CGNAT_SESS_INBOUND.0 | Sf::CGNAT_SESS_HAIRPIN.0 | Sf::CGNAT_SESS_ONE_SIDED.0) as u8;

/// Key of a binding: protocol and external endpoint.
pub type BindKey = (u8, Ipv4Addr, u16);
/// Key of a session: protocol, external endpoint, remote endpoint.
pub type SessKey = (u8, Ipv4Addr, u16, Ipv4Addr, u16);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindVal {
    pub int_addr: Ipv4Addr,
    pub int_port: u16,
    pub flags: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessVal {
    pub int_addr: Ipv4Addr,
    pub int_port: u16,
    pub flags: u8,
    pub tcp: u32,
    /// Compact time of the last refresh (this node's clock).
    pub last_seen: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubVal {
    pub ext_addr: Ipv4Addr,
    pub pool_idx: u32,
    pub det_lo: u16,
}

/// What one read of the tables found, for the slices being sent. Bindings
/// and sessions are lists of (slot, key, value) in ascending slot order
/// (each key once, unless the data path deleted and made it again during
/// the read: then the later entry is the newer).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub bindings: Vec<(u32, BindKey, BindVal)>,
    pub sessions: Vec<(u32, SessKey, SessVal)>,
    pub subscribers: HashMap<Ipv4Addr, SubVal>,
    pub blocks: HashMap<(Ipv4Addr, u32), (Ipv4Addr, u32)>,
}

fn ip(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

pub(super) fn be(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

/// Reads the tables: the entries whose external address (bindings,
/// sessions, blocks) or subscriber (subscribers) `mine` accepts. Static
/// mappings are left out: every node installs them from the config.
pub fn scan(t: &Tables, mine: &dyn Fn(Ipv4Addr) -> bool) -> Snapshot {
    let mut s = Snapshot::default();
    scan_into(t, mine, &mut s);
    s
}

/// [`scan`] into `s`, whose lists keep their memory: a node that reads its
/// tables every interval reuses the last read's.
pub fn scan_into(t: &Tables, mine: &dyn Fn(Ipv4Addr) -> bool, s: &mut Snapshot) {
    s.bindings.clear();
    s.sessions.clear();
    s.subscribers.clear();
    s.blocks.clear();
    let _ = t.bindings.scan_slots(|slot, k, v| {
        let ext = ip(k.addr);
        if !mine(ext) || v.flags & Bf::CGNAT_BIND_STATIC.0 as u8 != 0 {
            return;
        }
        s.bindings.push((
            slot,
            (k.proto, ext, u16::from_be(k.port)),
            BindVal {
                int_addr: ip(v.addr),
                int_port: u16::from_be(v.port),
                flags: v.flags & BIND_SYNCED_FLAGS,
            },
        ));
    });
    let _ = t.sessions.scan_slots(|slot, k, v| {
        let ext = ip(k.ext_addr);
        if !mine(ext) {
            return;
        }
        s.sessions.push((
            slot,
            (
                k.proto,
                ext,
                u16::from_be(k.ext_port),
                ip(k.rem_addr),
                u16::from_be(k.rem_port),
            ),
            SessVal {
                int_addr: ip(v.int_addr),
                int_port: u16::from_be(v.int_port),
                flags: v.flags & SESS_SYNCED_FLAGS,
                tcp: v.tcp,
                last_seen: v.last_seen,
            },
        ));
    });
    for kv in lookup_all(&t.subscribers, 4096).unwrap_or_default() {
        let (Some(k), Some(v)) = (
            from_bytes::<u32>(&kv.0),
            from_bytes::<types::cgnat_subscriber>(&kv.1),
        ) else {
            continue;
        };
        if !mine(ip(v.ext_addr)) {
            continue;
        }
        s.subscribers.insert(
            ip(k),
            SubVal {
                ext_addr: ip(v.ext_addr),
                pool_idx: v.pool_idx,
                det_lo: v.det_lo,
            },
        );
    }
    for kv in lookup_all(&t.blocks, 4096).unwrap_or_default() {
        let (Some(k), Some(v)) = (
            from_bytes::<types::cgnat_block_key>(&kv.0),
            from_bytes::<types::cgnat_block>(&kv.1),
        ) else {
            continue;
        };
        if mine(ip(k.ext_addr)) {
            s.blocks
                .insert((ip(k.ext_addr), k.block), (ip(v.owner), v.slot));
        }
    }
}

/// What was sent to the peers, and when each session was first seen.
/// Bindings and sessions are kept in table order (`rows.rs`): a diff goes
/// through them beside the snapshot, and the keys an entire diff did not
/// find are gone.
#[derive(Debug, Default)]
pub struct Sent {
    bindings: Rows<BindKey, BindVal>,
    sessions: Rows<SessKey, SentSession>,
    subscribers: HashMap<Ipv4Addr, SubVal>,
    blocks: HashMap<(Ipv4Addr, u32), (Ipv4Addr, u32)>,
}

#[derive(Debug, Clone, Copy)]
struct SentSession {
    /// The value sent; None: not sent yet.
    sent: Option<SessVal>,
    /// When it was first seen.
    first_ns: u64,
}

/// When a session's refresh is worth a message.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Sessions younger than this are not sent (0: all).
    pub session_age: Duration,
    /// A session whose last refresh moved by this much is sent again, so
    /// the peer does not expire what lives here.
    pub refresh: Duration,
}

impl Sent {
    /// Whether `r` still says what the peers were last told about its key:
    /// a resend of a record that a later one superseded (a binding since
    /// removed, a removal since undone) must not overtake it.
    pub fn is_current(&self, r: &Record) -> bool {
        match r {
            Record::Binding {
                proto,
                int_addr,
                int_port,
                ext_addr,
                ext_port,
                flags,
            } => self
                .bindings
                .get(&(*proto, *ext_addr, *ext_port))
                .is_some_and(|v| {
                    v.int_port == *int_port
                        && v.flags == *flags
                        && (v.flags & BIND_SYNCED_FLAGS != 0 || v.int_addr == *int_addr)
                }),
            Record::BindingGone {
                proto,
                ext_addr,
                ext_port,
            } => self.bindings.get(&(*proto, *ext_addr, *ext_port)).is_none(),
            Record::Session {
                proto,
                ext_addr,
                ext_port,
                rem_addr,
                rem_port,
                int_addr,
                int_port,
                flags,
                tcp,
                ..
            } => self
                .sessions
                .get(&(*proto, *ext_addr, *ext_port, *rem_addr, *rem_port))
                .and_then(|e| e.sent)
                .is_some_and(|v| {
                    v.int_addr == *int_addr
                        && v.int_port == *int_port
                        && v.flags == *flags
                        && v.tcp == *tcp
                }),
            Record::SessionGone {
                proto,
                ext_addr,
                ext_port,
                rem_addr,
                rem_port,
            } => self
                .sessions
                .get(&(*proto, *ext_addr, *ext_port, *rem_addr, *rem_port))
                .is_none_or(|e| e.sent.is_none()),
            Record::Subscriber {
                int_addr, ext_addr, ..
            } => self
                .subscribers
                .get(int_addr)
                .is_some_and(|v| v.ext_addr == *ext_addr),
            Record::Block {
                ext_addr,
                block,
                owner,
                slot,
            } => self.blocks.get(&(*ext_addr, *block)) == Some(&(*owner, *slot)),
            Record::BlockGone { ext_addr, block } => {
                !self.blocks.contains_key(&(*ext_addr, *block))
            }
            Record::Hello { .. } | Record::Acks { .. } => true,
        }
    }

    /// Everything the peers were told, as records (a bulk resync): exactly
    /// what [`Sent::is_current`] accepts.
    pub fn records(&self, now_ns: u64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        out.extend(
            self.subscribers
                .iter()
                .map(|(k, v)| subscriber_record(*k, v)),
        );
        out.extend(self.blocks.iter().map(|(k, v)| Record::Block {
            ext_addr: k.0,
            block: k.1,
            owner: v.0,
            slot: v.1,
        }));
        out.extend(
            self.bindings
                .iter()
                .map(|(k, v)| binding_record(*k, v, now_ns)),
        );
        out.extend(
            self.sessions
                .iter()
                .filter_map(|(k, e)| e.sent.map(|v| session_record(*k, &v, now_ns))),
        );
        out
    }

    /// Forgets, without telling anyone, what belongs to external addresses
    /// `keep` refuses (slices this node no longer serves: their state is
    /// the new server's to send, not this node's to remove).
    pub fn retain(&mut self, keep: &dyn Fn(Ipv4Addr) -> bool) {
        self.bindings.retain(|k| keep(k.1));
        self.sessions.retain(|k| keep(k.1));
        self.subscribers.retain(|_, v| keep(v.ext_addr));
        self.blocks.retain(|k, _| keep(k.0));
    }

    /// Forgets everything: the next [`Sent::diff`] sends the whole state.
    pub fn clear(&mut self) {
        *self = Sent::default();
    }

    /// The records that bring a peer from what it was sent to `snap`, in
    /// dependency order (subscribers and blocks, bindings, sessions; then
    /// removals in reverse), at most `limit` of them: what does not fit is
    /// left for the next call (and a session never goes before every
    /// binding has).
    pub fn diff(
        &mut self,
        snap: &Snapshot,
        now_ns: u64,
        policy: Policy,
        limit: usize,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        for (k, v) in &snap.subscribers {
            if out.len() >= limit {
                return out;
            }
            if self.subscribers.get(k) != Some(v) {
                out.push(subscriber_record(*k, v));
                self.subscribers.insert(*k, *v);
            }
        }
        for (k, v) in &snap.blocks {
            if out.len() >= limit {
                return out;
            }
            if self.blocks.get(k) != Some(v) {
                out.push(Record::Block {
                    ext_addr: k.0,
                    block: k.1,
                    owner: v.0,
                    slot: v.1,
                });
                self.blocks.insert(*k, *v);
            }
        }
        let complete = self.bindings.merge(&snap.bindings, |k, v, sent| {
            if out.len() >= limit {
                return None;
            }
            if sent != Some(*v) {
                out.push(binding_record(*k, v, now_ns));
            }
            Some(*v)
        });
        if !complete {
            return out;
        }
        let refresh = compact_units(policy.refresh);
        let complete = self.sessions.merge(&snap.sessions, |k, v, sent| {
            if out.len() >= limit {
                return None;
            }
            let mut entry = sent.unwrap_or(SentSession {
                sent: None,
                first_ns: now_ns,
            });
            let old_enough =
                now_ns.saturating_sub(entry.first_ns) >= policy.session_age.as_nanos() as u64;
            let changed = match entry.sent {
                None => old_enough,
                Some(sent) => {
                    sent.int_addr != v.int_addr
                        || sent.int_port != v.int_port
                        || sent.flags != v.flags
                        || sent.tcp != v.tcp
                        || v.last_seen.wrapping_sub(sent.last_seen) as i32 >= refresh as i32
                }
            };
            if changed {
                out.push(session_record(*k, v, now_ns));
                entry.sent = Some(*v);
            }
            Some(entry)
        });
        if !complete {
            return out;
        }
        // every binding and session of the tables was gone through above:
        // what it did not find is gone
        for (k, e) in self.sessions.take_gone(limit.saturating_sub(out.len())) {
            if e.sent.is_some() {
                out.push(Record::SessionGone {
                    proto: k.0,
                    ext_addr: k.1,
                    ext_port: k.2,
                    rem_addr: k.3,
                    rem_port: k.4,
                });
            }
        }
        for (k, _) in self.bindings.take_gone(limit.saturating_sub(out.len())) {
            out.push(Record::BindingGone {
                proto: k.0,
                ext_addr: k.1,
                ext_port: k.2,
            });
        }
        let gone: Vec<(Ipv4Addr, u32)> = self
            .blocks
            .keys()
            .filter(|k| !snap.blocks.contains_key(k))
            .copied()
            .collect();
        for k in gone.into_iter().take(limit.saturating_sub(out.len())) {
            self.blocks.remove(&k);
            out.push(Record::BlockGone {
                ext_addr: k.0,
                block: k.1,
            });
        }
        self.subscribers
            .retain(|k, _| snap.subscribers.contains_key(k));
        out
    }
}

fn compact_units(d: Duration) -> u32 {
    compact_time(d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

fn subscriber_record(k: Ipv4Addr, v: &SubVal) -> Record {
    Record::Subscriber {
        int_addr: k,
        ext_addr: v.ext_addr,
        pool_idx: v.pool_idx,
        det_lo: v.det_lo,
    }
}

/// A quarantined binding's `int_addr` carries how long it has been in
/// quarantine, in milliseconds (its table entry holds a start time).
fn binding_record(k: BindKey, v: &BindVal, now_ns: u64) -> Record {
    let quarantined = v.flags & BIND_SYNCED_FLAGS != 0;
    let int_addr = if quarantined {
        // scan() read the raw start through ip(): undo that byte swap
        let start = u32::from(v.int_addr).to_be();
        Ipv4Addr::from((idle_ns(now_ns, start) / 1_000_000).min(u64::from(u32::MAX)) as u32)
    } else {
        v.int_addr
    };
    Record::Binding {
        proto: k.0,
        int_addr,
        int_port: v.int_port,
        ext_addr: k.1,
        ext_port: k.2,
        flags: v.flags,
    }
}

fn session_record(k: SessKey, v: &SessVal, now_ns: u64) -> Record {
    Record::Session {
        proto: k.0,
        ext_addr: k.1,
        ext_port: k.2,
        rem_addr: k.3,
        rem_port: k.4,
        int_addr: v.int_addr,
        int_port: v.int_port,
        flags: v.flags,
        tcp: v.tcp,
        idle_ms: (idle_ns(now_ns, v.last_seen) / 1_000_000).min(u64::from(u32::MAX)) as u32,
    }
}

mod rows;
#[cfg(test)]
mod tests;
