//! End to end.

use super::*;

pub(super) const GEN_MAC: Mac = [0x02, 0x33, 0, 0, 0, 0x11];
pub(super) const SINK_MAC: Mac = [0x02, 0x44, 0, 0, 0, 0x10];
pub(super) const CLIENT: Ipv4Addr = H11;
pub(super) const SERVER: Ipv4Addr = R10;

/// generator ns --(rg-ri)-- router ns --(re-rs)-- sink ns
pub struct E2eNet {
    pub(super) g: Ns,
    pub(super) r: Ns,
    pub(super) s: Ns,
    /// Interface names carry the pid: NAPI threads are named after them.
    pub(super) ri: String,
    pub(super) re: String,
    pub(super) rg: String,
    pub(super) rs: String,
    /// The generator's fed pair (see `feed.rs`): socket end, xdp_gen end.
    feed: String,
    gen_in: String,
    /// Whether the kernel runs programs in live-frames mode.
    live: bool,
    drop_base: std::sync::Mutex<(u64, u64)>,
}

impl E2eNet {
    pub(super) fn create() -> Result<E2eNet> {
        let n = std::process::id() % 100_000;
        let net = E2eNet {
            g: Ns::create("g")?,
            r: Ns::create("r")?,
            s: Ns::create("s")?,
            ri: format!("ri{n}"),
            re: format!("re{n}"),
            rg: format!("rg{n}"),
            rs: format!("rs{n}"),
            feed: format!("gf{n}"),
            gen_in: format!("gx{n}"),
            // (a floor that does not load fails the sections later)
            live: Floor::load(0, 1, (1, 1))
                .map(|f| f.live_frames_allowed())
                .unwrap_or(true),
            drop_base: std::sync::Mutex::new((0, 0)),
        };
        let (r, g, s) = (&net.r, &net.g, &net.s);
        r.ip(&format!(
            "link add {} type veth peer name {} netns {}",
            net.ri, net.rg, g.name
        ))?;
        r.ip(&format!(
            "link add {} type veth peer name {} netns {}",
            net.re, net.rs, s.name
        ))?;
        g.ip(&format!(
            "link add {} type veth peer name {}",
            net.feed, net.gen_in
        ))?;
        for dev in [&net.feed, &net.gen_in] {
            // no IPv6 chatter for xdp_gen to turn into frames
            g.sh(&format!(
                "echo 1 > /proc/sys/net/ipv6/conf/{dev}/disable_ipv6"
            ))?;
            g.ip(&format!("link set {dev} up"))?;
        }
        for (ns, dev, mac) in [
            (r, &net.ri, INT0_MAC),
            (r, &net.re, EXT0_MAC),
            (g, &net.rg, GEN_MAC),
            (s, &net.rs, SINK_MAC),
        ] {
            ns.ip(&format!("link set {dev} address {}", mac_str(&mac)))?;
        }
        r.ip(&format!("addr add 100.64.0.1/10 dev {}", net.ri))?;
        r.ip(&format!("addr add 198.51.100.1/24 dev {}", net.re))?;
        g.ip(&format!("addr add {CLIENT}/10 dev {}", net.rg))?;
        s.ip(&format!("addr add {SERVER}/24 dev {}", net.rs))?;
        for (ns, dev) in [(r, &net.ri), (r, &net.re), (g, &net.rg), (s, &net.rs)] {
            ns.ip(&format!("link set {dev} up"))?;
        }
        for (ns, dev) in [(r, &net.ri), (r, &net.re), (g, &net.rg), (s, &net.rs)] {
            // GRO gives a veth the NAPI that frames sent to it by XDP
            // need, and makes its peer a redirect target; only a change
            // while the device is up does (it is "on" after creation).
            ns.sh(&format!(
                "ethtool -K {dev} gro off >/dev/null && ethtool -K {dev} gro on >/dev/null"
            ))?;
        }
        for (ns, dev) in [(g, &net.rg), (s, &net.rs)] {
            ns.sh(&format!("ethtool -K {dev} tx off >/dev/null"))?;
        }
        g.ip("route add default via 100.64.0.1")?;
        s.ip(&format!("route add {POOL} via 198.51.100.1"))?;
        r.ip(&format!(
            "neigh replace {SERVER} lladdr {} dev {} nud permanent",
            mac_str(&SINK_MAC),
            net.re
        ))?;
        r.ip(&format!(
            "neigh replace {CLIENT} lladdr {} dev {} nud permanent",
            mac_str(&GEN_MAC),
            net.ri
        ))?;
        net.router_plain()?;
        // NAPI in kernel threads, so that they can be pinned
        r.sh(&format!("echo 1 > /sys/class/net/{}/threaded", net.ri))?;
        r.sh(&format!("echo 1 > /sys/class/net/{}/threaded", net.re))?;
        s.sh(&format!("echo 1 > /sys/class/net/{}/threaded", net.rs))?;
        Ok(net)
    }

