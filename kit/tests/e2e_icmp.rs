//! End-to-end tests of ICMP per RFC 5508, the ICMP errors cgnat
//! generates itself, fragments, MTU and MSS.
//!
//! Every test builds its own [`Testbed`], writes a real TOML file (the test
//! bed's configuration, edited where a test needs other settings) and runs
//! the real `cgnat` binary in the router namespace. Assertions are on what
//! the far end received.
//!
//! Tools:
//! * crafted packets are built by scapy (`/usr/bin/python3`, Debian's
//!   python3-scapy) with the helper `tests/icmp/craft.py`, which prints them
//!   as hex; the test sends them from the host's namespace through a raw IP
//!   socket (`IPPROTO_RAW`: the kernel sends the header as given, filling in
//!   only the header checksum), so it controls the order across hosts;
//! * [`Capture`] records every IPv4 packet of a host's `eth0` as bytes
//!   (AF_PACKET); checksums are verified here, independently of the NAT and
//!   of the receiving kernel.
//!
//! The tests need root, scapy and traceroute. Without them they are skipped,
//! except under `CI=true`, where they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cgnat_kit::testbed::{
    in_pool, parse_ping, udp_exchange, udp_recv, udp_send_until_received, Host, Pattern, TcpServer,
    Testbed, UdpReflector, EXTERNAL_IF, ROUTER_EXT, ROUTER_INT,
};
use nix::sys::socket::{
    self, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;

use common::Bed;

/// Limit of one exchange (the helpers resend every 200 ms; the first packet
/// may be dropped while the NAT resolves a neighbour).
const T: Duration = Duration::from_secs(5);
/// How long we wait before concluding that something did not arrive.
const QUIET: Duration = Duration::from_millis(1000);
/// The Python with scapy (the first `python3` on PATH may be another one).
const PYTHON: &str = "/usr/bin/python3";
const CRAFT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/icmp/craft.py");

const ECONNREFUSED: i32 = 111;
const EHOSTUNREACH: i32 = 113;

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Root and the tools of `common::require_root`, plus scapy and traceroute.
/// Same policy: under `CI=true` a missing piece fails the test.
fn require_tools() -> bool {
    if !common::require_root() {
        return false;
    }
    static MISSING: OnceLock<Vec<String>> = OnceLock::new();
    let missing = MISSING.get_or_init(|| {
        let mut m = Vec::new();
        let scapy = Command::new(PYTHON)
            .args(["-c", "import scapy.all"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !scapy {
            m.push(format!("scapy for {PYTHON} (Debian package python3-scapy)"));
        }
        if !on_path("traceroute") {
            m.push("`traceroute`".to_owned());
        }
        m
    });
    if missing.is_empty() {
        return true;
    }
    let msg = format!("ICMP end-to-end test needs {}", missing.join(", "));
    cgnat_kit::testbed::cannot_run(&msg);
    false
}

/// Sets `key = value` in `[section]` of a TOML text (replacing the key if it
/// is there, adding the section at the end if it is not).
fn set_toml(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let line = format!("{key} = {value}");
    let mut out: Vec<String> = Vec::new();
    let (mut in_section, mut done) = (false, false);
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            if in_section && !done {
                out.push(line.clone());
                done = true;
            }
            in_section = t == header;
        } else if in_section
            && !done
            && t.split('=').next().map(str::trim) == Some(key)
            && t.contains('=')
        {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_owned());
    }
    if in_section && !done {
        out.push(line.clone());
        done = true;
    }
    if !done {
        out.push(String::new());
        out.push(header);
        out.push(line);
    }
    out.join("\n") + "\n"
}

impl Bed {
    /// A test bed (after `prepare` ran on it: MTUs ...) with cgnat running
    /// on the test bed's configuration with `settings` (`section`, `key`,
    /// TOML value) applied. `None` when the test cannot run here.
    fn icmp(settings: &[(&str, &str, &str)], prepare: impl FnOnce(&Testbed)) -> Option<Bed> {
        if !require_tools() {
            return None;
        }
        let mut bed = Bed::new()?;
        prepare(&bed.tb);
        let mut text = bed.tb.config_toml();
        for (section, key, value) in settings {
            text = set_toml(&text, section, key, value);
        }
        bed.start_text("cgnat.toml", &text);
        Some(bed)
    }

    /// `cgnat stats`: name -> packets.
    fn stats(&self) -> Stats {
        let text = self.cgnat().stats_text().expect("cgnat stats");
        let m = cgnat_kit::testbed::parse_stats(&text);
        assert!(!m.is_empty(), "cgnat stats printed no counters:\n{text}");
        Stats {
            packets: m.into_iter().map(|(k, (p, _))| (k, p)).collect(),
            text,
        }
    }
}

/// A snapshot of `cgnat stats`.
struct Stats {
    packets: BTreeMap<String, u64>,
    text: String,
}

impl Stats {
    fn get(&self, name: &str) -> u64 {
        *self
            .packets
            .get(name)
            .unwrap_or_else(|| panic!("cgnat stats has no counter {name}:\n{}", self.text))
    }

    /// How much `name` grew since `before`.
    fn delta(&self, before: &Stats, name: &str) -> u64 {
        self.get(name).saturating_sub(before.get(name))
    }
}

/// Sets the MTU of `ifname` in `host`.
fn set_mtu(tb: &Testbed, host: Host, ifname: &str, mtu: u32) {
    tb.ip(
        host,
        &["link", "set", "dev", ifname, "mtu", &mtu.to_string()],
    )
    .unwrap_or_else(|e| panic!("mtu {mtu} on {host}/{ifname}: {e}"));
}

/// The external side at MTU 1400: the router's ext0 and the external hosts.
fn external_mtu_1400(tb: &Testbed) {
    set_mtu(tb, Host::Router, EXTERNAL_IF, 1400);
    for h in Host::EXTERNALS {
        set_mtu(tb, h, "eth0", 1400);
    }
}

// ---------------------------------------------------------------------------
// Packets: checksums and a small IPv4 view
// ---------------------------------------------------------------------------

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn sum16(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|c| {
            if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]]) as u64
            } else {
                (c[0] as u64) << 8
            }
        })
        .sum()
}

fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The Internet checksum of `data` verifies (one's complement sum 0xffff).
fn csum_ok(data: &[u8]) -> bool {
    fold(sum16(data)) == 0xffff
}

/// A TCP or UDP checksum with the IPv4 pseudo header verifies.
fn l4_csum_ok(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> bool {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    fold(sum16(&pseudo) + sum16(seg)) == 0xffff
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An IPv4 packet (or the possibly truncated quote in an ICMP error).
#[derive(Clone, Copy)]
struct V4<'a>(&'a [u8]);

impl<'a> V4<'a> {
    fn parse(b: &'a [u8]) -> Option<V4<'a>> {
        if b.len() < 20
            || b[0] >> 4 != 4
            || (b[0] & 0x0f) < 5
            || b.len() < (b[0] & 0x0f) as usize * 4
        {
            return None;
        }
        Some(V4(b))
    }
    fn ihl(&self) -> usize {
        (self.0[0] & 0x0f) as usize * 4
    }
    fn tos(&self) -> u8 {
        self.0[1]
    }
    fn tot_len(&self) -> usize {
        be16(self.0, 2) as usize
    }
    fn id(&self) -> u16 {
        be16(self.0, 4)
    }
    fn df(&self) -> bool {
        self.0[6] & 0x40 != 0
    }
    fn mf(&self) -> bool {
        self.0[6] & 0x20 != 0
    }
    /// Fragment offset in bytes.
    fn offset(&self) -> usize {
        (be16(self.0, 6) & 0x1fff) as usize * 8
    }
    fn ttl(&self) -> u8 {
        self.0[8]
    }
    fn proto(&self) -> u8 {
        self.0[9]
    }
    fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[12], self.0[13], self.0[14], self.0[15])
    }
    fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.0[16], self.0[17], self.0[18], self.0[19])
    }
    fn header(&self) -> &'a [u8] {
        &self.0[..self.ihl()]
    }
    fn header_ok(&self) -> bool {
        csum_ok(self.header())
    }
    /// The payload, as far as it is present.
    fn l4(&self) -> &'a [u8] {
        let end = self.tot_len().min(self.0.len()).max(self.ihl());
        &self.0[self.ihl()..end]
    }
    /// The whole packet is present (not only a quoted prefix).
    fn complete(&self) -> bool {
        self.0.len() >= self.tot_len()
    }
    fn is_fragment(&self) -> bool {
        self.mf() || self.offset() > 0
    }
    /// TCP/UDP ports of an unfragmented or first-fragment packet.
    fn ports(&self) -> Option<(u16, u16)> {
        let l4 = self.l4();
        if matches!(self.proto(), 6 | 17) && self.offset() == 0 && l4.len() >= 4 {
            Some((be16(l4, 0), be16(l4, 2)))
        } else {
            None
        }
    }
    /// ICMP type and code.
    fn icmp(&self) -> Option<(u8, u8)> {
        let l4 = self.l4();
        if self.proto() == 1 && self.offset() == 0 && l4.len() >= 4 {
            Some((l4[0], l4[1]))
        } else {
            None
        }
    }
    /// The UDP payload of a whole datagram.
    fn udp_payload(&self) -> Option<&'a [u8]> {
        let l4 = self.l4();
        (self.proto() == 17 && !self.is_fragment() && l4.len() >= 8).then(|| &l4[8..])
    }
    /// The L4 checksum verifies (TCP/UDP with the pseudo header, ICMP
    /// without). `None` when it cannot be checked: truncated, a fragment,
    /// UDP without a checksum, or another protocol.
    fn l4_csum(&self) -> Option<bool> {
        if !self.complete() || self.is_fragment() {
            return None;
        }
        let l4 = self.l4();
        match self.proto() {
            17 if l4.len() >= 8 && be16(l4, 6) != 0 => {
                Some(l4_csum_ok(self.src(), self.dst(), 17, l4))
            }
            6 if l4.len() >= 20 => Some(l4_csum_ok(self.src(), self.dst(), 6, l4)),
            1 if l4.len() >= 4 => Some(csum_ok(l4)),
            _ => None,
        }
    }
    /// The "ports" of the quoted packet of an ICMP error: TCP/UDP ports or,
    /// for an ICMP echo, the identifier twice.
    fn flow_ids(&self) -> Option<(u16, u16)> {
        if let Some(p) = self.ports() {
            return Some(p);
        }
        let l4 = self.l4();
        (self.proto() == 1 && l4.len() >= 8 && matches!(l4[0], 0 | 8))
            .then(|| (be16(l4, 4), be16(l4, 4)))
    }
}

/// An ICMP error message: the outer header, the ICMP message and its quote.
struct IcmpErr<'a> {
    outer: V4<'a>,
    icmp: &'a [u8],
    inner: V4<'a>,
}

impl<'a> IcmpErr<'a> {
    fn parse(pkt: &'a [u8]) -> Option<IcmpErr<'a>> {
        let outer = V4::parse(pkt)?;
        let (t, _) = outer.icmp()?;
        if !matches!(t, 3 | 4 | 5 | 11 | 12) {
            return None;
        }
        let icmp = outer.l4();
        let inner = V4::parse(icmp.get(8..)?)?;
        Some(IcmpErr { outer, icmp, inner })
    }
    fn kind(&self) -> (u8, u8) {
        (self.icmp[0], self.icmp[1])
    }
    /// Every checksum that can be verified, as a list of failures: outer
    /// IP header, ICMP message, quoted IP header, quoted L4 (when the quote
    /// holds the whole quoted packet).
    fn checksum_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.outer.header_ok() {
            p.push("outer IP header checksum".to_owned());
        }
        if !csum_ok(self.icmp) {
            p.push("ICMP checksum".to_owned());
        }
        if !self.inner.header_ok() {
            p.push("embedded IP header checksum".to_owned());
        }
        if self.inner.l4_csum() == Some(false) {
            p.push(format!(
                "embedded L4 (protocol {}) checksum",
                self.inner.proto()
            ));
        }
        p
    }
}

