//! Session and binding expiry: batched sweeps over the maps.
//!
//! The data path only stamps `last_seen` (CLOCK_MONOTONIC, compact: see
//! [`idle_ns`]) and ORs TCP
//! event bits; this module decides what is dead. One sweep:
//! 1. reads every session; a session idle longer than the timeout of its
//!    protocol and TCP state is marked dying, and deleted at the next sweep
//!    if it is still marked (a refreshing packet clears the mark, so a
//!    session is never deleted while packets refresh it: expiry happens
//!    between timeout and timeout + one sweep interval); those within
//!    their timeout mark their binding live;
//! 2. reads every binding (its inbound half); a binding no session within its
//!    timeout uses is marked idle, and at the next sweep, if still unused,
//!    it loses its outbound entry and its external port goes into quarantine for
//!    `nat.port_quarantine` (RFC 6888 REQ-8); a quarantine that has run out
//!    frees the port. (Two phases here too: the data path creates a binding
//!    a moment before its first session.)
//!
//! Where: the sweep runs in the kernel (`kernel`; bpf/sweep.h: a SEC("syscall")
//! program walking the maps with bpf_for_each_map_elem, run here through
//! BPF_PROG_TEST_RUN) when the tables come with that program, and hands
//! back counts and the released bindings; steps 1 and 2 and the
//! filter_addr entries are decided there, subscribers, port blocks and
//! fragments here. Otherwise (more per-port UDP timeouts than the
//! program's context holds) the same rules run here on a copy of every
//! session and binding. `kit/tests/sweep_kernel.rs` checks that both give
//! the same reports and leave the same tables.
//!
//! Races with the data path: marking rewrites the whole value, so a TCP
//! event bit or refresh landing in that same instant can be lost; the
//! session then simply gets marked (not deleted) and a later packet clears
//! the mark again. A packet may also create a session on a binding just
//! being released; that session idles out as usual.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags};

mod kernel;
pub use kernel::live_ranges;

use crate::bpf::abi::{proto_idx, proto_name, IPPROTO_TCP, IPPROTO_UDP, PROTOCOLS};
use crate::bpf::{bytes_of, types, BpfError, Tables};
use crate::config::Timeouts;

/// How stale last_seen may be: the data path rewrites it at most this
/// often (CGNAT_REFRESH_MS), to keep the cache line of a busy session shared.
pub const REFRESH_SLACK: Duration = crate::bpf::abi::REFRESH;

/// A port block or filtering entry younger than this is never released
/// for lack of bindings or sessions.
pub const BINDING_GRACE: Duration = Duration::from_secs(2);
const BATCH: u32 = 4096;
/// UDP ports with their own timeout that the in-kernel sweep handles.
const UDP_PORTS: usize = types::cgnat_sweep_limits::CGNAT_SWEEP_UDP_PORTS.0 as usize;

type Ev = types::cgnat_tcp_event;
type St = types::cgnat_tcp_state;

pub use crate::clock::monotonic_ns;

/// `now_ns` in the compact time of sessions and bindings
/// (`CGNAT_TIME_SHIFT` units, 32 bits: include/cgnat.h).
pub fn compact_time(now_ns: u64) -> u32 {
    (now_ns >> TIME_SHIFT) as u32
}

/// Nanoseconds from the compact `stamp` to `now_ns`, by wrapping
/// subtraction: right for ages under 26 days. A stamp newer than `now_ns`
/// (a packet refreshed the session after this sweep read the clock) is age
/// 0, never "52 days".
pub fn idle_ns(now_ns: u64, stamp: u32) -> u64 {
    let d = compact_time(now_ns).wrapping_sub(stamp) as i32;
    u64::from(d.max(0).unsigned_abs()) << TIME_SHIFT
}

const TIME_SHIFT: u32 = types::cgnat_time::CGNAT_TIME_SHIFT.0;

