//! Installing what peers send into this node's tables. Each record is an
//! upsert or a removal of one key, checked against this node's own entry
//! first: a conflicting local entry is kept ([`Outcome::Conflict`]).
//!
//! [`install_all`] installs the records of a datagram. Its sessions and
//! bindings are read, then written, a batch at a time, one run of the
//! session table's `session_ops` for up to `CGNAT_SESSION_OPS` reads or
//! writes, where installing them one by one costs several runs per
//! record; the outcome of each record is the same as [`install`]'s.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use libbpf_rs::{MapCore, MapFlags};

use super::state::{be, BIND_SYNCED_FLAGS, SESS_SYNCED_FLAGS};
use super::wire::Record;
use crate::bpf::{bytes_of, from_bytes, types, BpfError, Tables};
use crate::expiry::compact_time;

type Bf = types::cgnat_binding_flag;

/// What installing one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// It contradicts a live entry of this node (an external port or a
    /// subscriber bound otherwise): the local entry is kept.
    Conflict,
    /// A record that installs nothing (hello, acks).
    Ignored,
}

/// Installs a peer's record into this node's tables.
pub fn install(
    t: &Tables,
    rec: &Record,
    now_ns: u64,
    rate_tokens: u32,
) -> Result<Outcome, libbpf_rs::Error> {
    match rec {
        Record::Binding { .. } => match binding_row(rec, now_ns) {
            Some(b) => install_binding(t, &b),
            None => Ok(Outcome::Ignored),
        },
        Record::BindingGone {
            proto,
            ext_addr,
            ext_port,
        } => {
            let ek = endpoint(*proto, *ext_addr, *ext_port);
            if let Some(v) = t.bindings.get_in(&ek).map_err(kernel_err)? {
                if v.flags & Bf::CGNAT_BIND_STATIC.0 as u8 != 0 {
                    return Ok(Outcome::Conflict);
                }
                t.bindings
                    .delete(&ek, &v)
                    .map_err(|_| libbpf_rs::Error::from_raw_os_error(nix::libc::EIO))?;
            }
            Ok(Outcome::Applied)
        }
        Record::Session { .. } => {
            let Some((k, v)) = session_row(rec, now_ns) else {
                return Ok(Outcome::Ignored);
            };
            let Some(v) = merge_session(t.sessions.get(&k).map_err(kernel_err)?, v) else {
                return Ok(Outcome::Conflict);
            };
            t.sessions.upsert(&k, &v).map_err(kernel_err)?;
            Ok(Outcome::Applied)
        }
        Record::SessionGone {
            proto,
            ext_addr,
            ext_port,
            rem_addr,
            rem_port,
        } => {
            let k = session_key(*proto, *ext_addr, *ext_port, *rem_addr, *rem_port);
            t.sessions.delete(&k).map_err(kernel_err)?;
            Ok(Outcome::Applied)
        }
        Record::Subscriber {
            int_addr,
            ext_addr,
            pool_idx,
            det_lo,
        } => {
            let k = be(*int_addr);
            if let Some(old) = lookup::<types::cgnat_subscriber>(&t.subscribers, bytes_of(&k))? {
                return Ok(if old.ext_addr == be(*ext_addr) {
                    Outcome::Applied
                } else {
                    Outcome::Conflict
                });
            }
            let v = types::cgnat_subscriber {
                ext_addr: be(*ext_addr),
                pool_idx: *pool_idx,
                det_lo: *det_lo,
                rate_tokens,
                rate_stamp_ns: now_ns,
                created_ns: now_ns,
                last_alloc_ns: now_ns,
                ..Default::default()
            };
            t.subscribers
                .update(bytes_of(&k), bytes_of(&v), MapFlags::NO_EXIST)
                .or_else(ignore_exists)?;
            Ok(Outcome::Applied)
        }
        Record::Block {
            ext_addr,
            block,
            owner,
            slot,
        } => {
            let k = types::cgnat_block_key {
                ext_addr: be(*ext_addr),
                block: *block,
            };
            if let Some(old) = lookup::<types::cgnat_block>(&t.blocks, bytes_of(&k))? {
                return Ok(if old.owner == be(*owner) {
                    Outcome::Applied
                } else {
                    Outcome::Conflict
                });
            }
            let v = types::cgnat_block {
                owner: be(*owner),
                slot: *slot,
                created_ns: now_ns,
                ..Default::default()
            };
            let sk = types::cgnat_sub_block_key {
                sub: be(*owner),
                slot: *slot,
            };
            t.blocks
                .update(bytes_of(&k), bytes_of(&v), MapFlags::NO_EXIST)
                .or_else(ignore_exists)?;
            t.sub_blocks
                .update(bytes_of(&sk), bytes_of(block), MapFlags::ANY)?;
            Ok(Outcome::Applied)
        }
        Record::BlockGone { ext_addr, block } => {
            let k = types::cgnat_block_key {
                ext_addr: be(*ext_addr),
                block: *block,
            };
            if let Some(old) = lookup::<types::cgnat_block>(&t.blocks, bytes_of(&k))? {
                let sk = types::cgnat_sub_block_key {
                    sub: old.owner,
                    slot: old.slot,
                };
                let _ = t.sub_blocks.delete(bytes_of(&sk));
                let _ = t.blocks.delete(bytes_of(&k));
            }
            Ok(Outcome::Applied)
        }
        _ => Ok(Outcome::Ignored),
    }
}

