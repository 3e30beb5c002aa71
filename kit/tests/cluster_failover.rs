//! Two cgnat nodes (native XDP, `configs/cluster.toml`) behind BIRD with
//! BGP + BFD (`configs/bird/`), in the cluster bed of
//! `cgnat_kit::cluster_bed`: what subscribers and the far end see when
//! both nodes work, when node 1 loses power, when it comes back, and when
//! the sync link alone fails or carries forged traffic.
//!
//! The first two tests run the dynamic pool, the manual-failback one the
//! port-block pool (a flow opened on the backup gets a port of the block
//! the owner had given the subscriber).
//!
//! Every datagram a subscriber sends names its sender ("s1:5000") and the
//! far end's reflector answers with the source it saw, so the test knows
//! which external endpoint each subscriber endpoint had at every moment,
//! and that no external endpoint ever stood for two subscribers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cgnat_kit::cluster_bed::{
    missing_requirements, node_ext, node_sync, ClusterBed, EXT, POOL_SLICES, S1, S2,
};
use cgnat_kit::testbed::{cannot_run, is_attached_line, Background};

/// The cluster beds of this file run one at a time (timing claims).
static SERIAL: Mutex<()> = Mutex::new(());

const REFLECT: u16 = 7000;
const EIF_FROM: u16 = 7001;
const TCP_PORT: u16 = 8000;
/// The budget for traffic to move to the surviving node.
const FAILOVER: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_secs(15);

fn pool(slice: usize) -> ipnetwork::Ipv4Network {
    POOL_SLICES[slice - 1].parse().unwrap()
}

fn bed() -> Option<ClusterBed> {
    if let Some(why) = missing_requirements() {
        cannot_run(&why);
        return None;
    }
    Some(ClusterBed::new().expect("cluster bed"))
}