/// The TCP state of RFC 7857 section 2 from the events seen.
pub fn tcp_state(bits: u32) -> St {
    let has = |e: Ev| bits & e.0 != 0;
    if has(Ev::CGNAT_TCP_RST) {
        St::CGNAT_TCP_RESET
    } else if has(Ev::CGNAT_TCP_FIN_OUT) && has(Ev::CGNAT_TCP_FIN_IN) {
        St::CGNAT_TCP_CLOSING
    } else if has(Ev::CGNAT_TCP_FIN_OUT) || has(Ev::CGNAT_TCP_FIN_IN) {
        if has(Ev::CGNAT_TCP_LOOSE) || (has(Ev::CGNAT_TCP_SYN_OUT) && has(Ev::CGNAT_TCP_SYN_IN)) {
            St::CGNAT_TCP_FIN_ONE
        } else {
            St::CGNAT_TCP_CLOSING
        }
    } else if has(Ev::CGNAT_TCP_LOOSE) || (has(Ev::CGNAT_TCP_SYN_OUT) && has(Ev::CGNAT_TCP_SYN_IN))
    {
        St::CGNAT_TCP_ESTABLISHED
    } else {
        St::CGNAT_TCP_INIT
    }
}

/// Printable name of a TCP state.
pub fn tcp_state_name(s: St) -> &'static str {
    match s {
        St::CGNAT_TCP_INIT => "init",
        St::CGNAT_TCP_ESTABLISHED => "established",
        St::CGNAT_TCP_FIN_ONE => "fin_one",
        St::CGNAT_TCP_CLOSING => "closing",
        St::CGNAT_TCP_RESET => "reset",
        _ => "unknown",
    }
}

/// Idle timeout of a session; `rem_port` in host order.
pub fn session_timeout(t: &Timeouts, proto: u8, tcp_bits: u32, rem_port: u16) -> Duration {
    match proto {
        IPPROTO_TCP => match tcp_state(tcp_bits) {
            St::CGNAT_TCP_ESTABLISHED | St::CGNAT_TCP_FIN_ONE => t.tcp_established,
            St::CGNAT_TCP_INIT => t.tcp_opening,
            _ => t.tcp_closing,
        },
        IPPROTO_UDP => t.udp_ports.get(&rem_port).copied().unwrap_or(t.udp),
        _ => t.icmp,
    }
}

fn timeout_of(t: &Timeouts, k: &types::cgnat_session_key, s: &types::cgnat_session) -> Duration {
    session_timeout(t, k.proto, s.tcp, u16::from_be(k.rem_port))
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions_live: u64,
    /// Idle past their timeout, marked; deleted at the next sweep.
    pub sessions_dying: u64,
    pub sessions_expired: u64,
    pub bindings_live: u64,
    pub bindings_released: u64,
    pub ports_quarantined: u64,
    pub ports_freed: u64,
    pub subscribers_live: u64,
    pub subscribers_released: u64,
    pub blocks_released: Vec<BlockRelease>,
    /// Bindings released (for the NAT log).
    pub released: Vec<BindingRelease>,
    /// How long the walk of the sessions took (the in-kernel sweep; zero
    /// in user space): every expired session is gone at its end, the
    /// bindings follow.
    pub session_pass: Duration,
}

/// A binding given back (for the NAT log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRelease {
    pub proto: u8,
    pub internal: (Ipv4Addr, u16),
    pub external: (Ipv4Addr, u16),
}

/// Expiry policy.
#[derive(Debug, Clone)]
pub struct Sweeper {
    pub timeouts: Timeouts,
    pub quarantine: Duration,
    /// Port-block geometry, in port-block mode.
    pub blocks: Option<crate::pool::Blocks>,
    /// The configured pool, in pool_addrs order (for pool_load and the
    /// sweep_live slots).
    pub pool: Vec<Ipv4Addr>,
}

fn map_err(map: &'static str) -> impl Fn(libbpf_rs::Error) -> BpfError {
    move |err| BpfError::Map { map, err }
}

/// Every (key, value) of a map, read in batches.
fn dump<K: crate::bpf::Pod, V: crate::bpf::Pod>(
    map: &dyn MapCore,
    name: &'static str,
) -> Result<Vec<(K, V)>, BpfError> {
    crate::bpf::dump_typed(map, name, BATCH)
}

fn delete_all<K: crate::bpf::Pod>(map: &dyn MapCore, keys: &[K]) -> Result<(), BpfError> {
    crate::bpf::delete_keys(map, keys, BATCH);
    Ok(())
}

/// What a sweep counted per subscriber and per port block, for
/// [`Sweeper::sweep_subscribers`].
#[derive(Debug, Default)]
struct Holdings {
    /// Sessions left, by internal address.
    sessions: HashMap<u32, u32>,
    /// Live dynamic bindings, by subscriber and protocol index.
    ports: HashMap<u32, [u32; PROTOCOLS]>,
    /// Live dynamic bindings, by (external address, port block).
    blocks: HashMap<(u32, u32), u32>,
}

