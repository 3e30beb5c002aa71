//! RFC 9693 (benchmarking stateful NATxy gateways), end to end through the
//! e2e topology (frames from `xdp_gen`, see `feed.rs`), for cgnat and for
//! nftables masquerade in the same run:
//! - maximum connection establishment rate: every frame a new 5-tuple
//!   (a new source address and port, the generator's sequence never
//!   repeats within a trial), on an empty table; the highest offered rate
//!   at which the sink receives every frame;
//! - throughput with established connections: frames of connections
//!   made beforehand at a low rate, the highest offered rate at which
//!   the sink receives every frame;
//! - connection tear-down rate: a table of `teardown` connections
//!   removed at once, connections per second (cgnat: the two sweeps of
//!   its expiry with every session past its timeout, which delete the
//!   sessions and release their bindings; nftables:
//!   `conntrack -F`, less the time of the same command on an empty
//!   table, as RFC 9693 subtracts the fixed cost);
//! - connection table capacity: a table sized `capacity`
//!   (`max_sessions` and `max_bindings`, or `nf_conntrack_max`), twice
//!   as many new connections offered at a safe rate; the connections
//!   that got through, and what happened to the others.
//!
//! The generator's top rate bounds those searches (this kernel may refuse
//! live frames: `feed.rs`), so the establishment rate and the throughput
//! are also measured in a closed loop, as the `e2e` section runs: frames
//! seeded into the router go round, the sink sending each one back as the
//! generator's next (for the establishment rate, every one a new
//! 5-tuple), at the pace of the slower stage; the router is then
//! saturated. The frames lost (seeded and sent round, less those that
//! arrived once the loop drained) are reported with the rate: zero for a
//! figure RFC 9693 would accept.
//!
//! The generator paces itself inside its XDP program (`xdp_gen`): one
//! frame per 1/rate, at most the trial's frames, so frames leave evenly
//! spaced (to the resolution of its loop). Each search is a
//! binary search of `steps` trials between 0 and the generator's top
//! rate (measured first, unpaced); a trial passes when no frame is lost
//! (loss tolerance zero) and the frames left at the rate asked; a rate
//! fails when two trials at it fail. A search whose every rate passed
//! reached the generator, not the router: its figure is a lower bound,
//! reported as such.

use super::*;

/// Iterations of the generator per live-frames call: each call has a
/// fixed cost of milliseconds, so the program paces itself within one
/// (frames not yet due are dropped unsent) and calls go on until it has
/// sent what the trial asked for.
const RUN: u32 = 1 << 20;
/// Sources of the establishment trials: enough addresses and ports that
/// no 5-tuple repeats within a trial.
const NEW_SUBS: u32 = 4096;
const NEW_PORTS: u32 = 16384;
/// Connections of the throughput trials.
const EST_FLOWS: u32 = 4096;

#[derive(Debug, Clone, Default)]
pub struct Rfc9693Mode {
    /// Frames (new connections) per second.
    pub establish_fps: f64,
    /// Every rate of that search passed: the router kept up with the
    /// generator's top rate, and the figure is a lower bound.
    pub establish_at_top: bool,
    /// Frames per second of established connections.
    pub throughput_fps: f64,
    pub throughput_at_top: bool,
    /// The same two in the closed loop: frames per second and frames lost.
    pub establish_loop: LoopRate,
    pub throughput_loop: LoopRate,
    pub teardown_secs: f64,
    pub teardown_per_sec: f64,
    /// Connections that got through when twice the table was offered.
    pub capacity: u64,
    /// What the sender saw beyond the capacity.
    pub beyond: String,
}

/// A closed-loop rate: frames per second through a saturated router,
/// and frames lost meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopRate {
    pub fps: f64,
    pub lost: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Rfc9693Result {
    /// How the generator's frames enter the network (`feed.rs`).
    pub generator: String,
    /// The generator's own top rate, measured unpaced, and the top of the
    /// searches (the smaller of `Params::rfc_top_fps` and 95 % of it).
    pub generator_fps: f64,
    pub top_fps: f64,
    pub trial_secs: f64,
    pub steps: u32,
    pub teardown: u32,
    pub capacity_table: u32,
    pub cgnat: Rfc9693Mode,
    pub nft: Rfc9693Mode,
}

