//! The binding table (both halves of every binding are slots of the
//! session table, include/cgnat.h) as user space sees it: every read and
//! write of it from the daemon, the CLI and the kit goes through
//! [`Bindings`], with keys and values typed as include/cgnat.h defines
//! them (`cgnat_endpoint`, `cgnat_binding`).
//!
//! A binding has two halves. The inbound one (`CGNAT_KIND_BIND_IN`) maps
//! the external endpoint to the internal one; it also holds the ports in
//! quarantine (`CGNAT_BIND_QUARANTINE`, the quarantine's start in `addr`),
//! which have no outbound half. The outbound one (`CGNAT_KIND_BIND_OUT`)
//! maps the internal endpoint ([`Bindings::internal_endpoint`]) to the
//! external one. Both are written through `session_ops` like sessions.
//! "The bindings" are the inbound halves: [`Bindings::dump`] and
//! [`Bindings::count`] list and count those, quarantined ones included.
//! Tables opened from their pins (the CLI) can read, and find one
//! inbound half by reading them all ([`Bindings::get_in`]).
//!
//! An absent key is never an error: [`Bindings::get_in`] and
//! [`Bindings::get_out`] give `None`, [`Bindings::update_in`],
//! [`Bindings::unbind_out`] and [`Bindings::delete`] give `false`. Errors
//! are the kernel's, as [`BpfError::Map`] naming the table (`sessions`); a
//! full table is `E2BIG`.

use super::sessions::{self, SlotTable};
use super::*;
use std::sync::Arc;

type Endpoint = types::cgnat_endpoint;
type Binding = types::cgnat_binding;
type Key = types::cgnat_session_key;
type Session = types::cgnat_session;
type Kind = types::cgnat_session_op_kind;
type SlotKind = types::cgnat_slot_kind;

/// What [`Bindings::get_pairs`] reads for a row: the inbound half of its
/// external endpoint and the outbound half of its internal endpoint.
pub type Halves = (Option<Binding>, Option<Binding>);

/// The bindings' halves in the session table.
#[derive(Debug)]
pub struct Bindings(Arc<SlotTable>);

impl Bindings {
    pub(super) fn new(slots: Arc<SlotTable>) -> Bindings {
        Bindings(slots)
    }

    /// The outbound key of a binding: the subscriber's endpoint.
    pub fn internal_endpoint(ek: &Endpoint, b: &Binding) -> Endpoint {
        Endpoint {
            addr: b.addr,
            port: b.port,
            proto: ek.proto,
            _pad: 0,
        }
    }

    /// Every binding, quarantined ones included: (external endpoint,
    /// inbound half), in no particular order. Not a snapshot: bindings
    /// the data path adds or the daemon deletes meanwhile may or may not
    /// be there.
    pub fn dump(&self) -> Result<Vec<(Endpoint, Binding)>, BpfError> {
        self.dump_kind(IN_KIND)
    }

    /// Every outbound half: (internal endpoint, outbound half).
    pub fn dump_out(&self) -> Result<Vec<(Endpoint, Binding)>, BpfError> {
        self.dump_kind(OUT_KIND)
    }

    fn dump_kind(&self, kind: SlotKind) -> Result<Vec<(Endpoint, Binding)>, BpfError> {
        let mut out = Vec::new();
        self.0
            .scan(kind, |k, v| out.push((endpoint(k), binding(v))))?;
        Ok(out)
    }

    /// Visits every inbound half, as [`Bindings::dump`] lists them,
    /// without collecting them.
    pub fn scan(&self, mut f: impl FnMut(&Endpoint, &Binding)) -> Result<(), BpfError> {
        self.0.scan(IN_KIND, |k, v| f(&endpoint(k), &binding(v)))
    }

    /// [`Bindings::scan`] with each inbound half's slot number, ascending:
    /// the same number names the same entry until it is deleted.
    pub fn scan_slots(&self, mut f: impl FnMut(u32, &Endpoint, &Binding)) -> Result<(), BpfError> {
        self.0
            .scan_slots(IN_KIND, |i, k, v| f(i, &endpoint(k), &binding(v)))
    }

    /// The inbound half of external endpoint `ek`; `None` when there is
    /// none. Without `session_ops` (tables opened from their pins), it
    /// reads every inbound half.
    pub fn get_in(&self, ek: &Endpoint) -> Result<Option<Binding>, BpfError> {
        if !self.0.can_write() {
            return Ok(self
                .dump()?
                .into_iter()
                .find(|(e, _)| bytes_of(e) == bytes_of(ek))
                .map(|(_, b)| b));
        }
        self.get(ek, IN_KIND)
    }

