//! Scale.

use super::*;
use crate::rng::Rng;

/// Where the preloaded sessions are: subscriber k is 100.66.0.0 + k, its
/// j-th flow leaves from port 20000 + j to 198.51.100.10:3478 (UDP) on
/// pool address k / per_addr, port 1024 + (k % per_addr) * ports + j.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geo {
    pub(super) subs: u32,
    pub(super) ports: u32,
    pub(super) per_addr: u32,
}

impl Geo {
    pub(super) fn new(subs: u32, ports: u32) -> Result<Geo> {
        if ports == 0 || ports > 64512 {
            return fail("scale_ports must be 1..=64512");
        }
        let per_addr = 64512 / ports;
        if subs.div_ceil(per_addr) > POOL_SIZE || subs > 1 << 16 {
            return fail(format!(
                "{subs} subscribers x {ports} ports do not fit the pool {POOL}"
            ));
        }
        Ok(Geo {
            subs,
            ports,
            per_addr,
        })
    }

    pub(super) fn sub(&self, k: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 66, 0, 0)) + k)
    }

    pub(super) fn pool_idx(&self, k: u32) -> u32 {
        k / self.per_addr
    }

    pub(super) fn ext(&self, k: u32, j: u32) -> SocketAddrV4 {
        sock(
            Ipv4Addr::from(POOL_BASE + self.pool_idx(k)),
            (1024 + (k % self.per_addr) * self.ports + j) as u16,
        )
    }

    pub(super) fn int(&self, k: u32, j: u32) -> SocketAddrV4 {
        sock(self.sub(k), 20000 + j as u16)
    }

    pub(super) fn frame(&self, k: u32, j: u32) -> Vec<u8> {
        udp_frame(INT0_MAC, SUB_MAC, self.int(k, j), sock(R10, 3478))
    }

    /// Flow (k, j)'s binding: the inbound half (external endpoint ->
    /// internal) and the outbound half (internal endpoint -> external),
    /// as the data path writes them.
    pub(super) fn halves(
        &self,
        k: u32,
        j: u32,
    ) -> [(types::cgnat_endpoint, types::cgnat_binding); 2] {
        let end = |a: SocketAddrV4| types::cgnat_endpoint {
            addr: be(*a.ip()),
            port: a.port().to_be(),
            proto: PROTO_UDP,
            _pad: 0,
        };
        let (ie, ee) = (end(self.int(k, j)), end(self.ext(k, j)));
        let to = |e: types::cgnat_endpoint| types::cgnat_binding {
            addr: e.addr,
            port: e.port,
            ..Default::default()
        };
        [(ee, to(ie)), (ie, to(ee))]
    }

    /// The key of flow (k, j)'s session with remote R10:`rem_port`.
    pub(super) fn session_key(&self, k: u32, j: u32, rem_port: u16) -> types::cgnat_session_key {
        let ext = self.ext(k, j);
        types::cgnat_session_key {
            ext_addr: be(*ext.ip()),
            rem_addr: be(R10),
            ext_port: ext.port().to_be(),
            rem_port: rem_port.to_be(),
            proto: PROTO_UDP,
            ..Default::default()
        }
    }
}

/// The maps a preload writes: cgnat's, or `xdp_probe`'s (no reverse
/// bindings, no subscribers).
pub(super) struct Dest<'a> {
    bindings: BindingsDest<'a>,
    sessions: SessionsDest<'a>,
    subscribers: Option<&'a MapHandle>,
}

