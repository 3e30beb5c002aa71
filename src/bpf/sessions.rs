//! The session table (`sessions` in bpf/maps.h) as user space sees it:
//! every read and write of it from the daemon, the CLI and the kit goes
//! through [`Sessions`], with keys and values typed as include/cgnat.h
//! defines them (`cgnat_session_key`: external and remote endpoint and
//! protocol; `cgnat_session`: internal endpoint, flags, TCP events, last
//! seen).
//!
//! An absent key is never an error: [`Sessions::get`] gives `None`,
//! [`Sessions::update_existing`] and [`Sessions::delete`] give `false`, and
//! [`Sessions::insert_new`] gives `false` when the key is already there.
//! Errors are the kernel's, as [`BpfError::Map`] naming `sessions`.
//!
//! The table is a kernel hash map: reads of the whole table are batched
//! (BPF_MAP_LOOKUP_BATCH), and the data path may add, refresh or delete
//! sessions while they run.

use super::*;

type Key = types::cgnat_session_key;
type Session = types::cgnat_session;

const NAME: &str = "sessions";

/// Entries per batched call.
const BATCH: u32 = 4096;

/// The session table.
#[derive(Debug)]
pub struct Sessions(MapHandle);

impl Sessions {
    /// The `sessions` map of a loaded program or opened from its pin.
    pub(super) fn new(map: MapHandle) -> Sessions {
        Sessions(map)
    }

    /// The map itself, only for what concerns the map rather than its
    /// sessions (its memory accounting in the benchmark); sessions are
    /// read and written through the other methods.
    pub fn map(&self) -> &MapHandle {
        &self.0
    }

    /// Every session, in no particular order; empty when there are none.
    pub fn dump(&self) -> Result<Vec<(Key, Session)>, BpfError> {
        dump_typed(&self.0, NAME, BATCH)
    }

    /// The session of `k`; `None` when there is none.
    pub fn get(&self, k: &Key) -> Result<Option<Session>, BpfError> {
        let v = self
            .0
            .lookup(bytes_of(k), MapFlags::ANY)
            .map_err(map_err(NAME))?;
        Ok(v.and_then(|b| from_bytes(&b)))
    }

    /// Rewrites the session of `k` with `v`; `false` (and nothing
    /// written) when there is none.
    pub fn update_existing(&self, k: &Key, v: &Session) -> Result<bool, BpfError> {
        absent_is_false(
            self.0.update(bytes_of(k), bytes_of(v), MapFlags::EXIST),
            libbpf_rs::ErrorKind::NotFound,
        )
    }

    /// Writes the session of `k`, whether or not there was one.
    pub fn upsert(&self, k: &Key, v: &Session) -> Result<(), BpfError> {
        self.0
            .update(bytes_of(k), bytes_of(v), MapFlags::ANY)
            .map_err(map_err(NAME))
    }

    /// Writes the session of `k` if there is none yet; `false` (and the
    /// existing one kept) when there is.
    pub fn insert_new(&self, k: &Key, v: &Session) -> Result<bool, BpfError> {
        absent_is_false(
            self.0.update(bytes_of(k), bytes_of(v), MapFlags::NO_EXIST),
            libbpf_rs::ErrorKind::AlreadyExists,
        )
    }

    /// Writes every (key, session) of `rows` in one batched call, whether
    /// or not the keys were there; nothing to do for an empty slice.
    pub fn insert_batch(&self, rows: &[(Key, Session)]) -> Result<(), BpfError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(rows.len() * std::mem::size_of::<Key>());
        let mut vals = Vec::with_capacity(rows.len() * std::mem::size_of::<Session>());
        for (k, v) in rows {
            keys.extend_from_slice(bytes_of(k));
            vals.extend_from_slice(bytes_of(v));
        }
        self.0
            .update_batch(
                &keys,
                &vals,
                rows.len() as u32,
                MapFlags::ANY,
                MapFlags::ANY,
            )
            .map_err(map_err(NAME))
    }

    /// Deletes the session of `k`; `false` when there was none.
    pub fn delete(&self, k: &Key) -> Result<bool, BpfError> {
        absent_is_false(self.0.delete(bytes_of(k)), libbpf_rs::ErrorKind::NotFound)
    }

    /// Deletes the sessions of `keys`, in batches; keys already gone are
    /// skipped. Reports no error: a batch the kernel refuses (it stops at
    /// a key that vanished meanwhile) is retried key by key, and a session
    /// that still cannot be deleted stays in the table.
    pub fn delete_all(&self, keys: &[Key]) -> Result<(), BpfError> {
        delete_keys(&self.0, keys, BATCH);
        Ok(())
    }

    /// How many sessions there are, by walking the keys one by one; 0 when
    /// there are none. The walk is not a snapshot: sessions the data path
    /// adds or deletes meanwhile may or may not be counted.
    pub fn count(&self) -> Result<u64, BpfError> {
        Ok(self.0.keys().count() as u64)
    }
}

/// `Ok(true)` on success, `Ok(false)` when the kernel's error is `absent`
/// (the key is missing, or present for an insert), else the map error.
fn absent_is_false(
    r: Result<(), libbpf_rs::Error>,
    absent: libbpf_rs::ErrorKind,
) -> Result<bool, BpfError> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == absent => Ok(false),
        Err(e) => Err(map_err(NAME)(e)),
    }
}
