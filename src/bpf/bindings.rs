//! The binding table (`bind_in` in bpf/maps.h, and the outbound halves
//! in the session table, include/cgnat.h) as user space sees it: every read and write of it from the daemon, the CLI and
//! the kit goes through [`Bindings`], with keys and values typed as
//! include/cgnat.h defines them (`cgnat_endpoint`, `cgnat_binding`).
//!
//! A binding has two halves. The inbound one (`bind_in`) maps the
//! external endpoint to the internal one; it also holds the ports in
//! quarantine (`CGNAT_BIND_QUARANTINE`, the quarantine's start in `addr`),
//! which have no outbound half. The outbound one (a slot of kind
//! `CGNAT_KIND_BIND_OUT` in the session table, written through
//! `session_ops` like sessions) maps the internal endpoint
//! ([`Bindings::internal_endpoint`]) to the external one. "The bindings" are the inbound halves: [`Bindings::dump`] and
//! [`Bindings::count`] list and count those, quarantined ones included.
//!
//! An absent key is never an error: [`Bindings::get_in`] and
//! [`Bindings::get_out`] give `None`, [`Bindings::update_in`],
//! [`Bindings::unbind_out`] and [`Bindings::delete`] give `false`. Errors
//! are the kernel's, as [`BpfError::Map`] naming the map (`bind_in` or
//! `sessions`).

use super::sessions::{self, SlotTable};
use super::*;
use std::sync::Arc;

type Endpoint = types::cgnat_endpoint;
type Binding = types::cgnat_binding;
type Key = types::cgnat_session_key;
type Session = types::cgnat_session;
type Kind = types::cgnat_session_op_kind;

const IN: &str = "bind_in";

/// Entries per batched read or delete.
const BATCH: u32 = 4096;

/// The binding table.
#[derive(Debug)]
pub struct Bindings {
    inbound: MapHandle,
    outbound: Arc<SlotTable>,
}

impl Bindings {
    pub(super) fn new(bind_in: MapHandle, slots: Arc<SlotTable>) -> Bindings {
        Bindings {
            inbound: bind_in,
            outbound: slots,
        }
    }

