//! The `cgnat` command: the daemon and its tools.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use cgnat::bpf::{self, from_bytes, types, Datapath, LoadOptions, Tables};
use cgnat::config::Config;
use cgnat::log::{self, NatLog, Record};
use cgnat::metrics::{self, DaemonGauges};
use cgnat::{expiry, neigh, stats, watch};

const DEFAULT_CONFIG: &str = "/etc/cgnat.toml";

/// Prints a line to stdout; a closed pipe (`cgnat sessions | head`) ends
/// the program quietly instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// Carrier-grade NAT44 (RFC 6888) with an XDP data path.
///
/// Without a subcommand, runs the daemon in the foreground: loads the XDP
/// program, attaches it to the configured interfaces, expires sessions,
/// and detaches on SIGINT or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "cgnat", version, about, long_about)]
struct Cli {
    /// Configuration file (TOML; see configs/cgnat.toml).
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,

    /// Enter this network namespace (/run/netns/NAME) first.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,

    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground (the default).
    Run,
    /// Validate the configuration and exit: 0 if valid, 1 with the reason.
    Check,
    /// Print the data path's counters from the running daemon's pinned maps.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the sessions of the running daemon with state and remaining time.
    Sessions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this subscriber's sessions.
        #[arg(long, value_name = "IP")]
        subscriber: Option<Ipv4Addr>,
        /// Only sessions of this external endpoint (IP or IP:PORT).
        #[arg(long, value_name = "IP[:PORT]")]
        external: Option<String>,
        /// Only this protocol (tcp, udp, icmp).
        #[arg(long)]
        proto: Option<String>,
    },
    /// Whether the data path is in place, where, and how full its tables are.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per external address: subscribers and bindings in use.
    Pool {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Which external address and ports a subscriber uses: computed from the
    /// config in deterministic mode, else read from the running daemon.
    Forward {
        /// The subscriber's internal address.
        addr: Ipv4Addr,
    },
    /// Which subscriber an external ip:port belongs to (abuse and legal
    /// requests): computed from the config in deterministic mode, else read
    /// from the running daemon (port blocks and bindings).
    Reverse {
        /// External address and port, e.g. 203.0.113.7:40123.
        endpoint: std::net::SocketAddrV4,
    },
    /// Stop forwarding: remove the XDP links and tables a daemon left pinned
    /// (run it after stopping the daemon; all sessions are dropped).
    Stop {
        /// Required: detach the programs and delete all state.
        #[arg(long)]
        detach: bool,
    },
    /// List subscribers of the running daemon: external address, ports per
    /// protocol, sessions.
    Subscribers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgnat: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    if let Some(ns) = &cli.netns {
        enter_netns(ns)?;
    }
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => daemon(&cli.config),
        Cmd::Check => {
            let cfg = Config::load(&cli.config).map_err(|e| e.to_string())?;
            warn_permissions(&cli.config);
            for w in cgnat::veth::warnings(&cfg) {
                eprintln!("cgnat: {w}");
            }
            outln!(
                "{}: ok ({} external addresses, {} internal prefixes, {} sessions max)",
                cfg.file.display(),
                cfg.pool_addrs.len(),
                cfg.internal_prefixes.len(),
                cfg.max_sessions
            );
            Ok(())
        }
        Cmd::Stats { json } => {
            let cfg = cli_config(&cli.config).map_err(|e| e.to_string())?;
            let t = Tables::open_pinned(&cfg.pin_path).map_err(|e| e.to_string())?;
            let c = stats::read(&t.stats).map_err(|e| e.to_string())?;
            if json {
                let items: Vec<String> = c
                    .iter()
                    .map(|c| {
                        format!(
                            "\"{}\":{{\"packets\":{},\"bytes\":{}}}",
                            c.name, c.packets, c.bytes
                        )
                    })
                    .collect();
                outln!("{{{}}}", items.join(","));
            } else {
                for c in c {
                    outln!("{} {} {}", c.name, c.packets, c.bytes);
                }
            }
            Ok(())
        }
        Cmd::Sessions {
            json,
            subscriber,
            external,
            proto,
        } => {
            let cfg = cli_config(&cli.config).map_err(|e| e.to_string())?;
            let t = Tables::open_pinned(&cfg.pin_path).map_err(|e| e.to_string())?;
            let (ext_ip, ext_port) = match &external {
                None => (None, None),
                Some(e) => match e.parse::<std::net::SocketAddrV4>() {
                    Ok(sa) => (Some(*sa.ip()), Some(sa.port())),
                    Err(_) => (
                        Some(
                            e.parse::<Ipv4Addr>()
                                .map_err(|_| format!("--external {e:?}: expected IP or IP:PORT"))?,
                        ),
                        None,
                    ),
                },
            };
            let list: Vec<_> = expiry::list_sessions(&t, &cfg.timeouts, expiry::monotonic_ns())
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|s| subscriber.is_none_or(|a| s.internal.0 == a))
                .filter(|s| ext_ip.is_none_or(|a| s.external.0 == a))
                .filter(|s| ext_port.is_none_or(|p| s.external.1 == p))
                .filter(|s| proto.as_deref().is_none_or(|p| s.proto == p))
                .collect();
            print_sessions(&list, json);
            Ok(())
        }
        Cmd::Status { json } => {
            let cfg = cli_config(&cli.config).map_err(|e| e.to_string())?;
            let st = cgnat::lookup::status(&cfg).map_err(|e| e.to_string())?;
            if json {
                outln!("{}", st.json());
            } else {
                outln!("{st}");
            }
            Ok(())
        }
        Cmd::Pool { json } => {
            let cfg = cli_config(&cli.config).map_err(|e| e.to_string())?;
            let t = Tables::open_pinned(&cfg.pin_path).map_err(|e| e.to_string())?;
            let rows = cgnat::lookup::pool(&cfg, &t).map_err(|e| e.to_string())?;
            if json {
                let items: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{{\"address\":\"{}\",\"subscribers\":{},\"tcp\":{},\"udp\":{},\"icmp\":{},\"quarantined\":{}}}",
                            r.address, r.subscribers, r.bindings[0], r.bindings[1], r.bindings[2], r.quarantined
                        )
                    })
                    .collect();
                outln!("[{}]", items.join(","));
            } else {
                outln!(
                    "{:<16} {:>11} {:>7} {:>7} {:>7} {:>11}",
                    "ADDRESS",
                    "SUBSCRIBERS",
                    "TCP",
                    "UDP",
                    "ICMP",
                    "QUARANTINED"
                );
                for r in rows {
                    outln!(
                        "{:<16} {:>11} {:>7} {:>7} {:>7} {:>11}",
                        r.address,
                        r.subscribers,
                        r.bindings[0],
                        r.bindings[1],
                        r.bindings[2],
                        r.quarantined
                    );
                }
            }
            Ok(())
        }
        Cmd::Stop { detach } => {
            if !detach {
                return Err(
                    "`cgnat stop` needs --detach: it removes every session and stops \
                            forwarding (stop the daemon itself with SIGTERM / systemctl stop)"
                        .into(),
                );
            }
            let cfg = Config::load(&cli.config).map_err(|e| e.to_string())?;
            let removed = bpf::detach(&cfg.pin_path).map_err(|e| e.to_string())?;
            outln!(
                "removed {} pinned objects from {}",
                removed.len(),
                cfg.pin_path.display()
            );
            Ok(())
        }
        Cmd::Forward { addr } => {
            let cfg = cli_config(&cli.config).map_err(|e| e.to_string())?;
            outln!(
                "{}",
                cgnat::lookup::forward(&cfg, addr).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Cmd::Reverse { endpoint } => {
            let cfg = cli_config(&cli.config).map_err(|e| e.to_string())?;
            outln!(
                "{}",
                cgnat::lookup::reverse(&cfg, endpoint).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Cmd::Subscribers { json } => {
            let cfg = cli_config(&cli.config).map_err(|e| e.to_string())?;
            let t = Tables::open_pinned(&cfg.pin_path).map_err(|e| e.to_string())?;
            let list = cgnat::lookup::subscribers(&t).map_err(|e| e.to_string())?;
            if json {
                let items: Vec<String> = list
                    .iter()
                    .map(|s| {
                        format!(
                            "{{\"subscriber\":\"{}\",\"external\":\"{}\",\"tcp\":{},\"udp\":{},\"icmp\":{},\"sessions\":{}}}",
                            s.subscriber, s.external, s.ports[0], s.ports[1], s.ports[2], s.sessions
                        )
                    })
                    .collect();
                outln!("[{}]", items.join(","));
            } else {
                outln!(
                    "{:<16} {:<16} {:>6} {:>6} {:>6} {:>9}",
                    "SUBSCRIBER",
                    "EXTERNAL",
                    "TCP",
                    "UDP",
                    "ICMP",
                    "SESSIONS"
                );
                for s in list {
                    outln!(
                        "{:<16} {:<16} {:>6} {:>6} {:>6} {:>9}",
                        s.subscriber,
                        s.external,
                        s.ports[0],
                        s.ports[1],
                        s.ports[2],
                        s.sessions
                    );
                }
            }
            Ok(())
        }
    }
}

/// The config as a read-only command uses it: the pin path is where this
/// process can read the daemon's tables (src/instance.rs).
fn cli_config(path: &Path) -> Result<Config, cgnat::config::ConfigError> {
    let mut cfg = Config::load(path)?;
    cfg.pin_path = cgnat::instance::locate_pins(&cfg.pin_path);
    Ok(cfg)
}

fn enter_netns(ns: &str) -> Result<(), String> {
    let path = Path::new("/run/netns").join(ns);
    let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter network namespace {ns}: {e}"))
}

fn ep(a: (Ipv4Addr, u16)) -> String {
    format!("{}:{}", a.0, a.1)
}

fn print_sessions(list: &[expiry::SessionView], json: bool) {
    if json {
        let items: Vec<String> = list
            .iter()
            .map(|s| {
                format!(
                    "{{\"proto\":\"{}\",\"internal\":\"{}\",\"external\":\"{}\",\"remote\":\"{}\",\
                     \"state\":\"{}\",\"inbound\":{},\"hairpin\":{},\"idle_ms\":{},\"expires_in_ms\":{}}}",
                    s.proto,
                    ep(s.internal),
                    ep(s.external),
                    ep(s.remote),
                    s.state,
                    s.inbound,
                    s.hairpin,
                    s.idle.as_millis(),
                    s.expires_in.as_millis()
                )
            })
            .collect();
        outln!("[{}]", items.join(","));
        return;
    }
    outln!(
        "{:<5} {:<21} {:<21} {:<21} {:<12} {:>8} {:>10}",
        "PROTO",
        "INTERNAL",
        "EXTERNAL",
        "REMOTE",
        "STATE",
        "IDLE",
        "EXPIRES"
    );
    for s in list {
        outln!(
            "{:<5} {:<21} {:<21} {:<21} {:<12} {:>7}s {:>9}s",
            s.proto,
            ep(s.internal),
            ep(s.external),
            ep(s.remote),
            s.state,
            s.idle.as_secs(),
            s.expires_in.as_secs()
        );
    }
}

/// One ring-buffer record from the data path.
fn handle_event(
    dp: &Datapath,
    resolver: &mut neigh::Resolver,
    natlog: &mut NatLog,
    ev: &types::cgnat_event,
) {
    let a = |be: u32| Ipv4Addr::from(u32::from_be(be));
    let ts = || log::wall_time(ev.ts_ns, expiry::monotonic_ns());
    match types::cgnat_event_type(ev.r#type) {
        types::cgnat_event_type::CGNAT_EV_NEIGH_MISS => {
            let addr = a(ev.addr);
            let dev = bpf::ifname(ev.ifindex);
            match resolver.resolve(ev.ifindex, addr) {
                Ok(()) => eprintln!("cgnat: resolving next hop {addr} on {dev}"),
                Err(e) => eprintln!("cgnat: warning: cannot resolve next hop {addr} on {dev}: {e}"),
            }
        }
        types::cgnat_event_type::CGNAT_EV_FRAG_READY => {
            if let Err(e) = dp.release_fragments(&ev.frag) {
                eprintln!("cgnat: warning: releasing held fragments: {e}");
            }
        }
        types::cgnat_event_type::CGNAT_EV_BINDING_CREATE => natlog.write(
            &Record::MappingCreate {
                proto: ev.proto,
                subscriber: (a(ev.addr), u16::from_be(ev.port)),
                external: (a(ev.ext_addr), u16::from_be(ev.ext_port)),
            },
            ts(),
        ),
        types::cgnat_event_type::CGNAT_EV_BLOCK_ALLOC => natlog.write(
            &Record::BlockAlloc {
                subscriber: a(ev.addr),
                external: a(ev.ext_addr),
                ports: (u16::from_be(ev.port), u16::from_be(ev.ext_port)),
            },
            ts(),
        ),
        types::cgnat_event_type::CGNAT_EV_REFUSED => natlog.write(
            &Record::Refused {
                proto: ev.proto,
                subscriber: (a(ev.addr), u16::from_be(ev.port)),
                reason: stats::name(ev.reason),
            },
            ts(),
        ),
        _ => {}
    }
}

/// Sleeps until the ring buffer has records, a neighbour notification
/// arrives, or `wait` has passed.
fn wait_for_events(rb: &libbpf_rs::RingBuffer, neighbours: &neigh::Listener, wait: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [
        PollFd::new(bpf::ring_fd(rb), PollFlags::POLLIN),
        PollFd::new(neighbours.fd(), PollFlags::POLLIN),
    ];
    let ms = PollTimeout::from(wait.as_millis().min(1000) as u16);
    let _ = poll(&mut fds, ms);
}

/// Events the data path lost since the last look, summed over CPUs.
fn events_lost(t: &Tables) -> u64 {
    use libbpf_rs::MapCore;
    (1..bpf::EVENT_SLOTS)
        .map(|ty| {
            t.event_lost
                .lookup_percpu(bpf::bytes_of(&ty), libbpf_rs::MapFlags::ANY)
                .ok()
                .flatten()
                .map(|v| v.iter().filter_map(|b| from_bytes::<u64>(b)).sum::<u64>())
                .unwrap_or(0)
        })
        .sum()
}

/// A config others can write is a way to take over the router: warn.
fn warn_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o002 != 0 {
            eprintln!(
                "cgnat: warning: {} is world-writable; anyone on this host can change the NAT \
                 (chmod o-w)",
                path.display()
            );
        }
    }
}