impl Sweeper {
    /// One sweep at time `now` (monotonic ns): in the kernel when the
    /// tables come with the sweep program and the configuration fits its
    /// context, else in user space. Both do the same.
    pub fn sweep(&self, t: &Tables, now: u64) -> Result<SweepReport, BpfError> {
        match &t.sweep {
            Some(k) if self.timeouts.udp_ports.len() <= UDP_PORTS => {
                self.sweep_in_kernel(t, k, now)
            }
            _ => self.sweep_user(t, now),
        }
    }

    /// The same sweep in user space: every session and binding read into
    /// the daemon and decided here.
    pub fn sweep_user(&self, t: &Tables, now: u64) -> Result<SweepReport, BpfError> {
        let mut rep = SweepReport::default();
        let sessions = t.sessions.dump()?;
        let mut dead = Vec::new();
        // past their timeouts but marked only now: they keep no binding
        let mut dying: HashSet<[u8; 16]> = HashSet::new();
        let dying_flag = types::cgnat_session_flag::CGNAT_SESS_DYING.0 as u8;
        for (k, s) in &sessions {
            let idle = idle_ns(now, s.last_seen);
            // + REFRESH_SLACK: the data path rewrites last_seen at most once
            // a second, so the last packet may be that much newer
            if idle > (timeout_of(&self.timeouts, k, s) + REFRESH_SLACK).as_nanos() as u64 {
                if s.flags & dying_flag != 0 {
                    // marked at the previous sweep and still idle
                    dead.push(*k);
                    continue;
                }
                // Two-phase expiry: mark now, delete next sweep unless a
                // packet refreshes it (which clears the mark).
                let marked = types::cgnat_session {
                    flags: s.flags | dying_flag,
                    ..*s
                };
                let _ = t.sessions.update_existing(k, &marked);
                rep.sessions_dying += 1;
                dying.insert(key_bytes(k));
            }
        }
        // The other side of a dead hairpin session is one-sided now
        // (include/cgnat.h).
        let one_sided = types::cgnat_session_flag::CGNAT_SESS_ONE_SIDED.0 as u8;
        for k in hairpin_mirrors(&sessions, &dead) {
            if let Some(s) = t.sessions.get(&k)? {
                let v = types::cgnat_session {
                    flags: s.flags | one_sided,
                    ..s
                };
                let _ = t.sessions.update_existing(&k, &v);
            }
        }
        let dead_keys: HashSet<[u8; 16]> = dead.iter().map(key_bytes).collect();
        // bindings in use: a binding goes with the last session within
        // its timeout
        let mut live: HashSet<(u32, u16, u8)> = HashSet::new();
        let mut live_remotes: HashSet<(u32, u16, u8, u32)> = HashSet::new();
        for (k, _) in &sessions {
            if !dead_keys.contains(&key_bytes(k)) {
                if !dying.contains(&key_bytes(k)) {
                    live.insert((k.ext_addr, k.ext_port, k.proto));
                }
                live_remotes.insert((k.ext_addr, k.ext_port, k.proto, k.rem_addr));
            }
        }
        t.sessions.delete_all(&dead)?;
        rep.sessions_expired = dead.len() as u64;
        rep.sessions_live = (sessions.len() - dead.len()) as u64;

        let bindings = t.bindings.dump()?;
        let quarantine_ns = self.quarantine.as_nanos() as u64;
        let grace_ns = BINDING_GRACE.as_nanos() as u64;
        let idle_flag = types::cgnat_binding_flag::CGNAT_BIND_IDLE.0 as u8;
        let mut free = Vec::new();
        // (subscriber, external address, external port, proto) still held
        let mut held_ports: Vec<(u32, u32, u16, u8)> = Vec::new();
        for (ek, b) in &bindings {
            if b.flags & types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8 != 0 {
                // a quarantined entry holds its start in `addr`
                if idle_ns(now, b.addr) >= quarantine_ns {
                    free.push(*ek);
                    rep.ports_freed += 1;
                }
                continue;
            }
            let is_static = b.flags & types::cgnat_binding_flag::CGNAT_BIND_STATIC.0 as u8 != 0;
            let used = live.contains(&(ek.addr, ek.port, ek.proto));
            if is_static || used || b.flags & idle_flag == 0 {
                rep.bindings_live += 1;
                if !is_static {
                    held_ports.push((b.addr, ek.addr, ek.port, ek.proto));
                }
                // two-phase release: mark a bare binding, unmark a used one
                let flags = if used || is_static {
                    b.flags & !idle_flag
                } else {
                    b.flags | idle_flag
                };
                if flags != b.flags {
                    let v = types::cgnat_binding { flags, ..*b };
                    let _ = t.bindings.update_in(ek, &v);
                }
                continue;
            }
            // Release: the outbound entry first, so no new session can
            // find this binding, then quarantine (or free) the port.
            t.bindings.unbind_out(ek, b)?;
            rep.bindings_released += 1;
            rep.released.push(BindingRelease {
                proto: ek.proto,
                internal: (addr(b.addr), u16::from_be(b.port)),
                external: (addr(ek.addr), u16::from_be(ek.port)),
            });
            if quarantine_ns == 0 {
                free.push(*ek);
                rep.ports_freed += 1;
            } else {
                let q = types::cgnat_binding {
                    addr: compact_time(now),
                    flags: types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8,
                    ..*b
                };
                if !t.bindings.update_in(ek, &q)? {
                    // gone since the dump: a map error, as the kernel's
                    return Err(map_err("bindings")(libbpf_rs::Error::from_raw_os_error(
                        nix::errno::Errno::ENOENT as i32,
                    )));
                }
                rep.ports_quarantined += 1;
            }
        }
        t.bindings.delete_in_all(&free)?;

        let holdings = self.holdings(&sessions, &dead, &bindings, &held_ports);
        self.sweep_subscribers(t, now, &holdings, &mut rep)?;
        self.sweep_frags(t, now)?;

        // Address-dependent filtering entries live while a session from
        // that binding to that remote address does.
        if let Some(fa) = &t.filter_addr {
            let entries: Vec<(types::cgnat_filter_key, u64)> = dump(fa, "filter_addr")?;
            let stale: Vec<types::cgnat_filter_key> = entries
                .iter()
                .filter(|(k, created)| {
                    now.saturating_sub(*created) >= grace_ns
                        && !live_remotes.contains(&(k.ext_addr, k.ext_port, k.proto, k.rem_addr))
                })
                .map(|(k, _)| *k)
                .collect();
            delete_all(fa, &stale)?;
        }
        Ok(rep)
    }