/// Node `n`'s config: the shipped example with its id, the bed's key and
/// pin path.
fn node_config_full(bed: &ClusterBed, n: usize, failback: &str, pool_mode: &str) -> PathBuf {
    let key = bed.dir().join("cluster.key");
    if !key.exists() {
        std::fs::write(&key, "a cluster key of this test bed, 42 bytes\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = include_str!("../../configs/cluster.toml")
        .replace(
            "differs between nodes.\nid = 1\n",
            &format!("differs between nodes.\nid = {n}\n"),
        )
        .replace("/etc/cgnat/cluster.key", &key.display().to_string())
        .replace(
            "failback = \"immediate\"",
            &format!("failback = \"{failback}\""),
        );
    let text = format!(
        "{text}\n[daemon]\npin_path = \"{}\"\n[pool]\nmode = \"{pool_mode}\"\nblock_size = 64\n",
        bed.pin_path(n).display()
    );
    assert!(
        text.contains(&format!("nodes.\nid = {n}\n")),
        "config id not set"
    );
    let path = bed.dir().join(format!("n{n}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts cgnat on node `n` and waits until it holds its peer's state (a
/// node alone serves every slice until its peer shows up: see
/// [`wait_serving`]).
fn start_node_full(bed: &ClusterBed, n: usize, failback: &str, pool_mode: &str) -> Background {
    let cfg = node_config_full(bed, n, failback, pool_mode);
    let bin = cgnat_kit::cgnat_binary().display().to_string();
    let node = format!("n{n}");
    let mut p = bed
        .spawn(&node, &[&bin, "--config", &cfg.display().to_string()])
        .expect("spawn cgnat");
    p.wait_for_line(is_attached_line, SETTLE)
        .unwrap_or_else(|e| panic!("node {n} did not attach: {e}"));
    p.wait_for_line(|l| l.contains(&format!("node {n} resynced")), SETTLE)
        .unwrap_or_else(|e| panic!("node {n} did not resync: {e}\n{}", bed.dump()));
    p
}

/// Waits until node `n`'s log says it serves exactly `slices` now.
fn wait_serving(p: &mut Background, n: usize, slices: &str) {
    let line = format!("node {n} now serves slices {slices} (");
    p.wait_for_line(|l| l.contains(&line), SETTLE)
        .unwrap_or_else(|e| panic!("node {n} never served {slices}: {e}"));
}

/// What the far end saw: per subscriber identity, the external endpoints
/// it came from, in order, with the time.
#[derive(Default)]
struct FarEnd {
    seen: Mutex<Vec<(Instant, String, SocketAddrV4)>>,
}

impl FarEnd {
    fn sources_of(&self, who: &str) -> Vec<SocketAddrV4> {
        let mut out: Vec<SocketAddrV4> = Vec::new();
        for (_, w, src) in self.seen.lock().unwrap().iter() {
            if w == who && out.last() != Some(src) {
                out.push(*src);
            }
        }
        out
    }

    /// No external endpoint ever stood for two subscriber endpoints.
    fn assert_no_port_twice(&self) {
        let mut by_ext: BTreeMap<SocketAddrV4, BTreeSet<String>> = BTreeMap::new();
        for (_, w, src) in self.seen.lock().unwrap().iter() {
            by_ext.entry(*src).or_default().insert(w.clone());
        }
        for (ext, who) in &by_ext {
            assert_eq!(who.len(), 1, "{ext} was used by {who:?}");
        }
    }
}

/// The far end's UDP reflector: answers every datagram with the source it
/// saw, and records who (the payload's first word) came from where.
fn reflector(bed: &ClusterBed, far: Arc<FarEnd>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let sock = bed
        .in_ns("ext", || UdpSocket::bind(SocketAddrV4::new(EXT, REFLECT)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let std::net::SocketAddr::V4(from) = from else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let who = text.split_whitespace().next().unwrap_or("").to_owned();
            far.seen
                .lock()
                .unwrap()
                .push((Instant::now(), who.clone(), from));
            let _ = sock.send_to(format!("{who} {from}").as_bytes(), from);
        }
    })
}

/// A subscriber's UDP stream: one datagram every 20 ms from `src` to the
/// reflector; records when each answer came back, and every datagram from
/// elsewhere (the EIF probes).
struct Stream {
    answers: Arc<Mutex<Vec<Instant>>>,
    probes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    fn start(bed: &ClusterBed, host: &str, src: SocketAddrV4) -> Stream {
        let sock = bed.in_ns(host, || UdpSocket::bind(src)).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let (answers, probes, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (a, p, s) = (answers.clone(), probes.clone(), stop.clone());
        let me = format!("{host}:{}", src.port());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let mut next = Instant::now();
            let mut seq = 0u64;
            while !s.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    seq += 1;
                    let _ = sock.send_to(
                        format!("{me} {seq}").as_bytes(),
                        SocketAddrV4::new(EXT, REFLECT),
                    );
                    next += Duration::from_millis(20);
                }
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if from == std::net::SocketAddr::V4(SocketAddrV4::new(EXT, REFLECT)) {
                        a.lock().unwrap().push(Instant::now());
                    } else {
                        p.lock().unwrap().push(format!("{from} {text}"));
                    }
                }
            }
        });
        Stream {
            answers,
            probes,
            stop,
            thread: Some(thread),
        }
    }

    /// The longest time without an answer in [from, to].
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let a = self.answers.lock().unwrap();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in a.iter().filter(|t| **t >= from && **t <= to) {
            gap = gap.max(t.saturating_duration_since(last));
            last = *t;
        }
        gap.max(to.saturating_duration_since(last))
    }

    fn answered_since(&self, t: Instant) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| **a >= t)
            .count()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP transfer from s1 to the far end: `total` bytes at about