    /// The outbound half of internal endpoint `ik`; `None` when there is
    /// none.
    pub fn get_out(&self, ik: &Endpoint) -> Result<Option<Binding>, BpfError> {
        self.get(ik, OUT_KIND)
    }

    fn get(&self, e: &Endpoint, kind: SlotKind) -> Result<Option<Binding>, BpfError> {
        let op = self
            .0
            .run_one(Kind::CGNAT_SOP_GET, &half_key(e, kind), &Session::default())?;
        Ok((op.result == 0).then(|| binding(&op.s)))
    }

    /// Writes both halves of a binding, the inbound one first: `inbound`
    /// under `ek`, `outbound` under the internal endpoint `inbound` names;
    /// whether or not they were there.
    pub fn upsert(
        &self,
        ek: &Endpoint,
        inbound: &Binding,
        outbound: &Binding,
    ) -> Result<(), BpfError> {
        self.upsert_in(ek, inbound)?;
        self.upsert_out(&Bindings::internal_endpoint(ek, inbound), outbound)
    }

    /// For each (external endpoint, internal endpoint) of `rows`: the
    /// inbound half of the one and the outbound half of the other, as
    /// [`Bindings::get_in`] and [`Bindings::get_out`] read them, in order and
    /// in as few runs of `session_ops` as fit.
    pub fn get_pairs(&self, rows: &[(Endpoint, Endpoint)]) -> Result<Vec<Halves>, BpfError> {
        let get = |e: &Endpoint, kind| {
            sessions::op(Kind::CGNAT_SOP_GET, &half_key(e, kind), &Session::default())
        };
        let ops = rows
            .iter()
            .flat_map(|(ek, ik)| [get(ek, IN_KIND), get(ik, OUT_KIND)])
            .collect();
        let found = |o: &types::cgnat_session_op| (o.result == 0).then(|| binding(&o.s));
        Ok(self
            .0
            .run(ops)?
            .chunks_exact(2)
            .map(|p| (found(&p[0]), found(&p[1])))
            .collect())
    }

    /// Writes both halves of each binding of `rows` (external endpoint,
    /// inbound half, outbound half) as [`Bindings::upsert`] writes one: the
    /// inbound halves, then the outbound halves of those that were written.
    /// Each binding's own result, in order.
    pub fn upsert_many(
        &self,
        rows: &[(Endpoint, Binding, Binding)],
    ) -> Result<Vec<Result<(), BpfError>>, BpfError> {
        let put = |e: &Endpoint, kind, b: &Binding| {
            sessions::op(Kind::CGNAT_SOP_UPSERT, &half_key(e, kind), &half_value(b))
        };
        let ins = rows.iter().map(|(ek, b, _)| put(ek, IN_KIND, b)).collect();
        let mut res: Vec<Result<(), BpfError>> = self
            .0
            .run(ins)?
            .iter()
            .map(|o| sessions::check(o.result))
            .collect();
        let written: Vec<usize> = (0..rows.len()).filter(|i| res[*i].is_ok()).collect();
        let outs = written
            .iter()
            .map(|i| {
                let (ek, b, f) = &rows[*i];
                put(&Bindings::internal_endpoint(ek, b), OUT_KIND, f)
            })
            .collect();
        for (i, o) in written.iter().zip(self.0.run(outs)?) {
            res[*i] = sessions::check(o.result);
        }
        Ok(res)
    }

    /// Writes the inbound half of `ek`, whether or not there was one.
    pub fn upsert_in(&self, ek: &Endpoint, b: &Binding) -> Result<(), BpfError> {
        self.put(Kind::CGNAT_SOP_UPSERT, ek, IN_KIND, b)
    }

    /// Writes the outbound half of `ik`, whether or not there was one.
    pub fn upsert_out(&self, ik: &Endpoint, b: &Binding) -> Result<(), BpfError> {
        self.put(Kind::CGNAT_SOP_UPSERT, ik, OUT_KIND, b)
    }

    fn put(&self, op: Kind, e: &Endpoint, kind: SlotKind, b: &Binding) -> Result<(), BpfError> {
        let op = self.0.run_one(op, &half_key(e, kind), &half_value(b))?;
        sessions::check(op.result)
    }

    /// Rewrites the inbound half of `ek` with `b`; `false` (and nothing
    /// written) when there is none.
    pub fn update_in(&self, ek: &Endpoint, b: &Binding) -> Result<bool, BpfError> {
        let op = self.0.run_one(
            Kind::CGNAT_SOP_UPDATE,
            &half_key(ek, IN_KIND),
            &half_value(b),
        )?;
        sessions::absent_is_false(op.result, sessions::ENOENT)
    }