// ---------------------------------------------------------------------------
// Capture and raw sending
// ---------------------------------------------------------------------------

/// One IPv4 packet seen on a host's interface.
#[derive(Clone)]
struct Frame {
    outgoing: bool,
    ip: Vec<u8>,
}

impl Frame {
    fn v4(&self) -> V4<'_> {
        V4(&self.ip)
    }
    fn icmp_err(&self) -> Option<IcmpErr<'_>> {
        IcmpErr::parse(&self.ip)
    }
    fn incoming(&self) -> bool {
        !self.outgoing
    }
}

/// Records every IPv4 packet crossing a host's interfaces (except `lo`),
/// as bytes, until dropped.
struct Capture {
    host: Host,
    log: Arc<Mutex<Vec<Frame>>>,
    /// How many reads found the socket empty (see [`Capture::settle`]).
    idle: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(tb: &Testbed, host: Host) -> Capture {
        let fd = tb
            .raw_socket(host, AddressFamily::Packet, SockProtocol::EthAll)
            .unwrap_or_else(|e| panic!("{e}"));
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 10_000))
            .expect("SO_RCVTIMEO");
        socket::setsockopt(&fd, sockopt::RcvBuf, &(4 << 20)).expect("SO_RCVBUF");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicU64::new(0));
        let (log2, stop2, idle2) = (Arc::clone(&log), Arc::clone(&stop), Arc::clone(&idle));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let (n, ll) = match socket::recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
                    Ok((n, Some(ll))) => (n, ll),
                    Ok(_) => continue,
                    Err(_) => {
                        // Timed out: everything queued so far has been read.
                        idle2.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                };
                if ll.ifindex() == 1 || n < 34 || buf[12..14] != [0x08, 0x00] {
                    continue;
                }
                let ip = &buf[14..n];
                let Some(v) = V4::parse(ip) else { continue };
                let len = v.tot_len().clamp(v.ihl(), ip.len());
                if let Ok(mut l) = log2.lock() {
                    l.push(Frame {
                        outgoing: ll.pkttype() == 4, // PACKET_OUTGOING
                        ip: ip[..len].to_vec(),
                    });
                }
            }
        });
        let c = Capture {
            host,
            log,
            idle,
            stop,
            thread: Some(thread),
        };
        c.settle();
        c
    }

    /// Waits until the reader has taken everything the socket had queued
    /// when this was called (packets already delivered to the host are
    /// then in the log).
    fn settle(&self) {
        let start = self.idle.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.idle.load(Ordering::SeqCst) < start + 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Everything recorded so far.
    fn frames(&self) -> Vec<Frame> {
        self.settle();
        self.snapshot()
    }

    fn snapshot(&self) -> Vec<Frame> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn matching(&self, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        self.frames().into_iter().filter(|f| pred(f)).collect()
    }

    /// The first frame satisfying `pred`, waiting up to `timeout`.
    fn wait(&self, timeout: Duration, pred: impl Fn(&Frame) -> bool) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = Instant::now() >= deadline;
            let frames = if last { self.frames() } else { self.snapshot() };
            if let Some(f) = frames.into_iter().find(|f| pred(f)) {
                return Some(f);
            }
            if last {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Like [`Capture::wait`], panicking with a summary of what was seen.
    fn expect(&self, what: &str, timeout: Duration, pred: impl Fn(&Frame) -> bool) -> Frame {
        self.wait(timeout, pred)
            .unwrap_or_else(|| panic!("{}: never saw {what}\n{}", self.host, self.summary()))
    }

    /// One line per frame, for failure messages.
    fn summary(&self) -> String {
        let mut s = String::new();
        for f in self.frames() {
            let v = f.v4();
            let dir = if f.outgoing { "out" } else { "in " };
            let what = match (v.ports(), v.icmp()) {
                (Some((a, b)), _) => format!("ports {a}->{b}"),
                (_, Some((t, c))) => format!("icmp {t}/{c}"),
                _ => String::new(),
            };
            s.push_str(&format!(
                "  {dir} {} -> {} proto {} len {} id {:#06x} off {}{} ttl {} {what}: {}\n",
                v.src(),
                v.dst(),
                v.proto(),
                v.tot_len(),
                v.id(),
                v.offset(),
                if v.mf() { "+MF" } else { "" },
                v.ttl(),
                hex(&f.ip[..f.ip.len().min(96)])
            ));
        }
        if s.is_empty() {
            s.push_str("  (nothing)\n");
        }
        s
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw IP socket (IPPROTO_RAW: header included) in a host's namespace.
struct RawIp {
    fd: OwnedFd,
    host: Host,
}

impl RawIp {
    fn open(tb: &Testbed, host: Host) -> RawIp {
        let fd = tb
            .in_ns(host, || {
                socket::socket(
                    AddressFamily::Inet,
                    SockType::Raw,
                    SockFlag::SOCK_CLOEXEC,
                    SockProtocol::Raw,
                )
            })
            .unwrap_or_else(|e| panic!("entering {host}: {e}"))
            .unwrap_or_else(|e| panic!("raw IP socket in {host}: {e}"));
        RawIp { fd, host }
    }

    /// Sends one IPv4 packet as it is (the kernel routes it by its
    /// destination and fills in the header checksum).
    fn send(&self, pkt: &[u8]) {
        let v = V4::parse(pkt).expect("an IPv4 packet");
        let dst = SockaddrIn::from(SocketAddrV4::new(v.dst(), 0));
        socket::sendto(self.fd.as_raw_fd(), pkt, &dst, MsgFlags::empty())
            .unwrap_or_else(|e| panic!("{}: sending {}: {e}", self.host, hex(pkt)));
    }

    fn send_all<'a>(&self, pkts: impl IntoIterator<Item = &'a Vec<u8>>) {
        for p in pkts {
            self.send(p);
        }
    }
}

// ---------------------------------------------------------------------------
// Scapy
// ---------------------------------------------------------------------------

/// Packets built by scapy: (label, IP packet), in the order emitted.
struct Crafted(Vec<(String, Vec<u8>)>);

impl Crafted {
    fn one(&self, label: &str) -> &Vec<u8> {
        self.0
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("scapy emitted no packet {label:?}"))
    }
    fn all(&self, label: &str) -> Vec<Vec<u8>> {
        let v: Vec<Vec<u8>> = self
            .0
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, p)| p.clone())
            .collect();
        assert!(!v.is_empty(), "scapy emitted no packet {label:?}");
        v
    }
}

/// Runs `code` with scapy (tests/icmp/craft.py) in `host`'s namespace and
/// collects what it emitted.
fn craft(tb: &Testbed, host: Host, code: &str) -> Crafted {
    let out = tb
        .exec(host, &[PYTHON, CRAFT, code])
        .unwrap_or_else(|e| panic!("scapy in {host}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scapy failed ({}):\n{}\n--- code ---\n{code}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v = Vec::new();
    for l in stdout.lines() {
        let Some((label, h)) = l.split_once(' ') else {
            continue;
        };
        let bytes = (0..h.len() / 2)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .unwrap_or_else(|_| panic!("bad hex from scapy: {l}"));
        v.push((label.to_owned(), bytes));
    }
    Crafted(v)
}

/// Deterministic payload bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Pattern::new(seed).fill(&mut v);
    v
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Sends `payload` on the connected `sock` every 200 ms until the kernel
/// reports an error on it (an ICMP error it matched to the socket) or
/// `timeout` passes.
fn socket_error(sock: &UdpSocket, payload: &[u8], timeout: Duration) -> Option<io::Error> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Err(e) = sock.send(payload) {
            return Some(e);
        }
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("SO_RCVTIMEO");
        match sock.recv(&mut buf) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Some(e),
        }
    }
    None
}

fn udp_sock(tb: &Testbed, host: Host, port: u16) -> UdpSocket {
    tb.udp_socket(host, host.sock(port))
        .unwrap_or_else(|e| panic!("UDP socket {host}:{port}: {e}"))
}

/// The external endpoint of `sock` (learned from a reflector).
fn mapping_of(sock: &UdpSocket, refl: &UdpReflector, what: &str) -> SocketAddrV4 {
    let r = udp_exchange(sock, refl.addr(), what.as_bytes(), T)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(in_pool(*r.observed.ip()), "{what}: e1 saw {}", r.observed);
    r.observed
}

/// Runs a command in `host` and returns stdout + stderr.
fn output(tb: &Testbed, host: Host, args: &[&str], timeout: Duration) -> String {
    let out = tb
        .exec_timeout(host, args, timeout)
        .unwrap_or_else(|e| panic!("{host}: {}: {e}", args.join(" ")));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The most errors one CPU's token bucket (bpf/icmp_gen.h: `rate` tokens
/// at most, `rate` more per second, refilled from the coarse clock) lets
/// through during a burst that lasted `took`: a full bucket and the
/// refill. The coarse clock may see the burst one tick (at most 10 ms)
/// longer than it was.
fn rate_allowance(rate: u64, took: Duration) -> u64 {
    let seen = took + Duration::from_millis(10);
    rate + (rate as f64 * seen.as_secs_f64()).ceil() as u64
}

/// Every counter's packets per CPU, from the pinned `stats` map:
/// `[counter id][cpu]`.
fn per_cpu_counters(tb: &Testbed) -> Vec<Vec<u64>> {
    use libbpf_rs::MapCore;
    let m = libbpf_rs::MapHandle::from_pinned_path(tb.pin_path().join("stats"))
        .expect("the pinned stats map");
    cgnat::stats::NAMES
        .iter()
        .map(|(id, _)| {
            m.lookup_percpu(cgnat::bpf::bytes_of(&id.0), libbpf_rs::MapFlags::ANY)
                .expect("stats lookup")
                .unwrap_or_default()
                .iter()
                .map(|v| {
                    cgnat::bpf::from_bytes::<cgnat::bpf::types::cgnat_counter>(v)
                        .map_or(0, |c| c.packets)
                })
                .collect()
        })
        .collect()
}

/// What a burst did on each CPU: (packets the program saw, of them counted
/// as `name`), from two [`per_cpu_counters`] snapshots. Every packet is
/// counted once, under one counter.
fn burst_per_cpu(before: &[Vec<u64>], after: &[Vec<u64>], name: &str) -> Vec<(u64, u64)> {
    let id = cgnat::stats::NAMES
        .iter()
        .position(|(_, n)| *n == name)
        .unwrap_or_else(|| panic!("no counter {name}"));
    let cpus = after.first().map_or(0, Vec::len);
    (0..cpus)
        .map(|c| {
            let d = |i: usize| after[i][c] - before[i].get(c).copied().unwrap_or(0);
            ((0..after.len()).map(d).sum(), d(id))
        })
        .collect()
}

/// Runs `f` with this thread bound to one CPU (the first it may use), then
/// restores its affinity. A burst sent from here is processed by the XDP
/// program on that CPU (a veth hands a frame to its peer's NAPI on the
/// sending CPU), so it meets one token bucket, whatever the CPU count.
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> T {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let me = Pid::from_raw(0);
    let old = sched_getaffinity(me).expect("sched_getaffinity");
    let cpu = (0..CpuSet::count())
        .find(|&c| old.is_set(c).unwrap_or(false))
        .expect("a CPU");
    let mut one = CpuSet::new();
    one.set(cpu).expect("CpuSet");
    sched_setaffinity(me, &one).expect("sched_setaffinity");
    let r = f();
    sched_setaffinity(me, &old).expect("sched_setaffinity back");
    r
}

/// Hops of `traceroute -n -q 1` output: (hop number, address or None for `*`).
fn traceroute_hops(text: &str) -> Vec<(u32, Option<Ipv4Addr>)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let n: u32 = w.next()?.parse().ok()?;
            let a = w.next()?.parse().ok();
            Some((n, a))
        })
        .collect()
}