/// One paced trial.
struct Trial {
    subs: u32,
    ports: u32,
    rate: f64,
    frames: u64,
}

/// The generator on a thread in the generator namespace, sending what it
/// is told at the rate it is told.
struct Paced {
    tx: Option<mpsc::Sender<Trial>>,
    rx: mpsc::Receiver<Result<f64>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Paced {
    fn start(net: &E2eNet) -> Result<Paced> {
        let (tx, trials) = mpsc::channel::<Trial>();
        let (done, rx) = mpsc::channel::<Result<f64>>();
        let path = net.g.path();
        let spec = net.source_spec();
        let handle = thread::spawn(move || {
            let setup = || -> Result<(Floor, Source)> {
                enter(&path)?;
                let _ = pin_to(0, 0);
                let mut fl = Floor::load(0, 1, (1, 1)).ctx("loading the generator")?;
                let src = Source::open(&spec, &mut fl, gen_frame())?;
                Ok((fl, src))
            };
            let (mut fl, mut src) = match setup() {
                Ok(v) => {
                    let _ = done.send(Ok(0.0));
                    v
                }
                Err(e) => {
                    let _ = done.send(Err(e));
                    return;
                }
            };
            let chunk = src.chunk(RUN);
            for t in trials {
                let r = (|| -> Result<f64> {
                    set_gen(&mut fl, t.subs, t.ports)?;
                    fl.set_generator_seq(0).ctx("generator")?;
                    let gap = (1e9 / t.rate.max(1.0)) as u64;
                    fl.set_pacing(t.frames, gap.max(1)).ctx("generator")?;
                    let start = Instant::now();
                    let budget = Duration::from_secs_f64(t.frames as f64 / t.rate * 3.0 + 5.0);
                    while fl.generator_sent() < t.frames {
                        if start.elapsed() > budget {
                            return fail(format!(
                                "the generator sent {} of {} frames in {budget:?}",
                                fl.generator_sent(),
                                t.frames
                            ));
                        }
                        src.push(&fl, chunk)?;
                    }
                    // (the limit stays: frames a fed source still has
                    // queued are dropped, not sent after the trial)
                    Ok(start.elapsed().as_secs_f64())
                })();
                if done.send(r).is_err() {
                    return;
                }
            }
        });
        let p = Paced {
            tx: Some(tx),
            rx,
            handle: Some(handle),
        };
        match p.rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(_)) => Ok(p),
            Ok(Err(e)) => Err(e),
            Err(_) => fail("the paced generator did not start"),
        }
    }

    /// Sends `frames` frames of `subs` x `ports` sources at `rate`;
    /// returns the seconds it took.
    fn send(&self, subs: u32, ports: u32, rate: f64, frames: u64) -> Result<f64> {
        let tx = self
            .tx
            .as_ref()
            .ok_or(BenchError("generator stopped".into()))?;
        tx.send(Trial {
            subs,
            ports,
            rate,
            frames,
        })
        .map_err(|_| BenchError("the generator thread is gone".into()))?;
        self.rx
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| BenchError("the generator did not finish a trial".into()))?
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Frames the sink receives while `f` runs, after the queues drained.
fn received(sink: &Floor, f: impl FnOnce() -> Result<f64>) -> Result<u64> {
    let c0 = sink.sink_packets().ctx("sink")?;
    f()?;
    thread::sleep(Duration::from_millis(100));
    Ok(sink.sink_packets().ctx("sink")? - c0)
}

/// The highest rate in (0, top] at which `pass(rate)` holds, in `steps`
/// halvings (0 if none did), and whether every rate passed (the figure
/// is then bounded by `top`, not by the router). A rate fails only when
/// two trials at it lose frames: on a shared machine one trial can lose
/// a frame to a hiccup of the machine, and a binary search never comes
/// back above a rate that failed.
fn search(top: f64, steps: u32, mut pass: impl FnMut(f64) -> Result<bool>) -> Result<(f64, bool)> {
    let (mut lo, mut hi, mut all) = (0.0, top, true);
    for _ in 0..steps {
        let mid = (lo + hi) / 2.0;
        if pass(mid)? || pass(mid)? {
            lo = mid;
        } else {
            hi = mid;
            all = false;
        }
    }
    Ok((lo, all))
}

