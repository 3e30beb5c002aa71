//! The cluster engine the daemon runs: the sync socket, the peers, who
//! serves which slice, and the routes announced for them.
//!
//! One turn ([`Engine::turn`], every loop of the daemon, so at least every
//! 50 ms) reads every waiting datagram, installs what peers sent, decides
//! which slices this node serves, sends the differences of its own tables
//! every `sync_interval`, a hello every `heartbeat`, and resends what was
//! not acknowledged.
//!
//! Who serves which slice is [`super::slices::decide`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnetwork::Ipv4Network;

use super::export::{Announced, Export};
use super::install::{self, Outcome};
use super::link::{Inbound, Liveness, Outbox};
use super::slices::{bit, decide, ids, PeerView, View};
use super::state::{self, Policy, Sent};
use super::wire::{self, Batcher, Header, Key, Kind, Message, Record, Reject};
use crate::bpf::Tables;
use crate::config::cluster::{Cluster, Failback};

/// Reliable messages kept per peer before a full resync replaces them.
const OUTBOX: usize = 8192;
/// Past this many unacknowledged messages a peer gets no new records
/// (they wait in the tables for the next interval): flow control.
const OUTBOX_PAUSE: usize = OUTBOX / 2;
/// Most records one sync interval sends one peer (about 1,700 datagrams):
/// a large table (a takeover, a resync) goes out over several intervals.
const SYNC_LIMIT: usize = 100_000;
/// Socket buffers of the sync socket: a full interval's burst.
const SOCKET_BUFFER: usize = 8 << 20;
/// How often a node that has not heard a peer's resync asks again.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.key_file: {0}")]
    Key(#[from] wire::KeyError),
    #[error("cannot listen for cluster sync on {addr}: {source}")]
    Bind {
        addr: SocketAddrV4,
        source: std::io::Error,
    },
}

/// Socket buffers for an interval's burst (forced past rmem_max/wmem_max
/// when the daemon may, as root can).
fn size_buffers(sock: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(sock, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(sock, sockopt::SndBuf, &SOCKET_BUFFER);
    }
}

/// What one peer looks like from here.
#[derive(Debug)]
struct Peer {
    id: u16,
    addr: SocketAddrV4,
    inbound: Inbound,
    outbox: Outbox,
    live: Liveness,
    was_alive: bool,
    /// Slices it serves, as its last hello said.
    active: u64,
    /// Slices it wants back (its own, once resynced).
    want: u64,
    /// Its hello said it holds our state.
    resynced: bool,
    /// It sent us all of its state (ResyncDone).
    sent_us_all: bool,
    /// It went down at least once while this node ran: its return is a
    /// failback (`cluster.failback` applies), not the cluster's start.
    lost_once: bool,
    /// What it was sent of the slices this node serves.
    sent: Sent,
    /// It asked for everything: ResyncDone goes once it has caught up.
    resync_pending: bool,
    asked_at: Option<Instant>,
}

/// Counters the metrics and `cgnat cluster` show.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counters {
    pub sent: u64,
    pub received: u64,
    pub acked: u64,
    pub resent: u64,
    pub records_applied: u64,
    pub records_sent: u64,
    pub conflicts: u64,
    pub resyncs_served: u64,
    /// Sync intervals a peer got nothing new because its acks lagged.
    pub sync_paused: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

/// A peer as `cgnat cluster` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    pub id: u16,
    pub address: Ipv4Addr,
    pub alive: bool,
    pub heard_ms_ago: Option<u64>,
    pub serves: Vec<u16>,
    pub resynced: bool,
    pub unacked: usize,
}

/// The engine's state as `cgnat cluster` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub id: u16,
    pub resynced: bool,
    pub serves: Vec<u16>,
    pub failback: String,
    pub peers: Vec<PeerStatus>,
    pub counters: Counters,
    /// Age of the oldest unacknowledged message, in ms (the sync lag).
    pub lag_ms: u64,
    /// The sync interval in force, in ms.
    pub sync_interval_ms: u64,
}