/// The MSS option of a TCP header, if any.
fn tcp_mss(tcp: &[u8]) -> Option<u16> {
    if tcp.len() < 20 {
        return None;
    }
    let end = ((tcp[12] >> 4) as usize * 4).min(tcp.len());
    let mut i = 20;
    while i < end {
        match tcp[i] {
            0 => return None,
            1 => i += 1,
            2 if i + 4 <= end && tcp[i + 1] == 4 => return Some(be16(tcp, i + 2)),
            _ => {
                let l = *tcp.get(i + 1)? as usize;
                if l < 2 {
                    return None;
                }
                i += l;
            }
        }
    }
    None
}

fn tcp_flags(v: &V4) -> u8 {
    v.l4().get(13).copied().unwrap_or(0)
}

// ===========================================================================
// 1. Port unreachable from outside reaches the subscriber's socket
// ===========================================================================

/// A connected UDP socket on s1 sending to a closed port of e1 gets
/// ECONNREFUSED: e1's 3/3 about X' -> e1 is translated back to s1 (RFC 5508
/// REQ-4) so that s1's kernel matches it to the socket. The error as it
/// arrives at s1 is addressed to s1 and quotes s1's own packet, with every
/// checksum right.
#[test]
fn udp_port_unreachable_refuses_the_connected_socket() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let cap_s1 = Capture::start(tb, Host::S1);
    let cap_e1 = Capture::start(tb, Host::E1);
    let sock = udp_sock(tb, Host::S1, 40100);
    let closed = Host::E1.sock(9);
    sock.connect(closed).expect("connect");
    let err = socket_error(&sock, b"anyone listening?", T);
    let err = err.unwrap_or_else(|| {
        panic!(
            "no error on s1's socket connected to {closed}\ns1 saw:\n{}e1 saw:\n{}",
            cap_s1.summary(),
            cap_e1.summary()
        )
    });
    assert_eq!(
        err.raw_os_error(),
        Some(ECONNREFUSED),
        "s1's socket got {err} instead of ECONNREFUSED"
    );

    // What e1 sent: 3/3 to the pool address, quoting X' -> e1:9.
    let sent = cap_e1.expect("e1's port unreachable", T, |f| {
        f.outgoing && f.icmp_err().is_some_and(|e| e.kind() == (3, 3))
    });
    let se = sent.icmp_err().unwrap();
    assert!(in_pool(se.outer.dst()), "e1 answered {}", se.outer.dst());
    assert_eq!(se.inner.src(), se.outer.dst());
    let x = SocketAddrV4::new(se.inner.src(), se.inner.ports().unwrap().0);

    // What s1 received.
    let got = cap_s1.expect("a port unreachable", T, |f| {
        f.incoming() && f.icmp_err().is_some_and(|e| e.kind() == (3, 3))
    });
    let e = got.icmp_err().unwrap();
    let dump = hex(&got.ip);
    assert_eq!(e.outer.dst(), Host::S1.addr(), "outer destination: {dump}");
    assert_eq!(e.outer.src(), Host::E1.addr(), "outer source: {dump}");
    assert_eq!(e.inner.src(), Host::S1.addr(), "embedded source: {dump}");
    assert_eq!(
        e.inner.dst(),
        Host::E1.addr(),
        "embedded destination: {dump}"
    );
    assert_eq!(e.inner.ports(), Some((40100, 9)), "embedded ports: {dump}");
    assert_eq!(
        e.inner.l4_csum(),
        Some(true),
        "the quote holds the whole datagram: {dump}"
    );
    let problems = e.checksum_problems();
    assert!(
        problems.is_empty(),
        "bad {problems:?} in {dump} (e1 sent {})",
        hex(&sent.ip)
    );
    eprintln!("s1's mapping was {x}");
}

// ===========================================================================
// 2. traceroute
// ===========================================================================

/// traceroute from s1 (UDP, ICMP echo and TCP SYN probes): hop 1 is the NAT
/// (its 11/0 comes from 100.64.0.1, the address of the interface the probe
/// arrived on) and hop 2 is e1, whose answers (3/3, echo reply, RST) come
/// back through the mapping of each probe.
#[test]
fn traceroute_shows_the_nat_as_first_hop() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    // Resolve the neighbours first: a probe dropped while the NAT resolves
    // e1's MAC would show as `*`.
    let p = tb.ping(Host::S1, Host::E1.addr(), 2).expect("ping");
    assert!(p.received >= 1, "no ping through the NAT: {p:?}");
    let before = bed.stats();
    let target = Host::E1.addr().to_string();
    for mode in [&[][..], &["-I"][..], &["-T", "-p", "80"][..]] {
        let mut args = vec!["traceroute", "-n", "-q", "1", "-w", "1", "-m", "6"];
        args.extend_from_slice(mode);
        args.push(&target);
        let text = output(tb, Host::S1, &args, Duration::from_secs(40));
        let hops = traceroute_hops(&text);
        let cmd = args.join(" ");
        assert_eq!(
            hops.first(),
            Some(&(1, Some(ROUTER_INT))),
            "`{cmd}`: hop 1 must be the NAT:\n{text}"
        );
        assert_eq!(
            hops.get(1),
            Some(&(2, Some(Host::E1.addr()))),
            "`{cmd}`: hop 2 must be e1, reached:\n{text}"
        );
        assert_eq!(hops.len(), 2, "`{cmd}` went on after reaching e1:\n{text}");
    }
    let after = bed.stats();
    assert!(
        after.delta(&before, "icmp_time_exceeded") >= 3,
        "icmp_time_exceeded did not count the three hop-1 answers:\n{}",
        after.text
    );
}

// ===========================================================================
// 3. Path MTU discovery
// ===========================================================================

/// With the external side at MTU 1400, a 1500-byte echo with DF from s1 is
/// answered by the NAT itself with 3/4 carrying MTU 1400 (RFC 4787 REQ-13,
/// RFC 1191), which s1's kernel caches; 1400-byte packets then pass. The
/// 3/4 quotes s1's packet exactly as sent.
#[test]
fn path_mtu_discovery_through_the_nat() {
    let Some(bed) = Bed::icmp(&[], external_mtu_1400) else {
        return;
    };
    let tb = &bed.tb;
    // Small pings first: the NAT resolves e1's MAC on the first packet it
    // can forward (a 3/4 is decided before the neighbour is looked at).
    let p = tb.ping(Host::S1, Host::E1.addr(), 2).expect("ping");
    assert!(p.received >= 1, "no ping through the NAT: {p:?}");
    let cap = Capture::start(tb, Host::S1);
    let e1 = Host::E1.addr().to_string();
    let text = output(
        tb,
        Host::S1,
        &[
            "ping", "-n", "-M", "do", "-s", "1472", "-c", "2", "-i", "0.3", "-W", "1", &e1,
        ],
        Duration::from_secs(15),
    );
    assert!(
        text.contains("Frag needed and DF set (mtu = 1400)") && text.contains("From 100.64.0.1"),
        "ping -M do -s 1472 did not report the NAT's fragmentation needed:\n{text}\n{}",
        cap.summary()
    );
    let route = tb
        .run(Host::S1, &["ip", "route", "get", &e1])
        .expect("ip route get");
    assert!(
        route.contains("mtu 1400"),
        "s1 did not cache the path MTU:\n{route}"
    );

    let got = cap.expect("3/4 from the NAT", T, |f| {
        f.incoming() && f.icmp_err().is_some_and(|e| e.kind() == (3, 4))
    });
    let e = got.icmp_err().unwrap();
    let dump = hex(&got.ip);
    assert_eq!(e.outer.src(), ROUTER_INT, "source of the 3/4: {dump}");
    assert_eq!(e.outer.dst(), Host::S1.addr(), "{dump}");
    assert_eq!(be16(e.icmp, 6), 1400, "next-hop MTU field: {dump}");
    let problems = e.checksum_problems();
    assert!(problems.is_empty(), "bad {problems:?}: {dump}");
    // The quote: the offending header and 8 bytes, as s1 sent them.
    let sent = cap.expect("s1's big echo", T, |f| {
        f.outgoing && f.v4().tot_len() == 1500 && f.v4().icmp() == Some((8, 0))
    });
    let quote = &e.icmp[8..];
    assert_eq!(quote.len(), 28, "quote length: {dump}");
    assert_eq!(
        quote,
        &sent.ip[..28],
        "the quote is not s1's packet: {dump} vs {}",
        hex(&sent.ip)
    );

    let text = output(
        tb,
        Host::S1,
        &[
            "ping", "-n", "-M", "do", "-s", "1372", "-c", "3", "-i", "0.3", "-W", "1", &e1,
        ],
        Duration::from_secs(15),
    );
    let p = parse_ping(&text).unwrap_or_else(|| panic!("ping output:\n{text}"));
    assert_eq!(p.received, 3, "1400-byte pings with DF:\n{text}");
    assert!(bed.stats().get("icmp_frag_needed") >= 1);
}

// ===========================================================================
// 4. Large datagrams
// ===========================================================================