/// Whether a trial of `frames` at `rate` that took `secs` was sent at
/// its rate: a generator that falls behind sends fewer frames per second
/// than asked, and the trial says nothing about `rate`.
fn on_time(rate: f64, frames: u64, secs: f64) -> bool {
    frames as f64 / secs >= 0.95 * rate
}

/// One trial's line on stderr, with where frames went if some were lost.
fn trial_line(mode: Mode, what: &str, rate: f64, got: u64, frames: u64, took: f64, lost: &str) {
    let lost = if lost.is_empty() {
        String::new()
    } else {
        format!(" ({lost})")
    };
    eprintln!(
        "bench:   rfc9693 {mode:?} {what} {rate:.0} fps: {got} of {frames} in {took:.3} s{lost}"
    );
}

/// What lost frames in a trial that lost some: the veths' rings and
/// cgnat's drop counters.
fn losses(net: &E2eNet, router: &Router) -> String {
    let drops: Vec<String> = cgnat_counters(router)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.packets > 0 && c.name.starts_with("drop"))
        .map(|c| format!("{}={}", c.name, c.packets))
        .collect();
    format!("{}; {}", net.drops(), drops.join(" "))
}

fn conntrack_count(net: &E2eNet) -> u64 {
    net.r
        .sh("conntrack -C 2>/dev/null")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `conntrack -S`'s counter `name` summed over CPUs.
fn conntrack_stat(net: &E2eNet, name: &str) -> u64 {
    let text = net.r.sh("conntrack -S 2>/dev/null").unwrap_or_default();
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix(&format!("{name}=")))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

fn cgnat_counters(r: &Router) -> Result<Vec<cgnat::stats::Counter>> {
    match r {
        Router::Cgnat { _dp: dp } => {
            let t = dp.tables().ctx("tables")?;
            cgnat::stats::read(&t.stats).ctx("stats")
        }
        _ => Ok(Vec::new()),
    }
}

/// Sources `subs` x `ports` going round the closed loop through the
/// router for `secs`: the generator seeds `LOOP_FRAMES` frames (the first
/// of the sequence), the sink sends each one round again as the next.
fn loop_rate(
    net: &E2eNet,
    gen: &Paced,
    sink: &mut Floor,
    (subs, ports): (u32, u32),
    secs: f64,
) -> Result<LoopRate> {
    set_gen(sink, subs, ports)?;
    sink.set_generator_seq(LOOP_FRAMES).ctx("reflector")?;
    in_ns(&net.g, || {
        sink.reflect_to(ifindex(&net.rg)?).ctx("reflector")
    })?;
    let c0 = sink.sink_packets().ctx("sink")?;
    let run = (|| -> Result<f64> {
        gen.send(subs, ports, 1e9, LOOP_FRAMES)?;
        thread::sleep(Duration::from_millis(50));
        let (c1, t1) = (sink.sink_packets().ctx("sink")?, Instant::now());
        thread::sleep(Duration::from_secs_f64(secs));
        let c2 = sink.sink_packets().ctx("sink")?;
        Ok((c2 - c1) as f64 / t1.elapsed().as_secs_f64())
    })();
    sink.reflect_stop().ctx("reflector")?;
    thread::sleep(Duration::from_millis(100));
    let fps = run?;
    let arrived = sink.sink_packets().ctx("sink")? - c0;
    let lost = (LOOP_FRAMES + sink.generator_sent()).saturating_sub(arrived);
    Ok(LoopRate { fps, lost })
}

/// One mode's figures.
fn bench_mode(
    p: &Params,
    net: &E2eNet,
    gen: &Paced,
    sink: &mut Floor,
    mode: Mode,
) -> Result<Rfc9693Mode> {
    let mut m = Rfc9693Mode::default();
    let fresh = |sessions: u32| match mode {
        Mode::Cgnat => net.cgnat_sized(sessions),
        _ => net.router(mode, (1, 1)),
    };
    let secs = p.rfc_trial_secs;
    let top = p.rfc_top_fps;
    let big = NEW_SUBS * NEW_PORTS;

    // maximum connection establishment rate: an empty table each trial
    (m.establish_fps, m.establish_at_top) = search(top, p.rfc_steps, |rate| {
        let frames = ((rate * secs) as u64).max(1);
        let table = (frames as u32).max(1 << 16).next_power_of_two();
        let router = fresh(table.min(1 << 22))?;
        net.reset_drops();
        let mut took = 0.0;
        let got = received(sink, || {
            took = gen.send(NEW_SUBS, NEW_PORTS.min(big / NEW_SUBS), rate, frames)?;
            Ok(took)
        });
        let lost = match &got {
            Ok(n) if *n == frames => String::new(),
            _ => losses(net, &router),
        };
        net.router_off(router)?;
        let got = got?;
        trial_line(mode, "establish", rate, got, frames, took, &lost);
        Ok(got == frames && on_time(rate, frames, took))
    })?;

    // throughput with established connections
    let router = fresh(1 << 16)?;
    let res = (|| -> Result<(f64, bool)> {
        received(sink, || {
            gen.send(EST_FLOWS, 1, 50_000.0, u64::from(EST_FLOWS))
        })?;
        search(top, p.rfc_steps, |rate| {
            let frames = ((rate * secs) as u64).max(1);
            net.reset_drops();
            let mut took = 0.0;
            let got = received(sink, || {
                took = gen.send(EST_FLOWS, 1, rate, frames)?;
                Ok(took)
            })?;
            let lost = if got == frames {
                String::new()
            } else {
                losses(net, &router)
            };
            trial_line(mode, "throughput", rate, got, frames, took, &lost);
            Ok(got == frames && on_time(rate, frames, took))
        })
    })();
    net.router_off(router)?;
    (m.throughput_fps, m.throughput_at_top) = res?;

    // both again in the closed loop, the router saturated
    let router = fresh(1 << 20)?;
    net.reset_drops();
    let res = loop_rate(net, gen, sink, (NEW_SUBS, NEW_PORTS), secs);
    net.router_off(router)?;
    m.establish_loop = res?;
    let router = fresh(1 << 16)?;
    let res = received(sink, || {
        gen.send(EST_FLOWS, 1, 50_000.0, u64::from(EST_FLOWS))
    })
    .and_then(|_| loop_rate(net, gen, sink, (EST_FLOWS, 1), secs));
    net.router_off(router)?;
    m.throughput_loop = res?;
    eprintln!(
        "bench:   rfc9693 {mode:?} closed loop: establish {:.0} fps ({} lost), throughput {:.0} fps ({} lost)",
        m.establish_loop.fps, m.establish_loop.lost, m.throughput_loop.fps, m.throughput_loop.lost
    );

    // tear-down of a full table
    let n = p.rfc_teardown;
    // (a quarter of the establishment rate: a fill lasts longer than a
    // trial, and what counts is what the table holds)
    let safe = (m.establish_fps / 4.0).max(10_000.0);
    let router = fresh(n.next_power_of_two() * 2)?;
    let res = (|| -> Result<(u64, f64)> {
        let got = received(sink, || gen.send(NEW_SUBS, NEW_PORTS, safe, u64::from(n)))?;
        if got < u64::from(n) * 9 / 10 {
            return fail(format!(
                "{mode:?}: {got} of {n} connections made at {safe:.0} fps"
            ));
        }
        match &router {
            Router::Cgnat { _dp: dp } => {
                let t = dp.tables().ctx("tables")?;
                let cfg = net.cgnat_config()?;
                let sweeper = cgnat::expiry::Sweeper {
                    timeouts: cfg.timeouts.clone(),
                    quarantine: cfg.port_quarantine,
                    blocks: None,
                    pool: cfg.pool_addrs.clone(),
                };
                let far = cgnat::expiry::monotonic_ns() + 86_400 * 1_000_000_000;
                let t0 = Instant::now();
                let a = sweeper.sweep(&t, far).ctx("sweep")?;
                let b = sweeper.sweep(&t, far + 1_000_000_000).ctx("sweep")?;
                let dt = t0.elapsed().as_secs_f64();
                // every connection has its own binding: all of them go too
                let released = a.bindings_released + b.bindings_released;
                if a.sessions_dying < got
                    || b.sessions_expired != a.sessions_dying
                    || released != b.sessions_expired
                {
                    return fail(format!(
                        "cgnat expiry: {} marked, {} expired, {released} bindings released, {got} made",
                        a.sessions_dying, b.sessions_expired
                    ));
                }
                Ok((b.sessions_expired, dt))
            }
            _ => {
                let before = conntrack_count(net);
                let t0 = Instant::now();
                net.r
                    .sh("conntrack -F >/dev/null 2>&1")
                    .ctx("conntrack -F")?;
                let full = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                net.r
                    .sh("conntrack -F >/dev/null 2>&1")
                    .ctx("conntrack -F")?;
                let empty = t0.elapsed().as_secs_f64();
                if before < got {
                    return fail(format!(
                        "nftables: {before} connections in the table, {got} made"
                    ));
                }
                Ok((before, (full - empty).max(1e-6)))
            }
        }
    })();
    net.router_off(router)?;
    let (removed, secs) = res?;
    m.teardown_secs = secs;
    m.teardown_per_sec = removed as f64 / secs;

    // capacity: twice the table offered
    let cap = p.rfc_capacity;
    let offered = u64::from(cap) * 2;
    let (router, restore) = match mode {
        Mode::Cgnat => (net.cgnat_sized(cap)?, None),
        _ => {
            let path = "/proc/sys/net/netfilter/nf_conntrack_max";
            let old = std::fs::read_to_string(path).ctx(path)?;
            std::fs::write(path, cap.to_string()).ctx(path)?;
            (net.router(mode, (1, 1))?, Some((path, old)))
        }
    };
    let res = (|| -> Result<(u64, String)> {
        let (drops0, early0) = (
            conntrack_stat(net, "drop"),
            conntrack_stat(net, "early_drop"),
        );
        let got = received(sink, || gen.send(NEW_SUBS, NEW_PORTS, safe, offered))?;
        let beyond = match mode {
            Mode::Cgnat => {
                let c = cgnat_counters(&router)?;
                format!(
                    "the rest dropped: drop_table_full {}, icmp_host_unreach {} (ICMP 3/1 back to the sender, rate-limited)",
                    cgnat::stats::get(&c, "drop_table_full"),
                    cgnat::stats::get(&c, "icmp_host_unreach")
                )
            }
            _ => format!(
                "conntrack table at {} of {cap}; {} dropped, {} older unreplied entries evicted (early_drop) to make room",
                conntrack_count(net),
                conntrack_stat(net, "drop").saturating_sub(drops0),
                conntrack_stat(net, "early_drop").saturating_sub(early0)
            ),
        };
        Ok((got, beyond))
    })();
    net.router_off(router)?;
    if let Some((path, old)) = restore {
        std::fs::write(path, old.trim()).ctx(path)?;
    }
    (m.capacity, m.beyond) = res?;
    Ok(m)
}

/// The generator's top rate: frames it sends unpaced (one per
/// nanosecond asked) through the floor, per second.
fn generator_fps(net: &E2eNet, gen: &Paced, secs: f64) -> Result<f64> {
    let router = net.router(Mode::Floor, (1, 1))?;
    let frames = 200_000u64;
    let probe = gen.send(EST_FLOWS, 1, 1e9, frames);
    let first = probe.map(|t| frames as f64 / t);
    let r = first.and_then(|fps| {
        let frames = ((fps * secs * 4.0) as u64).max(frames);
        gen.send(EST_FLOWS, 1, 1e9, frames)
            .map(|t| frames as f64 / t)
    });
    net.router_off(router)?;
    r
}

pub(super) fn bench_rfc9693(p: &Params, net: &E2eNet) -> Result<Rfc9693Result> {
    let mut sink = net.sink()?;
    let gen = Paced::start(net)?;
    net.pin();
    let generator_fps = generator_fps(net, &gen, p.rfc_trial_secs)?;
    let top = p.rfc_top_fps.min(0.95 * generator_fps);
    eprintln!(
        "bench:   rfc9693 generator: {generator_fps:.0} fps unpaced, searches up to {top:.0} fps"
    );
    let q = Params {
        rfc_top_fps: top,
        ..p.clone()
    };
    let mut r = Rfc9693Result {
        generator: net.source_spec().describe().to_owned(),
        generator_fps,
        top_fps: top,
        trial_secs: p.rfc_trial_secs,
        steps: p.rfc_steps,
        teardown: p.rfc_teardown,
        capacity_table: p.rfc_capacity,
        ..Default::default()
    };
    r.cgnat = bench_mode(&q, net, &gen, &mut sink, Mode::Cgnat).ctx("cgnat")?;
    r.nft = bench_mode(&q, net, &gen, &mut sink, Mode::Nft).ctx("nftables")?;
    drop(gen);
    sink.detach_all();
    Ok(r)
}

/// The section's lines of the report.
pub(super) fn table(o: &mut String, r: &Rfc9693Result) {
    let (c, n) = (&r.cgnat, &r.nft);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let _ = writeln!(
        o,
        "\nRFC 9693, end to end ({} s trials, {}-step binary searches up to {:.0} fps, zero loss):",
        r.trial_secs, r.steps, r.top_fps
    );
    let _ = writeln!(
        o,
        "  generator: {}, {:.0} fps unpaced; \">=\": every rate passed, the figure is the generator's; \
         closed loop: {LOOP_FRAMES} frames going round a saturated router, the sink sending each back ({:.2} s)",
        r.generator, r.generator_fps, r.trial_secs
    );
    let _ = writeln!(
        o,
        "  figure                                   cgnat        nftables   cgnat/nft"
    );
    let bound = |v: f64, top: bool| format!("{}{v:.0}", if top { ">=" } else { "" });
    // a closed-loop rate with the frames it lost, if any
    let loop_rate = |l: &LoopRate| match l.lost {
        0 => format!("{:.0}", l.fps),
        n => format!("{:.0}/{n}lost", l.fps),
    };
    for (what, a, b, ratio_ok) in [
        (
            "connection establishment rate (fps)",
            bound(c.establish_fps, c.establish_at_top),
            bound(n.establish_fps, n.establish_at_top),
            ratio(c.establish_fps, n.establish_fps),
        ),
        (
            "throughput, established (fps)",
            bound(c.throughput_fps, c.throughput_at_top),
            bound(n.throughput_fps, n.throughput_at_top),
            ratio(c.throughput_fps, n.throughput_fps),
        ),
        (
            "establishment, closed loop (fps)",
            loop_rate(&c.establish_loop),
            loop_rate(&n.establish_loop),
            ratio(c.establish_loop.fps, n.establish_loop.fps),
        ),
        (
            "throughput, closed loop (fps)",
            loop_rate(&c.throughput_loop),
            loop_rate(&n.throughput_loop),
            ratio(c.throughput_loop.fps, n.throughput_loop.fps),
        ),
        (
            "tear-down rate (connections/s)",
            bound(c.teardown_per_sec, false),
            bound(n.teardown_per_sec, false),
            ratio(c.teardown_per_sec, n.teardown_per_sec),
        ),
    ] {
        let _ = writeln!(o, "  {what:<38} {a:>12} {b:>12} {ratio_ok:>10.2}");
    }
    let _ = writeln!(
        o,
        "  tear-down of {} connections: cgnat {:.3} s, nftables {:.3} s",
        r.teardown, c.teardown_secs, n.teardown_secs
    );
    let _ = writeln!(
        o,
        "  capacity, table of {} offered {}: cgnat {} got through, {}",
        r.capacity_table,
        u64::from(r.capacity_table) * 2,
        c.capacity,
        c.beyond
    );
    let _ = writeln!(
        o,
        "                                      nftables {} got through, {}",
        n.capacity, n.beyond
    );
}