pub struct Engine {
    cl: Cluster,
    key: Key,
    sock: UdpSocket,
    epoch: u64,
    peers: BTreeMap<u16, Peer>,
    /// Slices this node serves (bit id-1).
    active: u64,
    /// Slices it stopped serving whose last state its peers have not all
    /// acknowledged yet: still claimed in its hellos.
    draining: u64,
    resynced: bool,
    started: Instant,
    failback_requested: bool,
    export: Export,
    next_hello: Instant,
    next_sync: Instant,
    acks: BTreeMap<u16, Vec<u64>>,
    rate_tokens: u32,
    /// The data path's self-check passes: routes are announced only then.
    healthy: bool,
    /// The sync interval in force: `sync_interval`, or four times what the
    /// last sync cost when that is more.
    interval: Duration,
    /// The last read of the tables, whose lists the next read reuses.
    snap: state::Snapshot,
    pub counters: Counters,
}

impl Engine {
    /// Opens the sync socket on this node's address and asks every peer
    /// for its state. `rate_tokens`: the new-mapping budget a subscriber
    /// installed from a peer starts with (`limits.new_mappings_per_second`).
    pub fn start(cl: &Cluster, rate_tokens: u32) -> Result<Engine, ClusterError> {
        let key = Key::from_file(&cl.key_file)?;
        let addr = SocketAddrV4::new(cl.me().address, cl.port);
        let sock = UdpSocket::bind(addr).map_err(|source| ClusterError::Bind { addr, source })?;
        sock.set_nonblocking(true)
            .map_err(|source| ClusterError::Bind { addr, source })?;
        size_buffers(&sock);
        let now = Instant::now();
        let peers = cl
            .peers()
            .map(|n| {
                (
                    n.id,
                    Peer {
                        id: n.id,
                        addr: SocketAddrV4::new(n.address, cl.port),
                        inbound: Inbound::new(),
                        outbox: Outbox::new(OUTBOX),
                        live: Liveness::new(),
                        was_alive: false,
                        active: 0,
                        want: 0,
                        resynced: false,
                        sent_us_all: false,
                        lost_once: false,
                        sent: Sent::default(),
                        resync_pending: false,
                        asked_at: None,
                    },
                )
            })
            .collect();
        let mut export = Export::new(cl.route_table);
        let pools: Vec<Ipv4Network> = cl.nodes.iter().flat_map(|n| n.pool.clone()).collect();
        if let Err(e) = export.clear(&pools, &[cl.route_metric, cl.route_metric * 2]) {
            eprintln!(
                "cgnat: cluster: cannot clear routing table {}: {e}",
                cl.route_table
            );
        }
        Ok(Engine {
            cl: cl.clone(),
            key,
            sock,
            epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            peers,
            active: 0,
            draining: 0,
            resynced: false,
            started: now,
            failback_requested: false,
            export,
            next_hello: now,
            next_sync: now,
            acks: BTreeMap::new(),
            rate_tokens,
            healthy: true,
            interval: cl.sync_interval,
            snap: state::Snapshot::default(),
            counters: Counters::default(),
        })
    }

    /// Slices this node serves now (bit id-1).
    pub fn active(&self) -> u64 {
        self.active
    }

    /// The data path's self-check result: while it fails, every route is
    /// withdrawn (the routers then send this node's traffic to a peer).
    pub fn set_healthy(&mut self, healthy: bool, why: &str) {
        if healthy != self.healthy {
            if healthy {
                eprintln!("cgnat: cluster: data path self-check passes again: announcing");
            } else {
                eprintln!(
                    "cgnat: cluster: data path self-check failed ({why}): withdrawing routes and \
                     going silent so that a peer serves this node's slices"
                );
            }
            self.healthy = healthy;
        }
    }

    /// `cgnat cluster failback`: take this node's slice back from the peer
    /// that serves it (failback = "manual").
    pub fn request_failback(&mut self) {
        self.failback_requested = true;
    }