    /// Fragment state past timeouts.fragment.
    fn sweep_frags(&self, t: &Tables, now: u64) -> Result<(), BpfError> {
        // First-fragment translations are kept for timeouts.fragment.
        let frag_ns = self.timeouts.fragment.as_nanos() as u64;
        let frags: Vec<(types::cgnat_frag_key, types::cgnat_frag)> = dump(&t.frags, "frags")?;
        let old: Vec<types::cgnat_frag_key> = frags
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.created_ns) >= frag_ns)
            .map(|(k, _)| *k)
            .collect();
        delete_all(&t.frags, &old)?;
        // Held fragments whose first fragment never came.
        let held: Vec<(types::cgnat_stash_key, types::cgnat_stash)> =
            dump(&t.frag_stash, "frag_stash")?;
        let stale: Vec<types::cgnat_stash_key> = held
            .iter()
            .filter(|(_, st)| now.saturating_sub(st.created_ns) >= frag_ns)
            .map(|(k, _)| *k)
            .collect();
        delete_all(&t.frag_stash, &stale)?;
        let pending: Vec<(types::cgnat_frag_key, u64)> = dump(&t.frag_pending, "frag_pending")?;
        let stale: Vec<types::cgnat_frag_key> = pending
            .iter()
            .filter(|(_, ts)| now.saturating_sub(*ts) >= frag_ns)
            .map(|(k, _)| *k)
            .collect();
        delete_all(&t.frag_pending, &stale)?;
        Ok(())
    }
}

/// A subscriber with no binding and no session is deleted once it has
/// allocated nothing for this long (it keeps its external address across
/// short gaps).
pub const SUBSCRIBER_GRACE: Duration = Duration::from_secs(10);

