//! Cluster sync at the new-session rate.
//!
//! Node 1 of a two-node cluster (serving its own slice) creates new UDP
//! flows through its program; a single-node data path with the same
//! subscribers and the same 32 pool addresses creates the same flows, run
//! for run, so the two new-flow costs compare. Then what one sync interval
//! after all those flows costs node 1 (the engine's `sync`: scan, diff,
//! batches, datagrams) and node 2 (the engine's `receive`: decode, replay
//! window, install), with the product's own functions, into node 2's own
//! data path, whose maps must then hold exactly what node 1 sent.

use super::*;
use cgnat::cluster::install::{install_all, Outcome};
use cgnat::cluster::link::Inbound;
use cgnat::cluster::state::{self, Policy, Sent};
use cgnat::cluster::wire::{self, Batcher, Header, Key, Kind, Message};
use std::os::unix::fs::OpenOptionsExt;

/// The pools, as prefixes of 198.18.0.0/15 (RFC 2544's benchmarking
/// range): node 1's (the single-node configuration allocates from the same
/// addresses), node 2's, and both. A /27 each, or larger when `sessions`
/// would take more than a quarter of a node's ports (the port search then
/// still finds a free port in a few tries).
fn sync_pools(sessions: u64) -> [String; 3] {
    let addrs = (sessions / 16_384).next_power_of_two().clamp(32, 1 << 15);
    let len = 32 - addrs.trailing_zeros();
    let base = Ipv4Addr::new(198, 18, 0, 0);
    let node2 = Ipv4Addr::from(u32::from(base) + addrs as u32);
    [
        format!("{base}/{len}"),
        format!("{node2}/{len}"),
        format!("{base}/{}", len - 1),
    ]
}

/// The cluster's key file (mode 600, as `cgnat check` wants it), removed
/// on drop.
struct KeyFile(PathBuf);