    /// One turn. Returns Some(new mask) when the slices served changed:
    /// the caller sets the data path's `active` flags to it.
    pub fn turn(&mut self, t: &Tables, now: Instant) -> Option<u64> {
        self.receive(t, now);
        self.note_liveness(now);
        self.ask_resyncs(now);
        let before = self.active;
        let next = decide(&self.view(now));
        if before & !next != 0 {
            // What it stops serving: its last state goes to the peers
            // first, and its hellos keep claiming it until they acked
            // everything, so the next server never hands out a port this
            // node gave away a moment ago.
            self.sync(t, now);
            self.draining |= before & !next;
        }
        self.active = next;
        if self.draining != 0 && self.peers.values().all(|p| p.outbox.is_empty()) {
            self.draining = 0;
            self.next_hello = now;
        }
        if self.active != before {
            eprintln!(
                "cgnat: cluster: node {} now serves slices {:?} (was {:?})",
                self.cl.id,
                ids(self.active),
                ids(before)
            );
            // a slice it no longer serves is its new server's to send
            let mine = self.mine();
            for p in self.peers.values_mut() {
                p.sent.retain(&mine);
            }
            self.next_hello = now;
            self.next_sync = now;
        }
        self.announce();
        if now >= self.next_sync {
            // a sync takes at most a quarter of a core: on large tables
            // the interval stretches (status: sync_interval_ms)
            let cpu = crate::clock::thread_cpu_ns();
            self.sync(t, now);
            let spent = Duration::from_nanos(crate::clock::thread_cpu_ns().saturating_sub(cpu));
            self.interval = self.cl.sync_interval.max(spent * 4);
            self.next_sync = now + self.interval;
        }
        // a node whose data path fails its self-check goes silent: its
        // peers declare it dead and take its slice over
        if now >= self.next_hello && self.healthy {
            self.next_hello = now + self.cl.heartbeat;
            self.hello(now);
        }
        self.resend(now);
        self.flush_acks();
        (self.active != before).then_some(self.active)
    }

    /// Withdraws the routes (the daemon stops).
    pub fn stop(&mut self) {
        if let Err(e) = self.export.withdraw() {
            eprintln!("cgnat: cluster: cannot withdraw routes: {e}");
        }
    }

    pub fn status(&self, now: Instant) -> Status {
        let mut counters = self.counters.clone();
        let mut lag = Duration::ZERO;
        let peers = self
            .peers
            .values()
            .map(|p| {
                let s = p.outbox.stats();
                counters.acked += s.acked;
                counters.resent += s.resent;
                if let Some(d) = p.outbox.next_due() {
                    lag = lag.max(now.saturating_duration_since(d));
                }
                PeerStatus {
                    id: p.id,
                    address: *p.addr.ip(),
                    alive: p.live.is_alive(now, self.cl.dead_after),
                    heard_ms_ago: p
                        .live
                        .last_heard()
                        .map(|h| now.saturating_duration_since(h).as_millis() as u64),
                    serves: ids(p.active),
                    resynced: p.resynced,
                    unacked: p.outbox.len(),
                }
            })
            .collect();
        Status {
            id: self.cl.id,
            resynced: self.resynced,
            serves: ids(self.active),
            failback: match self.cl.failback {
                Failback::Immediate => "immediate".into(),
                Failback::Manual => "manual".into(),
            },
            peers,
            counters,
            lag_ms: lag.as_millis() as u64,
            sync_interval_ms: self.interval.as_millis() as u64,
        }
    }

    fn reject(&mut self, r: Reject) {
        *self.counters.rejected.entry(r.reason()).or_default() += 1;
    }