    /// Writes the inbound halves `inbound`, then the outbound halves
    /// `outbound`, whether or not the keys were there; stops at the first
    /// error.
    pub fn upsert_batch(
        &self,
        inbound: &[(Endpoint, Binding)],
        outbound: &[(Endpoint, Binding)],
    ) -> Result<(), BpfError> {
        let halves = |rows: &[(Endpoint, Binding)], kind: SlotKind| {
            rows.iter()
                .map(move |(e, b)| {
                    sessions::op(Kind::CGNAT_SOP_UPSERT, &half_key(e, kind), &half_value(b))
                })
                .collect::<Vec<_>>()
        };
        for (rows, kind) in [(inbound, IN_KIND), (outbound, OUT_KIND)] {
            for op in self.0.run(halves(rows, kind))? {
                sessions::check(op.result)?;
            }
        }
        Ok(())
    }

    /// Removes a binding's outbound half: no new session can find it. Its
    /// inbound half (`ek`) stays, for the caller to quarantine or delete.
    /// `false` when there was none.
    pub fn unbind_out(&self, ek: &Endpoint, b: &Binding) -> Result<bool, BpfError> {
        let ik = Bindings::internal_endpoint(ek, b);
        self.delete_half(&ik, OUT_KIND)
    }

    fn delete_half(&self, e: &Endpoint, kind: SlotKind) -> Result<bool, BpfError> {
        let op = self.0.run_one(
            Kind::CGNAT_SOP_DELETE,
            &half_key(e, kind),
            &Session::default(),
        )?;
        sessions::absent_is_false(op.result, sessions::ENOENT)
    }

    /// Removes both halves of a binding, the outbound one first; `false`
    /// when there was no inbound half.
    pub fn delete(&self, ek: &Endpoint, b: &Binding) -> Result<bool, BpfError> {
        self.unbind_out(ek, b)?;
        self.delete_half(ek, IN_KIND)
    }

    /// Removes the inbound halves of `keys` (bindings already unbound, or
    /// quarantined ports); keys already gone are skipped.
    pub fn delete_in_all(&self, keys: &[Endpoint]) -> Result<(), BpfError> {
        let ops = keys
            .iter()
            .map(|e| {
                sessions::op(
                    Kind::CGNAT_SOP_DELETE,
                    &half_key(e, IN_KIND),
                    &Session::default(),
                )
            })
            .collect();
        self.delete_ops(ops)
    }

    fn delete_ops(&self, ops: Vec<types::cgnat_session_op>) -> Result<(), BpfError> {
        for op in self.0.run(ops)? {
            if op.result != -sessions::ENOENT {
                sessions::check(op.result)?;
            }
        }
        Ok(())
    }

    /// Removes every binding, both halves.
    pub fn clear(&self) -> Result<(), BpfError> {
        for kind in [OUT_KIND, IN_KIND] {
            let ops = self
                .0
                .dump(kind)?
                .iter()
                .map(|(k, _)| sessions::op(Kind::CGNAT_SOP_DELETE, k, &Session::default()))
                .collect();
            self.delete_ops(ops)?;
        }
        Ok(())
    }

    /// How many bindings there are (inbound halves, quarantined ones
    /// included).
    pub fn count(&self) -> Result<u64, BpfError> {
        self.0.count(IN_KIND)
    }

    /// How many outbound halves there are.
    pub fn count_out(&self) -> Result<u64, BpfError> {
        self.0.count(OUT_KIND)
    }
}

const OUT_KIND: SlotKind = SlotKind::CGNAT_KIND_BIND_OUT;
const IN_KIND: SlotKind = SlotKind::CGNAT_KIND_BIND_IN;

/// The session table's key of the half of `kind` keyed by endpoint `e`
/// (include/cgnat.h).
fn half_key(e: &Endpoint, kind: SlotKind) -> Key {
    Key {
        ext_addr: e.addr,
        ext_port: e.port,
        proto: e.proto,
        kind: kind.0 as u8,
        ..Key::default()
    }
}

/// The endpoint a half's key names.
fn endpoint(k: &Key) -> Endpoint {
    Endpoint {
        addr: k.ext_addr,
        port: k.ext_port,
        proto: k.proto,
        _pad: 0,
    }
}

/// The bytes of a binding within a half's value: its first 8
/// (include/cgnat.h), the rest 0.
const HALF: std::ops::Range<usize> = 0..std::mem::size_of::<Binding>();

/// A half's value, holding binding `b`.
fn half_value(b: &Binding) -> Session {
    let mut v = bytes_of(&Session::default()).to_vec();
    v[HALF].copy_from_slice(bytes_of(b));
    from_bytes(&v).unwrap_or_default()
}

/// The binding a half's value holds.
fn binding(s: &Session) -> Binding {
    from_bytes(&bytes_of(s)[HALF]).unwrap_or_default()
}