impl KeyFile {
    fn create() -> Result<KeyFile> {
        let path = std::env::temp_dir().join(format!("cgnat-bench-{}.key", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .ctx(format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut f, b"cgnat-bench-sync-key-0123456789ab\n")
            .ctx(format!("writing {}", path.display()))?;
        Ok(KeyFile(path))
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The data path's configuration: single-node (`node` None) or node
/// `node` of a two-node cluster splitting 100.64.0.0/10 and the pools of
/// [`sync_pools`] in halves (node 1: 100.64.0.0/11 and the first pool).
fn sync_config(size: u32, pools: &[String; 3], node: Option<(u16, &Path)>) -> Result<Config> {
    let [one, two, both] = pools;
    let (pool, cluster) = match node {
        None => (one.clone(), String::new()),
        Some((id, key)) => (
            both.clone(),
            format!(
                r#"
[cluster]
id = {id}
key_file = "{}"
route_table = 0
[[cluster.nodes]]
id = 1
address = "10.0.3.11"
subscribers = ["100.64.0.0/11"]
pool = ["{one}"]
[[cluster.nodes]]
id = 2
address = "10.0.3.12"
subscribers = ["100.96.0.0/11"]
pool = ["{two}"]
"#,
                key.display()
            ),
        ),
    };
    let text = format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
send_back = "xdp_tx"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["{pool}"]
max_sessions = {size}
max_bindings = {size}
[pool]
max_subscribers = 65536
[daemon]
pin_path = "/sys/fs/bpf/cgnat-bench-unused"
{cluster}"#
    );
    Config::parse(&text, Path::new("(bench sync)")).ctx("bench sync config")
}

/// Entries of a map.
fn entries(m: &MapHandle) -> Result<u64> {
    Ok(cgnat::bpf::lookup_all(m, 4096).ctx("reading a map")?.len() as u64)
}

/// (CPU seconds of this thread, wall seconds) since `start`.
fn since(start: (u64, Instant)) -> (f64, f64) {
    (
        cgnat::clock::thread_cpu_ns().saturating_sub(start.0) as f64 / 1e9,
        start.1.elapsed().as_secs_f64(),
    )
}

fn now() -> (u64, Instant) {
    (cgnat::clock::thread_cpu_ns(), Instant::now())
}

pub(super) fn bench_sync(p: &Params, ns: &Ns) -> Result<SyncResult> {
    in_ns(ns, || {
        let runs = p.runs.max(1);
        let per_run = p.sync_sessions.div_ceil(runs as u32).max(1);
        let total = u64::from(per_run) * runs as u64;
        let size = (total + 4096).next_power_of_two().max(1024) as u32;
        let key_file = KeyFile::create()?;
        let pools = sync_pools(total);
        let single_cfg = sync_config(size, &pools, None)?;
        let cfg1 = sync_config(size, &pools, Some((1, &key_file.0)))?;
        let cfg2 = sync_config(size, &pools, Some((2, &key_file.0)))?;
        let Some(cl) = cfg1.cluster.clone() else {
            return fail("the cluster configuration has no [cluster]");
        };
        let key = Key::from_file(&cl.key_file).ctx("cluster key")?;
        let rate_tokens = cfg2.limits.new_mappings_per_second;

        let single = load_dp(&single_cfg, false)?;
        let node1 = load_dp(&cfg1, false)?;
        // node 1 serves its own slice (the engine's decision at start-up
        // when node 2 serves nothing)
        node1.set_slices_active(&cfg1, 0b01)?;
        let ts = single.tables().ctx("tables")?;
        let t1 = node1.tables().ctx("tables")?;
        let int0 = ifindex("int0")?;
        let r10 = sock(R10, 3478);
        let est = udp_frame(INT0_MAC, SUB_MAC, sock(H11, 5000), r10);
        run_once(&single, Side::Internal, &est, int0, XDP_REDIRECT)?;
        run_once(&node1, Side::Internal, &est, int0, XDP_REDIRECT)?;
        let mut fl = Floor::load(0, 1, (1, 1)).ctx("loading the floor")?;
        fl.set_frames(std::slice::from_ref(&est))
            .ctx("feeder frames")?;

        // The daemon drains the event ring (binding log records); so do we.
        let mut rb = libbpf_rs::RingBufferBuilder::new();
        for dp in [&single, &node1] {
            rb.add(dp.events(), |_| 0).ctx("ring buffer")?;
        }
        let rb = rb.build().ctx("ring buffer")?;

        let mut r = SyncResult {
            flows_per_run: per_run,
            ..SyncResult::default()
        };

        // The data path: the same new flows through both configurations,
        // the order alternating per run; then udp_out established.
        let base = u32::from(Ipv4Addr::new(100, 65, 0, 0));
        for run in 0..runs {
            let frames: Vec<Vec<u8>> = (0..per_run)
                .map(|k| {
                    let g = run as u32 * per_run + k;
                    let src = Ipv4Addr::from(base + g % NEW_FLOW_SUBS);
                    let port = 1024 + (g / NEW_FLOW_SUBS) as u16;
                    udp_frame(INT0_MAC, SUB_MAC, sock(src, port), r10)
                })
                .collect();
            let order: [(&Datapath, &Tables, bool); 2] = if run % 2 == 0 {
                [(&single, &ts, false), (&node1, &t1, true)]
            } else {
                [(&node1, &t1, true), (&single, &ts, false)]
            };
            let mut emp = Vec::with_capacity(per_run as usize);
            for _ in 0..per_run {
                let (_, ns) = fl
                    .run(Prog::Empty, &est, int0, 1)
                    .ctx("BPF_PROG_TEST_RUN")?;
                emp.push(ns as f64);
            }
            let o = median(&emp);
            r.overhead_ns.runs.push(o);
            for (dp, t, is_cluster) in order {
                let before = counter(t, "fwd_out")?;
                let mut new = Vec::with_capacity(frames.len());
                for (k, f) in frames.iter().enumerate() {
                    let x = dp
                        .run(Side::Internal, f, int0, 1)
                        .ctx("BPF_PROG_TEST_RUN")?;
                    if x.action != XDP_REDIRECT {
                        return fail(format!(
                            "new flow {k} got XDP action {} (cluster config: {is_cluster})",
                            x.action
                        ));
                    }
                    new.push(x.mean_ns as f64);
                    if k % 256 == 255 {
                        let _ = rb.consume();
                    }
                }
                let _ = rb.consume();
                let got = counter(t, "fwd_out")? - before;
                if got != frames.len() as u64 {
                    return fail(format!(
                        "{got} of {} new flows forwarded (cluster config: {is_cluster})",
                        frames.len()
                    ));
                }
                let (m, a) = (median(&new) - o, mean(&new) - o);
                if is_cluster {
                    r.cluster_new_ns.runs.push(m);
                    r.cluster_new_mean_ns.runs.push(a);
                } else {
                    r.single_new_ns.runs.push(m);
                    r.single_new_mean_ns.runs.push(a);
                }
            }
            let last = |s: &Stat| s.runs.last().copied().unwrap_or(f64::NAN);
            r.extra_mean_ns
                .runs
                .push(last(&r.cluster_new_mean_ns) - last(&r.single_new_mean_ns));
            r.extra_median_ns
                .runs
                .push(last(&r.cluster_new_ns) - last(&r.single_new_ns));
            let (_, e) = feed(&fl, Target::Empty, int0, p.repeat)?;
            r.feeder_ns.runs.push(e);
            for (dp, t, is_cluster) in order {
                let x = feed_cgnat(&fl, dp, t, Side::Internal, int0, p.repeat, "fwd_out")? - e;
                if is_cluster {
                    r.cluster_est_ns.runs.push(x);
                } else {
                    r.single_est_ns.runs.push(x);
                }
            }
        }
        drop(rb);
        drop(single);
        eprintln!(
            "bench:   new flow single-node {:.0} ns (mean {:.0}), cluster {:.0} ns (mean {:.0}); \
             udp_out {:.1} / {:.1} ns",
            r.single_new_ns.median(),
            r.single_new_mean_ns.median(),
            r.cluster_new_ns.median(),
            r.cluster_new_mean_ns.median(),
            r.single_est_ns.median(),
            r.cluster_est_ns.median()
        );

        // Send side: one sync interval after all of it, as Engine::sync
        // (one peer): read the slice, diff against nothing sent yet, pack,
        // tag.
        let mine = |a: Ipv4Addr| cl.me().serves_external(a);
        let policy = Policy {
            session_age: cl.session_age,
            refresh: Duration::from_secs(2),
        };
        let epoch = 1_700_000_000_000_000_000u64;
        let mut datagrams: Vec<Vec<u8>> = Vec::new();
        for _ in 0..runs {
            let t0 = now();
            let snap = state::scan(&t1, &mine);
            let (scan, _) = since(t0);
            let t = now();
            let mut sent = Sent::default();
            let records = sent.diff(&snap, cgnat::clock::monotonic_ns(), policy, usize::MAX);
            let (diff, _) = since(t);
            let n_records = records.len() as u64;
            let t = now();
            let mut b = Batcher::new();
            for rec in records {
                b.push(rec).ctx("batching a record")?;
            }
            let out: Vec<Vec<u8>> = b
                .finish()
                .into_iter()
                .enumerate()
                .map(|(i, records)| {
                    let msg = Message {
                        header: Header {
                            kind: Kind::Update,
                            node: cl.id,
                            epoch,
                            seq: i as u64 + 1,
                        },
                        records,
                    };
                    wire::encode(&msg, &key)
                })
                .collect::<std::result::Result<_, _>>()
                .ctx("encoding")?;
            let (encode, _) = since(t);
            let (_, wall) = since(t0);
            let t = now();
            // the next read reuses the last one's lists, as the engine does
            let mut snap = snap;
            state::scan_into(&t1, &mine, &mut snap);
            let again = sent.diff(&snap, cgnat::clock::monotonic_ns(), policy, usize::MAX);
            let (idle, _) = since(t);
            if !again.is_empty() {
                return fail(format!(
                    "{} records in an interval where nothing changed",
                    again.len()
                ));
            }
            r.idle_secs.runs.push(idle);
            let t = now();
            std::hint::black_box(t1.bindings.dump().ctx("reading a map")?);
            std::hint::black_box(t1.sessions.dump().ctx("reading a map")?);
            for m in [&t1.subscribers, &t1.blocks] {
                std::hint::black_box(cgnat::bpf::lookup_all(m, 4096).ctx("reading a map")?);
            }
            r.read_secs.runs.push(since(t).0);
            r.scan_secs.runs.push(scan);
            r.diff_secs.runs.push(diff);
            r.encode_secs.runs.push(encode);
            r.send_secs.runs.push(scan + diff + encode);
            r.send_wall_secs.runs.push(wall);
            r.sessions = snap.sessions.len() as u64;
            r.bindings = snap.bindings.len() as u64;
            r.subscribers = snap.subscribers.len() as u64;
            r.records = n_records;
            r.datagrams = out.len() as u64;
            r.bytes = out.iter().map(|d| d.len() as u64).sum();
            datagrams = out;
        }
        // every new flow and the established one, nothing else
        if r.sessions != total + 1 || r.bindings != total + 1 {
            return fail(format!(
                "node 1's scan found {} sessions and {} bindings, expected {}",
                r.sessions,
                r.bindings,
                total + 1
            ));
        }
        eprintln!(
            "bench:   send {} sessions: {} records in {} datagrams ({} bytes), {:.3} s CPU",
            r.sessions,
            r.records,
            r.datagrams,
            r.bytes,
            r.send_secs.median()
        );

        // Receive side: node 2's own data path, fresh each run, as
        // Engine::receive (replay window, then each datagram's records
        // installed).
        for _ in 0..runs {
            let node2 = load_dp(&cfg2, false)?;
            let t2 = node2.tables().ctx("tables")?;
            let mut inbound = Inbound::new();
            let t0 = now();
            let mut msgs = Vec::with_capacity(datagrams.len());
            for d in &datagrams {
                let m = wire::decode(d, &key).map_err(|e| BenchError(format!("decode: {e}")))?;
                inbound
                    .accept(m.header.epoch, m.header.seq)
                    .map_err(|e| BenchError(format!("replay window: {e}")))?;
                msgs.push(m);
            }
            let (decode, _) = since(t0);
            let t = now();
            let (mut applied, mut conflicts) = (0u64, 0u64);
            for m in &msgs {
                let now_ns = cgnat::clock::monotonic_ns();
                for r in install_all(&t2, &m.records, now_ns, rate_tokens) {
                    match r.ctx("install")? {
                        Outcome::Applied => applied += 1,
                        Outcome::Conflict => conflicts += 1,
                        Outcome::Ignored => {}
                    }
                }
            }
            let (install, _) = since(t);
            let (_, wall) = since(t0);
            r.decode_secs.runs.push(decode);
            r.install_secs.runs.push(install);
            r.recv_secs.runs.push(decode + install);
            r.recv_wall_secs.runs.push(wall);
            r.conflicts = conflicts;
            r.recv_sessions = t2.sessions.count().ctx("reading a map")?;
            r.recv_bind_in = t2.bindings.count().ctx("reading a map")?;
            r.recv_bind_out = t2.bindings.count_out().ctx("reading a map")?;
            r.recv_subscribers = entries(&t2.subscribers)?;
            if applied != r.records
                || r.recv_sessions != r.sessions
                || r.recv_bind_in != r.bindings
                || r.recv_bind_out != r.bindings
                || r.recv_subscribers != r.subscribers
            {
                return fail(format!(
                    "node 2 applied {applied} of {} records ({conflicts} conflicts) and holds \
                     {} sessions, {} + {} bindings, {} subscribers; node 1 sent {} sessions, \
                     {} bindings, {} subscribers",
                    r.records,
                    r.recv_sessions,
                    r.recv_bind_in,
                    r.recv_bind_out,
                    r.recv_subscribers,
                    r.sessions,
                    r.bindings,
                    r.subscribers
                ));
            }
        }
        eprintln!(
            "bench:   sync: send {:.0} sessions/s ({:.0} datagrams/s), receive {:.0} sessions/s \
             per core; data path {:.0} new flows/s",
            r.send_sessions_per_sec(),
            r.send_datagrams_per_sec(),
            r.recv_sessions_per_sec(),
            r.new_flows_per_sec()
        );
        Ok(r)
    })
}