    /// The map of the inbound halves, only for what concerns the map
    /// rather than the bindings (its memory accounting in the benchmark;
    /// the outbound halves are in the sessions' maps).
    pub fn maps(&self) -> [(&'static str, &MapHandle); 1] {
        [(IN, &self.inbound)]
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
        dump_typed(&self.inbound, IN, BATCH)
    }

    /// Every outbound half: (internal endpoint, outbound half).
    pub fn dump_out(&self) -> Result<Vec<(Endpoint, Binding)>, BpfError> {
        let slots = self.outbound.dump(OUT_KIND)?;
        Ok(slots
            .iter()
            .map(|(k, v)| (endpoint(k), binding(v)))
            .collect())
    }

    /// The inbound half of external endpoint `ek`; `None` when there is
    /// none.
    pub fn get_in(&self, ek: &Endpoint) -> Result<Option<Binding>, BpfError> {
        get(&self.inbound, IN, ek)
    }

    /// The outbound half of internal endpoint `ik`; `None` when there is
    /// none.
    pub fn get_out(&self, ik: &Endpoint) -> Result<Option<Binding>, BpfError> {
        let op = self
            .outbound
            .run_one(Kind::CGNAT_SOP_GET, &out_key(ik), &Session::default())?;
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

    /// Writes the inbound half of `ek`, whether or not there was one.
    pub fn upsert_in(&self, ek: &Endpoint, b: &Binding) -> Result<(), BpfError> {
        self.inbound
            .update(bytes_of(ek), bytes_of(b), MapFlags::ANY)
            .map_err(map_err(IN))
    }

    /// Writes the outbound half of `ik`, whether or not there was one.
    pub fn upsert_out(&self, ik: &Endpoint, b: &Binding) -> Result<(), BpfError> {
        let op = self
            .outbound
            .run_one(Kind::CGNAT_SOP_UPSERT, &out_key(ik), &out_value(b))?;
        sessions::check(op.result)
    }

    /// Rewrites the inbound half of `ek` with `b`; `false` (and nothing
    /// written) when there is none.
    pub fn update_in(&self, ek: &Endpoint, b: &Binding) -> Result<bool, BpfError> {
        absent_is_false(
            self.inbound
                .update(bytes_of(ek), bytes_of(b), MapFlags::EXIST),
            IN,
        )
    }

    /// Writes the inbound halves `inbound` in one batch, then the
    /// outbound halves `outbound`, whether or not the keys were there;
    /// stops at the first error.
    pub fn upsert_batch(
        &self,
        inbound: &[(Endpoint, Binding)],
        outbound: &[(Endpoint, Binding)],
    ) -> Result<(), BpfError> {
        if !inbound.is_empty() {
            let (mut keys, mut vals) = (Vec::new(), Vec::new());
            for (k, v) in inbound {
                keys.extend_from_slice(bytes_of(k));
                vals.extend_from_slice(bytes_of(v));
            }
            self.inbound
                .update_batch(
                    &keys,
                    &vals,
                    inbound.len() as u32,
                    MapFlags::ANY,
                    MapFlags::ANY,
                )
                .map_err(map_err(IN))?;
        }
        let ops = outbound
            .iter()
            .map(|(k, v)| sessions::op(Kind::CGNAT_SOP_UPSERT, &out_key(k), &out_value(v)))
            .collect();
        for op in self.outbound.run(ops)? {
            sessions::check(op.result)?;
        }
        Ok(())
    }

    /// Removes a binding's outbound half: no new session can find it. Its
    /// inbound half (`ek`) stays, for the caller to quarantine or delete.
    /// `false` when there was none.
    pub fn unbind_out(&self, ek: &Endpoint, b: &Binding) -> Result<bool, BpfError> {
        let ik = Bindings::internal_endpoint(ek, b);
        let op =
            self.outbound
                .run_one(Kind::CGNAT_SOP_DELETE, &out_key(&ik), &Session::default())?;
        sessions::absent_is_false(op.result, sessions::ENOENT)
    }

    /// Removes both halves of a binding, the outbound one first; `false`
    /// when there was no inbound half.
    pub fn delete(&self, ek: &Endpoint, b: &Binding) -> Result<bool, BpfError> {
        self.unbind_out(ek, b)?;
        absent_is_false(self.inbound.delete(bytes_of(ek)), IN)
    }

    /// Removes the inbound halves of `keys` (bindings already unbound, or
    /// quarantined ports); keys already gone are skipped.
    pub fn delete_in_all(&self, keys: &[Endpoint]) -> Result<(), BpfError> {
        delete_keys(&self.inbound, keys, BATCH);
        Ok(())
    }

    /// Removes every binding, both halves.
    pub fn clear(&self) -> Result<(), BpfError> {
        let ops = self
            .outbound
            .dump(OUT_KIND)?
            .iter()
            .map(|(k, _)| sessions::op(Kind::CGNAT_SOP_DELETE, k, &Session::default()))
            .collect();
        for op in self.outbound.run(ops)? {
            if op.result != -sessions::ENOENT {
                sessions::check(op.result)?;
            }
        }
        let keys: Vec<Endpoint> = self.dump()?.into_iter().map(|(k, _)| k).collect();
        self.delete_in_all(&keys)
    }

    /// How many bindings there are (inbound halves, quarantined ones
    /// included).
    pub fn count(&self) -> Result<u64, BpfError> {
        Ok(self.inbound.keys().count() as u64)
    }

    /// How many outbound halves there are.
    pub fn count_out(&self) -> Result<u64, BpfError> {
        self.outbound.count(OUT_KIND)
    }
}

const OUT_KIND: types::cgnat_slot_kind = types::cgnat_slot_kind::CGNAT_KIND_BIND_OUT;

/// The session table's key of the outbound half of internal endpoint `ik`.
fn out_key(ik: &Endpoint) -> Key {
    Key {
        ext_addr: ik.addr,
        ext_port: ik.port,
        proto: ik.proto,
        kind: OUT_KIND.0 as u8,
        ..Key::default()
    }
}

/// The internal endpoint an outbound half's key names.
fn endpoint(k: &Key) -> Endpoint {
    Endpoint {
        addr: k.ext_addr,
        port: k.ext_port,
        proto: k.proto,
        _pad: 0,
    }
}

/// The bytes of a binding within an outbound half's value: its first 8
/// (include/cgnat.h), the rest 0.
const HALF: std::ops::Range<usize> = 0..std::mem::size_of::<Binding>();

/// An outbound half's value, holding binding `b`.
fn out_value(b: &Binding) -> Session {
    let mut v = bytes_of(&Session::default()).to_vec();
    v[HALF].copy_from_slice(bytes_of(b));
    from_bytes(&v).unwrap_or_default()
}

/// The binding an outbound half's value holds.
fn binding(s: &Session) -> Binding {
    from_bytes(&bytes_of(s)[HALF]).unwrap_or_default()
}

fn get(map: &MapHandle, name: &'static str, k: &Endpoint) -> Result<Option<Binding>, BpfError> {
    let v = map
        .lookup(bytes_of(k), MapFlags::ANY)
        .map_err(map_err(name))?;
    Ok(v.and_then(|b| from_bytes(&b)))
}

/// `Ok(true)` on success, `Ok(false)` when the key was missing, else the
/// error of map `name`.
fn absent_is_false(r: Result<(), libbpf_rs::Error>, name: &'static str) -> Result<bool, BpfError> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(map_err(name)(e)),
    }
}
