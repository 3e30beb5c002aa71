//! The session table (`sessions` in bpf/maps.h, laid out as
//! include/cgnat.h's `struct cgnat_session_seg` describes) as user space
//! sees it: every read and write of it from the daemon, the CLI and the
//! kit goes through [`Sessions`], with keys and values typed as
//! include/cgnat.h defines them (`cgnat_session_key`: external and remote
//! endpoint and protocol; `cgnat_session`: internal endpoint, flags, TCP
//! events, last seen).
//!
//! Reads walk the table's segments through memory and keep the live
//! slots: the map is BPF_F_MMAPABLE, and each read maps it (a few
//! milliseconds per 100 MiB) rather than the daemon holding a mapping of
//! the whole table all its life. A table that cannot be mapped is read in
//! batches.
//! Writes and single lookups run the SEC("syscall") program `session_ops`
//! (bpf/sessions.h), so the daemon hashes, probes and locks with the data
//! path's own code; they need a loaded program (tables opened from their
//! pins, as the CLI does, can only be read).
//!
//! The same table holds both halves of every binding, each kind in
//! segments of its own after the sessions' (`cgnat_slot_kind`):
//! [`SlotTable`] reads and writes slots of any kind, [`Sessions`] only
//! sessions and `Bindings` (bindings.rs) only bindings' halves.
//!
//! An absent key is never an error: [`Sessions::get`] gives `None`,
//! [`Sessions::update_existing`] and [`Sessions::delete`] give `false`, and
//! [`Sessions::insert_new`] gives `false` when the key is already there.
//! Errors are the kernel's, as [`BpfError::Map`] naming `sessions`; a full
//! table is `E2BIG`.

use super::*;
use std::sync::{Arc, Mutex};

type Key = types::cgnat_session_key;
type Session = types::cgnat_session;
type Op = types::cgnat_session_op;
type Kind = types::cgnat_session_op_kind;
type SlotKind = types::cgnat_slot_kind;

const SEG_SLOTS: u32 = types::cgnat_session_table::CGNAT_SEG_SLOTS.0;
const NAME: &str = "sessions";

/// Segments per batched read (2 KiB each).
const BATCH: u32 = 256;

/// The geometry of the session table (include/cgnat.h, bpf/sessions.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTable {
    /// Segments of `CGNAT_SEG_SLOTS` slots for sessions.
    pub segments: u32,
    /// Segments for bindings' outbound halves, after the sessions', and
    /// as many for their inbound halves after those.
    pub bind_segments: u32,
    /// Sessions it may hold.
    pub max: u32,
    /// Bindings it may hold.
    pub max_bindings: u32,
    /// The key of its hash.
    pub seed: u64,
}

impl SessionTable {
    /// `CGNAT_SLOTS_PER_SESSION` slots per session and
    /// `CGNAT_SLOTS_PER_BINDING` per binding for each of its halves, in
    /// whole segments.
    pub fn new(max: u32, max_bindings: u32, seed: u64) -> SessionTable {
        let t = types::cgnat_session_table::CGNAT_SEG_SLOTS;
        let segs = |n: u32, per: u32| {
            let n = (u64::from(n) * u64::from(per))
                .div_ceil(u64::from(t.0))
                .max(1);
            n.min(1 << 23) as u32
        };
        SessionTable {
            segments: segs(max, types::cgnat_session_table::CGNAT_SLOTS_PER_SESSION.0),
            bind_segments: segs(
                max_bindings,
                types::cgnat_session_table::CGNAT_SLOTS_PER_BINDING.0,
            ),
            max,
            max_bindings,
            seed,
        }
    }

    /// The segments of the whole table (the size of `sessions`).
    pub fn total_segments(&self) -> u32 {
        self.segments + 2 * self.bind_segments
    }

    /// How many slots of `kind` the table may hold.
    pub fn limit(&self, kind: SlotKind) -> u32 {
        match kind {
            SlotKind::CGNAT_KIND_SESSION => self.max,
            _ => self.max_bindings,
        }
    }