/// Where a preload's bindings go: both halves into cgnat's binding table,
/// or the outbound ones into `xdp_probe`'s map (the same keys and values).
enum BindingsDest<'a> {
    Cgnat(&'a Bindings),
    Probe(&'a MapHandle),
}

/// Where a preload's sessions go: cgnat's session table, or `xdp_probe`'s
/// map (the same keys and values).
enum SessionsDest<'a> {
    Cgnat(&'a Sessions),
    Probe(&'a MapHandle),
}

impl<'a> Dest<'a> {
    pub(super) fn cgnat(t: &'a Tables) -> Dest<'a> {
        Dest {
            bindings: BindingsDest::Cgnat(&t.bindings),
            sessions: SessionsDest::Cgnat(&t.sessions),
            subscribers: Some(&t.subscribers),
        }
    }

    pub(super) fn probe(maps: &'a (MapHandle, MapHandle)) -> Dest<'a> {
        Dest {
            bindings: BindingsDest::Probe(&maps.0),
            sessions: SessionsDest::Probe(&maps.1),
            subscribers: None,
        }
    }
}

/// Writes the bindings, sessions and subscribers of subscribers `subs`
/// as the data path would have created them at `now`.
pub(super) fn preload(t: &Dest<'_>, g: &Geo, subs: std::ops::Range<u32>, now: u64) -> Result<()> {
    const CHUNK: usize = 1 << 16;
    type Rows<K, V> = Vec<(K, V)>;
    let mut ss: Rows<types::cgnat_session_key, types::cgnat_session> = Vec::new();
    let mut bi: Rows<types::cgnat_endpoint, types::cgnat_binding> = Vec::new();
    let mut bo: Rows<types::cgnat_endpoint, types::cgnat_binding> = Vec::new();
    let flush = |ss: &mut Rows<types::cgnat_session_key, types::cgnat_session>,
                 bi: &mut Rows<types::cgnat_endpoint, types::cgnat_binding>,
                 bo: &mut Rows<types::cgnat_endpoint, types::cgnat_binding>|
     -> Result<()> {
        if ss.is_empty() {
            return Ok(());
        }
        let c = ss.len() as u32;
        match t.bindings {
            // reverse binding first, as the data path claims a port
            BindingsDest::Cgnat(b) => b.upsert_batch(bi, bo).ctx("bindings batch update")?,
            BindingsDest::Probe(m) => {
                let (mut bk, mut bv) = (Vec::new(), Vec::new());
                for (k, v) in bo.iter() {
                    bk.extend_from_slice(bytes_of(k));
                    bv.extend_from_slice(bytes_of(v));
                }
                m.update_batch(&bk, &bv, c, MapFlags::ANY, MapFlags::ANY)
                    .ctx("probe_bind batch update")?;
            }
        }
        match t.sessions {
            SessionsDest::Cgnat(s) => s.insert_batch(ss).ctx("sessions batch update")?,
            SessionsDest::Probe(m) => {
                let (mut sk, mut sv) = (Vec::new(), Vec::new());
                for (k, v) in ss.iter() {
                    sk.extend_from_slice(bytes_of(k));
                    sv.extend_from_slice(bytes_of(v));
                }
                m.update_batch(&sk, &sv, c, MapFlags::ANY, MapFlags::ANY)
                    .ctx("sessions batch update")?;
            }
        }
        ss.clear();
        bi.clear();
        bo.clear();
        Ok(())
    };
    for k in subs.clone() {
        for j in 0..g.ports {
            let [inbound, outbound] = g.halves(k, j);
            let val = types::cgnat_session {
                int_addr: outbound.0.addr,
                int_port: outbound.0.port,
                last_seen: cgnat::expiry::compact_time(now),
                ..Default::default()
            };
            bi.push(inbound);
            bo.push(outbound);
            ss.push((g.session_key(k, j, 3478), val));
            if ss.len() == CHUNK {
                flush(&mut ss, &mut bi, &mut bo)?;
            }
        }
    }
    flush(&mut ss, &mut bi, &mut bo)?;
    // subscribers: paired address, ports and sessions held
    let Some(subscribers) = t.subscribers else {
        return Ok(());
    };
    let (mut keys, mut vals) = (Vec::new(), Vec::new());
    for k in subs {
        let s = types::cgnat_subscriber {
            ext_addr: be(Ipv4Addr::from(POOL_BASE + g.pool_idx(k))),
            pool_idx: g.pool_idx(k),
            ports: [0, g.ports, 0],
            sessions: g.ports,
            rate_stamp_ns: now,
            created_ns: now,
            last_alloc_ns: now,
            ..Default::default()
        };
        keys.extend_from_slice(bytes_of(&be(g.sub(k))));
        vals.extend_from_slice(bytes_of(&s));
    }
    for (kc, vc) in keys
        .chunks(4 * CHUNK)
        .zip(vals.chunks(std::mem::size_of::<types::cgnat_subscriber>() * CHUNK))
    {
        subscribers
            .update_batch(kc, vc, (kc.len() / 4) as u32, MapFlags::ANY, MapFlags::ANY)
            .ctx("subscribers batch update")?;
    }
    Ok(())
}

/// The flows of subscribers `subs` into `xdp_probe_line`'s table.
fn fill_lines(
    fl: &Floor,
    g: &Geo,
    subs: std::ops::Range<u32>,
    taken: &mut Vec<bool>,
) -> Result<()> {
    let flows: Vec<_> = subs
        .flat_map(|k| (0..g.ports).map(move |j| (g.int(k, j), sock(R10, 3478))))
        .collect();
    fl.fill_lines(&flows, taken).ctx("probe_lines")
}

/// pool_load as the data path keeps it: subscribers per pool address.
pub(super) fn set_pool_load(t: &Tables, g: &Geo, subs: u32) -> Result<()> {
    for idx in 0..POOL_SIZE {
        let lo = idx * g.per_addr;
        let n = subs.saturating_sub(lo).min(g.per_addr);
        t.pool_load
            .update(bytes_of(&idx), bytes_of(&n), MapFlags::ANY)
            .ctx("pool_load")?;
    }
    Ok(())
}

/// A sweep's report, wall seconds and CPU seconds of this thread (the
/// kernel's work for it included).
fn timed(
    f: impl FnOnce() -> std::result::Result<cgnat::expiry::SweepReport, cgnat::bpf::BpfError>,
) -> Result<(cgnat::expiry::SweepReport, f64, f64)> {
    let (t0, c0) = (Instant::now(), cgnat::clock::thread_cpu_ns());
    let rep = f().ctx("sweep")?;
    let cpu = cgnat::clock::thread_cpu_ns().saturating_sub(c0) as f64 / 1e9;
    Ok((rep, t0.elapsed().as_secs_f64(), cpu))
}

/// `n` frames of flows drawn from a Zipf(1.0) popularity over all the
/// flows of `g`: rank r (1-based) with probability (1/r) / H(flows), by
/// inverting the cumulative sum; rank r is flow (r * A) mod flows, A
/// prime, so popular flows are spread over subscribers and buckets.
pub(super) fn zipf_frames(g: &Geo, n: u32, rng: &mut Rng) -> Vec<Vec<u8>> {
    const A: u64 = 2_654_435_761;
    let flows = u64::from(g.subs) * u64::from(g.ports);
    let mut cdf = Vec::with_capacity(flows as usize);
    let mut sum = 0.0f64;
    for r in 1..=flows {
        sum += 1.0 / r as f64;
        cdf.push(sum);
    }
    (0..n)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * sum;
            let rank = cdf.partition_point(|c| *c < u) as u64;
            let flow = (rank.min(flows - 1) * A) % flows;
            g.frame(
                (flow / u64::from(g.ports)) as u32,
                (flow % u64::from(g.ports)) as u32,
            )
        })
        .collect()
}

/// New sessions on existing bindings: for each (subscriber, flow) of
/// `flows`, a frame of that flow's internal endpoint to a new remote port
/// (`rem_port`), so that the data path makes a session and no binding
/// (EIM), one BPF_PROG_TEST_RUN call each. Returns the median and mean
/// cost net of an empty program's run. The sessions are deleted again
/// (checked), and the bindings written again as the preload wrote them:
/// the data path pointed their session hints at the new sessions, and a
/// hint left naming a deleted slot would cost every later packet of the
/// flow a lookup. The table then holds what the rest of the section
/// measures and counts.
fn new_sessions(
    dp: &Datapath,
    t: &Tables,
    fl: &Floor,
    g: &Geo,
    flows: &[(u32, u32)],
    rem_port: u16,
) -> Result<(f64, f64)> {
    let int0 = ifindex("int0")?;
    let before = t.sessions.count().ctx("session count")?;
    let fwd = counter(t, "fwd_out")?;
    let (mut ns, mut empty) = (Vec::with_capacity(flows.len()), Vec::new());
    for &(k, j) in flows {
        let f = udp_frame(INT0_MAC, SUB_MAC, g.int(k, j), sock(R10, rem_port));
        let r = dp
            .run(Side::Internal, &f, int0, 1)
            .ctx("BPF_PROG_TEST_RUN")?;
        ns.push(r.mean_ns as f64);
        if empty.len() < 1024 {
            let (_, e) = fl.run(Prog::Empty, &f, int0, 1).ctx("BPF_PROG_TEST_RUN")?;
            empty.push(e as f64);
        }
    }
    let made = t.sessions.count().ctx("session count")? - before;
    let fwd = counter(t, "fwd_out")? - fwd;
    if made != flows.len() as u64 || fwd != made {
        return fail(format!(
            "{made} sessions made and {fwd} frames forwarded of {} new sessions",
            flows.len()
        ));
    }
    let keys: Vec<_> = flows
        .iter()
        .map(|&(k, j)| g.session_key(k, j, rem_port))
        .collect();
    t.sessions
        .delete_all(&keys)
        .ctx("deleting the new sessions")?;
    if t.sessions.count().ctx("session count")? != before {
        return fail("the new sessions were not all deleted");
    }
    let (inbound, outbound): (Vec<_>, Vec<_>) = flows
        .iter()
        .map(|&(k, j)| {
            let [i, o] = g.halves(k, j);
            (i, o)
        })
        .unzip();
    t.bindings
        .upsert_batch(&inbound, &outbound)
        .ctx("writing the bindings again")?;
    let o = median(&empty);
    Ok((median(&ns) - o, mean(&ns) - o))
}

pub(super) fn bench_scale(p: &Params, ns: &Ns) -> Result<ScaleResult> {
    in_ns(ns, || {
        let g = Geo::new(p.scale_subs, p.scale_ports)?;
        let small = Geo::new(p.small_subs.min(p.scale_subs), p.scale_ports)?;
        let total = u64::from(g.subs) * u64::from(g.ports);
        // room for the new sessions measured on the full table
        let size = (total + u64::from(p.scale_new_sessions))
            .next_power_of_two()
            .max(1024) as u32;
        let cfg = prog_config(size, size, g.subs.next_power_of_two().max(1024))?;
        let dp = load_dp(&cfg, false)?;
        let t = dp.tables().ctx("tables")?;
        let (int0, ext0, lo) = (ifindex("int0")?, ifindex("ext0")?, ifindex("lo")?);
        let frames_max = p.scale_frames.max(small.subs * small.ports);
        let mut fl = Floor::load(lo, frames_max, (size, size)).ctx("loading the floor")?;
        fl.add_tx_port(int0).ctx("floor tx_ports")?;
        fl.add_tx_port(ext0).ctx("floor tx_ports")?;
        let probe = fl.probe_maps()?;
        let mut r = ScaleResult::default();

        // Fast path over every flow of the small table.
        let now = monotonic_ns();
        let t0 = Instant::now();
        preload(&Dest::cgnat(&t), &g, 0..small.subs, now)?;
        set_pool_load(&t, &g, small.subs)?;
        let mut preload_secs = t0.elapsed().as_secs_f64();
        preload(&Dest::probe(&probe), &g, 0..small.subs, now)?;
        let mut taken = Vec::new();
        fill_lines(&fl, &g, 0..small.subs, &mut taken)?;
        r.small_sessions = u64::from(small.subs) * u64::from(g.ports);
        let frames: Vec<Vec<u8>> = (0..small.subs)
            .flat_map(|k| (0..g.ports).map(move |j| (k, j)))
            .map(|(k, j)| g.frame(k, j))
            .collect();
        fl.set_frames(&frames).ctx("feeder frames")?;
        // cgnat, and optionally the floor and the probes, net of the feeder
        let measure = |fl: &Floor,
                       runs: usize,
                       c: &mut Stat,
                       mut others: Option<(&mut Stat, &mut Stat, &mut Stat)>|
         -> Result<()> {
            for _ in 0..runs {
                let (_, e) = feed(fl, Target::Empty, int0, p.scale_repeat)?;
                let cg = feed_cgnat(fl, &dp, &t, Side::Internal, int0, p.scale_repeat, "fwd_out")?;
                c.runs.push(cg - e);
                if let Some((f, pr, li)) = others.as_mut() {
                    let (_, x) = feed(fl, Target::Floor, int0, p.scale_repeat)?;
                    f.runs.push(x - e);
                    let hits = fl.probe_hits();
                    let (_, x) = feed(fl, Target::Probe, int0, p.scale_repeat)?;
                    if fl.probe_hits() - hits != u64::from(p.scale_repeat) {
                        return fail("xdp_probe did not find every session");
                    }
                    pr.runs.push(x - e);
                    let hits = fl.line_hits();
                    let (_, x) = feed(fl, Target::ProbeLine, int0, p.scale_repeat)?;
                    if fl.line_hits() - hits != u64::from(p.scale_repeat) {
                        return fail("xdp_probe_line did not find every flow");
                    }
                    li.runs.push(x - e);
                }
            }
            Ok(())
        };
        measure(
            &fl,
            p.runs,
            &mut r.small_ns,
            Some((
                &mut r.small_floor_ns,
                &mut r.small_probe_ns,
                &mut r.small_line_ns,
            )),
        )?;
        // new sessions on the small table's bindings
        let small_flows: Vec<(u32, u32)> = (0..small.subs)
            .flat_map(|k| (0..g.ports).map(move |j| (k, j)))
            .collect();
        for run in 0..p.runs {
            let (m, a) = new_sessions(&dp, &t, &fl, &g, &small_flows, 4000 + run as u16)?;
            r.small_new_ns.runs.push(m);
            r.small_new_mean_ns.runs.push(a);
        }

        // The rest of the large table.
        let t1 = Instant::now();
        preload(&Dest::cgnat(&t), &g, small.subs..g.subs, now)?;
        set_pool_load(&t, &g, g.subs)?;
        preload_secs += t1.elapsed().as_secs_f64();
        r.preload_secs = preload_secs;
        preload(&Dest::probe(&probe), &g, small.subs..g.subs, now)?;
        fill_lines(&fl, &g, small.subs..g.subs, &mut taken)?;
        r.large_sessions = total;
        // the large table, the small table's flows: table size alone
        measure(
            &fl,
            p.runs,
            &mut r.large_hot_ns,
            Some((
                &mut r.large_hot_floor_ns,
                &mut r.large_hot_probe_ns,
                &mut r.large_hot_line_ns,
            )),
        )?;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let frames: Vec<Vec<u8>> = (0..p.scale_frames.min(g.subs * g.ports))
            .map(|_| {
                let k = (rng.next() % u64::from(g.subs)) as u32;
                let j = (rng.next() % u64::from(g.ports)) as u32;
                g.frame(k, j)
            })
            .collect();
        r.large_frames = frames.len() as u32;
        fl.set_frames(&frames).ctx("feeder frames")?;
        measure(
            &fl,
            p.runs,
            &mut r.large_ns,
            Some((
                &mut r.large_floor_ns,
                &mut r.large_probe_ns,
                &mut r.large_line_ns,
            )),
        )?;
        // Zipf(1.0) over every flow: rank r drawn with probability
        // proportional to 1/r, ranks scattered over the table.
        let frames = zipf_frames(&g, p.scale_frames.min(g.subs * g.ports), &mut rng);
        r.zipf_flows = {
            let mut f = frames.clone();
            f.sort();
            f.dedup();
            f.len() as u32
        };
        fl.set_frames(&frames).ctx("feeder frames")?;
        measure(&fl, p.runs, &mut r.zipf_ns, None)?;
        // back to the uniform frames for the measurement during sweeps
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let frames: Vec<Vec<u8>> = (0..r.large_frames)
            .map(|_| {
                let k = (rng.next() % u64::from(g.subs)) as u32;
                let j = (rng.next() % u64::from(g.ports)) as u32;
                g.frame(k, j)
            })
            .collect();
        fl.set_frames(&frames).ctx("feeder frames")?;
        eprintln!(
            "bench:   {} sessions {:.1} ns, {} sessions {:.1} ns (preload {:.1} s)",
            r.small_sessions,
            r.small_ns.median(),
            r.large_sessions,
            r.large_ns.median(),
            r.preload_secs
        );

        // new sessions on bindings spread over the full table
        let n = (p.scale_new_sessions.min(g.subs * g.ports)).max(1);
        let large_flows: Vec<(u32, u32)> = (0..n)
            .map(|m| {
                let f = (u64::from(m) * u64::from(g.subs * g.ports) / u64::from(n)) as u32;
                (f / g.ports, f % g.ports)
            })
            .collect();
        for run in 0..p.runs {
            let (m, a) = new_sessions(&dp, &t, &fl, &g, &large_flows, 4000 + run as u16)?;
            r.large_new_ns.runs.push(m);
            r.large_new_mean_ns.runs.push(a);
        }
        r.large_new_sessions = n;
        eprintln!(
            "bench:   new sessions on existing bindings: {:.0} ns in the small table, {:.0} ns in the large one",
            r.small_new_ns.median(),
            r.large_new_ns.median()
        );

        // Memory.
        for (name, m) in t.sessions.maps().into_iter().chain([
            ("subscribers", &t.subscribers),
            ("frags", &t.frags),
            ("blocks", &t.blocks),
            ("sub_blocks", &t.sub_blocks),
        ]) {
            r.maps.push(map_mem(name, m)?);
        }

        // Expiry: a sweep that expires nothing (its `now` is the preload
        // time), then the fast path while such sweeps run on another CPU.
        let sweeper = Sweeper {
            timeouts: cfg.timeouts.clone(),
            quarantine: cfg.port_quarantine,
            blocks: None,
            pool: cfg.pool_addrs.clone(),
        };
        let noop = |rep: &cgnat::expiry::SweepReport| -> Result<()> {
            if rep.sessions_live != total || rep.sessions_dying != 0 || rep.bindings_released != 0 {
                return fail(format!("the no-op sweep changed state: {rep:?}"));
            }
            Ok(())
        };
        let (rep, wall, cpu) = timed(|| sweeper.sweep(&t, now))?;
        noop(&rep)?;
        (r.sweep_noop_secs, r.sweep_noop_cpu_secs) = (wall, cpu);
        r.sweep_noop_session_pass_secs = rep.session_pass.as_secs_f64();
        let (rep, wall, cpu) = timed(|| sweeper.sweep_user(&t, now))?;
        noop(&rep)?;
        (r.sweep_noop_user_secs, r.sweep_noop_user_cpu_secs) = (wall, cpu);
        // what the port bits save, paired within this run: the same sweep
        // without sweep_live slots marks each live binding in its inbound half
        let no_slots = Sweeper {
            pool: Vec::new(),
            ..sweeper.clone()
        };
        for _ in 0..p.runs.min(3) {
            for (sw, st) in [
                (&sweeper, &mut r.sweep_noop_bits_cpu),
                (&no_slots, &mut r.sweep_noop_marks_cpu),
            ] {
                let (rep, _, cpu) = timed(|| sw.sweep(&t, now))?;
                noop(&rep)?;
                st.runs.push(cpu);
            }
        }
        eprintln!(
            "bench:   no-op sweep {:.2} s ({:.2} s CPU, session pass {:.2} s); in user space {:.2} s ({:.2} s CPU); \
             alternating: port bits {:.2} s CPU, inbound-half marks {:.2} s CPU",
            r.sweep_noop_secs,
            r.sweep_noop_cpu_secs,
            r.sweep_noop_session_pass_secs,
            r.sweep_noop_user_secs,
            r.sweep_noop_user_cpu_secs,
            r.sweep_noop_bits_cpu.median(),
            r.sweep_noop_marks_cpu.median()
        );
        // What reading the whole table costs an operator's tools: one
        // metrics scrape and one `cgnat top` sample, each checked for the
        // sessions it counted.
        let t0 = Instant::now();
        let text = cgnat::metrics::render(&cfg, &t, &cgnat::metrics::DaemonGauges::default())
            .ctx("metrics scrape")?;
        r.scrape_secs = t0.elapsed().as_secs_f64();
        if !text.contains(&format!(
            "cgnat_sessions{{proto=\"udp\",state=\"active\"}} {total}\n"
        )) {
            return fail(format!(
                "the metrics scrape does not count {total} UDP sessions"
            ));
        }
        let t0 = Instant::now();
        let sample = cgnat::top::Sample::read(&cfg, &t).ctx("top sample")?;
        r.top_sample_secs = t0.elapsed().as_secs_f64();
        if sample.sessions.iter().sum::<u64>() != total {
            return fail(format!("the top sample does not count {total} sessions"));
        }
        eprintln!(
            "bench:   metrics scrape {:.3} s, top sample {:.3} s",
            r.scrape_secs, r.top_sample_secs
        );
        let stop = AtomicBool::new(false);
        let sweeps = AtomicU64::new(0);
        let t2 = dp.tables().ctx("tables")?;
        let during = thread::scope(|sc| -> Result<Stat> {
            let h = sc.spawn(|| -> Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    sweeper.sweep(&t2, now).ctx("sweep")?;
                    sweeps.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
            let mut st = Stat::default();
            let res = measure(&fl, p.runs, &mut st, None);
            // keep a sweep running until at least one completed
            while sweeps.load(Ordering::Relaxed) == 0 && !h.is_finished() {
                thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
            h.join()
                .map_err(|e| BenchError(format!("sweeper panicked: {}", panic_text(&e))))??;
            res.map(|()| st)
        })?;
        r.during_sweep_ns = during;
        r.sweeps_during = sweeps.load(Ordering::Relaxed);

        // Expire everything: the first sweep marks every session dying,
        // the second deletes them (its session pass) and then releases
        // the bindings (quarantines the ports).
        if p.expire_all {
            let far = now + 10 * 86_400 * 1_000_000_000;
            let (a, wall, cpu) = timed(|| sweeper.sweep(&t, far))?;
            (r.expire_mark_secs, r.expire_mark_cpu_secs) = (wall, cpu);
            let (b, wall, cpu) = timed(|| sweeper.sweep(&t, far + 1_000_000_000))?;
            (r.expire_delete_secs, r.expire_delete_cpu_secs) = (wall, cpu);
            r.expired = b.sessions_expired;
            r.expire_session_pass_secs = b.session_pass.as_secs_f64();
            r.expired_bindings = a.bindings_released + b.bindings_released;
            // one binding per session here: a binding goes with its last
            // session, so the two sweeps leave nothing behind
            if a.sessions_dying != total
                || b.sessions_expired != total
                || r.expired_bindings != total
            {
                return fail(format!(
                    "expiring everything: {} marked, {} expired, {} bindings released of {total}",
                    a.sessions_dying, b.sessions_expired, r.expired_bindings
                ));
            }
        }
        Ok(r)
    })
}