/// 0.5 MB/s; the server answers with the byte count and the peer it saw.
fn tcp_transfer(bed: &ClusterBed, total: usize) -> JoinHandle<Result<String, String>> {
    let listener = bed
        .in_ns("ext", || {
            TcpListener::bind(SocketAddrV4::new(EXT, TCP_PORT))
        })
        .unwrap()
        .unwrap();
    let server = thread::spawn(move || -> Result<(usize, SocketAddrV4), String> {
        let (mut c, peer) = listener.accept().map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while got < total {
            let n = c.read(&mut buf).map_err(|e| format!("server read: {e}"))?;
            if n == 0 {
                return Err(format!("connection closed after {got} bytes"));
            }
            got += n;
        }
        let std::net::SocketAddr::V4(peer) = peer else {
            return Err("peer not IPv4".into());
        };
        c.write_all(format!("{got} {peer}").as_bytes())
            .map_err(|e| e.to_string())?;
        Ok((got, peer))
    });
    let client = bed
        .in_ns("s1", || {
            TcpStream::connect_timeout(
                &std::net::SocketAddr::V4(SocketAddrV4::new(EXT, TCP_PORT)),
                Duration::from_secs(5),
            )
        })
        .unwrap()
        .expect("tcp connect through node 1");
    thread::spawn(move || {
        let mut c = client;
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let chunk = vec![0x5au8; 16 * 1024];
        let mut sent = 0;
        while sent < total {
            c.write_all(&chunk)
                .map_err(|e| format!("client write: {e}"))?;
            sent += chunk.len();
            thread::sleep(Duration::from_millis(30));
        }
        let mut answer = String::new();
        c.read_to_string(&mut answer)
            .map_err(|e| format!("client read: {e}"))?;
        let (got, peer) = server.join().map_err(|_| "server panicked".to_string())??;
        if got != total {
            return Err(format!("server got {got} of {total} bytes"));
        }
        Ok(format!("{answer} (server saw {peer})"))
    })
}