/// What ends one run of the event loop.
enum Next {
    Reload,
    Exit,
    /// The daemon cannot go on (a NAT interface is gone): the message.
    Fail(String),
}

fn load_datapath(cfg: &Config) -> Result<Datapath, String> {
    Datapath::load(
        cfg,
        LoadOptions {
            attach: true,
            pin: true,
        },
    )
    .map_err(|e| e.to_string())
}

fn sweeper_for(cfg: &Config) -> expiry::Sweeper {
    expiry::Sweeper {
        timeouts: cfg.timeouts.clone(),
        quarantine: cfg.port_quarantine,
        blocks: (cfg.mode == cgnat::config::PoolMode::PortBlock).then_some(cfg.blocks),
        pool: cfg.pool_addrs.clone(),
    }
}

fn announce(cfg: &Config, dp: &Datapath) {
    for line in &dp.attached {
        eprintln!("cgnat: {line}");
    }
    eprintln!(
        "cgnat: attached; pool {} addresses in {} ranges, {} internal prefixes, \
         tables: {} sessions, {} bindings; maps pinned in {}{}",
        cfg.pool_addrs.len(),
        cfg.pool_prefixes.len(),
        cfg.internal_prefixes.len(),
        cfg.max_sessions,
        cfg.max_bindings,
        cfg.pin_path.display(),
        if dp.adopted {
            " (adopted from the previous run)"
        } else {
            ""
        }
    );
}