    /// How the generator's frames enter the network.
    pub(super) fn source_spec(&self) -> SourceSpec {
        SourceSpec {
            live: self.live,
            out: self.rg.clone(),
            feed: self.feed.clone(),
            gen_in: self.gen_in.clone(),
        }
    }

    /// Whether the sink's veth runs its NAPI in a kernel thread of its own
    /// (as created) or in softirq.
    pub(super) fn sink_threaded(&self, on: bool) -> Result<()> {
        self.s
            .sh(&format!(
                "echo {} > /sys/class/net/{}/threaded",
                u8::from(on),
                self.rs
            ))
            .map(|_| ())
    }

    /// Forwarding off (cgnat and the floor forward by themselves), lo
    /// forwarding on for bpf_fib_lookup.
    fn router_plain(&self) -> Result<()> {
        self.r
            .sh("echo 0 > /proc/sys/net/ipv4/ip_forward && \
                 echo 1 > /proc/sys/net/ipv4/conf/lo/forwarding")
            .map(|_| ())
    }

    fn nft_on(&self) -> Result<()> {
        self.r.sh(&format!(
            "echo 1 > /proc/sys/net/ipv4/ip_forward && \
             nft add table ip cgbench && \
             nft 'add chain ip cgbench post {{ type nat hook postrouting priority srcnat; }}' && \
             nft add rule ip cgbench post oifname {} masquerade",
            self.re
        ))?;
        Ok(())
    }

    fn nft_off(&self) -> Result<()> {
        let _ = self.r.sh("nft delete table ip cgbench");
        let _ = self.r.sh("conntrack -F >/dev/null 2>&1");
        self.router_plain()
    }

    pub(super) fn cgnat_config(&self) -> Result<Config> {
        let text = format!(
            r#"
[interfaces]
internal = "{}"
external = "{}"
xdp_mode = "native"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["{POOL}"]
[daemon]
pin_path = "/sys/fs/bpf/cgnat-bench-unused"
"#,
            self.ri, self.re
        );
        Config::parse(&text, Path::new("(bench e2e)")).ctx("e2e config")
    }

    /// Pins the router's NAPI thread to the last CPU and the sink's to the
    /// first (with the generator). Returns what was done.
    pub(super) fn pin(&self) -> String {
        let cpus = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if cpus < 2 {
            return "one CPU: nothing pinned".into();
        }
        let mut done = Vec::new();
        for (dev, cpu) in [(&self.ri, cpus - 1), (&self.rs, 0)] {
            let pids = napi_threads(dev);
            let ok = !pids.is_empty() && pids.iter().all(|&pid| pin_to(pid, cpu).is_ok());
            // SCHED_FIFO: the router's CPU is its own while it has work
            // (the machine may be busy), and the sink preempts the
            // generator it shares a CPU with as soon as frames arrive.
            let rt = ok
                && pids.iter().all(|pid| {
                    run_command(&["chrt", "-f", "-p", "50", &pid.to_string()], CMD_TIMEOUT)
                        .map(|o| o.status.success())
                        .unwrap_or(false)
                });
            done.push(match (ok, rt) {
                (true, true) => format!("NAPI thread of {dev} on CPU {cpu}, SCHED_FIFO 50"),
                (true, false) => format!("NAPI thread of {dev} on CPU {cpu}"),
                _ => format!("NAPI of {dev} not pinned (no thread found)"),
            });
        }
        done.push("generator on CPU 0".into());
        done.join(", ")
    }
}