/// A binding record as this node stores it.
struct BindingRow {
    /// The external endpoint (the inbound half's key) and the internal one
    /// (the outbound half's).
    ek: types::cgnat_endpoint,
    ik: types::cgnat_endpoint,
    /// The inbound half: the internal endpoint, or a quarantine's start.
    rev: types::cgnat_binding,
    /// The outbound half: the external endpoint.
    fwd: types::cgnat_binding,
    quarantined: bool,
}

fn binding_row(rec: &Record, now_ns: u64) -> Option<BindingRow> {
    let Record::Binding {
        proto,
        int_addr,
        int_port,
        ext_addr,
        ext_port,
        flags,
    } = *rec
    else {
        return None;
    };
    let flags = flags & BIND_SYNCED_FLAGS;
    let quarantined = flags & Bf::CGNAT_BIND_QUARANTINE.0 as u8 != 0;
    Some(BindingRow {
        ek: endpoint(proto, ext_addr, ext_port),
        ik: endpoint(proto, int_addr, int_port),
        rev: types::cgnat_binding {
            addr: if quarantined {
                // int_addr: milliseconds in quarantine; stored: its start
                let ms = u64::from(u32::from(int_addr));
                compact_time(now_ns.saturating_sub(ms * 1_000_000))
            } else {
                be(int_addr)
            },
            port: int_port.to_be(),
            flags,
            sweep_sessions: 0,
        },
        fwd: types::cgnat_binding {
            addr: be(ext_addr),
            port: ext_port.to_be(),
            flags: 0,
            sweep_sessions: 0,
        },
        quarantined,
    })
}

/// Whether this node's inbound half `old` of the same external endpoint
/// keeps the port from `b`: a static mapping, or a live binding of another
/// internal endpoint (unless `b` quarantines the port).
fn in_conflict(old: Option<&types::cgnat_binding>, b: &BindingRow) -> bool {
    old.is_some_and(|old| {
        let same = old.addr == b.rev.addr && old.port == b.rev.port;
        let old_static = old.flags & Bf::CGNAT_BIND_STATIC.0 as u8 != 0;
        let old_quar = old.flags & Bf::CGNAT_BIND_QUARANTINE.0 as u8 != 0;
        old_static || (!same && !old_quar && !b.quarantined)
    })
}

/// Whether this node's outbound half of the same internal endpoint maps it
/// to another external endpoint.
fn out_conflict(out: Option<&types::cgnat_binding>, b: &BindingRow) -> bool {
    out.is_some_and(|out| out.addr != b.fwd.addr || out.port != b.fwd.port)
}

fn install_binding(t: &Tables, b: &BindingRow) -> Result<Outcome, libbpf_rs::Error> {
    let old = t.bindings.get_in(&b.ek).map_err(kernel_err)?;
    if in_conflict(old.as_ref(), b) {
        return Ok(Outcome::Conflict);
    }
    if b.quarantined {
        // the port stays reserved; its outbound half goes
        if let Some(old) = old {
            if old.flags & Bf::CGNAT_BIND_QUARANTINE.0 as u8 == 0 {
                let _ = t.bindings.unbind_out(&b.ek, &old);
            }
        }
        t.bindings.upsert_in(&b.ek, &b.rev).map_err(kernel_err)?;
        return Ok(Outcome::Applied);
    }
    if out_conflict(t.bindings.get_out(&b.ik).map_err(kernel_err)?.as_ref(), b) {
        return Ok(Outcome::Conflict);
    }
    t.bindings
        .upsert(&b.ek, &b.rev, &b.fwd)
        .map_err(kernel_err)?;
    Ok(Outcome::Applied)
}