    fn receive(&mut self, t: &Tables, now: Instant) {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(_) => return,
            };
            let msg = match wire::decode(&buf[..n], &self.key) {
                Ok(m) => m,
                Err(r) => {
                    self.reject(r);
                    continue;
                }
            };
            let h = msg.header;
            let known = self
                .peers
                .get(&h.node)
                .is_some_and(|p| SocketAddr::V4(p.addr).ip() == from.ip());
            if !known || h.node == self.cl.id {
                self.reject(Reject::UnknownNode);
                continue;
            }
            let Some(peer) = self.peers.get_mut(&h.node) else {
                continue;
            };
            if let Err(r) = peer.inbound.accept(h.epoch, h.seq) {
                self.reject(r);
                continue;
            }
            if peer.inbound.take_new_epoch() {
                // a (re)started peer holds nothing of ours until it asks
                peer.resynced = false;
                peer.sent_us_all = false;
                peer.asked_at = None;
                peer.outbox.clear();
            }
            peer.live.heard(now);
            self.counters.received += 1;
            self.handle(t, h, msg.records, now);
        }
    }

    fn handle(&mut self, t: &Tables, h: Header, records: Vec<Record>, now: Instant) {
        let from = h.node;
        // Hellos come alone and inside ResyncDone (so a node that just
        // resynced knows what its peers serve before it decides anything)
        for r in &records {
            if let Record::Hello {
                active,
                want,
                resynced,
            } = r
            {
                if let Some(p) = self.peers.get_mut(&from) {
                    p.active = *active;
                    // a peer may only ask for its own slice
                    p.want = *want & bit(from);
                    p.resynced = *resynced;
                }
            }
        }
        match h.kind {
            Kind::Hello => {}
            Kind::Ack => {
                if let Some(p) = self.peers.get_mut(&from) {
                    for r in &records {
                        if let Record::Acks { seqs } = r {
                            for s in seqs {
                                p.outbox.acked(*s);
                            }
                        }
                    }
                }
            }
            Kind::Update => {
                self.acks.entry(from).or_default().push(h.seq);
                let now_ns = crate::clock::monotonic_ns();
                for r in install::install_all(t, &records, now_ns, self.rate_tokens) {
                    match r {
                        Ok(Outcome::Applied) => self.counters.records_applied += 1,
                        Ok(Outcome::Conflict) => self.counters.conflicts += 1,
                        Ok(Outcome::Ignored) => {}
                        Err(e) => eprintln!("cgnat: cluster: cannot install a record: {e}"),
                    }
                }
            }
            Kind::ResyncDone => {
                self.acks.entry(from).or_default().push(h.seq);
                if let Some(p) = self.peers.get_mut(&from) {
                    p.sent_us_all = true;
                }
            }
            Kind::ResyncRequest => self.serve_resync(from, now),
        }
    }

    /// A peer asks for everything of the slices this node serves: it goes
    /// out over the next sync intervals (paced like any other), then
    /// ResyncDone.
    fn serve_resync(&mut self, to: u16, now: Instant) {
        self.counters.resyncs_served += 1;
        if let Some(p) = self.peers.get_mut(&to) {
            p.sent.clear();
            p.resync_pending = true;
        }
        self.next_sync = now;
    }

    /// Which external addresses belong to the slices served now.
    fn mine(&self) -> impl Fn(Ipv4Addr) -> bool {
        let pools: Vec<Ipv4Network> = self
            .cl
            .nodes
            .iter()
            .filter(|n| self.active & bit(n.id) != 0)
            .flat_map(|n| n.pool.clone())
            .collect();
        move |a| pools.iter().any(|p| p.contains(a))
    }

    fn note_liveness(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            let alive = p.live.is_alive(now, self.cl.dead_after);
            if alive != p.was_alive {
                eprintln!(
                    "cgnat: cluster: peer {} ({}) is {}",
                    p.id,
                    p.addr.ip(),
                    if alive {
                        "up"
                    } else {
                        "down (no sync heartbeat)"
                    }
                );
                p.was_alive = alive;
                if !alive {
                    p.lost_once = true;
                    // what was waiting for its ack is lost: all again later
                    p.sent.clear();
                    p.active = 0;
                    p.want = 0;
                    p.resynced = false;
                    p.sent_us_all = false;
                    p.asked_at = None;
                    p.outbox.clear();
                }
            }
        }
    }

    /// Until it holds every live peer's state, a node asks for it (again
    /// every RESYNC_RETRY); a peer silent for dead_after since the start is
    /// not waited for.
    fn ask_resyncs(&mut self, now: Instant) {
        let mut ask = Vec::new();
        for p in self.peers.values_mut() {
            let alive = p.live.is_alive(now, self.cl.dead_after);
            if !p.sent_us_all
                && (alive || p.live.last_heard().is_none())
                && p.asked_at
                    .is_none_or(|a| now.saturating_duration_since(a) >= RESYNC_RETRY)
            {
                p.asked_at = Some(now);
                ask.push(p.id);
            }
        }
        for id in ask {
            self.send(id, Kind::ResyncRequest, Vec::new());
        }
        if !self.resynced {
            let grace = now.saturating_duration_since(self.started) >= self.cl.dead_after;
            let done = self
                .peers
                .values()
                .all(|p| p.sent_us_all || (grace && !p.live.is_alive(now, self.cl.dead_after)));
            if done {
                self.resynced = true;
                eprintln!(
                    "cgnat: cluster: node {} resynced from its peers",
                    self.cl.id
                );
                self.next_hello = now;
            }
        }
    }

    fn view(&self, now: Instant) -> View {
        View {
            me: self.cl.id,
            nodes: self.cl.nodes.iter().map(|n| n.id).collect(),
            active: self.active,
            resynced: self.resynced,
            healthy: self.healthy,
            peers: self
                .peers
                .values()
                .map(|p| PeerView {
                    id: p.id,
                    alive: p.live.is_alive(now, self.cl.dead_after),
                    active: p.active,
                    want: p.want,
                    resynced: p.resynced,
                    lost_once: p.lost_once,
                })
                .collect(),
        }
    }

    /// The routes of every slice: route_metric where served here, twice
    /// that where only backed up; none before the resync or while the
    /// self-check fails.
    fn announce(&mut self) {
        let mut want: Announced = Vec::new();
        // nothing before the resync: a node holding no state must not
        // attract traffic
        let announcing = self.healthy && self.resynced;
        for n in self.cl.nodes.iter().filter(|_| announcing) {
            let metric = if self.active & bit(n.id) != 0 {
                self.cl.route_metric
            } else {
                self.cl.route_metric * 2
            };
            for p in &n.pool {
                want.push((*p, metric));
            }
        }
        if let Err(e) = self.export.apply(&want) {
            eprintln!(
                "cgnat: cluster: cannot write routing table {}: {e}",
                self.cl.route_table
            );
        }
    }

    /// Sends each live peer what changed in the slices this node serves, at
    /// most SYNC_LIMIT records, and nothing new to a peer whose
    /// acknowledgements lag (OUTBOX_PAUSE); ResyncDone once a peer that
    /// asked for everything has it.
    fn sync(&mut self, t: &Tables, now: Instant) {
        let mut snap = std::mem::take(&mut self.snap);
        if self.active == 0 {
            snap = state::Snapshot::default();
        } else {
            let mine = self.mine();
            state::scan_into(t, &mine, &mut snap);
        }
        let policy = Policy {
            session_age: self.cl.session_age,
            refresh: Duration::from_secs(2),
        };
        let now_ns = crate::clock::monotonic_ns();
        let ids: Vec<u16> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if !p.live.is_alive(now, self.cl.dead_after) && !p.resync_pending {
                continue;
            }
            if p.outbox.len() >= OUTBOX_PAUSE {
                self.counters.sync_paused += 1;
                continue;
            }
            let records = p.sent.diff(&snap, now_ns, policy, SYNC_LIMIT);
            let caught_up = records.len() < SYNC_LIMIT;
            let finish = p.resync_pending && caught_up;
            if finish {
                p.resync_pending = false;
            }
            if !records.is_empty() {
                self.send_reliable(id, Kind::Update, records, now);
            }
            if finish {
                let hello = vec![self.hello_record()];
                self.send_reliable(id, Kind::ResyncDone, hello, now);
            }
        }
        self.snap = snap;
    }

    /// What this node serves and wants, for its peers.
    fn hello_record(&self) -> Record {
        let wants = self.resynced
            && (self.cl.failback == Failback::Immediate
                || self.failback_requested
                || self.active & bit(self.cl.id) != 0);
        Record::Hello {
            active: self.active | self.draining,
            want: if wants { bit(self.cl.id) } else { 0 },
            resynced: self.resynced,
        }
    }

    fn hello(&mut self, _now: Instant) {
        let rec = vec![self.hello_record()];
        let ids: Vec<u16> = self.peers.keys().copied().collect();
        for id in ids {
            self.send(id, Kind::Hello, rec.clone());
        }
    }

    fn resend(&mut self, now: Instant) {
        let mut out = Vec::new();
        let mut resync = Vec::new();
        for p in self.peers.values_mut() {
            if p.outbox.take_overflow() {
                resync.push(p.id);
            }
            for (seq, records) in p.outbox.due(now) {
                out.push((p.id, seq, records));
            }
        }
        for (id, seq, mut records) in out {
            // the only reliable messages: Updates (state records) and
            // ResyncDone (one Hello)
            let kind = if matches!(records.as_slice(), [Record::Hello { .. }]) {
                Kind::ResyncDone
            } else {
                Kind::Update
            };
            // what a later message superseded must not overtake it
            if let Some(p) = self.peers.get_mut(&id) {
                records.retain(|r| p.sent.is_current(r));
                if records.is_empty() {
                    p.outbox.acked(seq);
                    continue;
                }
            }
            self.transmit(id, kind, seq, &records);
        }
        for id in resync {
            eprintln!("cgnat: cluster: peer {id} fell behind: sending it everything again");
            if let Some(p) = self.peers.get_mut(&id) {
                p.sent.clear();
            }
        }
    }

    fn flush_acks(&mut self) {
        let acks = std::mem::take(&mut self.acks);
        for (id, seqs) in acks {
            for chunk in seqs.chunks(wire::MAX_ACKS) {
                self.send(
                    id,
                    Kind::Ack,
                    vec![Record::Acks {
                        seqs: chunk.to_vec(),
                    }],
                );
            }
        }
    }

    /// Sends records in as many datagrams as they need, each kept until
    /// acknowledged.
    fn send_reliable(&mut self, to: u16, kind: Kind, records: Vec<Record>, now: Instant) {
        let batches = if kind == Kind::ResyncDone {
            vec![records]
        } else {
            let mut b = Batcher::new();
            for r in records {
                if b.push(r).is_err() {
                    self.counters.records_sent += 0;
                }
            }
            b.finish()
        };
        for batch in batches {
            let Some(p) = self.peers.get_mut(&to) else {
                return;
            };
            let seq = p.outbox.next_seq();
            p.outbox.sent(seq, batch.clone(), now);
            self.counters.records_sent += batch.len() as u64;
            self.transmit(to, kind, seq, &batch);
        }
    }

    /// Sends one unreliable datagram.
    fn send(&mut self, to: u16, kind: Kind, records: Vec<Record>) {
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        let seq = p.outbox.next_seq();
        self.transmit(to, kind, seq, &records);
    }

    fn transmit(&mut self, to: u16, kind: Kind, seq: u64, records: &[Record]) {
        let Some(p) = self.peers.get(&to) else {
            return;
        };
        let msg = Message {
            header: Header {
                kind,
                node: self.cl.id,
                epoch: self.epoch,
                seq,
            },
            records: records.to_vec(),
        };
        match wire::encode(&msg, &self.key) {
            Ok(bytes) => {
                if self.sock.send_to(&bytes, p.addr).is_ok() {
                    self.counters.sent += 1;
                }
            }
            Err(e) => eprintln!("cgnat: cluster: cannot encode a message: {e}"),
        }
    }
}
