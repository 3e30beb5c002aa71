//! Two CPUs creating the same flows at the same moment.
//!
//! Bindings and sessions are created without a global lock: a binding's
//! external port is claimed by a `BPF_NOEXIST` insert and a session is
//! put under its segment's lock (bpf/nat.h, bpf/sessions.h). Both CPUs
//! here send the same new flows in the same order, so they keep racing to
//! create the same binding and the same session.
//!
//! The data path runs in softirq context, where nothing preempts a CPU
//! that holds a segment's lock. BPF_PROG_TEST_RUN runs it preemptible, so
//! the two workers run SCHED_FIFO: the other tests' threads cannot
//! preempt one of them while it holds a lock the other waits for.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::sync::Barrier;

use cgnat::expiry::{monotonic_ns, Sweeper};

const SUBSCRIBERS: u8 = 32;
const PORTS: u16 = 8;
const ROUNDS: u16 = 8;
/// Packets of the 8,192 that may find a segment locked for too long: a
/// packet that creates a binding takes two segment locks (the binding's
/// outbound half, then the session), about 12,000 lock attempts in all,
/// at the rate of 4 in 8,192 allowed when there was one lock per packet.
const MAX_BUSY: usize = 6;

/// One frame per flow: every subscriber, port and remote of a round.
fn round_frames(round: u16) -> Vec<Pkt> {
    let mut v = Vec::new();
    for s in 1..=SUBSCRIBERS {
        for i in 0..PORTS {
            for r in [R10, R20] {
                let src = (Ipv4Addr::new(100, 64, 1, s), 10_000 + round * 100 + i);
                let mac = [0x02, 0x11, 0, 0, 1, s];
                v.push(Pkt::udp(src, (r, 3478), b"race").macs(mac, INT0_MAC));
            }
        }
    }
    v
}