/// A session record as this node stores it: its key and value.
fn session_row(
    rec: &Record,
    now_ns: u64,
) -> Option<(types::cgnat_session_key, types::cgnat_session)> {
    let Record::Session {
        proto,
        ext_addr,
        ext_port,
        rem_addr,
        rem_port,
        int_addr,
        int_port,
        flags,
        tcp,
        idle_ms,
    } = *rec
    else {
        return None;
    };
    let seen = compact_time(now_ns.saturating_sub(u64::from(idle_ms) * 1_000_000));
    Some((
        session_key(proto, ext_addr, ext_port, rem_addr, rem_port),
        types::cgnat_session {
            int_addr: be(int_addr),
            int_port: int_port.to_be(),
            flags: flags & SESS_SYNCED_FLAGS,
            tcp,
            last_seen: seen,
            ..Default::default()
        },
    ))
}

/// The session to write for `v` where this node has `old`: `v` with the
/// TCP events of both and the later refresh; `None` when `old` translates
/// to another internal endpoint (a conflict: `old` stays).
fn merge_session(
    old: Option<types::cgnat_session>,
    mut v: types::cgnat_session,
) -> Option<types::cgnat_session> {
    if let Some(old) = old {
        if old.int_addr != v.int_addr || old.int_port != v.int_port {
            return None;
        }
        v.tcp |= old.tcp;
        if (old.last_seen.wrapping_sub(v.last_seen) as i32) > 0 {
            v.last_seen = old.last_seen;
        }
    }
    Some(v)
}

fn endpoint(proto: u8, addr: Ipv4Addr, port: u16) -> types::cgnat_endpoint {
    types::cgnat_endpoint {
        addr: be(addr),
        port: port.to_be(),
        proto,
        _pad: 0,
    }
}

fn session_key(
    proto: u8,
    ext_addr: Ipv4Addr,
    ext_port: u16,
    rem_addr: Ipv4Addr,
    rem_port: u16,
) -> types::cgnat_session_key {
    types::cgnat_session_key {
        ext_addr: be(ext_addr),
        rem_addr: be(rem_addr),
        ext_port: ext_port.to_be(),
        rem_port: rem_port.to_be(),
        proto,
        ..Default::default()
    }
}

fn lookup<T: crate::bpf::Pod>(
    map: &impl MapCore,
    key: &[u8],
) -> Result<Option<T>, libbpf_rs::Error> {
    Ok(map
        .lookup(key, MapFlags::ANY)?
        .and_then(|v| from_bytes::<T>(&v)))
}

/// The kernel's error inside a session or binding table error:
/// [`install`] reports libbpf's errors, for those tables as for the
/// others.
fn kernel_err(e: BpfError) -> libbpf_rs::Error {
    match e {
        BpfError::Map { err, .. } => err,
        other => libbpf_rs::Error::from(std::io::Error::other(other.to_string())),
    }
}

fn ignore_exists(e: libbpf_rs::Error) -> Result<(), libbpf_rs::Error> {
    if e.kind() == libbpf_rs::ErrorKind::AlreadyExists {
        Ok(())
    } else {
        Err(e)
    }
}

/// The records of a batch at most: a datagram's fit.
const BATCH: usize = 256;

/// A record of a batch, as this node stores it.
enum Row {
    Session(types::cgnat_session_key, types::cgnat_session),
    /// A live binding (a quarantine also removes an outbound half it only
    /// learns by reading, so it is installed on its own).
    Binding(BindingRow),
    /// Anything else: installed on its own.
    Alone,
}

impl Row {
    fn of(rec: &Record, now_ns: u64) -> Row {
        if let Some((k, v)) = session_row(rec, now_ns) {
            return Row::Session(k, v);
        }
        match binding_row(rec, now_ns) {
            Some(b) if !b.quarantined => Row::Binding(b),
            _ => Row::Alone,
        }
    }

    /// The session table keys it reads and writes, whole and tagged by
    /// kind: a session's, or a binding's two halves' (external, then
    /// internal endpoint).
    fn keys(&self) -> impl Iterator<Item = SlotId> {
        match self {
            Row::Session(k, _) => [Some(slot_id(0, bytes_of(k))), None],
            Row::Binding(b) => [
                Some(slot_id(1, bytes_of(&b.ek))),
                Some(slot_id(2, bytes_of(&b.ik))),
            ],
            Row::Alone => [None, None],
        }
        .into_iter()
        .flatten()
    }
}