/// `Ip: ForwDatagrams` of a namespace: the kernel's own forwarding.
fn forw_datagrams(bed: &ClusterBed, ns: &str) -> u64 {
    let snmp = bed.run(ns, &["cat", "/proc/net/snmp"]).unwrap();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// `cgnat cluster --json` on node `n`.
fn cluster_status(bed: &ClusterBed, n: usize) -> serde_json::Value {
    let cfg = bed.dir().join(format!("n{n}.toml"));
    let bin = cgnat_kit::cgnat_binary().display().to_string();
    let out = bed
        .run(
            &format!("n{n}"),
            &[
                &bin,
                "--config",
                &cfg.display().to_string(),
                "cluster",
                "--json",
            ],
        )
        .expect("cgnat cluster --json");
    serde_json::from_str(&out).expect("cluster status JSON")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The far end's reflector and the test's turn at the cluster bed; the
/// reflector stops on drop.
struct Run {
    far: Arc<FarEnd>,
    stop: Arc<AtomicBool>,
    refl: Option<JoinHandle<()>>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Run {
    /// A cluster bed with cgnat on both nodes (each serving its own slice,
    /// routed to it) and the far end's reflector.
    fn start(failback: &str, pool_mode: &str) -> Option<(Run, ClusterBed, Background, Background)> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let bed = bed()?;
        let stop = Arc::new(AtomicBool::new(false));
        let far = Arc::new(FarEnd::default());
        let refl = reflector(&bed, far.clone(), stop.clone());
        let mut n1 = start_node_full(&bed, 1, failback, pool_mode);
        let mut n2 = start_node_full(&bed, 2, failback, pool_mode);
        wait_serving(&mut n1, 1, "[1]");
        wait_serving(&mut n2, 2, "[2]");
        for (slice, node) in [(1, 1), (2, 2)] {
            bed.wait_route("upr", 254, POOL_SLICES[slice - 1], node_ext(node), SETTLE)
                .unwrap_or_else(|e| panic!("slice {slice} not routed to node {node}: {e}"));
        }
        let run = Run {
            far,
            stop,
            refl: Some(refl),
            _serial: serial,
        };
        Some((run, bed, n1, n2))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.refl.take() {
            let _ = r.join();
        }
    }
}

#[test]
fn a_node_dies_and_comes_back_without_its_subscribers_noticing() {
    let Some((run, mut bed, mut n1, mut n2)) = Run::start("immediate", "dynamic") else {
        return;
    };
    let far = run.far.clone();

    // Both nodes carry traffic, each subscriber from its own node's slice.
    let s1 = Stream::start(&bed, "s1", SocketAddrV4::new(S1, 5000));
    let s2 = Stream::start(&bed, "s2", SocketAddrV4::new(S2, 5000));
    wait_until("answers to both subscribers", SETTLE, || {
        s1.answered_since(Instant::now() - Duration::from_secs(1)) > 5
            && s2.answered_since(Instant::now() - Duration::from_secs(1)) > 5
    });
    let s1_ext = far.sources_of("s1:5000")[0];
    let s2_ext = far.sources_of("s2:5000")[0];
    assert!(pool(1).contains(*s1_ext.ip()), "s1 came from {s1_ext}");
    assert!(pool(2).contains(*s2_ext.ip()), "s2 came from {s2_ext}");

    // A TCP transfer through node 1; then node 1 loses power.
    let tcp = tcp_transfer(&bed, 4 << 20);
    thread::sleep(Duration::from_secs(2)); // the sessions reach node 2
    let applied = cluster_status(&bed, 2)["counters"]["records_applied"]
        .as_u64()
        .unwrap();
    assert!(
        applied >= 4,
        "node 2 installed {applied} records of node 1's"
    );
    let _ = n1.log(); // keep node 1's log readable in a failure message
    let killed = bed.kill_node(1).expect("kill node 1");
    let _ = std::fs::remove_dir_all(bed.pin_path(1)); // the power loss took the tables
    let moved = bed
        .wait_route_since(killed, "upr", 254, POOL_SLICES[0], node_ext(2), SETTLE)
        .unwrap();
    eprintln!("upstream router moved slice 1 to node 2 after {moved:?}");
    wait_until("s1's answers through node 2", SETTLE, || {
        s1.answered_since(killed + moved) > 5
    });
    let gap = s1.longest_gap(killed - Duration::from_millis(100), Instant::now());
    eprintln!("s1's longest wait for an answer across the failover: {gap:?}");
    assert!(
        gap <= FAILOVER,
        "s1 waited {gap:?} for an answer (budget {FAILOVER:?})"
    );

    // The mapping is the same; an external host that learned it (EIF)
    // still reaches s1, now through node 2.
    let probe = bed
        .in_ns("ext", || UdpSocket::bind(SocketAddrV4::new(EXT, EIF_FROM)))
        .unwrap()
        .unwrap();
    probe.send_to(b"eif hello", s1_ext).unwrap();
    wait_until("the EIF probe at s1", Duration::from_secs(3), || {
        s1.probes
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.ends_with("eif hello"))
    });
    let done = tcp.join().expect("tcp thread");
    let answer = done.unwrap_or_else(|e| panic!("TCP transfer across the failover: {e}"));
    eprintln!("TCP transfer: {answer}");
    assert!(answer.contains(&s1_ext.ip().to_string()), "{answer}");
    // node 2 serves slice 1 once node 1 is declared dead; a flow opened
    // then gets a port of slice 1 from node 2
    wait_serving(&mut n2, 2, "[1, 2]");
    let s1b = Stream::start(&bed, "s1", SocketAddrV4::new(S1, 5001));
    wait_until("the new flow through node 2", SETTLE, || {
        s1b.answered_since(Instant::now() - Duration::from_secs(1)) > 5
    });
    let s1b_ext = far.sources_of("s1:5001")[0];
    assert!(pool(1).contains(*s1b_ext.ip()), "new flow from {s1b_ext}");
    assert_eq!(
        s1b_ext.ip(),
        s1_ext.ip(),
        "paired pooling across the failover"
    );

    // Node 1 comes back: resync, failback, routes back; both flows keep
    // their external endpoints.
    bed.revive_node(1).expect("revive node 1");
    let back = Instant::now();
    n1 = start_node_full(&bed, 1, "immediate", "dynamic");
    wait_serving(&mut n1, 1, "[1]");
    // node 2's log holds "[2]" from the start: the hand-back is its status
    wait_until("node 2 hands slice 1 back", SETTLE, || {
        cluster_status(&bed, 2)["serves"] == serde_json::json!([2])
    });
    bed.wait_route("upr", 254, POOL_SLICES[0], node_ext(1), SETTLE)
        .expect("slice 1 routed to node 1 again");
    thread::sleep(Duration::from_secs(1));
    let gap = s1b.longest_gap(back + Duration::from_secs(1), Instant::now());
    assert!(
        gap <= FAILOVER,
        "the flow opened on node 2 waited {gap:?} at failback"
    );
    assert_eq!(
        far.sources_of("s1:5000"),
        vec![s1_ext],
        "s1:5000's mapping moved"
    );
    assert_eq!(
        far.sources_of("s1:5001"),
        vec![s1b_ext],
        "s1:5001's mapping moved"
    );
    assert_eq!(
        far.sources_of("s2:5000"),
        vec![s2_ext],
        "s2:5000's mapping moved"
    );
    far.assert_no_port_twice();
    for ns in ["n1", "n2"] {
        assert_eq!(forw_datagrams(&bed, ns), 0, "{ns} forwarded in the kernel");
    }
    drop((s1, s1b, s2));
    let _ = (n1.log(), n2.log());
}

/// The first Update datagram node 1 sends node 2 on the sync link, as
/// node 2's interface receives it.
fn capture_update(bed: &ClusterBed) -> Vec<u8> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType};
    use std::os::fd::AsRawFd;
    let fd = bed
        .in_ns("n2", || {
            socket::socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::EthAll,
            )
        })
        .unwrap()
        .unwrap();
    let tv = nix::sys::time::TimeVal::new(0, 100_000);
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv).unwrap();
    let end = Instant::now() + SETTLE;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < end {
        let Ok(n) = socket::recv(fd.as_raw_fd(), &mut buf, socket::MsgFlags::empty()) else {
            continue;
        };
        // an Ethernet frame: IPv4 after 14 bytes
        if n < 14 + 28 || buf[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &buf[14..n];
        if ip[9] != 17 || ip[12..16] != node_sync(1).octets() {
            continue;
        }
        let hl = usize::from(ip[0] & 15) * 4;
        let udp = &ip[hl..];
        let payload = &udp[8..];
        if u16::from_be_bytes([udp[2], udp[3]]) == 7946 && payload.len() > 6 && payload[5] == 2 {
            return payload.to_vec();
        }
    }
    panic!("no Update from node 1 on the sync link");
}

