//! TCP.

use super::*;

pub(super) fn bench_tcp(p: &Params, net: &E2eNet) -> Result<TcpResult> {
    let mut r = TcpResult {
        conn_clients: p.conn_clients,
        ..Default::default()
    };
    let has_iperf = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_iperf {
        r.iperf_skipped = Some("iperf3 is not installed (apt-get install iperf3)".into());
    }
    // The sink's veth takes its frames in softirq, not in a NAPI thread of
    // its own (as the e2e section has it): a frame that XDP redirects to a
    // veth always goes through the peer's NAPI, and a threaded one costs a
    // thread wakeup per frame, while the kernel's forwarding hands it over
    // in the same softirq (1.5 context switches more per connection for
    // cgnat, docs/performance.md). Neither is the router's own work.
    net.sink_threaded(false)?;
    let res = tcp_runs(p, net, has_iperf, &mut r);
    net.sink_threaded(true)?;
    res?;
    eprintln!(
        "bench:   iperf3 cgnat {:.2} Gbit/s, nftables {:.2} Gbit/s; connections/s cgnat {:.0}, nftables {:.0}",
        r.iperf_cgnat_gbps.median(),
        r.iperf_nft_gbps.median(),
        r.conn_cgnat.median(),
        r.conn_nft.median()
    );
    Ok(r)
}

/// The iperf3 and connection runs, cgnat and nftables in turn, into r.
fn tcp_runs(p: &Params, net: &E2eNet, has_iperf: bool, r: &mut TcpResult) -> Result<()> {
    for _ in 0..p.tcp_runs {
        for mode in [Mode::Cgnat, Mode::Nft] {
            let router = net.router(mode, (1, 1))?;
            let res = (|| -> Result<()> {
                if has_iperf {
                    let before = CpuTimes::now(net);
                    let t0 = Instant::now();
                    let gbps = iperf(net, p.iperf_secs)?;
                    let cpu = CpuTimes::now(net).since(&before, t0.elapsed().as_secs_f64());
                    let (g, c) = match mode {
                        Mode::Cgnat => (&mut r.iperf_cgnat_gbps, &mut r.iperf_cgnat_cpu),
                        _ => (&mut r.iperf_nft_gbps, &mut r.iperf_nft_cpu),
                    };
                    g.runs.push(gbps);
                    c.push(cpu);
                }
                let before = CpuTimes::now(net);
                let t0 = Instant::now();
                let cps = conn_rate(net, p.conn_secs, p.conn_clients)?;
                let cpu = CpuTimes::now(net).since(&before, t0.elapsed().as_secs_f64());
                let (n, c) = match mode {
                    Mode::Cgnat => (&mut r.conn_cgnat, &mut r.conn_cgnat_cpu),
                    _ => (&mut r.conn_nft, &mut r.conn_nft_cpu),
                };
                n.runs.push(cps);
                c.push(cpu);
                Ok(())
            })();
            net.router_off(router)?;
            res.ctx(format!("{mode:?}"))?;
        }
    }
    Ok(())
}

/// CPUs busy during a transfer: the router's data-direction NAPI thread
/// (generator -> router: where XDP, or the kernel's GRO + netfilter +
/// forwarding, runs in either mode) and the whole machine (/proc/stat).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// Router: CPU seconds of the NAPI thread of its generator-side veth.
    pub router: f64,
    /// Router: the same for its sink-side veth (the return direction).
    pub router_back: f64,
    /// Every CPU of the machine, busy seconds (user, system, irq, softirq).
    pub machine: f64,
    /// Context switches on the whole machine (/proc/stat ctxt).
    pub switches: f64,
}