/// Datagrams larger than the MTU are fragmented by the hosts and every
/// fragment crosses the NAT: a 3000-byte UDP round trip s1 <-> e1, an
/// unsolicited 3000-byte datagram e1 -> s1's mapping, and 5000-byte pings
/// from both subscribers at once.
#[test]
fn large_datagrams_cross_the_nat_in_fragments() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let cap_e1 = Capture::start(tb, Host::E1);
    let sock = udp_sock(tb, Host::S1, 40400);
    let big = pattern(4, 3000);
    let r = udp_exchange(&sock, refl.addr(), &big, T)
        .unwrap_or_else(|e| panic!("3000-byte round trip: {e}\ne1 saw:\n{}", cap_e1.summary()));
    assert!(in_pool(*r.observed.ip()), "e1 saw {}", r.observed);
    assert_eq!(r.payload, big, "payload after the round trip");
    let frags = cap_e1.matching(|f| f.incoming() && f.v4().is_fragment() && in_pool(f.v4().src()));
    assert!(
        frags.len() >= 3,
        "e1 did not receive the datagram in fragments:\n{}",
        cap_e1.summary()
    );

    // Inbound: e1 sends 3000 bytes to s1's mapping (endpoint-independent
    // filtering lets it in).
    let e1 = udp_sock(tb, Host::E1, 7100);
    let inbound = pattern(5, 3000);
    let d = udp_send_until_received(&e1, r.observed, &inbound, &sock, T)
        .unwrap_or_else(|e| panic!("3000 bytes e1 -> {}: {e}", r.observed));
    assert_eq!(d.from, Host::E1.sock(7100));

    // Hairpinned: s1 -> s2's external endpoint. The later fragments follow
    // the first one's translation (both sides rewritten).
    let s2 = udp_sock(tb, Host::S2, 40410);
    let x2 = mapping_of(&s2, &refl, "s2 learns its mapping");
    let hairpin = pattern(6, 3000);
    let d = udp_send_until_received(&sock, x2, &hairpin, &s2, T)
        .unwrap_or_else(|e| panic!("3000 bytes s1 -> {x2} (s2's mapping): {e}"));
    assert_eq!(d.from, r.observed, "s2 must see s1's external endpoint");

    // 5000-byte pings from both subscribers at the same time.
    for s in Host::SUBSCRIBERS {
        tb.ping(s, Host::E1.addr(), 1).expect("warm-up ping");
    }
    let e1_addr = Host::E1.addr().to_string();
    let texts: Vec<String> = thread::scope(|sc| {
        let hs: Vec<_> = Host::SUBSCRIBERS
            .iter()
            .map(|&s| {
                let e1_addr = &e1_addr;
                sc.spawn(move || {
                    let args = [
                        "ping", "-n", "-s", "5000", "-c", "4", "-i", "0.2", "-W", "2", e1_addr,
                    ];
                    output(tb, s, &args, Duration::from_secs(20))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("ping thread"))
            .collect()
    });
    for (s, text) in Host::SUBSCRIBERS.iter().zip(&texts) {
        let p = parse_ping(text).unwrap_or_else(|| panic!("{s}: ping output:\n{text}"));
        assert_eq!(p.received, 4, "{s}: 5000-byte pings:\n{text}");
    }
}

// ===========================================================================
// 5. Fragments out of order, and the IP ID
// ===========================================================================

/// RFC 4787 REQ-14: e1 sends a 3000-byte datagram to s1's mapping as three
/// fragments in reverse order. The later fragments, which carry no port,
/// are held until the first one has been translated, then released: s1's
/// socket receives the whole datagram intact; frag_held counts them.
#[test]
fn inbound_fragments_in_reverse_order_are_held_then_delivered() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let sock = udp_sock(tb, Host::S1, 40500);
    let x = mapping_of(&sock, &refl, "s1 learns its mapping");
    let payload = pattern(55, 3000);
    let pkts = craft(
        tb,
        Host::E1,
        &format!(
            "p = IP(src='{e1}', dst='{xa}', id=0x1234)/UDP(sport=7200, dport={xp})/Raw(unhex('{pl}'))\n\
             fr = fragment(p, fragsize=1400)\n\
             assert len(fr) == 3\n\
             for f in reversed(fr): emit('frag', f)\n",
            e1 = Host::E1.addr(),
            xa = x.ip(),
            xp = x.port(),
            pl = hex(&payload)
        ),
    )
    .all("frag");
    assert_eq!(pkts.len(), 3);
    assert!(V4(&pkts[2]).offset() == 0 && V4(&pkts[0]).offset() > 0);
    let cap_s1 = Capture::start(tb, Host::S1);
    let before = bed.stats();
    let raw = RawIp::open(tb, Host::E1);
    raw.send(&pkts[0]);
    raw.send(&pkts[1]);
    thread::sleep(Duration::from_millis(300));
    let held = bed.stats();
    assert_eq!(
        held.delta(&before, "frag_held"),
        2,
        "the two later fragments were not held:\n{}",
        held.text
    );
    raw.send(&pkts[2]);
    let d = udp_recv(&sock, T).unwrap_or_else(|e| {
        panic!(
            "s1 never got the reversed datagram: {e}\ns1 saw:\n{}\n{}",
            cap_s1.summary(),
            bed.stats().text
        )
    });
    assert_eq!(d.from, Host::E1.sock(7200), "source s1 saw");
    assert_eq!(d.payload.len(), 3000, "bytes s1 received");
    assert!(d.payload == payload, "s1 received different bytes");
    // All three fragments arrived translated, with one ID.
    let at_s1 = cap_s1.matching(|f| f.incoming() && f.v4().proto() == 17 && f.v4().is_fragment());
    assert_eq!(at_s1.len(), 3, "fragments at s1:\n{}", cap_s1.summary());
    assert!(
        at_s1.iter().all(|f| f.v4().dst() == Host::S1.addr()
            && f.v4().src() == Host::E1.addr()
            && f.v4().id() == 0x1234
            && f.v4().header_ok()),
        "fragments at s1:\n{}",
        cap_s1.summary()
    );

    // Hairpinned, reversed: s1 sends 3000 bytes to s2's external endpoint
    // as reversed fragments; the later ones wait for the first one here too.
    let s2 = udp_sock(tb, Host::S2, 40502);
    let x2 = mapping_of(&s2, &refl, "s2 learns its mapping");
    let hp = pattern(56, 3000);
    let hpkts = craft(
        tb,
        Host::S1,
        &format!(
            "p = IP(src='{s1}', dst='{xa}', id=0x1235, flags=0)/UDP(sport=40501, dport={xp})/Raw(unhex('{pl}'))\n\
             for f in reversed(fragment(p, fragsize=1400)): emit('frag', f)\n",
            s1 = Host::S1.addr(),
            xa = x2.ip(),
            xp = x2.port(),
            pl = hex(&hp)
        ),
    )
    .all("frag");
    assert_eq!(hpkts.len(), 3);
    let before = bed.stats();
    let raw = RawIp::open(tb, Host::S1);
    raw.send(&hpkts[0]);
    raw.send(&hpkts[1]);
    thread::sleep(Duration::from_millis(300));
    raw.send(&hpkts[2]);
    let d = udp_recv(&s2, T).unwrap_or_else(|e| {
        panic!(
            "s2 never got the reversed hairpinned datagram: {e}\n{}",
            bed.stats().text
        )
    });
    assert!(
        in_pool(*d.from.ip()),
        "s2 saw the hairpinned datagram from {}",
        d.from
    );
    assert_eq!(*d.from.ip(), *x.ip(), "s1 has one external address");
    assert!(
        d.payload == hp,
        "s2 received different bytes ({} bytes)",
        d.payload.len()
    );
    let after = bed.stats();
    assert_eq!(
        after.delta(&before, "frag_held"),
        2,
        "the hairpinned later fragments were not held:\n{}",
        after.text
    );
}

/// RFC 4787 REQ-14, outbound: s1 sends a 3000-byte datagram to e1 as
/// fragments in reverse order (raw socket). Later fragments are translated
/// without state (paired pooling gives the address, a hash of the header
/// the IP ID), so e1 reassembles the datagram from s1's pool address; the
/// answer comes back to s1's socket.
#[test]
fn outbound_fragments_in_reverse_order_reassemble_at_e1() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    // Resolve e1's MAC on the router first (a dropped fragment would lose
    // the datagram).
    let warm = udp_sock(tb, Host::S1, 40599);
    mapping_of(&warm, &refl, "warm-up");
    let sock = udp_sock(tb, Host::S1, 40600);
    let payload = pattern(66, 3000);
    let pkts = craft(
        tb,
        Host::S1,
        &format!(
            "p = IP(src='{s1}', dst='{e1}', id=0x2222, flags=0)/UDP(sport=40600, dport=7000)/Raw(unhex('{pl}'))\n\
             for f in reversed(fragment(p, fragsize=1400)): emit('frag', f)\n",
            s1 = Host::S1.addr(),
            e1 = Host::E1.addr(),
            pl = hex(&payload)
        ),
    )
    .all("frag");
    assert_eq!(pkts.len(), 3);
    let cap_e1 = Capture::start(tb, Host::E1);
    let raw = RawIp::open(tb, Host::S1);
    raw.send(&pkts[0]);
    raw.send(&pkts[1]);
    thread::sleep(Duration::from_millis(100));
    raw.send(&pkts[2]);
    let d = refl
        .wait_for(|d| d.payload == payload, T)
        .unwrap_or_else(|| {
            panic!(
                "e1 never reassembled the datagram\ne1 saw:\n{}",
                cap_e1.summary()
            )
        });
    assert!(in_pool(*d.from.ip()), "e1 got it from {}", d.from);
    let frags = cap_e1.matching(|f| f.incoming() && f.v4().is_fragment());
    assert_eq!(frags.len(), 3, "e1 saw:\n{}", cap_e1.summary());
    let ids: BTreeSet<u16> = frags.iter().map(|f| f.v4().id()).collect();
    let srcs: BTreeSet<Ipv4Addr> = frags.iter().map(|f| f.v4().src()).collect();
    assert_eq!(
        ids.len(),
        1,
        "fragments of one datagram left with IDs {ids:?}"
    );
    assert_eq!(srcs.len(), 1, "fragments left from {srcs:?}");
    // The reflector's answer (fragmented by e1) reaches s1's socket.
    let back = udp_recv(&sock, T).expect("the answer to the reversed datagram");
    let (observed, echoed) =
        cgnat_kit::testbed::decode_reflection(&back.payload).expect("a reflection");
    assert_eq!(observed, d.from);
    assert!(echoed == payload, "the echoed payload differs");
}

/// RFC 7857 section 10 (RFC 6864): with one pool address, s1 and s2 send
/// fragmented datagrams with the same IP ID to e1, interleaved. Without a
/// new ID per subscriber, e1 would see two datagrams with the same (source,
/// destination, protocol, ID) and mix their fragments. Both must arrive
/// intact, and with different IDs.
#[test]
fn same_ip_id_from_two_subscribers_sharing_an_address() {
    let Some(bed) = Bed::icmp(&[("nat", "external_pool", "[\"203.0.113.5/32\"]")], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = udp_sock(tb, Host::S1, 5555);
    let s2 = udp_sock(tb, Host::S2, 5556);
    let x1 = mapping_of(&s1, &refl, "s1 warm-up");
    let x2 = mapping_of(&s2, &refl, "s2 warm-up");
    let pool = Ipv4Addr::new(203, 0, 113, 5);
    assert_eq!(
        (*x1.ip(), *x2.ip()),
        (pool, pool),
        "one pool address for both"
    );
    let (pa, pb) = (pattern(71, 3000), pattern(72, 3000));
    let code = |me: Host, sport: u16, pl: &[u8]| {
        format!(
            "p = IP(src='{src}', dst='{e1}', id=0x4242, flags=0)/UDP(sport={sport}, dport=7000)/Raw(unhex('{pl}'))\n\
             for f in fragment(p, fragsize=1400): emit('frag', f)\n",
            src = me.addr(),
            e1 = Host::E1.addr(),
            pl = hex(pl)
        )
    };
    let fa = craft(tb, Host::S1, &code(Host::S1, 5555, &pa)).all("frag");
    let fb = craft(tb, Host::S2, &code(Host::S2, 5556, &pb)).all("frag");
    assert_eq!((fa.len(), fb.len()), (3, 3));
    let cap_e1 = Capture::start(tb, Host::E1);
    let (r1, r2) = (RawIp::open(tb, Host::S1), RawIp::open(tb, Host::S2));
    // s1's later fragments (translated at once, statelessly), then all of
    // s2's datagram, then s1's first fragment.
    r1.send_all(&fa[1..]);
    thread::sleep(Duration::from_millis(50));
    r2.send_all(&fb);
    thread::sleep(Duration::from_millis(50));
    r1.send(&fa[0]);
    for (who, pl, x) in [("s1", &pa, x1), ("s2", &pb, x2)] {
        let d = refl.wait_for(|d| d.payload == *pl, T).unwrap_or_else(|| {
            panic!(
                "e1 never reassembled {who}'s datagram\ne1 saw:\n{}",
                cap_e1.summary()
            )
        });
        assert_eq!(d.from, x, "{who}'s datagram came from another endpoint");
    }
    let frags = cap_e1.matching(|f| f.incoming() && f.v4().is_fragment());
    assert_eq!(frags.len(), 6, "e1 saw:\n{}", cap_e1.summary());
    let ids: BTreeSet<u16> = frags.iter().map(|f| f.v4().id()).collect();
    assert_eq!(
        ids.len(),
        2,
        "two datagrams with ID 0x4242 from one address must leave with two IDs:\n{}",
        cap_e1.summary()
    );
    assert!(frags
        .iter()
        .all(|f| f.v4().src() == pool && f.v4().header_ok()));

    // Unfragmented datagrams with DF clear get a new ID too (a keyed hash
    // of the header: four IDs all kept would be a 2^-64 coincidence).
    let pkts = craft(
        tb,
        Host::S1,
        &format!(
            "for i in range(1, 5): emit('dg', IP(src='{s1}', dst='{e1}', id=i, flags=0)/UDP(sport=5555, dport=7000)/Raw(b'id %d' % i))\n",
            s1 = Host::S1.addr(),
            e1 = Host::E1.addr()
        ),
    )
    .all("dg");
    r1.send_all(&pkts);
    for i in 1..=4 {
        let want = format!("id {i}").into_bytes();
        refl.wait_for(|d| d.payload == want, T)
            .unwrap_or_else(|| panic!("datagram {i} did not arrive"));
    }
    let ids: Vec<u16> = cap_e1
        .matching(|f| f.incoming() && f.v4().udp_payload().is_some_and(|p| p.starts_with(b"id ")))
        .iter()
        .map(|f| f.v4().id())
        .collect();
    assert_eq!(ids.len(), 4, "e1 saw:\n{}", cap_e1.summary());
    assert_ne!(
        ids,
        vec![1, 2, 3, 4],
        "the IP IDs of DF-clear datagrams were kept"
    );
}

// ===========================================================================
// 6. ICMP errors from outside (RFC 5508 REQ-3, REQ-4)
// ===========================================================================

/// A TCP server that echoes what each connection sends, until EOF.
struct TcpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEcho {
    fn start(tb: &Testbed, host: Host, bind: SocketAddrV4) -> TcpEcho {
        let listener = tb
            .in_ns(host, move || TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("entering {host}: {e}"))
            .unwrap_or_else(|e| panic!("listening on {bind} in {host}: {e}"));
        listener.set_nonblocking(true).expect("O_NONBLOCK");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let stop3 = Arc::clone(&stop2);
                thread::spawn(move || {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
                    let mut buf = [0u8; 65536];
                    while !stop3.load(Ordering::Relaxed) {
                        match c.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                });
            }
        });
        TcpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `msg` on `c` and reads it back from a [`TcpEcho`].
fn tcp_echo_roundtrip(c: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    c.set_read_timeout(Some(T))?;
    c.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other(format!("echoed {back:?}")));
    }
    Ok(())
}