impl E2eNet {
    /// Frames the veths could not pass on (their peer's ring was full),
    /// generator -> router and router -> sink, since `reset_drops`.
    pub(super) fn drops(&self) -> String {
        let now = self.drop_counts();
        let before = *self.drop_base.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "frames lost generator->router {}, router->sink {}",
            now.0.saturating_sub(before.0),
            now.1.saturating_sub(before.1)
        )
    }

    pub(super) fn reset_drops(&self) {
        let now = self.drop_counts();
        *self.drop_base.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    fn drop_counts(&self) -> (u64, u64) {
        let errors = |ns: &Ns, dev: &str| -> u64 {
            ns.sh(&format!("ethtool -S {dev}"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("xdp_xmit_err") || l.contains("xdp_tx_err"))
                .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
                .sum()
        };
        (errors(&self.g, &self.rg), errors(&self.r, &self.re))
    }
}

/// CPU time (ns) the threads `pids` have run (/proc/PID/schedstat).
pub(super) fn cpu_ns(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok())
        .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Threaded-NAPI kernel threads of `dev` ("napi/DEV-ID").
pub(super) fn napi_threads(dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            if comm.trim().starts_with(&prefix) {
                out.push(pid);
            }
        }
    }
    out
}

pub(super) fn pin_to(pid: i32, cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).ctx("cpu set")?;
    nix::sched::sched_setaffinity(Pid::from_raw(pid), &set).ctx("sched_setaffinity")
}

/// Frames seeded into the loop: fewer than a veth's ring holds (256), so
/// that no stage ever finds the next one's ring full, and enough that
/// the slower stage always has a full NAPI batch (64) waiting.
pub(super) const LOOP_FRAMES: u64 = 232;

/// The generator's sources: address GEN_BASE + k, port GEN_PORT + j.
pub(super) const GEN_BASE: Ipv4Addr = Ipv4Addr::new(100, 65, 0, 0);
pub(super) const GEN_PORT: u16 = 10000;

/// Source (k, j) of the generator: where its frame n comes from when k = n
/// mod subs and j = (n / subs) mod ports (`xdp_gen`).
pub(super) fn gen_source(k: u32, j: u32) -> SocketAddrV4 {
    sock(Ipv4Addr::from(u32::from(GEN_BASE) + k), GEN_PORT + j as u16)
}

/// The generator's frame: to the router's `ri` from the first source.
pub(super) fn gen_frame() -> Vec<u8> {
    udp_frame(INT0_MAC, GEN_MAC, gen_source(0, 0), sock(SERVER, 9))
}

/// Makes `fl` write the generator's frames from `subs` x `ports` sources
/// (`xdp_gen`, or `xdp_sink` as the reflector).
pub(super) fn set_gen(fl: &mut Floor, subs: u32, ports: u32) -> Result<()> {
    fl.set_generator(&gen_frame(), GEN_BASE, subs, GEN_PORT, ports)
        .ctx("generator")
}

