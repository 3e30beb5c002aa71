//! Helpers of `tests/e2e_hostile.rs` and `tests/e2e_faults.rs`: raw IPv4
//! packets built here (any source address, fragments, bare SYNs) and sent
//! through a raw socket in a namespace, a seeded random generator, counter
//! deltas, pinned-map sizes (key counts only: the layout of the values is
//! not this code's business), the `--json` views of the daemon's state and
//! a background UDP traffic generator whose every reply says which source
//! the far end saw.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use libbpf_rs::MapCore;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockProtocol, SockaddrIn};

use cgnat_kit::testbed::{decode_reflection, Host, Testbed};

use crate::ops::{Bed, Json};

// ---------------------------------------------------------------------------
// Randomness (seeded: a failure can be replayed)
// ---------------------------------------------------------------------------

/// xorshift64*: small, seeded, good enough for ports and addresses.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A port in 1024..=65535.
    pub fn port(&mut self) -> u16 {
        1024 + self.below(65536 - 1024) as u16
    }
    /// A public-looking address (1.0.0.0 - 99.255.255.255): outside the
    /// internal prefixes, the pool and the test bed's external subnet.
    pub fn public_addr(&mut self) -> Ipv4Addr {
        let x = self.next() as u32;
        Ipv4Addr::from((1 + (x >> 24) % 99) << 24 | (x & 0x00ff_ffff))
    }
}

// ---------------------------------------------------------------------------
// Raw packets
// ---------------------------------------------------------------------------

/// The Internet checksum (RFC 1071) of `data`, starting from `sum`.
fn csum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        sum += (*b as u32) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let (s, d) = (src.octets(), dst.octets());
    [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        proto as u16,
        len as u16,
    ]
    .iter()
    .map(|&w| w as u32)
    .sum()
}

/// An IPv4 header (20 bytes, checksum filled) followed by `payload`.
/// `frag` is the flags + fragment offset field (0x2000 = MF; offset in
/// units of 8 bytes).
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    id: u16,
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = csum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP header + payload with its checksum. `udp_len` is the length the
/// header claims (the whole datagram's, for a first fragment); the
/// checksum covers `payload` only, which is right for unfragmented
/// datagrams (first fragments do not need a right one to be forwarded).
pub fn udp_segment(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    udp_len: usize,
) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&(udp_len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = csum(&u, pseudo_sum(*src.ip(), *dst.ip(), 17, u.len()));
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

/// A whole UDP datagram in an IPv4 packet.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, id: u16, payload: &[u8]) -> Vec<u8> {
    let u = udp_segment(src, dst, payload, 8 + payload.len());
    ipv4(*src.ip(), *dst.ip(), 17, id, 0, &u)
}

/// A TCP SYN (no options) in an IPv4 packet.
pub fn tcp_syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x02]); // 5 words, SYN
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    let c = csum(&t, pseudo_sum(*src.ip(), *dst.ip(), 6, t.len()));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(*src.ip(), *dst.ip(), 6, (seq >> 16) as u16, 0x4000, &t)
}

/// A raw IPv4 socket (IPPROTO_RAW: the header is ours, source included)
/// opened in a namespace.
pub struct RawIp {
    fd: OwnedFd,
    host: Host,
    pub sent: u64,
}

impl RawIp {
    pub fn open(tb: &Testbed, host: Host) -> RawIp {
        let fd = tb
            .raw_socket(host, AddressFamily::Inet, SockProtocol::Raw)
            .unwrap_or_else(|e| panic!("{e}"));
        RawIp { fd, host, sent: 0 }
    }