/// The flows of s1 the error tests quote, with the packets e1 received.
struct Flows {
    udp_sock: UdpSocket,
    x_udp: SocketAddrV4,
    /// The datagram s1 -> e1:7000 as e1 received it (X_udp -> e1).
    udp_seen: Vec<u8>,
    tcp: TcpStream,
    x_tcp: SocketAddrV4,
    /// A data segment s1 -> e1:8000 as e1 received it.
    tcp_seen: Vec<u8>,
    /// Echo request id 0x3344 from s1 as e1 received it.
    echo_seen: Vec<u8>,
    _refl: UdpReflector,
    _echo: TcpEcho,
}

const UDP_PORT: u16 = 41000;
const TCP_PORT: u16 = 42000;
const ECHO_ID: u16 = 0x3344;

/// Opens a UDP flow, a TCP connection and an ICMP echo flow from s1 to e1
/// and records how e1 received each.
fn open_flows(tb: &Testbed) -> Flows {
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let echo_srv = TcpEcho::start(tb, Host::E1, Host::E1.sock(8000));
    let cap = Capture::start(tb, Host::E1);
    let udp = udp_sock(tb, Host::S1, UDP_PORT);
    let x_udp = mapping_of(&udp, &refl, "udp probe");
    let udp_seen = cap
        .expect("the UDP probe", T, |f| {
            f.incoming() && f.v4().udp_payload() == Some(&b"udp probe"[..])
        })
        .ip;
    let mut tcp = tb
        .tcp_connect(
            Host::S1,
            Some(Host::S1.sock(TCP_PORT)),
            Host::E1.sock(8000),
            T,
        )
        .expect("TCP s1 -> e1");
    tcp_echo_roundtrip(&mut tcp, b"tcp probe\n").expect("TCP echo");
    let tcp_seen = cap
        .expect("the TCP probe", T, |f| {
            let v = f.v4();
            f.incoming() && v.proto() == 6 && v.ports().is_some_and(|p| p.1 == 8000) && {
                let l4 = v.l4();
                l4.len() > 20 && l4[(l4[12] >> 4) as usize * 4..] == b"tcp probe\n"[..]
            }
        })
        .ip;
    let x_tcp = SocketAddrV4::new(V4(&tcp_seen).src(), V4(&tcp_seen).ports().unwrap().0);
    assert!(in_pool(*x_tcp.ip()), "TCP seen from {x_tcp}");
    let echo = craft(
        tb,
        Host::S1,
        &format!(
            "emit('echo', IP(src='{s1}', dst='{e1}', id=0x3300)/ICMP(type=8, id={ECHO_ID}, seq=1)/Raw(b'echo flow for errors'))",
            s1 = Host::S1.addr(),
            e1 = Host::E1.addr()
        ),
    );
    let raw = RawIp::open(tb, Host::S1);
    let is_echo = |f: &Frame| {
        let v = f.v4();
        f.incoming() && v.icmp() == Some((8, 0)) && v.l4().ends_with(b"echo flow for errors")
    };
    let mut echo_seen = None;
    for _ in 0..10 {
        raw.send(echo.one("echo"));
        if let Some(f) = cap.wait(Duration::from_millis(300), is_echo) {
            echo_seen = Some(f.ip);
            break;
        }
    }
    let echo_seen =
        echo_seen.unwrap_or_else(|| panic!("e1 never got s1's echo\n{}", cap.summary()));
    Flows {
        udp_sock: udp,
        x_udp,
        udp_seen,
        tcp,
        x_tcp,
        tcp_seen,
        echo_seen,
        _refl: refl,
        _echo: echo_srv,
    }
}

/// The quote with the fields the NAT rewrites (source address and port or
/// echo id, IP and L4 checksums) zeroed, to compare the rest bytewise.
fn quote_rest(q: &[u8]) -> Vec<u8> {
    let mut v = q.to_vec();
    let Some(ip) = V4::parse(q) else { return v };
    let ihl = ip.ihl();
    for i in [10, 11, 12, 13, 14, 15] {
        v[i] = 0;
    }
    let zero = |v: &mut Vec<u8>, at: usize| {
        for i in at..at + 2 {
            if let Some(b) = v.get_mut(ihl + i) {
                *b = 0;
            }
        }
    };
    match ip.proto() {
        17 => {
            zero(&mut v, 0);
            zero(&mut v, 6);
        }
        6 => {
            zero(&mut v, 0);
            zero(&mut v, 16);
        }
        1 => {
            zero(&mut v, 2);
            zero(&mut v, 4);
        }
        _ => {}
    }
    v
}