#[test]
fn hostile_sync_a_lost_sync_link_and_a_failed_self_check() {
    let Some((run, bed, mut n1, mut n2)) = Run::start("immediate", "dynamic") else {
        return;
    };
    let far = run.far.clone();
    let s1 = Stream::start(&bed, "s1", SocketAddrV4::new(S1, 5000));
    let s2 = Stream::start(&bed, "s2", SocketAddrV4::new(S2, 5000));
    let capture = thread::scope(|sc| {
        let h = sc.spawn(|| capture_update(&bed));
        h.join().unwrap()
    });
    wait_until("answers to both subscribers", SETTLE, || {
        s1.answered_since(Instant::now() - Duration::from_secs(1)) > 5
            && s2.answered_since(Instant::now() - Duration::from_secs(1)) > 5
    });
    thread::sleep(Duration::from_secs(1));

    // From node 1's address (so only the tag and the sequence can tell):
    // the captured Update again (a replay), a forged copy, a truncated
    // copy, one under another key, and garbage.
    let before = cluster_status(&bed, 2);
    let applied_before = before["counters"]["records_applied"].as_u64().unwrap();
    let mut forged = capture.clone();
    let last = forged.len() - 40;
    forged[last] ^= 0x01;
    let other_key = cgnat::cluster::wire::Key::new(b"not the cluster key at all").unwrap();
    let foreign = cgnat::cluster::wire::encode(
        &cgnat::cluster::wire::Message {
            header: cgnat::cluster::wire::Header {
                kind: cgnat::cluster::wire::Kind::Update,
                node: 1,
                epoch: u64::MAX - 1,
                seq: 1,
            },
            records: vec![cgnat::cluster::wire::Record::BindingGone {
                proto: 17,
                ext_addr: Ipv4Addr::new(203, 0, 113, 9),
                ext_port: 1,
            }],
        },
        &other_key,
    )
    .unwrap();
    let sender = bed
        .in_ns("n1", || UdpSocket::bind(SocketAddrV4::new(node_sync(1), 0)))
        .unwrap()
        .unwrap();
    let to = SocketAddrV4::new(node_sync(2), 7946);
    for d in [
        &capture[..],
        &forged[..],
        &capture[..capture.len() / 2],
        &foreign[..],
        b"hello?",
    ] {
        sender.send_to(d, to).unwrap();
    }
    // the daemon writes its status every 500 ms, later when the machine
    // is busy: wait for the rejections to show, then check them
    let counted = |s: &serde_json::Value| {
        let r = &s["counters"]["rejected"];
        r["replayed"].as_u64().unwrap_or(0) >= 1
            && r["bad_mac"].as_u64().unwrap_or(0) + r["short"].as_u64().unwrap_or(0) >= 4
    };
    let end = Instant::now() + SETTLE;
    let mut after = cluster_status(&bed, 2);
    while !counted(&after) && Instant::now() < end {
        thread::sleep(Duration::from_millis(100));
        after = cluster_status(&bed, 2);
    }
    let rejected = &after["counters"]["rejected"];
    eprintln!("node 2 rejected: {rejected}");
    assert!(
        rejected["replayed"].as_u64().unwrap_or(0) >= 1,
        "{rejected}"
    );
    let bad = rejected["bad_mac"].as_u64().unwrap_or(0) + rejected["short"].as_u64().unwrap_or(0);
    assert!(
        bad >= 4,
        "forged, truncated, foreign and garbage: {rejected}"
    );
    assert_eq!(
        after["counters"]["conflicts"],
        before["counters"]["conflicts"]
    );
    // nothing the hostile datagrams carried was installed: what node 2
    // applied since came from node 1's own updates only, and s1 still
    // goes on from the same endpoint
    assert!(after["counters"]["records_applied"].as_u64().unwrap() >= applied_before);

    // The sync link alone goes down for 3 s: both nodes log it, no
    // subscriber notices, the slices settle back when it returns.
    let s1_ext = far.sources_of("s1:5000");
    let cut = Instant::now();
    bed.sync_link(1, false).unwrap();
    n2.wait_for_line(|l| l.contains("peer 1 (10.0.3.11) is down"), SETTLE)
        .expect("node 2 logs the lost peer");
    n1.wait_for_line(|l| l.contains("peer 2 (10.0.3.12) is down"), SETTLE)
        .expect("node 1 logs the lost peer");
    thread::sleep(Duration::from_secs(2));
    bed.sync_link(1, true).unwrap();
    wait_until("slices back with their owners", SETTLE, || {
        cluster_status(&bed, 1)["serves"] == serde_json::json!([1])
            && cluster_status(&bed, 2)["serves"] == serde_json::json!([2])
    });
    let gap = s1
        .longest_gap(cut, Instant::now())
        .max(s2.longest_gap(cut, Instant::now()));
    assert!(
        gap < Duration::from_millis(500),
        "a subscriber waited {gap:?}"
    );
    assert_eq!(far.sources_of("s1:5000"), s1_ext, "s1's mapping moved");
    far.assert_no_port_twice();

    // Node 1's data path stops (its XDP link is detached under it): its
    // self-check fails, it withdraws its routes and goes silent, node 2
    // serves both slices, and s1 goes on with the same mapping.
    let link = xdp_link_of(&bed, "n1", "int0");
    bed.run(
        "n1",
        &["bpftool", "link", "detach", "id", &link.to_string()],
    )
    .expect("bpftool link detach");
    let broke = Instant::now();
    n1.wait_for_line(|l| l.contains("self-check failed"), SETTLE)
        .expect("node 1 notices its data path is gone");
    bed.wait_route_since(broke, "upr", 254, POOL_SLICES[0], node_ext(2), SETTLE)
        .expect("slice 1 moves to node 2");
    wait_serving(&mut n2, 2, "[1, 2]");
    let t = Instant::now();
    wait_until("s1's answers through node 2", SETTLE, || {
        s1.answered_since(t) > 5
    });
    assert_eq!(far.sources_of("s1:5000"), s1_ext, "s1's mapping moved");
    for ns in ["n1", "n2"] {
        assert_eq!(forw_datagrams(&bed, ns), 0, "{ns} forwarded in the kernel");
    }
    drop((s1, s2));
}