    /// Sends one IPv4 packet as it is (routed by its destination). A full
    /// socket buffer is waited out (the sender floods; nothing is lost on
    /// its own side).
    pub fn send(&mut self, pkt: &[u8]) {
        let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
        loop {
            match socket::sendto(self.fd.as_raw_fd(), pkt, &to, MsgFlags::empty()) {
                Ok(_) => break,
                Err(nix::errno::Errno::ENOBUFS) | Err(nix::errno::Errno::EAGAIN) => {
                    thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{}: sending a raw packet to {dst}: {e}", self.host),
            }
        }
        self.sent += 1;
    }

    /// Sends `pkts` in bursts of 32 spread evenly over about `over`: fast
    /// enough to be a flood (thousands per second), paced so that the
    /// veths' and bridges' small per-CPU backlogs do not drop any (a drop
    /// there would blur the counts), and long enough for the legitimate
    /// traffic running meanwhile to cross it.
    pub fn flood(&mut self, pkts: &[Vec<u8>], over: Duration) {
        let bursts = pkts.len().div_ceil(32).max(1) as u32;
        let start = Instant::now();
        for (i, chunk) in pkts.chunks(32).enumerate() {
            for p in chunk {
                self.send(p);
            }
            let due = start + over * (i as u32 + 1) / bursts;
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
}

// ---------------------------------------------------------------------------
// The daemon's state, through the CLI and the pinned maps
// ---------------------------------------------------------------------------

/// Counters (packets) by name, from `cgnat stats`.
pub fn counters(bed: &Bed) -> BTreeMap<String, u64> {
    bed.counters()
}

/// Per-counter growth from `before` to `after`, non-zero ones only.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

pub fn get(m: &BTreeMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// `cgnat CMD --json`, parsed.
pub fn json(bed: &Bed, config: &Path, cmd: &str) -> Json {
    let text = bed.cli_ok(config, &[cmd, "--json"]);
    Json::parse(&text).unwrap_or_else(|e| panic!("{cmd} --json: {e}:\n{text}"))
}

/// A number of `status --json`.
pub fn status_num(bed: &Bed, config: &Path, key: &str) -> u64 {
    let j = json(bed, config, "status");
    j.get(key)
        .and_then(Json::u64)
        .unwrap_or_else(|| panic!("status --json has no number {key:?}: {j:?}"))
}

/// One row of `subscribers --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRow {
    pub subscriber: Ipv4Addr,
    pub external: Ipv4Addr,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub sessions: u64,
}

pub fn subscribers(bed: &Bed, config: &Path) -> Vec<SubRow> {
    let j = json(bed, config, "subscribers");
    let rows = j
        .arr()
        .unwrap_or_else(|| panic!("subscribers --json: {j:?}"));
    rows.iter()
        .map(|r| {
            let s = |k: &str| {
                r.get(k)
                    .and_then(Json::str)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("subscriber row without {k}: {r:?}"))
            };
            let n = |k: &str| {
                r.get(k)
                    .and_then(Json::u64)
                    .unwrap_or_else(|| panic!("subscriber row without {k}: {r:?}"))
            };
            SubRow {
                subscriber: s("subscriber"),
                external: s("external"),
                tcp: n("tcp"),
                udp: n("udp"),
                icmp: n("icmp"),
                sessions: n("sessions"),
            }
        })
        .collect()
}

/// One row of `pool --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub address: Ipv4Addr,
    pub subscribers: u64,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub quarantined: u64,
}

pub fn pool(bed: &Bed, config: &Path) -> Vec<PoolRow> {
    let j = json(bed, config, "pool");
    let rows = j.arr().unwrap_or_else(|| panic!("pool --json: {j:?}"));
    rows.iter()
        .map(|r| {
            let n = |k: &str| {
                r.get(k)
                    .and_then(Json::u64)
                    .unwrap_or_else(|| panic!("pool row without {k}: {r:?}"))
            };
            PoolRow {
                address: r
                    .get("address")
                    .and_then(Json::str)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("pool row without address: {r:?}")),
                subscribers: n("subscribers"),
                tcp: n("tcp"),
                udp: n("udp"),
                icmp: n("icmp"),
                quarantined: n("quarantined"),
            }
        })
        .collect()
}

/// Number of entries of a pinned map (keys only: value layouts are not
/// read). Works from the test process: the test bed's bpffs is mounted in
/// its mount namespace.
pub fn map_len(pin: &Path, name: &str) -> usize {
    let m = libbpf_rs::MapHandle::from_pinned_path(pin.join(name))
        .unwrap_or_else(|e| panic!("opening pinned map {name}: {e}"));
    m.keys().count()
}

pub use crate::common::wait_until;

// ---------------------------------------------------------------------------
// Steady UDP traffic through the NAT
// ---------------------------------------------------------------------------

/// One UDP flow: a subscriber socket talking to a reflector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpec {
    pub host: Host,
    pub local: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// What one flow saw.
#[derive(Debug, Clone, Default)]
pub struct FlowReport {
    pub sent: u64,
    pub replies: u64,
    /// Sources the reflector said it saw (the flow's external endpoints).
    pub observed: BTreeSet<SocketAddrV4>,
    /// Replies that were not this flow's (wrong tag or wrong reflector):
    /// a mistranslated inbound packet.
    pub foreign: Vec<String>,
    /// Longest time without a reply while sending.
    pub longest_gap: Duration,
}

/// Background traffic: every `interval` each flow sends `"F<i> <seq>"`; the
/// reflector answers with the source it observed. [`Traffic::quiesce`]
/// pauses the sending until every datagram sent so far is answered (so
/// that counters read then hold exactly this traffic's packets);
/// [`Traffic::finish`] stops it.
pub struct Traffic {
    pub specs: Vec<FlowSpec>,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    /// Set by the sender when it saw `pause` between two rounds.
    paused: Arc<AtomicBool>,
    /// Per flow: datagrams sent and replies received so far.
    live: Arc<Vec<(AtomicU64, AtomicU64)>>,
    handle: Option<JoinHandle<Vec<FlowReport>>>,
}

/// How long replies may take once the sending stops: far more than a
/// round trip through the namespaces takes on a loaded machine.
const DRAIN: Duration = Duration::from_secs(3);