/// RFC 5508 REQ-4: errors about s1's UDP, TCP and ICMP echo flows, sent by
/// e1 itself or by an off-path router (e3) to the external endpoint,
/// quoting the translated packet exactly as e1 received it, reach s1 with
/// the outer destination and the embedded source restored (address, port or
/// echo id), type, code and the rest of the header unchanged, and every
/// checksum right (ICMP, embedded IP, embedded UDP/TCP/ICMP). Also: an
/// embedded header with options (IHL 7, REQ-3b) and an RFC 4884 extension,
/// which must arrive byte for byte. None of it ends a mapping (RFC 4787
/// REQ-12, RFC 5382 REQ-10).
#[test]
fn icmp_errors_from_outside_reach_the_subscriber_translated() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let fl = open_flows(tb);
    let (e1, e3) = (Host::E1.addr(), Host::E3.addr());
    // (label, sender, quoted flow, type, code, more ICMP fields for scapy)
    let matrix: [(&str, Host, &str, u8, u8, &str); 10] = [
        ("udp_3_3", Host::E1, "udp", 3, 3, ""),
        ("udp_3_4", Host::E3, "udp", 3, 4, ", nexthopmtu=1300"),
        ("udp_11_0", Host::E3, "udp", 11, 0, ""),
        ("udp_12_0", Host::E3, "udp", 12, 0, ", ptr=8"),
        ("tcp_3_3", Host::E1, "tcp", 3, 3, ""),
        ("tcp_3_4", Host::E3, "tcp", 3, 4, ", nexthopmtu=1300"),
        ("tcp_11_0", Host::E3, "tcp", 11, 0, ""),
        ("echo_3_1", Host::E3, "echo", 3, 1, ""),
        ("echo_3_4", Host::E3, "echo", 3, 4, ", nexthopmtu=1300"),
        ("echo_11_0", Host::E3, "echo", 11, 0, ""),
    ];
    let mut code = format!(
        "udp = IP(unhex('{u}'))\n\
         tcp = IP(unhex('{t}'))\n\
         echo = IP(unhex('{e}'))\n\
         def err(src, ident, t, c, q, **kw):\n\
         \x20   q = bytes(q)\n\
         \x20   return IP(src=src, dst=IP(q).src, id=ident)/ICMP(type=t, code=c, **kw)/Raw(q)\n\
         q = udp.copy()\n\
         q.options = [IPOption_NOP()] * 8\n\
         del q.ihl, q.len, q.chksum\n\
         q = IP(bytes(q))\n\
         assert q.ihl == 7\n\
         emit('udp_ihl7', err('{e3}', 0x6101, 3, 3, q))\n\
         qb = bytes(udp)\n\
         assert len(qb) <= 128\n\
         qb = qb + bytes(128 - len(qb))\n\
         obj = bytes([0, 8, 1, 1, 0xde, 0xad, 0xbe, 0xef])\n\
         ext = bytes([0x20, 0]) + inet_csum(bytes([0x20, 0, 0, 0]) + obj).to_bytes(2, 'big') + obj\n\
         emit('udp_4884', IP(src='{e3}', dst=udp.src, id=0x6102)/ICMP(type=11, code=0, length=32)/Raw(qb + ext))\n",
        u = hex(&fl.udp_seen),
        t = hex(&fl.tcp_seen),
        e = hex(&fl.echo_seen),
    );
    let mut cases: Vec<(String, Host, u16, (u16, u16))> = Vec::new();
    for (i, (label, from, flow, t, c, more)) in matrix.iter().enumerate() {
        let ident = 0x6001 + i as u16;
        code.push_str(&format!(
            "emit('{label}', err('{src}', {ident}, {t}, {c}, {flow}{more}))\n",
            src = from.addr()
        ));
        let ports = match *flow {
            "udp" => (UDP_PORT, 7000),
            "tcp" => (TCP_PORT, 8000),
            _ => (ECHO_ID, ECHO_ID),
        };
        cases.push((label.to_string(), *from, ident, ports));
    }
    cases.push(("udp_ihl7".into(), Host::E3, 0x6101, (UDP_PORT, 7000)));
    cases.push(("udp_4884".into(), Host::E3, 0x6102, (UDP_PORT, 7000)));
    let pkts = craft(tb, Host::E3, &code);
    let cap = Capture::start(tb, Host::S1);
    let (raw_e1, raw_e3) = (RawIp::open(tb, Host::E1), RawIp::open(tb, Host::E3));
    let mut failures = Vec::new();
    for (label, from, ident, ports) in cases {
        let label = label.as_str();
        let sent = pkts.one(label);
        let se = IcmpErr::parse(sent).expect("crafted error");
        if from == Host::E1 {
            raw_e1.send(sent);
        } else {
            raw_e3.send(sent);
        }
        let Some(got) = cap.wait(T, |f| {
            f.incoming() && f.v4().proto() == 1 && f.v4().id() == ident
        }) else {
            failures.push(format!("{label}: never reached s1 (sent {})", hex(sent)));
            continue;
        };
        let Some(e) = got.icmp_err() else {
            failures.push(format!("{label}: s1 got a non-error {}", hex(&got.ip)));
            continue;
        };
        let mut bad = e.checksum_problems();
        if e.outer.src() != from.addr() {
            bad.push(format!("outer source {}", e.outer.src()));
        }
        if e.outer.dst() != Host::S1.addr() {
            bad.push(format!("outer destination {}", e.outer.dst()));
        }
        if e.icmp[..2] != se.icmp[..2] || e.icmp[4..8] != se.icmp[4..8] {
            bad.push(format!(
                "ICMP header {} (sent {})",
                hex(&e.icmp[..8]),
                hex(&se.icmp[..8])
            ));
        }
        if e.inner.src() != Host::S1.addr() || e.inner.dst() != e1 {
            bad.push(format!("embedded {} -> {}", e.inner.src(), e.inner.dst()));
        }
        if e.inner.flow_ids() != Some(ports) {
            bad.push(format!(
                "embedded ports/id {:?}, want {ports:?}",
                e.inner.flow_ids()
            ));
        }
        if e.inner.ihl() != se.inner.ihl() {
            bad.push(format!(
                "embedded IHL {} (sent {})",
                e.inner.ihl(),
                se.inner.ihl()
            ));
        }
        if e.inner.l4_csum().is_none() {
            bad.push("the quote lost part of the quoted packet".to_owned());
        }
        let qlen = if label == "udp_4884" {
            128
        } else {
            se.icmp.len() - 8
        };
        if e.icmp.len() != se.icmp.len() {
            bad.push(format!(
                "ICMP length {} (sent {})",
                e.icmp.len(),
                se.icmp.len()
            ));
        } else if quote_rest(&e.icmp[8..8 + qlen]) != quote_rest(&se.icmp[8..8 + qlen]) {
            bad.push("quote changed beyond address, port and checksums".to_owned());
        } else if e.icmp[8 + qlen..] != se.icmp[8 + qlen..] {
            bad.push("RFC 4884 extension changed".to_owned());
        }
        if !bad.is_empty() {
            failures.push(format!(
                "{label}: {bad:?}\n    sent {}\n    got  {}",
                hex(sent),
                hex(&got.ip)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "errors from outside:\n{}\ns1 saw:\n{}",
        failures.join("\n"),
        cap.summary()
    );

    // The mappings survive (RFC 4787 REQ-12, RFC 5382 REQ-10).
    let e1_sock = udp_sock(tb, Host::E1, 7300);
    let d = udp_send_until_received(&e1_sock, fl.x_udp, b"still mapped?", &fl.udp_sock, T)
        .unwrap_or_else(|e| panic!("e1 -> {} after the errors: {e}", fl.x_udp));
    assert_eq!(d.from, Host::E1.sock(7300));
    let mut tcp = fl.tcp;
    tcp_echo_roundtrip(&mut tcp, b"still connected?\n")
        .unwrap_or_else(|e| panic!("the TCP connection from {} after the errors: {e}", fl.x_tcp));
}

/// RFC 5508 REQ-3: errors with a bad ICMP checksum or a bad embedded IP
/// checksum are dropped (drop_icmp_csum); errors quoting an endpoint with no
/// mapping are dropped (drop_no_binding); source quench and redirect are not
/// forwarded (REQ-10c). A good error sent afterwards arrives, and the
/// mapping still works.
#[test]
fn bad_unmapped_and_obsolete_icmp_errors_are_dropped() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let fl = open_flows(tb);
    let e3 = Host::E3.addr();
    let unused = in_pool_unused(fl.x_udp);
    let code = format!(
        "udp = IP(unhex('{u}'))\n\
         def err(ident, t, c, q, **kw):\n\
         \x20   q = bytes(q)\n\
         \x20   return IP(src='{e3}', dst=IP(q).src, id=ident)/ICMP(type=t, code=c, **kw)/Raw(q)\n\
         b = bytearray(bytes(err(0x6101, 3, 3, udp)))\n\
         b[22] ^= 0x5a\n\
         emit('bad_icmp_csum', bytes(b))\n\
         q = bytearray(bytes(udp))\n\
         q[10] ^= 0xff\n\
         emit('bad_inner_csum', err(0x6102, 3, 3, bytes(q)))\n\
         q = udp.copy()\n\
         q[UDP].sport = 1\n\
         del q[UDP].chksum, q.chksum\n\
         emit('unmapped_port', err(0x6103, 3, 3, q))\n\
         q = udp.copy()\n\
         q.src = '{unused}'\n\
         del q[UDP].chksum, q.chksum\n\
         emit('unmapped_addr', err(0x6104, 3, 3, q))\n\
         emit('quench', err(0x6105, 4, 0, udp))\n\
         emit('redirect', err(0x6106, 5, 1, udp, gw='{e3}'))\n\
         emit('good', err(0x6107, 3, 3, udp))\n",
        u = hex(&fl.udp_seen),
    );
    let pkts = craft(tb, Host::E3, &code);
    let cap = Capture::start(tb, Host::S1);
    let raw = RawIp::open(tb, Host::E3);
    let before = bed.stats();
    for l in [
        "bad_icmp_csum",
        "bad_inner_csum",
        "unmapped_port",
        "unmapped_addr",
        "quench",
        "redirect",
    ] {
        raw.send(pkts.one(l));
    }
    thread::sleep(QUIET);
    let after = bed.stats();
    let leaked = cap.matching(|f| f.incoming() && f.v4().proto() == 1);
    assert!(
        leaked.is_empty(),
        "s1 received errors that must be dropped:\n{}",
        cap.summary()
    );
    assert_eq!(
        after.delta(&before, "drop_icmp_csum"),
        2,
        "drop_icmp_csum must count the two bad checksums:\n{}",
        after.text
    );
    assert_eq!(
        after.delta(&before, "drop_no_binding"),
        2,
        "drop_no_binding must count the two unmapped quotes:\n{}",
        after.text
    );
    assert_eq!(
        after.delta(&before, "drop_icmp_type"),
        2,
        "drop_icmp_type must count source quench and redirect:\n{}",
        after.text
    );

    // Positive control: the same error with good checksums arrives.
    raw.send(pkts.one("good"));
    let got = cap.expect("the good error", T, |f| {
        f.incoming() && f.v4().id() == 0x6107
    });
    let e = got.icmp_err().expect("an ICMP error");
    assert_eq!(e.inner.ports(), Some((UDP_PORT, 7000)), "{}", hex(&got.ip));
    assert!(
        e.checksum_problems().is_empty(),
        "{:?}",
        e.checksum_problems()
    );
    let e1_sock = udp_sock(tb, Host::E1, 7300);
    udp_send_until_received(&e1_sock, fl.x_udp, b"still mapped?", &fl.udp_sock, T)
        .unwrap_or_else(|e| panic!("e1 -> {} after the errors: {e}", fl.x_udp));
}

/// A pool address other than `x`'s (no subscriber has a mapping there:
/// only s1 has sent anything).
fn in_pool_unused(x: SocketAddrV4) -> Ipv4Addr {
    cgnat_kit::testbed::pool_addrs()
        .into_iter()
        .find(|a| a != x.ip() && a.octets()[3] != 0)
        .expect("a second pool address")
}

// ===========================================================================
// 7. Errors from inside (RFC 5508 REQ-5) and hairpinned errors (REQ-7)
// ===========================================================================

/// s1 had a mapping X' and closed the socket; e1 sends to X'. s1's kernel
/// answers 3/3, which leaves with the pool address as source and X' as the
/// embedded destination, so e1's connected socket gets ECONNREFUSED. Then a
/// hairpinned error: s1's connected socket to s2's external endpoint, whose
/// socket is closed, gets ECONNREFUSED through the NAT.
#[test]
fn icmp_errors_from_inside_and_hairpinned() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let x = {
        let s = udp_sock(tb, Host::S1, 44000);
        mapping_of(&s, &refl, "s1 maps 44000")
    }; // s1's socket is closed here.
    let cap_e1 = Capture::start(tb, Host::E1);
    let cap_s1 = Capture::start(tb, Host::S1);
    let e1 = udp_sock(tb, Host::E1, 7500);
    e1.connect(x).expect("connect");
    let err = socket_error(&e1, b"is anyone there?", T).unwrap_or_else(|| {
        panic!(
            "e1's socket connected to {x} got no error\ne1 saw:\n{}s1 saw:\n{}",
            cap_e1.summary(),
            cap_s1.summary()
        )
    });
    assert_eq!(err.raw_os_error(), Some(ECONNREFUSED), "e1 got {err}");
    let from_s1 = cap_s1.expect("s1's own 3/3", T, |f| {
        f.outgoing && f.icmp_err().is_some_and(|e| e.kind() == (3, 3))
    });
    let se = from_s1.icmp_err().unwrap();
    assert_eq!(
        (se.inner.dst(), se.inner.ports()),
        (Host::S1.addr(), Some((7500, 44000))),
        "s1 quoted {}",
        hex(&from_s1.ip)
    );
    let got = cap_e1.expect("3/3 from X'", T, |f| {
        f.incoming() && f.icmp_err().is_some_and(|e| e.kind() == (3, 3))
    });
    let e = got.icmp_err().unwrap();
    let dump = hex(&got.ip);
    assert_eq!(e.outer.src(), *x.ip(), "outer source: {dump}");
    assert_eq!(e.outer.dst(), Host::E1.addr(), "{dump}");
    assert_eq!(e.inner.src(), Host::E1.addr(), "{dump}");
    assert_eq!(e.inner.dst(), *x.ip(), "embedded destination: {dump}");
    assert_eq!(
        e.inner.ports(),
        Some((7500, x.port())),
        "embedded ports: {dump}"
    );
    assert_eq!(
        e.inner.l4_csum(),
        Some(true),
        "embedded UDP checksum: {dump}"
    );
    assert!(
        e.checksum_problems().is_empty(),
        "bad {:?}: {dump}",
        e.checksum_problems()
    );

    // Hairpin: s2's mapping, then s2 closes its socket.
    let x2 = {
        let s = udp_sock(tb, Host::S2, 44100);
        mapping_of(&s, &refl, "s2 maps 44100")
    };
    let before = bed.stats();
    let s1 = udp_sock(tb, Host::S1, 44200);
    s1.connect(x2).expect("connect to s2's mapping");
    let err = socket_error(&s1, b"hairpin to a closed port", T).unwrap_or_else(|| {
        panic!(
            "s1's socket connected to {x2} got no error\ns1 saw:\n{}",
            cap_s1.summary()
        )
    });
    assert_eq!(err.raw_os_error(), Some(ECONNREFUSED), "s1 got {err}");
    let got = cap_s1.expect("the hairpinned 3/3", T, |f| {
        f.incoming()
            && f.icmp_err()
                .is_some_and(|e| e.kind() == (3, 3) && e.outer.src() == *x2.ip())
    });
    let e = got.icmp_err().unwrap();
    let dump = hex(&got.ip);
    assert_eq!(e.outer.dst(), Host::S1.addr(), "{dump}");
    assert_eq!(
        (e.inner.src(), e.inner.dst()),
        (Host::S1.addr(), *x2.ip()),
        "embedded addresses: {dump}"
    );
    assert_eq!(e.inner.ports(), Some((44200, x2.port())), "{dump}");
    assert!(
        e.checksum_problems().is_empty(),
        "bad {:?}: {dump}",
        e.checksum_problems()
    );
    let after = bed.stats();
    assert!(after.delta(&before, "fwd_hairpin") >= 2, "{}", after.text);
}

// ===========================================================================
// 8. TTL
// ===========================================================================