/// A session table key, whole (a session key's 16 bytes, an endpoint's 8
/// and zeros), tagged by kind.
type SlotId = (u8, [u8; 16]);
const _: () = assert!(
    std::mem::size_of::<types::cgnat_session_key>() == 16
        && std::mem::size_of::<types::cgnat_endpoint>() <= 16
);

fn slot_id(kind: u8, key: &[u8]) -> SlotId {
    let mut id = [0u8; 16];
    id[..key.len()].copy_from_slice(key);
    (kind, id)
}

/// Installs `recs` in order, as [`install`] would one after the other,
/// and gives each record's outcome. Runs of sessions and of live bindings
/// whose keys differ are read and written in batches ([`install_batch`]);
/// every other record, and one whose key a record of the run already
/// touches, is installed on its own.
pub fn install_all(
    t: &Tables,
    recs: &[Record],
    now_ns: u64,
    rate_tokens: u32,
) -> Vec<Result<Outcome, libbpf_rs::Error>> {
    let rows: Vec<Row> = recs.iter().map(|r| Row::of(r, now_ns)).collect();
    let mut out = Vec::with_capacity(recs.len());
    let mut at = 0;
    while at < recs.len() {
        let end = batch_end(&rows, at);
        if end - at < 2 {
            out.push(install(t, &recs[at], now_ns, rate_tokens));
            at += 1;
            continue;
        }
        out.extend(install_batch(t, &rows[at..end]).unwrap_or_else(|_| {
            // records are idempotent: what the batch wrote is written again
            recs[at..end]
                .iter()
                .map(|r| install(t, r, now_ns, rate_tokens))
                .collect()
        }));
        at = end;
    }
    out
}

/// The end of the batch that starts at `rows[at]`: the rows from there
/// that are sessions or live bindings, up to the first whose key a row
/// before it in the batch reads or writes.
fn batch_end(rows: &[Row], at: usize) -> usize {
    let mut keys: HashSet<SlotId> = HashSet::new();
    let mut end = at;
    while end < rows.len() && end - at < BATCH {
        let mut ks = rows[end].keys().peekable();
        if ks.peek().is_none() || !ks.all(|k| keys.insert(k)) {
            break;
        }
        end += 1;
    }
    end
}

/// Installs a batch of sessions and live bindings with distinct keys (as
/// [`batch_end`] cuts them): every key read at once, the same checks as
/// [`install`], then every write at once. An error means the batch could
/// not be run.
fn install_batch(
    t: &Tables,
    rows: &[Row],
) -> Result<Vec<Result<Outcome, libbpf_rs::Error>>, BpfError> {
    let mut out: Vec<Result<Outcome, libbpf_rs::Error>> =
        rows.iter().map(|_| Ok(Outcome::Conflict)).collect();
    let sessions: Vec<_> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Row::Session(k, v) => Some((i, *k, *v)),
            _ => None,
        })
        .collect();
    let bindings: Vec<_> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Row::Binding(b) => Some((i, b)),
            _ => None,
        })
        .collect();
    let keys: Vec<_> = sessions.iter().map(|(_, k, _)| *k).collect();
    let mut writes = Vec::new();
    for ((i, k, v), old) in sessions.iter().zip(t.sessions.get_many(&keys)?) {
        if let Some(v) = merge_session(old, *v) {
            writes.push((*i, (*k, v)));
        }
    }
    let pairs: Vec<_> = bindings.iter().map(|(_, b)| (b.ek, b.ik)).collect();
    let mut bwrites = Vec::new();
    for ((i, b), (old_in, old_out)) in bindings.iter().zip(t.bindings.get_pairs(&pairs)?) {
        if !in_conflict(old_in.as_ref(), b) && !out_conflict(old_out.as_ref(), b) {
            bwrites.push((*i, (b.ek, b.rev, b.fwd)));
        }
    }
    let done: Vec<_> = writes.iter().map(|(_, r)| *r).collect();
    for ((i, _), r) in writes.iter().zip(t.sessions.upsert_many(&done)?) {
        out[*i] = r.map(|_| Outcome::Applied).map_err(kernel_err);
    }
    let done: Vec<_> = bwrites.iter().map(|(_, r)| *r).collect();
    for ((i, _), r) in bwrites.iter().zip(t.bindings.upsert_many(&done)?) {
        out[*i] = r.map(|_| Outcome::Applied).map_err(kernel_err);
    }
    Ok(out)
}