/// The id of the bpf_link attaching XDP to `iface` in namespace `ns`.
fn xdp_link_of(bed: &ClusterBed, ns: &str, iface: &str) -> u64 {
    let link = bed.run(ns, &["ip", "-d", "link", "show", iface]).unwrap();
    let prog: u64 = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program on {ns} {iface}: {link}"));
    let links: serde_json::Value =
        serde_json::from_str(&bed.run(ns, &["bpftool", "-j", "link", "show"]).unwrap()).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["prog_id"].as_u64() == Some(prog))
        .and_then(|l| l["id"].as_u64())
        .unwrap_or_else(|| panic!("no link of program {prog}: {links}"))
}

#[test]
fn manual_failback_waits_for_the_operator_port_blocks_follow() {
    let Some((run, mut bed, mut n1, mut n2)) = Run::start("manual", "port-block") else {
        return;
    };
    let far = run.far.clone();
    let s1 = Stream::start(&bed, "s1", SocketAddrV4::new(S1, 5000));
    wait_until("answers to s1", SETTLE, || {
        s1.answered_since(Instant::now() - Duration::from_secs(1)) > 5
    });
    thread::sleep(Duration::from_secs(1));
    let s1_ext = far.sources_of("s1:5000")[0];
    bed.kill_node(1).expect("kill node 1");
    drop(n1);
    let _ = std::fs::remove_dir_all(bed.pin_path(1));
    wait_serving(&mut n2, 2, "[1, 2]");

    // node 1 comes back, resyncs, and stays the backup of its own slice
    bed.revive_node(1).expect("revive node 1");
    // a flow opened on node 2 while it serves slice 1: a port of the
    // block node 1 had given s1 (the block came with the sync)
    let s1b = Stream::start(&bed, "s1", SocketAddrV4::new(S1, 5001));
    wait_until("s1's new flow through node 2", SETTLE, || {
        s1b.answered_since(Instant::now() - Duration::from_secs(1)) > 5
    });
    let s1b_ext = far.sources_of("s1:5001")[0];
    assert_eq!(
        s1b_ext.ip(),
        s1_ext.ip(),
        "paired pooling across the failover"
    );
    assert_eq!(
        (s1b_ext.port() - 1024) / 64,
        (s1_ext.port() - 1024) / 64,
        "s1's second port {s1b_ext} is outside its block (first port {s1_ext})"
    );
    n1 = start_node_full(&bed, 1, "manual", "port-block");
    thread::sleep(Duration::from_secs(3));
    let st = cluster_status(&bed, 1);
    assert_eq!(st["serves"], serde_json::json!([]), "{st}");
    assert_eq!(st["resynced"], serde_json::json!(true), "{st}");
    assert_eq!(
        bed.route_via("upr", 254, POOL_SLICES[0]).unwrap(),
        Some(node_ext(2)),
        "slice 1 must stay at node 2 until the operator says"
    );

    // the operator: `cgnat cluster failback` on node 1
    let cfg = bed.dir().join("n1.toml").display().to_string();
    let bin = cgnat_kit::cgnat_binary().display().to_string();
    let out = bed
        .run("n1", &[&bin, "--config", &cfg, "cluster", "failback"])
        .expect("cgnat cluster failback");
    assert!(out.contains("take its slice back"), "{out}");
    wait_serving(&mut n1, 1, "[1]");
    bed.wait_route("upr", 254, POOL_SLICES[0], node_ext(1), SETTLE)
        .expect("slice 1 back at node 1");
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        far.sources_of("s1:5000"),
        vec![s1_ext],
        "s1's mapping moved"
    );
    assert_eq!(
        far.sources_of("s1:5001"),
        vec![s1b_ext],
        "s1:5001's mapping moved"
    );
    far.assert_no_port_twice();
    let human = bed
        .run("n1", &[&bin, "--config", &cfg, "cluster"])
        .expect("cgnat cluster");
    assert!(human.contains("node 1 serves slices [1]"), "{human}");
    assert!(human.contains("peer 2 10.0.3.12: up"), "{human}");
    drop((s1, s1b));
    let _ = n2.log();
}