/// The daemon: load (or adopt) and attach, then sweep and serve events
/// until SIGINT/SIGTERM; SIGHUP reloads the config.
fn daemon(config: &Path) -> Result<(), String> {
    let mut cfg = Config::load(config).map_err(|e| e.to_string())?;
    warn_permissions(config);

    // Block the signals first so they arrive through the signalfd.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    let mut natlog = NatLog::open(&cfg.log)?;
    let mut dp = load_datapath(&cfg)?;
    announce(&cfg, &dp);
    let _registration = cgnat::instance::register(&cfg.pin_path)
        .map_err(|e| {
            eprintln!(
                "cgnat: warning: cannot register in {}: {e} (the CLI finds the tables only \
                 where {} is visible)",
                cgnat::instance::RUN_DIR,
                cfg.pin_path.display()
            )
        })
        .ok();
    // The route_gen map is pinned, so the watcher's handle stays good
    // across reloads (which adopt the same map). It runs even with
    // interfaces.route_cache = "0s", so that a reload may turn the cache on.
    let gen = dp.route_gen().map_err(|e| e.to_string())?;
    cgnat::routes::watch(gen).map_err(|e| format!("route cache watcher: {e}"))?;
    let gauges = Arc::new(DaemonGauges::default());
    let shared_cfg = Arc::new(Mutex::new(cfg.clone()));
    if let Some(addr) = cfg.metrics_listen {
        match metrics::serve(addr, Arc::clone(&shared_cfg), Arc::clone(&gauges)) {
            Ok(a) => eprintln!("cgnat: metrics on http://{a}/metrics"),
            Err(e) => eprintln!("cgnat: warning: no metrics endpoint: {e}"),
        }
    }
    if natlog.enabled() {
        eprintln!("cgnat: NAT log: {:?}", cfg.log);
    }
    let mut lost_seen = 0u64;
    let mut failure: Option<String> = None;
    // Kept across reloads: reloads coming more often than sweep_interval
    // (each restarting the clock) would otherwise stop expiry altogether.
    let mut next_sweep = Instant::now() + cfg.sweep_interval;
    let mut resolver = neigh::Resolver::new().map_err(|e| format!("rtnetlink socket: {e}"))?;
    let mut neighbours =
        neigh::Listener::new().map_err(|e| format!("rtnetlink socket (neighbours): {e}"))?;
    let queue: Rc<RefCell<Vec<types::cgnat_event>>> = Rc::default();

    loop {
        let tables = dp.tables().map_err(|e| e.to_string())?;
        let sweeper = sweeper_for(&cfg);
        let mut rb = libbpf_rs::RingBufferBuilder::new();
        let sink = Rc::clone(&queue);
        rb.add(dp.events(), move |data: &[u8]| {
            if let Some(ev) = from_bytes::<types::cgnat_event>(data) {
                sink.borrow_mut().push(ev);
            }
            0
        })
        .map_err(|e| format!("ring buffer: {e}"))?;
        let rb = rb.build().map_err(|e| format!("ring buffer: {e}"))?;

        // The interfaces as this program was attached to them.
        let mut watch = watch::Watch::new(&[&cfg.internal_if, &cfg.external_if]);
        let next = 'serve: loop {
            let wait = next_sweep
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            wait_for_events(&rb, &neighbours, wait);
            let _ = rb.consume();
            let (outcomes, overrun) = neighbours.drain();
            neigh::settle(&dp, &outcomes);
            if overrun {
                // notifications lost: give up on what waits too long
                neigh::settle_overdue(&dp);
            }
            let batch: Vec<types::cgnat_event> = queue.borrow_mut().drain(..).collect();
            for ev in batch {
                handle_event(&dp, &mut resolver, &mut natlog, &ev);
            }
            if Instant::now() >= next_sweep {
                let started = Instant::now();
                let result = sweeper.sweep(&tables, expiry::monotonic_ns());
                gauges.sweeps.fetch_add(1, Ordering::Relaxed);
                gauges
                    .last_sweep_us
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                neigh::settle_overdue(&dp);
                let lost = events_lost(&tables);
                if lost > lost_seen {
                    eprintln!(
                        "cgnat: warning: {} data-path events lost (ring buffer full)",
                        lost - lost_seen
                    );
                    natlog.write(
                        &Record::EventsLost {
                            count: lost - lost_seen,
                        },
                        SystemTime::now(),
                    );
                    lost_seen = lost;
                }
                match result {
                    Ok(r) => {
                        gauges
                            .sessions_expired
                            .fetch_add(r.sessions_expired, Ordering::Relaxed);
                        gauges
                            .bindings_released
                            .fetch_add(r.bindings_released, Ordering::Relaxed);
                        let now = SystemTime::now();
                        if cfg.mode == cgnat::config::PoolMode::Dynamic {
                            for b in &r.released {
                                natlog.write(
                                    &Record::MappingRelease {
                                        proto: b.proto,
                                        subscriber: b.internal,
                                        external: b.external,
                                    },
                                    now,
                                );
                            }
                        }
                        for b in &r.blocks_released {
                            let p = cfg.blocks.ports(b.block);
                            natlog.write(
                                &Record::BlockRelease {
                                    subscriber: b.subscriber,
                                    external: b.external,
                                    ports: (*p.start(), *p.end()),
                                },
                                now,
                            );
                        }
                        gauges.log_written.store(natlog.written, Ordering::Relaxed);
                        gauges.log_failed.store(natlog.failed, Ordering::Relaxed);
                        if r.sessions_expired + r.bindings_released + r.ports_freed > 0 {
                            eprintln!(
                                "cgnat: sweep: {} sessions live, {} expired; {} bindings live, \
                                 {} released; {} ports quarantined, {} freed",
                                r.sessions_live,
                                r.sessions_expired,
                                r.bindings_live,
                                r.bindings_released,
                                r.ports_quarantined,
                                r.ports_freed
                            );
                        }
                    }
                    Err(e) => eprintln!("cgnat: warning: sweep failed: {e}"),
                }
                next_sweep = Instant::now() + cfg.sweep_interval;
            }
            for change in watch.poll(Instant::now()) {
                if change.fatal() {
                    break 'serve Next::Fail(change.to_string());
                }
                eprintln!("cgnat: {change}");
                let r = match &change {
                    watch::Change::Address { ifindex, now, .. } => {
                        dp.set_interface_addr(*ifindex, *now)
                    }
                    watch::Change::Mac { name, now } => dp.set_interface_mac(&cfg, name, *now),
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    eprintln!("cgnat: warning: {e}");
                }
            }
            match sfd.read_signal() {
                Ok(Some(si)) => match Signal::try_from(si.ssi_signo as i32).ok() {
                    Some(Signal::SIGHUP) => break Next::Reload,
                    Some(Signal::SIGUSR1) => {
                        if let Err(e) = natlog.reopen() {
                            eprintln!("cgnat: warning: reopening the NAT log: {e}");
                        }
                    }
                    sig => {
                        eprintln!(
                            "cgnat: {} received",
                            sig.map(|s| s.as_str()).unwrap_or("signal")
                        );
                        break Next::Exit;
                    }
                },
                Ok(None) => {}
                Err(e) => return Err(format!("signalfd: {e}")),
            }
        };
        drop(rb);
        drop(tables);
        match next {
            Next::Exit => break,
            Next::Fail(msg) => {
                failure = Some(msg);
                break;
            }
            Next::Reload => match reload(config, &cfg) {
                Ok((new_cfg, new_dp)) => {
                    eprintln!("cgnat: SIGHUP: reloaded {}", config.display());
                    dp = new_dp; // the old programs go; maps and links stay
                    if new_cfg.log != cfg.log {
                        match NatLog::open(&new_cfg.log) {
                            Ok(l) => natlog = l,
                            Err(e) => eprintln!("cgnat: warning: NAT log unchanged: {e}"),
                        }
                    } else if let Err(e) = natlog.reopen() {
                        eprintln!("cgnat: warning: reopening the NAT log: {e}");
                    }
                    cfg = new_cfg;
                    if let Ok(mut c) = shared_cfg.lock() {
                        *c = cfg.clone();
                    }
                    announce(&cfg, &dp);
                }
                Err(e) => eprintln!(
                    "cgnat: SIGHUP: reload rejected, the running configuration stays: {e}"
                ),
            },
        }
    }
    let pin = cfg.pin_path.clone();
    drop(dp);
    if let Some(msg) = failure {
        // One message (main prints it as the error): what happened, what
        // became of the tables, what to do.
        let tables = if cfg.detach_on_exit {
            bpf::detach(&pin).map_err(|e| e.to_string())?;
            format!(
                "detached and removed {} (daemon.detach_on_exit)",
                pin.display()
            )
        } else {
            format!(
                "the tables stay in {} with every session: start cgnat again once the \
                 interface is back and it adopts them",
                pin.display()
            )
        };
        return Err(format!("{msg}; exiting; {tables}"));
    }
    if cfg.detach_on_exit {
        bpf::detach(&pin).map_err(|e| e.to_string())?;
        eprintln!(
            "cgnat: detached and removed {} (daemon.detach_on_exit)",
            pin.display()
        );
    } else {
        eprintln!(
            "cgnat: exiting; XDP programs and tables stay in {} and keep forwarding \
             (the next start adopts them; `cgnat stop --detach` removes them)",
            pin.display()
        );
    }
    Ok(())
}

/// A new config, loaded next to the running program: the same pinned tables
/// (sizes cannot change), a new program with the new settings, switched in
/// atomically on the same links.
fn reload(path: &Path, running: &Config) -> Result<(Config, Datapath), String> {
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    if cfg.pin_path != running.pin_path {
        return Err(format!(
            "daemon.pin_path changed ({} -> {}); restart to move the state",
            running.pin_path.display(),
            cfg.pin_path.display()
        ));
    }
    let dp = load_datapath(&cfg)?;
    Ok((cfg, dp))
}