impl Traffic {
    pub fn start(tb: &Testbed, specs: Vec<FlowSpec>, interval: Duration) -> Traffic {
        let socks: Vec<UdpSocket> = specs
            .iter()
            .map(|s| {
                let u = tb
                    .udp_socket(s.host, s.local)
                    .unwrap_or_else(|e| panic!("UDP socket {} {}: {e}", s.host, s.local));
                u.set_nonblocking(true).expect("O_NONBLOCK");
                u
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let live: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
            specs
                .iter()
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        );
        let (stop2, pause2, paused2, live2) = (
            Arc::clone(&stop),
            Arc::clone(&pause),
            Arc::clone(&paused),
            Arc::clone(&live),
        );
        let specs2 = specs.clone();
        let handle = thread::spawn(move || {
            let mut rep = vec![FlowReport::default(); specs2.len()];
            let mut last = vec![Instant::now(); specs2.len()];
            let mut buf = [0u8; 2048];
            let mut seq = 0u64;
            let mut receive = |rep: &mut Vec<FlowReport>, last: &mut Vec<Instant>| {
                for (i, (s, spec)) in socks.iter().zip(&specs2).enumerate() {
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        let r = &mut rep[i];
                        let SocketAddr::V4(from) = from else { continue };
                        let tag = format!("F{i} ");
                        match decode_reflection(&buf[..n]) {
                            Some((obs, payload))
                                if from == spec.dst && payload.starts_with(tag.as_bytes()) =>
                            {
                                r.replies += 1;
                                live2[i].1.fetch_add(1, Ordering::SeqCst);
                                r.observed.insert(obs);
                                let now = Instant::now();
                                r.longest_gap = r.longest_gap.max(now - last[i]);
                                last[i] = now;
                            }
                            _ => r.foreign.push(format!(
                                "from {from}: {:?}",
                                String::from_utf8_lossy(&buf[..n])
                            )),
                        }
                    }
                }
            };
            while !stop2.load(Ordering::SeqCst) {
                let pausing = pause2.load(Ordering::SeqCst);
                paused2.store(pausing, Ordering::SeqCst);
                if pausing {
                    // A pause is no silence of the flows.
                    last.iter_mut().for_each(|l| *l = Instant::now());
                } else {
                    for (i, (s, spec)) in socks.iter().zip(&specs2).enumerate() {
                        if s.send_to(format!("F{i} {seq}").as_bytes(), spec.dst)
                            .is_ok()
                        {
                            rep[i].sent += 1;
                            live2[i].0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    seq += 1;
                }
                let until = Instant::now() + interval;
                while Instant::now() < until {
                    receive(&mut rep, &mut last);
                    thread::sleep(Duration::from_millis(2));
                }
            }
            // Late replies: until every datagram is answered or DRAIN.
            let deadline = Instant::now() + DRAIN;
            while rep.iter().any(|r| r.replies < r.sent) && Instant::now() < deadline {
                receive(&mut rep, &mut last);
                thread::sleep(Duration::from_millis(2));
            }
            rep
        });
        Traffic {
            specs,
            stop,
            pause,
            paused,
            live,
            handle: Some(handle),
        }
    }

    /// Pauses the sending and waits until every datagram sent so far is
    /// answered (a lost one fails the test here). Returns the datagrams
    /// sent and the replies received so far, all flows together; they are
    /// equal.
    pub fn quiesce(&self, what: &str) -> (u64, u64) {
        self.pause.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + DRAIN;
        while !self.paused.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "{what}: the traffic did not pause"
            );
            thread::sleep(Duration::from_millis(2));
        }
        loop {
            let counts: Vec<(u64, u64)> = self
                .live
                .iter()
                .map(|(s, r)| (s.load(Ordering::SeqCst), r.load(Ordering::SeqCst)))
                .collect();
            if counts.iter().all(|(s, r)| r >= s) {
                return counts.iter().fold((0, 0), |(a, b), (s, r)| (a + s, b + r));
            }
            assert!(
                Instant::now() < deadline,
                "{what}: datagrams lost (sent, replies) per flow {counts:?} {:?}",
                self.specs
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends again after [`Traffic::quiesce`].
    pub fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    pub fn finish(mut self) -> Vec<FlowReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("traffic thread panicked")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Each flow: every datagram answered (UDP request and response over
/// veths between namespaces lose nothing: a missing reply is a packet the
/// NAT dropped or mistranslated), one external endpoint all along, no
/// foreign reply, no silence of 2 s or more. Returns (sent, replies).
pub fn check_flows(what: &str, reps: &[FlowReport], specs: &[FlowSpec]) -> (u64, u64) {
    let (mut sent, mut got) = (0, 0);
    for (r, s) in reps.iter().zip(specs) {
        assert!(
            r.foreign.is_empty(),
            "{what}: {s:?}: foreign replies {:?}",
            r.foreign
        );
        assert_eq!(
            r.observed.len(),
            1,
            "{what}: {s:?} seen as {:?}",
            r.observed
        );
        assert_eq!(
            r.replies,
            r.sent,
            "{what}: {s:?}: {} replies to {} datagrams (lost {})",
            r.replies,
            r.sent,
            r.sent.saturating_sub(r.replies)
        );
        assert!(
            r.longest_gap < Duration::from_secs(2),
            "{what}: {s:?}: silent for {:?}",
            r.longest_gap
        );
        sent += r.sent;
        got += r.replies;
    }
    (sent, got)
}