    /// The segments of one kind's region (bpf/sessions.h,
    /// `region_start()`).
    pub fn region(&self, kind: SlotKind) -> std::ops::Range<u32> {
        let (s, b) = (self.segments, self.bind_segments);
        match kind {
            SlotKind::CGNAT_KIND_SESSION => 0..s,
            SlotKind::CGNAT_KIND_BIND_OUT => s..s + b,
            _ => s + b..s + 2 * b,
        }
    }
}

/// The table's slots of either kind: its maps and `session_ops`.
#[derive(Debug)]
pub struct SlotTable {
    /// Where each kind's segments are.
    table: SessionTable,
    segments: MapHandle,
    locks: MapHandle,
    count: MapHandle,
    /// `session_ops`, with a lock: the program works on one global copy
    /// of its context, so runs go one at a time.
    ops: Option<Mutex<OwnedFd>>,
}

impl SlotTable {
    pub(super) fn new(
        [segments, locks, count]: [MapHandle; 3],
        ops: Option<OwnedFd>,
        table: SessionTable,
    ) -> Arc<SlotTable> {
        Arc::new(SlotTable {
            table,
            segments,
            locks,
            count,
            ops: ops.map(Mutex::new),
        })
    }

    /// Visits every live slot of `kind`: its key and value, the slot's own
    /// fields zeroed. Not a snapshot.
    pub(super) fn scan(
        &self,
        kind: SlotKind,
        mut f: impl FnMut(&Key, &Session),
    ) -> Result<(), BpfError> {
        self.scan_slots(kind, |_, k, v| f(k, v))
    }

    /// [`SlotTable::scan`] with each slot's number (segment *
    /// CGNAT_SEG_SLOTS + place), in ascending order. A live entry stays in
    /// its slot: the number names it until it is deleted.
    pub(super) fn scan_slots(
        &self,
        kind: SlotKind,
        mut f: impl FnMut(u32, &Key, &Session),
    ) -> Result<(), BpfError> {
        let range = self.table.region(kind);
        let mut visit = |i: u32, seg: &types::cgnat_session_seg| {
            for (j, s) in seg.slot.iter().enumerate() {
                if s.key.kind != kind.0 as u8 {
                    continue;
                }
                if let Some((k, v)) = live(s) {
                    f(i * SEG_SLOTS + j as u32, &k, &v);
                }
            }
        };
        if let Ok(m) = MappedArray::<types::cgnat_session_seg>::new(&self.segments, NAME) {
            for i in range {
                if let Some(seg) = m.get(i as usize) {
                    visit(i, &seg);
                }
            }
            return Ok(());
        }
        scan_array_range(&self.segments, BATCH, range, |k, seg| {
            if let (Some(i), Some(seg)) = (
                from_bytes::<u32>(k),
                from_bytes::<types::cgnat_session_seg>(seg),
            ) {
                visit(i, &seg);
            }
        })
        .map_err(map_err(NAME))
    }

    /// Every live slot of `kind`, as [`SlotTable::scan`] visits them.
    pub(super) fn dump(&self, kind: SlotKind) -> Result<Vec<(Key, Session)>, BpfError> {
        let mut out = Vec::new();
        self.scan(kind, |k, v| out.push((*k, *v)))?;
        Ok(out)
    }

    /// How many slots of `kind` there are (the table's own count).
    pub(super) fn count(&self, kind: SlotKind) -> Result<u64, BpfError> {
        let v = self
            .count
            .lookup(bytes_of(&kind.0), MapFlags::ANY)
            .map_err(map_err("session_count"))?;
        Ok(v.and_then(|b| from_bytes::<u64>(&b)).unwrap_or(0))
    }

    /// Whether it has `session_ops`: tables opened from their pins can
    /// only be read.
    pub(super) fn can_write(&self) -> bool {
        self.ops.is_some()
    }

    pub(super) fn run_one(&self, kind: Kind, k: &Key, v: &Session) -> Result<Op, BpfError> {
        let mut out = self.run(vec![op(kind, k, v)])?;
        out.pop().ok_or_else(|| no_ops(EINVAL))
    }