impl Sweeper {
    /// What the user-space sweep counted: sessions left per internal
    /// address, live dynamic bindings per subscriber and per port block.
    fn holdings(
        &self,
        sessions: &[(types::cgnat_session_key, types::cgnat_session)],
        dead: &[types::cgnat_session_key],
        bindings: &[(types::cgnat_endpoint, types::cgnat_binding)],
        held_ports: &[(u32, u32, u16, u8)],
    ) -> Holdings {
        let dead: HashSet<[u8; 16]> = dead.iter().map(key_bytes).collect();
        let owners = Owners::new(bindings);
        let mut h = Holdings::default();
        for (k, s) in sessions {
            if dead.contains(&key_bytes(k)) {
                continue;
            }
            if let Some(owner) = owners.of(k, s) {
                *h.sessions.entry(owner).or_default() += 1;
            }
        }
        for &(sub, ext, port, proto) in held_ports {
            h.ports.entry(sub).or_default()[proto_idx(proto)] += 1;
            if let Some(b) = self.blocks.and_then(|g| g.block_of(u16::from_be(port))) {
                *h.blocks.entry((ext, b)).or_default() += 1;
            }
        }
        h
    }

    /// Recounts what each subscriber holds (the data path only ever
    /// increments) from `h`, deletes idle subscribers, rebalances
    /// pool_load and releases port blocks that no binding uses.
    fn sweep_subscribers(
        &self,
        t: &Tables,
        now: u64,
        h: &Holdings,
        rep: &mut SweepReport,
    ) -> Result<(), BpfError> {
        let (sess, ports, block_use) = (&h.sessions, &h.ports, &h.blocks);
        let subs: Vec<(u32, types::cgnat_subscriber)> = dump(&t.subscribers, "subscribers")?;
        let grace = SUBSCRIBER_GRACE.as_nanos() as u64;
        let mut load: HashMap<u32, u32> = HashMap::new();
        let mut gone = Vec::new();
        for (addr, s) in &subs {
            let p = ports.get(addr).copied().unwrap_or_default();
            let n = sess.get(addr).copied().unwrap_or_default();
            if p == [0; 3] && n == 0 && now.saturating_sub(s.last_alloc_ns) >= grace {
                gone.push(*addr);
                continue;
            }
            if let Some(i) = self
                .pool
                .iter()
                .position(|a| u32::from(*a).to_be() == s.ext_addr)
            {
                *load.entry(i as u32).or_default() += 1;
            }
            if s.ports != p || s.sessions != n {
                let v = types::cgnat_subscriber {
                    ports: p,
                    sessions: n,
                    ..*s
                };
                let _ = t
                    .subscribers
                    .update(bytes_of(addr), bytes_of(&v), MapFlags::EXIST);
            }
        }
        delete_all(&t.subscribers, &gone)?;
        rep.subscribers_live = (subs.len() - gone.len()) as u64;
        rep.subscribers_released = gone.len() as u64;
        // only the pool's own slots: the map is sized for the largest pool
        let range = 0..self.pool.len() as u32;
        let loads: Vec<(u32, u32)> =
            crate::bpf::dump_array_range(&t.pool_load, "pool_load", BATCH, range)?;
        for (idx, old) in loads {
            let new = load.get(&idx).copied().unwrap_or(0);
            if new != old {
                let _ = t
                    .pool_load
                    .update(bytes_of(&idx), bytes_of(&new), MapFlags::ANY);
            }
        }

        // Port blocks no binding uses any more go back to the pool.
        if self.blocks.is_some() {
            let blocks: Vec<(types::cgnat_block_key, types::cgnat_block)> =
                dump(&t.blocks, "blocks")?;
            let size = self.blocks.map(|g| g.block_size).unwrap_or(0);
            for (k, b) in &blocks {
                let used = block_use.get(&(k.ext_addr, k.block)).copied().unwrap_or(0);
                if b.full != 0 && used < size {
                    // the data path skips full blocks: this one has room again
                    let v = types::cgnat_block { full: 0, ..*b };
                    let _ = t.blocks.update(bytes_of(k), bytes_of(&v), MapFlags::EXIST);
                }
                if used > 0 || now.saturating_sub(b.created_ns) < BINDING_GRACE.as_nanos() as u64 {
                    continue;
                }
                let sk = types::cgnat_sub_block_key {
                    sub: b.owner,
                    slot: b.slot,
                };
                let _ = t.sub_blocks.delete(bytes_of(&sk));
                let _ = t.blocks.delete(bytes_of(k));
                rep.blocks_released.push(BlockRelease {
                    subscriber: addr(b.owner),
                    external: addr(k.ext_addr),
                    block: k.block,
                });
            }
        }
        Ok(())
    }
}