/// Runs `frame` once through the program whose descriptor is `fd`, as
/// received on `ifindex`: the verdict and the frame it left.
fn run_fd(fd: i32, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    let mut ctx = cgnat::bpf::xdp_ctx(frame.len(), ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    // SAFETY: zeroed is a valid bpf_test_run_opts; sz is set.
    let mut o: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    o.sz = std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _;
    o.data_in = frame.as_ptr().cast();
    o.data_size_in = frame.len() as u32;
    o.data_out = out.as_mut_ptr().cast();
    o.data_size_out = out.len() as u32;
    o.ctx_in = ctx.as_mut_ptr().cast();
    o.ctx_size_in = ctx.len() as u32;
    o.repeat = 1;
    // SAFETY: every pointer names a live buffer of the size given.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut o) };
    assert_eq!(ret, 0, "BPF_PROG_TEST_RUN: {ret}");
    out.truncate(o.data_size_out as usize);
    (o.retval, out)
}

/// Each round's flows, sent by both CPUs at once: every flow is
/// forwarded, both copies with the same external endpoint (at most
/// MAX_BUSY copies of all are dropped as `drop_table_busy`), and each flow
/// ends with one binding per internal endpoint and one session, counted
/// once; after a sweep every subscriber counts exactly its own.
#[test]
fn two_cpus_create_the_same_flows() {
    let test = "two_cpus_create_the_same_flows";
    if !netns::privileged(test) {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        assert!(
            std::env::var("CI").is_err(),
            "{test}: needs 2 CPUs, this machine has {cpus}"
        );
        eprintln!("{test}: skipped, needs 2 CPUs");
        return;
    }
    let ns = NetNs::create("c");
    ns.enter(|| {
        let h = Harness::load_text(
            test,
            &config_text("max_sessions = 8192\nmax_bindings = 4096", ""),
        );
        let fd = h.dp.prog_fd(Side::Internal).as_raw_fd();
        let int0 = h.int0;
        let mut flows = 0usize;
        // packets dropped because a segment stayed locked
        let mut busy: Vec<String> = Vec::new();
        for round in 0..ROUNDS {
            let frames: Vec<Vec<u8>> = round_frames(round).iter().map(Pkt::bytes).collect();
            let start = Barrier::new(2);
            let outs: Vec<Vec<(u32, Vec<u8>)>> = std::thread::scope(|sc| {
                let workers: Vec<_> = (0..2usize)
                    .map(|cpu| {
                        let (frames, start) = (&frames, &start);
                        sc.spawn(move || {
                            let mut set = nix::sched::CpuSet::new();
                            set.set(cpu).expect("cpu set");
                            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                                .expect("sched_setaffinity");
                            let tid = nix::unistd::gettid().to_string();
                            let rt = std::process::Command::new("chrt")
                                .args(["-f", "-p", "50", &tid])
                                .status()
                                .expect("chrt (util-linux)");
                            assert!(rt.success(), "chrt -f -p 50 {tid}: {rt}");
                            start.wait();
                            frames.iter().map(|f| run_fd(fd, f, int0)).collect()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("worker"))
                    .collect()
            });
            for (i, p) in round_frames(round).iter().enumerate() {
                let ext = h
                    .external_of(p)
                    .unwrap_or_else(|e| panic!("round {round} flow {i}: {e}"));
                let want = outbound(p, ext);
                let mut forwarded = 0;
                for (cpu, (v, out)) in [&outs[0][i], &outs[1][i]].into_iter().enumerate() {
                    let what = format!(
                        "round {round} flow {i} ({}:{}), CPU {cpu}",
                        p.src,
                        p.sport()
                    );
                    match *v {
                        XDP_REDIRECT => {
                            assert_eq!(out, &want, "{what}: frame");
                            forwarded += 1;
                        }
                        XDP_DROP => busy.push(what),
                        v => panic!(
                            "{what}: verdict {}, frame {out:02x?}; counters {:?}",
                            verdict_name(v),
                            h.counters()
                                .into_iter()
                                .filter(|c| c.1 > 0)
                                .collect::<Vec<_>>()
                        ),
                    }
                }
                assert!(
                    forwarded >= 1,
                    "round {round} flow {i}: neither CPU forwarded it"
                );
            }
            flows += frames.len();
        }

        let sessions = h.tables.sessions.dump().expect("dump sessions");
        let keys: BTreeSet<_> = sessions
            .iter()
            .map(|(k, _)| cgnat::bpf::bytes_of(k).to_vec())
            .collect();
        assert_eq!(sessions.len(), flows, "sessions in the table");
        assert_eq!(keys.len(), flows, "distinct session keys");
        assert_eq!(
            h.tables.sessions.count().expect("count"),
            flows as u64,
            "the table's count"
        );
        let bindings = flows as u64 / 2;
        assert_eq!(h.bindings_in(), bindings, "bind_in entries");
        assert_eq!(h.bindings_out(), bindings, "outbound halves");
        let fwd = h
            .counters()
            .into_iter()
            .find(|c| c.0 == "fwd_out")
            .map_or(0, |c| c.1);
        let dropped = h
            .counters()
            .into_iter()
            .find(|c| c.0 == "drop_table_busy")
            .map_or(0, |c| c.1);
        assert_eq!(dropped, busy.len() as u64, "drop_table_busy: {busy:?}");
        assert_eq!(fwd + dropped, 2 * flows as u64, "fwd_out packets");
        // A writer waits for a lock held by a CPU that is running; it
        // gives up only when the holder stopped running (here: the test
        // thread preempted by the host, as a virtual CPU may be).
        assert!(
            busy.len() <= MAX_BUSY,
            "{} packets dropped as drop_table_busy: {busy:?}",
            busy.len()
        );

        // the sweep recounts what a lost race counted twice
        let sweeper = Sweeper {
            timeouts: h.cfg.timeouts.clone(),
            quarantine: h.cfg.port_quarantine,
            blocks: None,
            pool: h.cfg.pool_addrs.clone(),
        };
        let rep = sweeper.sweep(&h.tables, monotonic_ns()).expect("sweep");
        assert_eq!(
            rep.sessions_live, flows as u64,
            "live sessions after the sweep"
        );
        let per_sub = flows as u32 / u32::from(SUBSCRIBERS);
        let mut seen = BTreeMap::new();
        for (k, v) in cgnat::bpf::lookup_all(&h.tables.subscribers, 256).expect("subscribers") {
            let addr = addr_of(u32::from_ne_bytes(k[..4].try_into().expect("key")));
            let s: types::cgnat_subscriber = cgnat::bpf::from_bytes(&v).expect("subscriber");
            seen.insert(addr, s.sessions);
        }
        assert_eq!(
            seen.len(),
            usize::from(SUBSCRIBERS),
            "subscribers: {seen:?}"
        );
        for (addr, n) in &seen {
            assert_eq!(*n, per_sub, "sessions of subscriber {addr}");
        }
    });
}