    /// Runs `ops` through `session_ops`, CGNAT_SESSION_OPS at a time, and
    /// gives them back with their results.
    pub(super) fn run(&self, ops: Vec<Op>) -> Result<Vec<Op>, BpfError> {
        let Some(prog) = &self.ops else {
            return Err(no_ops(EPERM));
        };
        let prog = prog.lock().unwrap_or_else(|e| e.into_inner());
        let per = types::cgnat_session_op_kind::CGNAT_SESSION_OPS.0 as usize;
        let mut out = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(per) {
            let mut ctx = types::cgnat_session_ops {
                count: chunk.len() as u32,
                ..Default::default()
            };
            ctx.op[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: zeroed is a valid bpf_test_run_opts; sz is set.
            let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
            opts.sz = std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _;
            opts.ctx_in = (&mut ctx as *mut types::cgnat_session_ops).cast();
            opts.ctx_size_in = std::mem::size_of::<types::cgnat_session_ops>() as u32;
            // SAFETY: ctx_in points at a whole cgnat_session_ops, which the
            // kernel reads and then overwrites with as many bytes.
            let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
            if ret < 0 {
                return Err(no_ops(-ret));
            }
            out.extend_from_slice(&ctx.op[..chunk.len()]);
        }
        Ok(out)
    }
}

/// The session table's sessions.
#[derive(Debug)]
pub struct Sessions(Arc<SlotTable>);

impl Sessions {
    pub(super) fn new(slots: Arc<SlotTable>) -> Sessions {
        Sessions(slots)
    }