/// A port block given back (for the NAT log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRelease {
    pub subscriber: Ipv4Addr,
    pub external: Ipv4Addr,
    pub block: u32,
}

/// One session as shown by `cgnat sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub proto: &'static str,
    pub internal: (Ipv4Addr, u16),
    pub external: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
    pub state: &'static str,
    pub inbound: bool,
    pub hairpin: bool,
    pub idle: Duration,
    pub expires_in: Duration,
}

fn key_bytes(k: &types::cgnat_session_key) -> [u8; 16] {
    bytes_of(k).try_into().unwrap_or([0; 16])
}

fn is_hairpin(s: &types::cgnat_session) -> bool {
    s.flags & types::cgnat_session_flag::CGNAT_SESS_HAIRPIN.0 as u8 != 0
}

/// The other sides of the dead hairpin sessions that live on: the
/// session keyed by each one's remote endpoint, with its external
/// endpoint as the remote.
fn hairpin_mirrors(
    sessions: &[(types::cgnat_session_key, types::cgnat_session)],
    dead: &[types::cgnat_session_key],
) -> Vec<types::cgnat_session_key> {
    let all: HashMap<[u8; 16], &types::cgnat_session> =
        sessions.iter().map(|(k, s)| (key_bytes(k), s)).collect();
    let gone: HashSet<[u8; 16]> = dead.iter().map(key_bytes).collect();
    let mut out = Vec::new();
    for k in dead {
        if !all.get(&key_bytes(k)).is_some_and(|s| is_hairpin(s)) {
            continue;
        }
        let m = types::cgnat_session_key {
            ext_addr: k.rem_addr,
            ext_port: k.rem_port,
            rem_addr: k.ext_addr,
            rem_port: k.ext_port,
            ..*k
        };
        if !gone.contains(&key_bytes(&m)) && all.contains_key(&key_bytes(&m)) {
            out.push(m);
        }
    }
    out
}

/// Whose a session is: the subscriber it translates to, except for a
/// hairpin session, which translates to its target and belongs to the
/// live binding of its external endpoint (include/cgnat.h; to no one
/// without one).
struct Owners(HashMap<(u32, u16, u8), (u32, u16)>);

impl Owners {
    fn new(bindings: &[(types::cgnat_endpoint, types::cgnat_binding)]) -> Owners {
        let quarantine = types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8;
        Owners(
            bindings
                .iter()
                .filter(|(_, b)| b.flags & quarantine == 0)
                .map(|(e, b)| ((e.addr, e.port, e.proto), (b.addr, b.port)))
                .collect(),
        )
    }

    /// The owner's internal endpoint (addresses and ports as stored).
    fn endpoint(
        &self,
        k: &types::cgnat_session_key,
        s: &types::cgnat_session,
    ) -> Option<(u32, u16)> {
        if !is_hairpin(s) {
            return Some((s.int_addr, s.int_port));
        }
        self.0.get(&(k.ext_addr, k.ext_port, k.proto)).copied()
    }