/// A datagram from e1 to s1's mapping with TTL 1 is answered by the NAT with
/// 11/0 from its external address, the DS field copied (RFC 5508 REQ-10d),
/// quoting the header and 8 bytes as e1 sent them; s1 gets nothing. No ICMP
/// about a non-first fragment (inbound or outbound) or about an ICMP error
/// with TTL 1 (RFC 1812 4.3.2.7), while a TTL-1 datagram from s1 does get
/// its 11/0 from the internal address.
#[test]
fn ttl_expiry_is_answered_with_time_exceeded() {
    let Some(bed) = Bed::icmp(&[], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let sock = udp_sock(tb, Host::S1, 43000);
    let x = mapping_of(&sock, &refl, "s1 maps 43000");
    let (e1, s1) = (Host::E1.addr(), Host::S1.addr());
    let code = format!(
        "emit('ttl1', IP(src='{e1}', dst='{xa}', ttl=1, tos=0xb8, id=0x7001)/UDP(sport=7400, dport={xp})/Raw(b'ttl one'))\n\
         p = IP(src='{e1}', dst='{xa}', id=0x7002)/UDP(sport=7400, dport={xp})/Raw(bytes(3000))\n\
         fr = fragment(p, fragsize=1400)\n\
         emit('first', fr[0])\n\
         later = fr[1].copy()\n\
         later.ttl = 1\n\
         del later.chksum\n\
         emit('later_ttl1', later)\n\
         q = IP(dst='{e1}', src='{xa}')/UDP(sport={xp}, dport=7000)/Raw(b'x')\n\
         emit('err_ttl1', IP(src='{e1}', dst='{xa}', ttl=1, id=0x7004)/ICMP(type=3, code=3)/Raw(bytes(q)))\n",
        xa = x.ip(),
        xp = x.port()
    );
    let from_e1 = craft(tb, Host::E1, &code);
    let from_s1 = craft(
        tb,
        Host::S1,
        &format!(
            "emit('out_later_ttl1', IP(src='{s1}', dst='{e1}', ttl=1, id=0x7003, frag=100, proto=17)/Raw(bytes(64)))\n\
             emit('out_ttl1', IP(src='{s1}', dst='{e1}', ttl=1, id=0x7005)/UDP(sport=43001, dport=7000)/Raw(b'out ttl one'))\n"
        ),
    );
    let cap_e1 = Capture::start(tb, Host::E1);
    let cap_s1 = Capture::start(tb, Host::S1);
    let raw_e1 = RawIp::open(tb, Host::E1);
    let raw_s1 = RawIp::open(tb, Host::S1);

    let before = bed.stats();
    raw_e1.send(from_e1.one("ttl1"));
    let got = cap_e1.expect("11/0 from the NAT", T, |f| {
        f.incoming() && f.icmp_err().is_some_and(|e| e.kind() == (11, 0))
    });
    let e = got.icmp_err().unwrap();
    let dump = hex(&got.ip);
    assert_eq!(e.outer.src(), ROUTER_EXT, "source of the 11/0: {dump}");
    assert_eq!(e.outer.dst(), e1, "{dump}");
    assert_eq!(e.outer.tos(), 0xb8, "DS field not copied: {dump}");
    assert!(
        e.checksum_problems().is_empty(),
        "{:?}: {dump}",
        e.checksum_problems()
    );
    let sent = cap_e1.expect("the TTL-1 datagram leaving e1", T, |f| {
        f.outgoing && f.v4().id() == 0x7001
    });
    assert_eq!(e.icmp.len(), 8 + 28, "quote length: {dump}");
    assert_eq!(&e.icmp[8..], &sent.ip[..28], "quote: {dump}");
    assert_eq!(be16(e.icmp, 4), 0, "unused field: {dump}");

    // Non-first fragment with TTL 1, inbound (its first fragment passed) and
    // outbound (stateless), and an ICMP error with TTL 1: no ICMP back.
    raw_e1.send(from_e1.one("first"));
    cap_s1.expect("the first fragment at s1", T, |f| {
        f.incoming() && f.v4().id() == 0x7002
    });
    raw_e1.send(from_e1.one("later_ttl1"));
    raw_e1.send(from_e1.one("err_ttl1"));
    raw_s1.send(from_s1.one("out_later_ttl1"));
    thread::sleep(QUIET);
    let answers_e1: Vec<Frame> = cap_e1.matching(|f| f.incoming() && f.v4().proto() == 1);
    assert_eq!(
        answers_e1.len(),
        1,
        "e1 got ICMP about a later fragment or an error:\n{}",
        cap_e1.summary()
    );
    let answers_s1 = cap_s1.matching(|f| f.incoming() && f.v4().proto() == 1);
    assert!(
        answers_s1.is_empty(),
        "s1 got ICMP about a later fragment:\n{}",
        cap_s1.summary()
    );
    assert!(
        cap_s1
            .matching(|f| f.incoming() && (f.v4().id() == 0x7001 || f.v4().id() == 0x7004))
            .is_empty(),
        "a TTL-1 packet went through to s1:\n{}",
        cap_s1.summary()
    );
    let after = bed.stats();
    assert_eq!(
        after.delta(&before, "icmp_time_exceeded"),
        1,
        "{}",
        after.text
    );
    assert_eq!(after.delta(&before, "drop_ttl"), 3, "{}", after.text);

    // Control: outbound TTL 1, unfragmented: 11/0 from the internal address.
    raw_s1.send(from_s1.one("out_ttl1"));
    let got = cap_s1.expect("11/0 for s1", T, |f| {
        f.incoming() && f.icmp_err().is_some_and(|e| e.kind() == (11, 0))
    });
    let e = got.icmp_err().unwrap();
    assert_eq!(e.outer.src(), ROUTER_INT, "{}", hex(&got.ip));
    assert_eq!(e.inner.ports(), Some((43001, 7000)), "{}", hex(&got.ip));
    assert!(
        e.checksum_problems().is_empty(),
        "{:?}",
        e.checksum_problems()
    );
}

/// `[icmp] rate_limit = 5`: a burst of 200 TTL-1 datagrams, sent from one
/// CPU, gets at most the 5 time-exceeded of that CPU's bucket plus its
/// refill during the burst (counted per CPU from the stats map); the
/// bucket refills, so a second burst a second later gets some again.
/// Every packet is counted once (answered or drop_ttl).
#[test]
fn generated_icmp_errors_are_rate_limited() {
    let Some(bed) = Bed::icmp(&[("icmp", "rate_limit", "5")], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let sock = udp_sock(tb, Host::S1, 43500);
    let x = mapping_of(&sock, &refl, "s1 maps 43500");
    let pkt = craft(
        tb,
        Host::E1,
        &format!(
            "emit('ttl1', IP(src='{e1}', dst='{xa}', ttl=1, id=0x7100)/UDP(sport=7400, dport={xp})/Raw(b'burst'))",
            e1 = Host::E1.addr(),
            xa = x.ip(),
            xp = x.port()
        ),
    );
    let pkt = pkt.one("ttl1");
    let cap = Capture::start(tb, Host::E1);
    let raw = RawIp::open(tb, Host::E1);
    for round in 0..2 {
        let before = bed.stats();
        let cpu_before = per_cpu_counters(tb);
        let seen_before = cap
            .matching(|f| f.incoming() && f.v4().icmp() == Some((11, 0)))
            .len();
        let took = on_one_cpu(|| {
            let start = Instant::now();
            for _ in 0..200 {
                raw.send(pkt);
            }
            start.elapsed()
        });
        let limit = rate_allowance(5, took);
        thread::sleep(QUIET);
        let after = bed.stats();
        let cpus = burst_per_cpu(&cpu_before, &per_cpu_counters(tb), "icmp_time_exceeded");
        let got = cap
            .matching(|f| f.incoming() && f.v4().icmp() == Some((11, 0)))
            .len()
            - seen_before;
        let sent = after.delta(&before, "icmp_time_exceeded");
        let dropped = after.delta(&before, "drop_ttl");
        eprintln!("burst {round}: 200 sent in {took:?}; e1 got {got} time exceeded; stats: {sent} sent, {dropped} drop_ttl; (seen, errors) per CPU {cpus:?}");
        assert!(
            got >= 1,
            "burst {round}: no time exceeded at all:\n{}",
            after.text
        );
        // One CPU saw more of the burst than its bucket allows (else even
        // no limiter would pass), and no CPU sent more than its bucket.
        assert!(
            cpus.iter().any(|(seen, _)| *seen > limit),
            "burst {round}: no CPU saw more than {limit} of the burst: (seen, errors) per CPU {cpus:?}"
        );
        assert!(
            cpus.iter().all(|(_, errors)| *errors <= limit),
            "burst {round}: (seen, errors) per CPU {cpus:?}: a CPU sent more than {limit} time exceeded for a burst of {took:?}, rate limit 5/s per CPU"
        );
        assert!(
            got as u64 <= sent,
            "burst {round}: e1 got {got} time exceeded, {sent} counted"
        );
        assert_eq!(
            sent + dropped,
            200,
            "burst {round}: every packet counted once:\n{}",
            after.text
        );
    }
}

// ===========================================================================
// 9. Host unreachable when no mapping can be created
// ===========================================================================

/// nat.max_bindings = 16, nat.max_sessions = 32, icmp.rate_limit = 5. s1
/// opens 16 UDP flows (16 bindings, 16 sessions); the 17th source port gets
/// 3/1 from 100.64.0.1 (RFC 6888 REQ-11) quoting its packet,
/// which never reaches e1, and its connected socket EHOSTUNREACH. Existing
/// flows keep working. A burst from the refused port gets rate-limited 3/1s.
/// Then the session table: 16 more destinations from an existing binding
/// fill it, and the next destination gets 3/1 too.
#[test]
fn full_tables_answer_host_unreachable() {
    let Some(bed) = Bed::icmp(
        &[
            ("nat", "max_bindings", "16"),
            ("nat", "max_sessions", "32"),
            ("icmp", "rate_limit", "5"),
        ],
        |_| {},
    ) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let cap_s1 = Capture::start(tb, Host::S1);
    let cap_e1 = Capture::start(tb, Host::E1);
    let mut socks = Vec::new();
    for port in 50000..50016u16 {
        let s = udp_sock(tb, Host::S1, port);
        mapping_of(&s, &refl, &format!("flow from {port}"));
        socks.push(s);
    }
    let refused = udp_sock(tb, Host::S1, 50016);
    refused.connect(refl.addr()).expect("connect");
    // Host unreachable is a soft error for UDP: the kernel reports it on
    // the socket only with IP_RECVERR.
    socket::setsockopt(&refused, sockopt::Ipv4RecvErr, &true).expect("IP_RECVERR");
    let err = socket_error(&refused, b"flow from 50016", T).unwrap_or_else(|| {
        panic!(
            "the 17th binding got no error\ns1 saw:\n{}\n{}",
            cap_s1.summary(),
            bed.stats().text
        )
    });
    assert_eq!(err.raw_os_error(), Some(EHOSTUNREACH), "s1 got {err}");
    let got = cap_s1.expect("3/1 from the NAT", T, |f| {
        f.incoming() && f.icmp_err().is_some_and(|e| e.kind() == (3, 1))
    });
    let e = got.icmp_err().unwrap();
    let dump = hex(&got.ip);
    assert_eq!(e.outer.src(), ROUTER_INT, "{dump}");
    assert_eq!(e.outer.dst(), Host::S1.addr(), "{dump}");
    assert_eq!(e.inner.ports(), Some((50016, 7000)), "{dump}");
    assert!(
        e.checksum_problems().is_empty(),
        "{:?}: {dump}",
        e.checksum_problems()
    );
    let sent = cap_s1.expect("s1's packet", T, |f| {
        f.outgoing && f.v4().ports() == Some((50016, 7000))
    });
    assert_eq!(&e.icmp[8..], &sent.ip[..28], "quote: {dump}");
    assert!(
        refl.wait_for(
            |d| d.payload == b"flow from 50016",
            Duration::from_millis(100)
        )
        .is_none(),
        "the refused flow reached e1"
    );
    // Existing flows keep working.
    for (i, s) in [(0, &socks[0]), (15, &socks[15])] {
        mapping_of(s, &refl, &format!("flow {i} again"));
    }

    // Rate limit: 100 packets from the refused port.
    thread::sleep(Duration::from_millis(1200));
    let n3_1 = |c: &Capture| {
        c.matching(|f| f.incoming() && f.v4().icmp() == Some((3, 1)))
            .len()
    };
    let before = n3_1(&cap_s1);
    let burst = udp_sock(tb, Host::S1, 50017);
    let cpu_before = per_cpu_counters(tb);
    let took = on_one_cpu(|| {
        let start = Instant::now();
        for _ in 0..100 {
            let _ = burst.send_to(b"burst", refl.addr());
        }
        start.elapsed()
    });
    let limit = rate_allowance(5, took);
    thread::sleep(QUIET);
    let got = n3_1(&cap_s1) - before;
    let cpus = burst_per_cpu(&cpu_before, &per_cpu_counters(tb), "icmp_host_unreach");
    assert!(
        cpus.iter().any(|(seen, _)| *seen > limit),
        "no CPU saw more than {limit} of the burst: (seen, errors) per CPU {cpus:?}"
    );
    assert!(
        got >= 1 && cpus.iter().all(|(_, errors)| *errors <= limit),
        "{got} host unreachable for a burst of 100 in {took:?}; (seen, errors) per CPU {cpus:?}: at most {limit} per CPU, rate limit 5/s per CPU"
    );

    // The session table: 16 sessions exist; 16 more from socket 50000.
    thread::sleep(Duration::from_millis(1200));
    let x0 = mapping_of(&socks[0], &refl, "flow 0 once more");
    for port in 20001..=20016u16 {
        socks[0]
            .send_to(b"session", Host::E1.sock(port))
            .expect("send");
        cap_e1.expect(&format!("the datagram to port {port}"), T, |f| {
            f.incoming() && f.v4().ports() == Some((x0.port(), port))
        });
    }
    let before = n3_1(&cap_s1);
    socks[0]
        .send_to(b"session 33", Host::E1.sock(20017))
        .expect("send");
    cap_s1.expect("3/1 for the 33rd session", T, |f| {
        f.incoming()
            && f.icmp_err()
                .is_some_and(|e| e.kind() == (3, 1) && e.inner.ports() == Some((50000, 20017)))
    });
    assert!(n3_1(&cap_s1) > before);
    thread::sleep(Duration::from_millis(200));
    assert!(
        cap_e1
            .matching(|f| f.v4().ports().is_some_and(|p| p.1 == 20017))
            .is_empty(),
        "the refused session reached e1:\n{}",
        cap_e1.summary()
    );
    mapping_of(&socks[3], &refl, "flow 3 after the session table filled");
}

// ===========================================================================
// 10. MSS clamping
// ===========================================================================

/// nat.mss_clamp = 1300: s1's SYN (MSS 1460) reaches e1 with MSS 1300 and a
/// valid checksum; e1's SYN-ACK (MSS 1460) reaches s1 with MSS 1300; the
/// connection works and s1 sends no segment larger than 1300 bytes.
#[test]
fn mss_is_clamped_both_ways() {
    let Some(bed) = Bed::icmp(&[("nat", "mss_clamp", "1300")], |_| {}) else {
        return;
    };
    let tb = &bed.tb;
    let srv = TcpServer::start(tb, Host::E1, Host::E1.sock(8000)).expect("server");
    let cap_e1 = Capture::start(tb, Host::E1);
    let cap_s1 = Capture::start(tb, Host::S1);
    let up = tb
        .tcp_upload(
            Host::S1,
            None,
            srv.addr(),
            200_000,
            10,
            Duration::from_secs(30),
        )
        .expect("upload");
    assert_eq!(up.server_hash, up.sent_hash, "content e1 received");
    let syn = |f: &Frame| f.v4().proto() == 6 && tcp_flags(&f.v4()) & 0x12 == 0x02;
    let synack = |f: &Frame| f.v4().proto() == 6 && tcp_flags(&f.v4()) & 0x12 == 0x12;
    let s1_syn = cap_s1.expect("s1's SYN", T, |f| f.outgoing && syn(f));
    let e1_syn = cap_e1.expect("the SYN at e1", T, |f| f.incoming() && syn(f));
    let e1_synack = cap_e1.expect("e1's SYN-ACK", T, |f| f.outgoing && synack(f));
    let s1_synack = cap_s1.expect("the SYN-ACK at s1", T, |f| f.incoming() && synack(f));
    let mss = |f: &Frame| tcp_mss(f.v4().l4());
    assert_eq!(
        mss(&s1_syn),
        Some(1460),
        "s1 must offer 1460 for the test to mean anything"
    );
    assert_eq!(mss(&e1_syn), Some(1300), "SYN at e1: {}", hex(&e1_syn.ip));
    assert_eq!(
        e1_syn.v4().l4_csum(),
        Some(true),
        "TCP checksum of the clamped SYN: {}",
        hex(&e1_syn.ip)
    );
    assert_eq!(mss(&e1_synack), Some(1460), "e1 must offer 1460");
    assert_eq!(
        mss(&s1_synack),
        Some(1300),
        "SYN-ACK at s1: {}",
        hex(&s1_synack.ip)
    );
    assert_eq!(
        s1_synack.v4().l4_csum(),
        Some(true),
        "TCP checksum of the clamped SYN-ACK: {}",
        hex(&s1_synack.ip)
    );
    let biggest = cap_s1
        .matching(|f| f.outgoing && f.v4().proto() == 6)
        .iter()
        .map(|f| {
            let l4 = f.v4().l4();
            l4.len() - (l4[12] >> 4) as usize * 4
        })
        .max()
        .unwrap_or(0);
    assert!(
        (1000..=1300).contains(&biggest),
        "s1's largest segment carried {biggest} bytes"
    );
}

// ===========================================================================
// 11. Too big without DF
// ===========================================================================

/// External MTU 1400. XDP cannot fragment, so a 1500-byte datagram with DF
/// clear is dropped and counted drop_frag_needed, with no ICMP (none is
/// defined for it); e1 receives nothing. The same datagram with DF set gets
/// 3/4 with MTU 1400 (control), and a 1400-byte one passes.
#[test]
fn too_big_without_df_is_dropped_and_counted() {
    let Some(bed) = Bed::icmp(&[], external_mtu_1400) else {
        return;
    };
    let tb = &bed.tb;
    let refl = UdpReflector::start(tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let sock = udp_sock(tb, Host::S1, 45000);
    mapping_of(&sock, &refl, "warm-up");
    let (s1, e1) = (Host::S1.addr(), Host::E1.addr());
    let pkts = craft(
        tb,
        Host::S1,
        &format!(
            "emit('df_clear', IP(src='{s1}', dst='{e1}', flags=0, id=0x7700)/UDP(sport=45000, dport=7000)/Raw(b'A' * 1472))\n\
             emit('df_set', IP(src='{s1}', dst='{e1}', flags='DF', id=0x7701)/UDP(sport=45000, dport=7000)/Raw(b'B' * 1472))\n\
             emit('fits', IP(src='{s1}', dst='{e1}', flags=0, id=0x7702)/UDP(sport=45000, dport=7000)/Raw(b'C' * 1372))\n"
        ),
    );
    let cap_s1 = Capture::start(tb, Host::S1);
    let cap_e1 = Capture::start(tb, Host::E1);
    let raw = RawIp::open(tb, Host::S1);
    let before = bed.stats();
    raw.send(pkts.one("df_clear"));
    thread::sleep(QUIET);
    let after = bed.stats();
    assert_eq!(
        after.delta(&before, "drop_frag_needed"),
        1,
        "the too-big datagram without DF was not counted drop_frag_needed:\n{}",
        after.text
    );
    assert!(
        refl.wait_for(|d| d.payload.len() == 1472, Duration::from_millis(10))
            .is_none()
            && cap_e1
                .matching(|f| f.incoming() && f.v4().proto() == 17)
                .is_empty(),
        "e1 received it:\n{}",
        cap_e1.summary()
    );
    assert!(
        cap_s1
            .matching(|f| f.incoming() && f.v4().proto() == 1)
            .is_empty(),
        "s1 got an ICMP for a datagram without DF:\n{}",
        cap_s1.summary()
    );

    raw.send(pkts.one("df_set"));
    let got = cap_s1.expect("3/4 for the DF datagram", T, |f| {
        f.incoming() && f.icmp_err().is_some_and(|e| e.kind() == (3, 4))
    });
    let e = got.icmp_err().unwrap();
    assert_eq!(be16(e.icmp, 6), 1400, "{}", hex(&got.ip));
    assert!(e.inner.id() == 0x7701 && e.inner.df(), "{}", hex(&got.ip));
    raw.send(pkts.one("fits"));
    refl.wait_for(|d| d.payload == vec![b'C'; 1372], T)
        .unwrap_or_else(|| panic!("the 1400-byte datagram did not pass\n{}", cap_e1.summary()));
}

// ===========================================================================
// The helpers themselves (no privilege needed)
// ===========================================================================

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The checksum checks catch what they must: packets captured from a run
/// (a translated UDP datagram, a 3/1 of the NAT) verify, and any flipped
/// byte fails the check that covers it.
#[test]
fn packet_helpers_verify_checksums() {
    let udp = unhex(
        "4500003d9e1640003f110f11c633640a6440000b1b58c35000295f9f3230332e302e3131332e\
         383a35303030300a666c6f772066726f6d203530303030",
    );
    let v = V4::parse(&udp).unwrap();
    assert!(v.header_ok());
    assert_eq!(v.l4_csum(), Some(true));
    assert_eq!(v.ports(), Some((7000, 50000)));
    for i in [0, 10, 12, 19] {
        let mut b = udp.clone();
        b[i] ^= 0x10;
        assert!(!V4(&b).header_ok(), "flipped IP header byte {i}");
    }
    for i in [20, 26, 28, udp.len() - 1] {
        let mut b = udp.clone();
        b[i] ^= 0x01;
        assert_eq!(V4(&b).l4_csum(), Some(false), "flipped UDP byte {i}");
    }
    // The pseudo header counts: another destination breaks the checksum.
    let mut b = udp.clone();
    b[19] ^= 1;
    b[10..12].copy_from_slice(&[0, 0]);
    let c = !fold(sum16(&b[..20]));
    b[10..12].copy_from_slice(&c.to_be_bytes());
    assert!(V4(&b).header_ok());
    assert_eq!(V4(&b).l4_csum(), Some(false));

    let err = unhex(
        "45000038000000004001b239644000016440000b0301fceb000000004500002b7d1b40004011\
         2f1e6440000bc633640ac3601b5800172143",
    );
    let e = IcmpErr::parse(&err).unwrap();
    assert_eq!(e.kind(), (3, 1));
    assert_eq!(e.inner.ports(), Some((50016, 7000)));
    assert_eq!(e.inner.l4_csum(), None, "an 8-byte quote cannot be checked");
    assert!(
        e.checksum_problems().is_empty(),
        "{:?}",
        e.checksum_problems()
    );
    for (i, what) in [
        (11, "outer IP header checksum"),
        (23, "ICMP checksum"),
        (40, "ICMP checksum"),
    ] {
        let mut b = err.clone();
        b[i] ^= 0x04;
        let p = IcmpErr::parse(&b).unwrap().checksum_problems();
        assert!(p.iter().any(|x| x == what), "byte {i}: {p:?}");
    }
    // A quoted header with a bad checksum whose ICMP checksum was fixed up.
    let mut b = err.clone();
    b[38] ^= 0x04; // quoted IP checksum (0x2f1e)
    b[26] ^= 0x04; // ICMP unused field (0x00): compensates in the ICMP sum
    let p = IcmpErr::parse(&b).unwrap().checksum_problems();
    assert_eq!(p, vec!["embedded IP header checksum".to_owned()]);
}

#[test]
fn config_edits_and_tool_output_parsing() {
    let t = "[nat]\na = 1\nmax_bindings = 65536\n\n[daemon]\npin_path = \"x\"\n";
    let e = set_toml(t, "nat", "max_bindings", "16");
    assert!(
        e.contains("max_bindings = 16\n") && !e.contains("65536"),
        "{e}"
    );
    let e = set_toml(t, "nat", "mss_clamp", "1300");
    let nat = &e[..e.find("[daemon]").unwrap()];
    assert!(nat.contains("mss_clamp = 1300"), "{e}");
    let e = set_toml(t, "icmp", "rate_limit", "5");
    assert!(e.trim_end().ends_with("[icmp]\nrate_limit = 5"), "{e}");
    let parsed: toml::Table = toml::from_str(&e).unwrap_or_else(|err| panic!("{err}\n{e}"));
    assert_eq!(parsed["icmp"]["rate_limit"].as_integer(), Some(5), "{e}");

    let tr = "traceroute to 198.51.100.10 (198.51.100.10), 6 hops max, 60 byte packets\n \
              1  100.64.0.1  0.071 ms\n 2  *\n 3  198.51.100.10  0.118 ms\n";
    assert_eq!(
        traceroute_hops(tr),
        vec![(1, Some(ROUTER_INT)), (2, None), (3, Some(Host::E1.addr()))]
    );
    // SYN with MSS 1460 after a NOP; a header without the option.
    let mut tcp = vec![0u8; 24];
    tcp[12] = 6 << 4;
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    assert_eq!(tcp_mss(&tcp), Some(1460));
    let mut tcp2 = vec![0u8; 28];
    tcp2[12] = 7 << 4;
    tcp2[20..28].copy_from_slice(&[1, 1, 0, 0, 2, 4, 5, 0]); // after EOL
    assert_eq!(tcp_mss(&tcp2), None);
    tcp2[12] = 5 << 4;
    assert_eq!(tcp_mss(&tcp2), None);
}