    /// The maps of the table (segments, their locks, the counts), only for
    /// what concerns the maps rather than the sessions (their memory
    /// accounting in the benchmark).
    pub fn maps(&self) -> [(&'static str, &MapHandle); 3] {
        [
            ("sessions", &self.0.segments),
            ("session_locks", &self.0.locks),
            ("session_count", &self.0.count),
        ]
    }

    /// Every session, in no particular order; empty when there are none.
    /// Not a snapshot: sessions the data path adds or deletes meanwhile may
    /// or may not be there.
    pub fn dump(&self) -> Result<Vec<(Key, Session)>, BpfError> {
        self.0.dump(SlotKind::CGNAT_KIND_SESSION)
    }

    /// Visits every session, as [`Sessions::dump`] lists them, without
    /// collecting them.
    pub fn scan(&self, f: impl FnMut(&Key, &Session)) -> Result<(), BpfError> {
        self.0.scan(SlotKind::CGNAT_KIND_SESSION, f)
    }

    /// [`Sessions::scan`] with each session's slot number, ascending: the
    /// same number names the same entry until it is deleted.
    pub fn scan_slots(&self, f: impl FnMut(u32, &Key, &Session)) -> Result<(), BpfError> {
        self.0.scan_slots(SlotKind::CGNAT_KIND_SESSION, f)
    }

    /// The session of `k`; `None` when there is none.
    pub fn get(&self, k: &Key) -> Result<Option<Session>, BpfError> {
        let op = self.run_one(Kind::CGNAT_SOP_GET, k, &Session::default())?;
        Ok((op.result == 0).then_some(op.s))
    }

    /// Rewrites the session of `k` with `v`; `false` (and nothing
    /// written) when there is none.
    pub fn update_existing(&self, k: &Key, v: &Session) -> Result<bool, BpfError> {
        absent_is_false(self.run_one(Kind::CGNAT_SOP_UPDATE, k, v)?.result, ENOENT)
    }

    /// Writes the session of `k`, whether or not there was one.
    pub fn upsert(&self, k: &Key, v: &Session) -> Result<(), BpfError> {
        check(self.run_one(Kind::CGNAT_SOP_UPSERT, k, v)?.result)
    }

    /// Writes the session of `k` if there is none yet; `false` (and the
    /// existing one kept) when there is.
    pub fn insert_new(&self, k: &Key, v: &Session) -> Result<bool, BpfError> {
        absent_is_false(self.run_one(Kind::CGNAT_SOP_INSERT, k, v)?.result, EEXIST)
    }

    /// Writes every (key, session) of `rows`, whether or not the keys were
    /// there; fails with the first that does not fit.
    pub fn insert_batch(&self, rows: &[(Key, Session)]) -> Result<(), BpfError> {
        self.upsert_many(rows)?.into_iter().collect()
    }

    /// The sessions of `keys`, in order (`None` where there is none), read
    /// `CGNAT_SESSION_OPS` to a run of `session_ops`.
    pub fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Session>>, BpfError> {
        let ops = keys
            .iter()
            .map(|k| op(Kind::CGNAT_SOP_GET, &session_key(k), &Session::default()))
            .collect();
        Ok(self
            .run(ops)?
            .into_iter()
            .map(|o| (o.result == 0).then_some(o.s))
            .collect())
    }

    /// Writes every (key, session) of `rows`, whether or not the keys were
    /// there, in order, as [`Sessions::get_many`] reads; each write's own
    /// result.
    pub fn upsert_many(
        &self,
        rows: &[(Key, Session)],
    ) -> Result<Vec<Result<(), BpfError>>, BpfError> {
        let ops = rows
            .iter()
            .map(|(k, v)| op(Kind::CGNAT_SOP_UPSERT, &session_key(k), v))
            .collect();
        Ok(self.run(ops)?.iter().map(|o| check(o.result)).collect())
    }

    /// Deletes the session of `k`; `false` when there was none.
    pub fn delete(&self, k: &Key) -> Result<bool, BpfError> {
        absent_is_false(
            self.run_one(Kind::CGNAT_SOP_DELETE, k, &Session::default())?
                .result,
            ENOENT,
        )
    }

    /// Deletes the sessions of `keys`; keys already gone are skipped.
    pub fn delete_all(&self, keys: &[Key]) -> Result<(), BpfError> {
        let ops: Vec<Op> = keys
            .iter()
            .map(|k| op(Kind::CGNAT_SOP_DELETE, &session_key(k), &Session::default()))
            .collect();
        for op in self.run(ops)? {
            if op.result != -ENOENT {
                check(op.result)?;
            }
        }
        Ok(())
    }

    /// How many sessions there are (the table's own count).
    pub fn count(&self) -> Result<u64, BpfError> {
        self.0.count(SlotKind::CGNAT_KIND_SESSION)
    }

    fn run_one(&self, kind: Kind, k: &Key, v: &Session) -> Result<Op, BpfError> {
        self.0.run_one(kind, &session_key(k), v)
    }

    fn run(&self, ops: Vec<Op>) -> Result<Vec<Op>, BpfError> {
        self.0.run(ops)
    }
}

/// `k` as a session's key, whatever its kind said.
fn session_key(k: &Key) -> Key {
    Key {
        kind: SlotKind::CGNAT_KIND_SESSION.0 as u8,
        ..*k
    }
}

/// The key and value of a live slot, with the slot's own fields zeroed.
fn live(s: &types::cgnat_session_slot) -> Option<(Key, Session)> {
    if s.key.slot_state != types::cgnat_slot_state::CGNAT_SLOT_LIVE.0 as u8 {
        return None;
    }
    let k = Key {
        slot_state: 0,
        slot_dist: 0,
        ..s.key
    };
    Some((k, s.s))
}

pub(super) fn op(kind: Kind, k: &Key, v: &Session) -> Op {
    Op {
        key: *k,
        s: *v,
        kind: kind.0,
        result: 0,
    }
}

pub(super) const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
pub(super) const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;

const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;
const EPERM: i32 = nix::errno::Errno::EPERM as i32;

pub(super) fn no_ops(errno: i32) -> BpfError {
    map_err(NAME)(libbpf_rs::Error::from_raw_os_error(errno))
}

/// 0 is success; any other result the kernel's error.
pub(super) fn check(result: i32) -> Result<(), BpfError> {
    match result {
        0 => Ok(()),
        e => Err(no_ops(-e)),
    }
}

/// `Ok(true)` on success, `Ok(false)` when the result is `-absent` (the
/// key is missing, or present for an insert), else the error.
pub(super) fn absent_is_false(result: i32, absent: i32) -> Result<bool, BpfError> {
    match result {
        0 => Ok(true),
        e if e == -absent => Ok(false),
        e => Err(no_ops(-e)),
    }
}