/// Sends `n` of the generator's frames toward the router, from a thread
/// in the generator namespace (as `feed.rs` says); returns how many
/// `xdp_gen` sent.
fn seed(net: &E2eNet, subs: u32, ports: u32, n: u64) -> Result<u64> {
    let path = net.g.path();
    let spec = net.source_spec();
    let run = move || -> Result<u64> {
        enter(&path)?;
        let _ = pin_to(0, 0);
        let mut fl = Floor::load(0, 1, (1, 1)).ctx("loading the generator")?;
        set_gen(&mut fl, subs, ports)?;
        fl.set_pacing(n, 0).ctx("generator")?;
        let mut src = Source::open(&spec, &mut fl, gen_frame())?;
        src.push(&fl, n as u32)?;
        // fed, xdp_gen runs in its veth's NAPI after the socket returns
        let t = Instant::now();
        while fl.generator_sent() < n && t.elapsed() < Duration::from_secs(1) {
            thread::sleep(Duration::from_millis(1));
        }
        Ok(fl.generator_sent())
    };
    match thread::spawn(run).join() {
        Ok(r) => r,
        Err(e) => fail(format!("generator panicked: {}", panic_text(&e))),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// cgnat with the config's default tables (as users run it).
    Cgnat,
    /// cgnat with tables sized to the flows (`fit_sessions`).
    CgnatFit,
    Floor,
    /// The floor plus cgnat's two lookups (xdp_probe).
    Probe,
    /// The floor plus one lookup in a table of cache lines as large as
    /// cgnat's default tables (xdp_probe_line): the least a one-lookup
    /// design at that size pays.
    Line,
    Nft,
}

/// The bindings and sessions cgnat would hold for the generator's flows,
/// in xdp_probe's maps.
pub(super) fn fill_probe(fl: &Floor, subs: u32, ports: u32) -> Result<()> {
    let maps = fl.probe_maps()?;
    let (mut bk, mut bv, mut sk, mut sv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for sub in 0..subs {
        for port in 0..ports {
            let ext_addr = be(Ipv4Addr::from(POOL_BASE + sub % POOL_SIZE));
            let ext_port = (1024 + (sub / POOL_SIZE) * ports + port) as u16;
            let src = gen_source(sub, port);
            let ik = types::cgnat_endpoint {
                addr: be(*src.ip()),
                port: src.port().to_be(),
                proto: PROTO_UDP,
                _pad: 0,
            };
            let b = types::cgnat_binding {
                addr: ext_addr,
                port: ext_port.to_be(),
                ..Default::default()
            };
            let k = types::cgnat_session_key {
                ext_addr,
                rem_addr: be(SERVER),
                ext_port: ext_port.to_be(),
                rem_port: 9u16.to_be(),
                proto: PROTO_UDP,
                ..Default::default()
            };
            let v = types::cgnat_session {
                int_addr: ik.addr,
                int_port: ik.port,
                ..Default::default()
            };
            bk.extend_from_slice(bytes_of(&ik));
            bv.extend_from_slice(bytes_of(&b));
            sk.extend_from_slice(bytes_of(&k));
            sv.extend_from_slice(bytes_of(&v));
        }
    }
    let n = subs * ports;
    maps.0
        .update_batch(&bk, &bv, n, MapFlags::ANY, MapFlags::ANY)
        .ctx("probe_bind")?;
    maps.1
        .update_batch(&sk, &sv, n, MapFlags::ANY, MapFlags::ANY)
        .ctx("probe_sess")
}

/// Sessions (and bindings) of `Mode::CgnatFit`'s tables: twice the
/// generator's flows, so that its tables span few pages.
pub(super) fn fit_sessions((subs, ports): (u32, u32)) -> u32 {
    (2 * subs * ports).next_power_of_two().max(1024)
}

/// What the router runs while it lives; dropping it detaches.
pub(super) enum Router {
    Cgnat { _dp: Box<Datapath> },
    Floor { _fl: Box<Floor> },
    Nft,
}

impl E2eNet {
    /// Sets the router up in `mode`; `flows` (subscribers, ports) are the
    /// generator's, whose bindings and sessions xdp_probe gets.
    pub(super) fn router(&self, mode: Mode, flows: (u32, u32)) -> Result<Router> {
        match mode {
            Mode::Cgnat => {
                let cfg = self.cgnat_config()?;
                in_ns(&self.r, || load_dp(&cfg, true)).map(|d| Router::Cgnat { _dp: Box::new(d) })
            }
            Mode::CgnatFit => self.cgnat_sized(fit_sessions(flows)),
            Mode::Floor => in_ns(&self.r, || {
                let mut fl = Floor::load(ifindex("lo")?, 1, (1, 1)).ctx("loading the floor")?;
                fl.add_tx_port(ifindex(&self.re)?).ctx("floor tx_ports")?;
                fl.attach(Prog::Floor, ifindex(&self.ri)?)
                    .ctx("attaching the floor")?;
                Ok(Router::Floor { _fl: Box::new(fl) })
            }),
            Mode::Probe => in_ns(&self.r, || {
                let (subs, ports) = flows;
                // sized as cgnat's maps with the e2e config's defaults
                let cfg = self.cgnat_config()?;
                let mut fl = Floor::load(ifindex("lo")?, 1, (cfg.max_bindings, cfg.max_sessions))
                    .ctx("loading the probe")?;
                fill_probe(&fl, subs, ports)?;
                fl.add_tx_port(ifindex(&self.re)?).ctx("floor tx_ports")?;
                fl.attach(Prog::Probe, ifindex(&self.ri)?)
                    .ctx("attaching the probe")?;
                Ok(Router::Floor { _fl: Box::new(fl) })
            }),
            Mode::Line => in_ns(&self.r, || {
                let (subs, ports) = flows;
                let cfg = self.cgnat_config()?;
                let mut fl = Floor::load(ifindex("lo")?, 1, (1, cfg.max_sessions))
                    .ctx("loading the line probe")?;
                let flows: Vec<_> = (0..subs)
                    .flat_map(|k| (0..ports).map(move |j| (gen_source(k, j), sock(SERVER, 9))))
                    .collect();
                fl.fill_lines(&flows, &mut Vec::new()).ctx("probe_lines")?;
                fl.add_tx_port(ifindex(&self.re)?).ctx("floor tx_ports")?;
                fl.attach(Prog::ProbeLine, ifindex(&self.ri)?)
                    .ctx("attaching the line probe")?;
                Ok(Router::Floor { _fl: Box::new(fl) })
            }),
            Mode::Nft => {
                self.nft_on()?;
                Ok(Router::Nft)
            }
        }
    }

    /// The sink's counting program, attached to its veth.
    pub(super) fn sink(&self) -> Result<Floor> {
        in_ns(&self.s, || {
            let mut f = Floor::load(0, 1, (1, 1)).ctx("loading the sink")?;
            f.attach(Prog::Sink, ifindex(&self.rs)?)
                .ctx("attaching the sink")?;
            Ok(f)
        })
    }

    /// cgnat with tables of `sessions` sessions and bindings.
    pub(super) fn cgnat_sized(&self, sessions: u32) -> Result<Router> {
        let mut cfg = self.cgnat_config()?;
        cfg.max_sessions = sessions;
        cfg.max_bindings = sessions;
        in_ns(&self.r, || load_dp(&cfg, true)).map(|d| Router::Cgnat { _dp: Box::new(d) })
    }

    pub(super) fn router_off(&self, r: Router) -> Result<()> {
        let nft = matches!(r, Router::Nft);
        drop(r);
        if nft {
            self.nft_off()?;
        }
        Ok(())
    }
}

pub(super) fn bench_e2e(p: &Params, net: &E2eNet, notes: &mut Vec<String>) -> Result<E2eResult> {
    let mut sink = net.sink()?;
    set_gen(&mut sink, p.e2e_subs, p.e2e_ports)?;
    let mut r = E2eResult {
        generator: format!(
            "closed loop: {LOOP_FRAMES} frames seeded ({}), each sent round again by the sink",
            net.source_spec().describe()
        ),
        flows: p.e2e_subs * p.e2e_ports,
        fit_sessions: fit_sessions((p.e2e_subs, p.e2e_ports)),
        frame_len: 60,
        ..Default::default()
    };
    for run in 0..p.e2e_runs {
        let first = run == 0;
        for mode in [
            Mode::Cgnat,
            Mode::CgnatFit,
            Mode::Floor,
            Mode::Probe,
            Mode::Line,
            Mode::Nft,
        ] {
            let router = net.router(mode, (p.e2e_subs, p.e2e_ports))?;
            r.pinning = net.pin();
            net.reset_drops();
            in_ns(&net.g, || {
                sink.reflect_to(ifindex(&net.rg)?).ctx("reflector")
            })?;
            let c_start = sink.sink_packets()?;
            let seeded = seed(net, p.e2e_subs, p.e2e_ports, LOOP_FRAMES)?;
            thread::sleep(Duration::from_secs_f64(p.e2e_warmup));
            let napi = napi_threads(&net.ri);
            let refl = napi_threads(&net.rs);
            let (c0, g0, u0, v0, t0) = (
                sink.sink_packets()?,
                sink.generator_sent(),
                cpu_ns(&napi),
                cpu_ns(&refl),
                Instant::now(),
            );
            thread::sleep(Duration::from_secs_f64(p.e2e_secs));
            let (c1, g1, u1, v1) = (
                sink.sink_packets()?,
                sink.generator_sent(),
                cpu_ns(&napi),
                cpu_ns(&refl),
            );
            let dt = t0.elapsed().as_secs_f64();
            sink.reflect_stop().ctx("reflector")?;
            thread::sleep(Duration::from_millis(50));
            if first {
                notes.push(format!(
                    "e2e {mode:?}: {seeded} frames seeded, {}",
                    net.drops()
                ));
                if let (Mode::Line, Router::Floor { _fl: fl }) = (mode, &router) {
                    notes.push(format!(
                        "e2e floor+line: {} of {} frames found their flow's line",
                        fl.line_hits(),
                        c1 - c_start
                    ));
                }
                if let (Mode::Cgnat, Router::Cgnat { _dp: dp }) = (mode, &router) {
                    let t = dp.tables().ctx("tables")?;
                    let c = cgnat::stats::read(&t.stats).ctx("stats")?;
                    let nz: Vec<String> = c
                        .iter()
                        .filter(|c| c.packets > 0)
                        .map(|c| format!("{}={}", c.name, c.packets))
                        .collect();
                    notes.push(format!("e2e cgnat verdicts (first run): {}", nz.join(" ")));
                }
            }
            net.router_off(router)?;
            let rate = (c1 - c0) as f64 / dt / 1e6;
            let grate = (g1 - g0) as f64 / dt / 1e6;
            let busy = (u1 - u0) as f64 / 1e9 / dt;
            let per_pkt = (u1 - u0) as f64 / (c1 - c0).max(1) as f64;
            let m = match mode {
                Mode::Cgnat => &mut r.cgnat,
                Mode::CgnatFit => &mut r.cgnat_fit,
                Mode::Floor => &mut r.floor,
                Mode::Probe => &mut r.probe,
                Mode::Line => &mut r.line,
                Mode::Nft => &mut r.nft,
            };
            m.mpps.runs.push(rate);
            m.gen_mpps.runs.push(grate);
            m.router_ns.runs.push(per_pkt);
            m.router_busy.runs.push(busy);
            eprintln!(
                "bench:   e2e {mode:?}: {rate:.3} Mpps received, {grate:.3} Mpps sent, \
                 router NAPI thread busy {:.0}%, {per_pkt:.0} ns per packet, reflector busy {:.0}%",
                busy * 100.0,
                (v1 - v0) as f64 / 1e7 / dt
            );
            if rate <= 0.0 {
                return fail(format!("e2e {mode:?}: nothing reached the sink"));
            }
        }
    }
    sink.detach_all();
    for (name, m) in [
        ("cgnat", &r.cgnat),
        ("cgnat, fitted tables", &r.cgnat_fit),
        ("floor", &r.floor),
        ("nftables", &r.nft),
    ] {
        if m.unsaturated() {
            notes.push(format!(
                "e2e {name}: the router's NAPI thread was busy {:.0}% of the time: its \
                 throughput ({:.2} Mpps) is bounded by the loop's other stage, the sink that \
                 sends each frame round again; compare router CPU per packet",
                m.router_busy.median() * 100.0,
                m.mpps.median(),
            ));
        }
    }
    Ok(r)
}