    fn of(&self, k: &types::cgnat_session_key, s: &types::cgnat_session) -> Option<u32> {
        self.endpoint(k, s).map(|(a, _)| a)
    }
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

/// Every session, with its state and remaining lifetime.
pub fn list_sessions(
    t: &Tables,
    timeouts: &Timeouts,
    now: u64,
) -> Result<Vec<SessionView>, BpfError> {
    let sessions = t.sessions.dump()?;
    let bindings = t.bindings.dump()?;
    let owners = Owners::new(&bindings);
    let mut out: Vec<SessionView> = sessions
        .iter()
        .map(|(k, s)| {
            let (int_addr, int_port) = owners.endpoint(k, s).unwrap_or((0, 0));
            let idle = Duration::from_nanos(idle_ns(now, s.last_seen));
            let timeout = timeout_of(timeouts, k, s);
            let state = match k.proto {
                IPPROTO_TCP => tcp_state_name(tcp_state(s.tcp)),
                _ => "active",
            };
            SessionView {
                proto: proto_name(k.proto),
                internal: (addr(int_addr), u16::from_be(int_port)),
                external: (addr(k.ext_addr), u16::from_be(k.ext_port)),
                remote: (addr(k.rem_addr), u16::from_be(k.rem_port)),
                state,
                inbound: s.flags & types::cgnat_session_flag::CGNAT_SESS_INBOUND.0 as u8 != 0,
                hairpin: is_hairpin(s),
                idle,
                expires_in: timeout.saturating_sub(idle),
            }
        })
        .collect();
    out.sort_by_key(|s| (s.internal, s.remote));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::abi::IPPROTO_ICMP;

    fn t() -> Timeouts {
        Timeouts {
            udp: Duration::from_secs(300),
            tcp_established: Duration::from_secs(7440),
            tcp_opening: Duration::from_secs(240),
            tcp_closing: Duration::from_secs(200),
            icmp: Duration::from_secs(60),
            fragment: Duration::from_secs(5),
            udp_ports: [(53, Duration::from_secs(20))].into(),
        }
    }

    #[test]
    fn tcp_states_follow_rfc7857() {
        let so = Ev::CGNAT_TCP_SYN_OUT.0;
        let si = Ev::CGNAT_TCP_SYN_IN.0;
        let fo = Ev::CGNAT_TCP_FIN_OUT.0;
        let fi = Ev::CGNAT_TCP_FIN_IN.0;
        let rst = Ev::CGNAT_TCP_RST.0;
        let loose = Ev::CGNAT_TCP_LOOSE.0;
        assert_eq!(tcp_state(so), St::CGNAT_TCP_INIT);
        assert_eq!(tcp_state(si), St::CGNAT_TCP_INIT);
        assert_eq!(tcp_state(so | si), St::CGNAT_TCP_ESTABLISHED);
        assert_eq!(tcp_state(loose), St::CGNAT_TCP_ESTABLISHED);
        assert_eq!(tcp_state(so | si | fo), St::CGNAT_TCP_FIN_ONE);
        assert_eq!(tcp_state(so | si | fi), St::CGNAT_TCP_FIN_ONE);
        assert_eq!(tcp_state(so | si | fo | fi), St::CGNAT_TCP_CLOSING);
        assert_eq!(tcp_state(so | si | rst), St::CGNAT_TCP_RESET);
        assert_eq!(tcp_state(so | fo), St::CGNAT_TCP_CLOSING);
    }

    #[test]
    fn compact_time_ages() {
        let now = 5_000_000_000_000u64;
        let unit = 1u64 << TIME_SHIFT;
        assert_eq!(idle_ns(now, compact_time(now)), 0);
        assert_eq!(idle_ns(now + 10 * unit, compact_time(now)), 10 * unit);
        // a stamp from after the sweep's clock reading is not old
        assert_eq!(idle_ns(now, compact_time(now + 10 * unit)), 0);
        // across the 32-bit wrap
        let wrap = (1u64 << (32 + TIME_SHIFT)) - 3 * unit;
        assert_eq!(idle_ns(wrap + 7 * unit, compact_time(wrap)), 7 * unit);
        // 20 days is still 20 days
        let day = 86_400_000_000_000u64;
        let age = idle_ns(now + 20 * day, compact_time(now));
        assert!(age.abs_diff(20 * day) < unit, "{age}");
    }

    #[test]
    fn timeouts_by_protocol_and_state() {
        let so = Ev::CGNAT_TCP_SYN_OUT.0;
        let si = Ev::CGNAT_TCP_SYN_IN.0;
        let st = |p, bits, port| session_timeout(&t(), p, bits, port).as_secs();
        assert_eq!(st(IPPROTO_UDP, 0, 3478), 300);
        assert_eq!(st(IPPROTO_UDP, 0, 53), 20);
        assert_eq!(st(IPPROTO_TCP, 0, 53), 240);
        assert_eq!(st(IPPROTO_ICMP, 0, 0), 60);
        assert_eq!(st(IPPROTO_TCP, so, 80), 240);
        assert_eq!(st(IPPROTO_TCP, so | si, 80), 7440);
        assert_eq!(st(IPPROTO_TCP, so | si | Ev::CGNAT_TCP_FIN_OUT.0, 80), 7440);
        let both_fin = Ev::CGNAT_TCP_FIN_OUT.0 | Ev::CGNAT_TCP_FIN_IN.0;
        assert_eq!(st(IPPROTO_TCP, so | si | both_fin, 80), 200);
        assert_eq!(st(IPPROTO_TCP, so | si | Ev::CGNAT_TCP_RST.0, 80), 200);
    }
}