impl CpuTimes {
    fn now(net: &E2eNet) -> CpuTimes {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let switches = text
            .lines()
            .find_map(|l| l.strip_prefix("ctxt "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        let f: Vec<f64> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // jiffies at USER_HZ = 100: user nice system idle iowait irq softirq
        let j = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
        CpuTimes {
            router: cpu_ns(&napi_threads(&net.ri)) as f64 / 1e9,
            router_back: cpu_ns(&napi_threads(&net.re)) as f64 / 1e9,
            machine: j(0) + j(1) + j(2) + j(5) + j(6),
            switches,
        }
    }

    /// CPUs busy on average over `secs` since `before`.
    fn since(&self, before: &CpuTimes, secs: f64) -> CpuTimes {
        let s = secs.max(1e-9);
        CpuTimes {
            router: (self.router - before.router) / s,
            router_back: (self.router_back - before.router_back) / s,
            machine: (self.machine - before.machine) / s,
            switches: (self.switches - before.switches) / s,
        }
    }

    /// The median of each over runs.
    pub fn median_of(runs: &[CpuTimes]) -> CpuTimes {
        let m = |f: fn(&CpuTimes) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        CpuTimes {
            router: m(|c| c.router),
            router_back: m(|c| c.router_back),
            machine: m(|c| c.machine),
            switches: m(|c| c.switches),
        }
    }
}

/// A child process killed and reaped on drop.
pub(super) struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// iperf3 from the generator namespace to the sink namespace; Gbit/s
/// received.
pub(super) fn iperf(net: &E2eNet, secs: u32) -> Result<f64> {
    let server = SERVER.to_string();
    let argv = net
        .s
        .argv(&["iperf3", "-s", "-1", "-B", &server, "-p", "5201"]);
    let _srv = Reaped(
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ctx("starting iperf3 -s")?,
    );
    let secs_s = secs.to_string();
    let argv = net
        .g
        .argv(&["iperf3", "-c", &server, "-p", "5201", "-t", &secs_s, "-J"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = run_command(&argv, Duration::from_secs(u64::from(secs) + 30)).ctx("iperf3 -c")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !text.contains("\"error\"") {
            return received_bits_per_second(&text)
                .map(|b| b / 1e9)
                .ok_or_else(|| {
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(400)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    BenchError(format!("iperf3: no sum_received in its output: ...{tail}"))
                });
        }
        // the server may not listen yet ("Connection refused")
        if Instant::now() > deadline {
            return fail(format!("iperf3 -c failed: {}", text.trim()));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What the receiver got, in bits per second, from `iperf3 -J`'s report
/// (`end.sum_received.bits_per_second`).
pub(super) fn received_bits_per_second(text: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("end")?
        .get("sum_received")?
        .get("bits_per_second")?
        .as_f64()
}

/// New TCP connections per second from the generator namespace to the
/// sink namespace: `clients` loops, each connecting, then closing
/// abortively (RST, so that no TIME_WAIT state limits the rate), for
/// `secs`. One loop measures the round trip of a connection setup
/// through both hosts' stacks and the veths; several keep the router
/// busy, which is what a connection rate of a router means.
pub(super) fn conn_rate(net: &E2eNet, secs: f64, clients: usize) -> Result<f64> {
    let addr = SocketAddr::V4(sock(SERVER, 5301));
    let stop = Arc::new(AtomicBool::new(false));
    let listener = in_ns(&net.s, || TcpListener::bind(addr).ctx("listen"))?;
    let mut servers = Vec::new();
    for _ in 0..clients.max(1) {
        let l = listener.try_clone().ctx("listener")?;
        let st = Arc::clone(&stop);
        servers.push(thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut c) = c {
                    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = c.read(&mut [0u8; 1]);
                }
            }
        }));
    }
    let mut loops = Vec::new();
    for _ in 0..clients.max(1) {
        let gpath = net.g.path();
        loops.push(thread::spawn(move || -> Result<(u64, f64)> {
            enter(&gpath)?;
            let start = Instant::now();
            let (mut ok, mut errors) = (0u64, 0u64);
            while start.elapsed().as_secs_f64() < secs {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(s) => {
                        let l = nix::libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        let _ =
                            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &l);
                        ok += 1;
                    }
                    Err(e) => {
                        errors += 1;
                        if errors > 50 {
                            return fail(format!("connect to {addr}: {e}"));
                        }
                    }
                }
            }
            Ok((ok, start.elapsed().as_secs_f64()))
        }));
    }
    let res: Result<Vec<(u64, f64)>> = loops
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|e| BenchError(format!("client panicked: {}", panic_text(&e))))?
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    // wake the servers' accepts
    let _ = in_ns(&net.g, || {
        for _ in 0..servers.len() {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        Ok(())
    });
    for s in servers {
        let _ = s.join();
    }
    let res = res?;
    let ok: u64 = res.iter().map(|r| r.0).sum();
    let dt = res.iter().map(|r| r.1).fold(0.0, f64::max);
    Ok(ok as f64 / dt)
}
