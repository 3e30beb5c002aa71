//! The daemon: load (or adopt) and attach the data path, then serve its
//! events, sweep its tables and watch its interfaces until SIGINT/SIGTERM;
//! SIGHUP reloads the configuration, SIGUSR1 reopens the NAT log.
//!
//! One turn of the loop ([`Daemon::serve`]) waits at most 50 ms for the
//! event ring or a neighbour notification, then: settles held frames
//! (`neigh`), logs and acts on data-path events, sweeps when
//! `sweep_interval` is due, applies interface changes (`watch`) and reads
//! one signal.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::bpf::{self, from_bytes, types, BpfError, Datapath, LoadOptions, Tables};
use crate::clock::monotonic_ns;
use crate::cluster::engine::{ClusterError, Engine};
use crate::config::{Config, ConfigError, PoolMode};
use crate::log::{self, NatLog, Record};
use crate::metrics::{self, DaemonGauges};
use crate::{expiry, ipfix, neigh, stats, watch};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("NAT log: {0}")]
    Log(String),
    #[error("{what}: {err}")]
    Setup { what: &'static str, err: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("daemon.pin_path changed ({} -> {}); restart to move the state", .from.display(), .to.display())]
    PinPathMoved { from: PathBuf, to: PathBuf },
    /// The daemon cannot go on (a NAT interface is gone): what happened,
    /// what became of the tables, what to do.
    #[error("{0}")]
    Stopped(String),
}

fn setup(what: &'static str) -> impl Fn(nix::Error) -> DaemonError {
    move |e| DaemonError::Setup {
        what,
        err: e.to_string(),
    }
}

/// What ends one run of the event loop.
enum Next {
    Reload,
    Exit,
    /// The daemon cannot go on (a NAT interface is gone): the message.
    Fail(String),
}

/// Runs the daemon with the configuration file `config` until it is
/// told to stop.
pub fn run(config: &Path) -> Result<(), DaemonError> {
    let mut d = Daemon::start(config)?;
    let failure = loop {
        match d.serve()? {
            Next::Exit => break None,
            Next::Fail(msg) => break Some(msg),
            Next::Reload => d.reload(),
        }
    };
    d.finish(failure)
}

/// A config others can write is a way to take over the router: warn.
pub fn warn_permissions(path: &Path) {
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

/// The running daemon's state.
struct Daemon {
    path: PathBuf,
    cfg: Config,
    /// The config the metrics endpoint reads (replaced on reload).
    shared_cfg: Arc<Mutex<Config>>,
    dp: Datapath,
    natlog: NatLog,
    sfd: SignalFd,
    gauges: Arc<DaemonGauges>,
    resolver: neigh::Resolver,
    neighbours: neigh::Listener,
    queue: Rc<RefCell<Vec<types::cgnat_event>>>,
    lost_seen: u64,
    /// Kept across reloads: reloads coming more often than sweep_interval
    /// (each restarting the clock) would otherwise stop expiry altogether.
    next_sweep: Instant,
    /// The last sweep took longer than sweep_interval.
    sweep_overrun: bool,
    /// The cluster engine, when this node is one of a cluster's.
    cluster: Option<Engine>,
    /// When the cluster status file is written next.
    next_status: Instant,
    _registration: Option<crate::instance::Registration>,
}

impl Daemon {
    /// Everything before the first packet is served: signals, the NAT
    /// log, the data path, the registration for the CLI, the route cache
    /// watcher and the metrics endpoint.
    fn start(path: &Path) -> Result<Daemon, DaemonError> {
        let cfg = Config::load(path)?;
        warn_permissions(path);

        // Block the signals first so they arrive through the signalfd.
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            mask.add(s);
        }
        mask.thread_block().map_err(setup("sigprocmask"))?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(setup("signalfd"))?;

        let natlog =
            NatLog::open(&cfg.log, ipfix::Quota::from_config(&cfg)).map_err(DaemonError::Log)?;
        let dp = load_datapath(&cfg)?;
        announce(&cfg, &dp);
        let cluster = match &cfg.cluster {
            Some(cl) => {
                let e = Engine::start(cl, cfg.limits.new_mappings_per_second)?;
                eprintln!("cgnat: cluster: {}", cl.summary());
                Some(e)
            }
            None => None,
        };
        let registration = crate::instance::register(&cfg.pin_path)
            .map_err(|e| {
                eprintln!(
                    "cgnat: warning: cannot register in {}: {e} (the CLI finds the tables only \
                     where {} is visible)",
                    crate::instance::RUN_DIR,
                    cfg.pin_path.display()
                )
            })
            .ok();
        // The route_gen map is pinned, so the watcher's handle stays good
        // across reloads (which adopt the same map). It runs even with
        // interfaces.route_cache = "0s", so that a reload may turn the
        // cache on.
        crate::routes::watch(dp.route_gen()?).map_err(|e| DaemonError::Setup {
            what: "route cache watcher",
            err: e.to_string(),
        })?;
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
        Ok(Daemon {
            path: path.to_owned(),
            next_sweep: Instant::now() + cfg.sweep_interval,
            sweep_overrun: false,
            cfg,
            shared_cfg,
            dp,
            natlog,
            sfd,
            gauges,
            resolver: neigh::Resolver::new().map_err(setup("rtnetlink socket"))?,
            neighbours: neigh::Listener::new().map_err(setup("rtnetlink socket (neighbours)"))?,
            queue: Rc::default(),
            lost_seen: 0,
            cluster,
            next_status: Instant::now(),
            _registration: registration,
        })
    }

    /// Serves the loaded program until a signal or a lost interface ends
    /// this run.
    fn serve(&mut self) -> Result<Next, DaemonError> {
        let tables = self.dp.tables()?;
        let sweeper = sweeper_for(&self.cfg);
        let mut rb = libbpf_rs::RingBufferBuilder::new();
        let sink = Rc::clone(&self.queue);
        rb.add(self.dp.events(), move |data: &[u8]| {
            if let Some(ev) = from_bytes::<types::cgnat_event>(data) {
                sink.borrow_mut().push(ev);
            }
            0
        })
        .map_err(|e| DaemonError::Setup {
            what: "ring buffer",
            err: e.to_string(),
        })?;
        let rb = rb.build().map_err(|e| DaemonError::Setup {
            what: "ring buffer",
            err: e.to_string(),
        })?;
        // The interfaces as this program was attached to them.
        let mut watch = watch::Watch::new(&[&self.cfg.internal_if, &self.cfg.external_if]);
        loop {
            let wait = self
                .next_sweep
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            wait_for_events(&rb, &self.neighbours, wait);
            let _ = rb.consume();
            self.settle_neighbours();
            let batch: Vec<types::cgnat_event> = self.queue.borrow_mut().drain(..).collect();
            for ev in batch {
                handle_event(&self.dp, &mut self.resolver, &mut self.natlog, &ev);
            }
            if Instant::now() >= self.next_sweep {
                // Sweeps start every sweep_interval, however long each
                // takes (at once again if one took longer), so the bounds
                // of src/expiry.rs hold in intervals, not in intervals
                // plus sweep times.
                let started = Instant::now();
                self.sweep(&sweeper, &tables);
                self.next_sweep = started + self.cfg.sweep_interval;
                let took = started.elapsed();
                let interval = self.cfg.sweep_interval;
                if let Some(msg) = overrun_notice(took, interval, &mut self.sweep_overrun) {
                    eprintln!("cgnat: {msg}");
                }
            }
            self.natlog.flush();
            self.cluster_turn(&tables);
            if let Some(msg) = self.apply_interface_changes(&mut watch) {
                return Ok(Next::Fail(msg));
            }
            if let Some(next) = self.read_signal()? {
                return Ok(next);
            }
        }
    }

    /// One turn of the cluster engine; applies a change of the slices this
    /// node serves to the data path, and writes the status `cgnat cluster`
    /// reads about once a second.
    fn cluster_turn(&mut self, tables: &Tables) {
        let Some(engine) = self.cluster.as_mut() else {
            return;
        };
        let now = Instant::now();
        if let Some(mask) = engine.turn(tables, now) {
            if let Err(e) = self.dp.set_slices_active(&self.cfg, mask) {
                eprintln!("cgnat: cluster: cannot update the data path's slices: {e}");
            }
        }
        if now >= self.next_status {
            self.next_status = now + Duration::from_millis(500);
            match self.dp.self_check(&self.cfg) {
                Ok(()) => engine.set_healthy(true, ""),
                Err(why) => engine.set_healthy(false, &why),
            }
            let status = engine.status(now);
            self.gauges.set_cluster(&status);
            let _ = crate::instance::write_status(&status);
        }
    }

    /// Releases or answers the frames held for next hops that resolved or
    /// failed.
    fn settle_neighbours(&mut self) {
        let (outcomes, overrun) = self.neighbours.drain();
        neigh::settle(&self.dp, &outcomes);
        if overrun {
            // notifications lost: give up on what waits too long
            neigh::settle_overdue(&self.dp);
        }
    }

    /// One sweep: expiry, overdue held frames, lost events, the NAT log
    /// of released mappings and blocks, the gauges.
    fn sweep(&mut self, sweeper: &expiry::Sweeper, tables: &Tables) {
        let started = Instant::now();
        let cpu0 = crate::clock::thread_cpu_ns();
        let result = sweeper.sweep(tables, monotonic_ns());
        let cpu = crate::clock::thread_cpu_ns().saturating_sub(cpu0);
        let g = Arc::clone(&self.gauges);
        g.sweeps.fetch_add(1, Ordering::Relaxed);
        g.last_sweep_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        g.last_sweep_cpu_us.store(cpu / 1000, Ordering::Relaxed);
        g.sweep_cpu_ns.fetch_add(cpu, Ordering::Relaxed);
        neigh::settle_overdue(&self.dp);
        self.report_lost_events(tables);
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cgnat: warning: sweep failed: {e}");
                return;
            }
        };
        g.sessions_expired
            .fetch_add(r.sessions_expired, Ordering::Relaxed);
        g.bindings_released
            .fetch_add(r.bindings_released, Ordering::Relaxed);
        self.log_releases(&r);
        g.log_written.store(self.natlog.written, Ordering::Relaxed);
        g.log_failed.store(self.natlog.failed, Ordering::Relaxed);
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

    /// NAT log records of what a sweep released: mappings (dynamic mode;
    /// port-block and deterministic modes log blocks) and port blocks.
    fn log_releases(&mut self, r: &expiry::SweepReport) {
        let now = SystemTime::now();
        if self.cfg.mode == PoolMode::Dynamic {
            for b in &r.released {
                self.natlog.write(
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
            let p = self.cfg.blocks.ports(b.block);
            self.natlog.write(
                &Record::BlockRelease {
                    subscriber: b.subscriber,
                    external: b.external,
                    ports: (*p.start(), *p.end()),
                },
                now,
            );
        }
    }

    /// Warns about and logs the events the data path lost since the last
    /// look (its ring buffer was full).
    fn report_lost_events(&mut self, tables: &Tables) {
        let lost: u64 = tables.events_lost().iter().map(|(_, n)| n).sum();
        if lost > self.lost_seen {
            let count = lost - self.lost_seen;
            eprintln!("cgnat: warning: {count} data-path events lost (ring buffer full)");
            self.natlog
                .write(&Record::EventsLost { count }, SystemTime::now());
            self.lost_seen = lost;
        }
    }

    /// Applies address and MAC changes of the NAT interfaces; returns the
    /// message when one is gone for good.
    fn apply_interface_changes(&mut self, watch: &mut watch::Watch) -> Option<String> {
        for change in watch.poll(Instant::now()) {
            if change.fatal() {
                return Some(change.to_string());
            }
            eprintln!("cgnat: {change}");
            let r = match &change {
                watch::Change::Address { ifindex, now, .. } => {
                    self.dp.set_interface_addr(*ifindex, *now)
                }
                watch::Change::Mac { name, now } => {
                    self.dp.set_interface_mac(&self.cfg, name, *now)
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                eprintln!("cgnat: warning: {e}");
            }
        }
        None
    }

    /// Reads one pending signal: SIGHUP reloads, SIGUSR1 reopens the NAT
    /// log (and goes on), SIGINT/SIGTERM exit.
    fn read_signal(&mut self) -> Result<Option<Next>, DaemonError> {
        let Some(si) = self.sfd.read_signal().map_err(setup("signalfd"))? else {
            return Ok(None);
        };
        match Signal::try_from(si.ssi_signo as i32).ok() {
            Some(Signal::SIGHUP) => Ok(Some(Next::Reload)),
            Some(Signal::SIGUSR1) => {
                if let Err(e) = self.natlog.reopen() {
                    eprintln!("cgnat: warning: reopening the NAT log: {e}");
                }
                Ok(None)
            }
            Some(Signal::SIGUSR2) => {
                match self.cluster.as_mut() {
                    Some(e) => {
                        eprintln!("cgnat: cluster: failback requested");
                        e.request_failback();
                    }
                    None => eprintln!("cgnat: SIGUSR2 ignored: not a cluster node"),
                }
                Ok(None)
            }
            sig => {
                eprintln!(
                    "cgnat: {} received",
                    sig.map(|s| s.as_str()).unwrap_or("signal")
                );
                Ok(Some(Next::Exit))
            }
        }
    }

    /// SIGHUP: a new config, loaded next to the running program (the same
    /// pinned tables, whose sizes cannot change; a new program with the
    /// new settings, switched in atomically on the same links). A rejected
    /// config leaves the running one in place.
    fn reload(&mut self) {
        let (cfg, dp) = match load_next(&self.path, &self.cfg) {
            Ok(next) => next,
            Err(e) => {
                eprintln!("cgnat: SIGHUP: reload rejected, the running configuration stays: {e}");
                return;
            }
        };
        eprintln!("cgnat: SIGHUP: reloaded {}", self.path.display());
        self.dp = dp; // the old programs go; maps and links stay
        let quota = ipfix::Quota::from_config(&cfg);
        if cfg.log != self.cfg.log {
            match NatLog::open(&cfg.log, quota) {
                Ok(l) => {
                    // what the old output still holds goes before it does
                    self.natlog.flush();
                    self.natlog = l;
                }
                Err(e) => eprintln!("cgnat: warning: NAT log unchanged: {e}"),
            }
        } else {
            self.natlog.set_quota(quota);
            if let Err(e) = self.natlog.reopen() {
                eprintln!("cgnat: warning: reopening the NAT log: {e}");
            }
        }
        self.cfg = cfg;
        if let Ok(mut c) = self.shared_cfg.lock() {
            *c = self.cfg.clone();
        }
        announce(&self.cfg, &self.dp);
    }

    /// Leaves the data path as `daemon.detach_on_exit` says; after a
    /// failure, one error that says what happened, what became of the
    /// tables and what to do.
    fn finish(mut self, failure: Option<String>) -> Result<(), DaemonError> {
        if let Some(e) = self.cluster.as_mut() {
            e.stop();
            crate::instance::remove_status();
        }
        let pin = self.cfg.pin_path.clone();
        let detach = self.cfg.detach_on_exit;
        drop(self.dp);
        if let Some(msg) = failure {
            let tables = if detach {
                bpf::detach(&pin)?;
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
            return Err(DaemonError::Stopped(format!("{msg}; exiting; {tables}")));
        }
        if detach {
            bpf::detach(&pin)?;
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
}

/// Loads a new config next to the running one: the pin path cannot move.
fn load_next(path: &Path, running: &Config) -> Result<(Config, Datapath), DaemonError> {
    let cfg = Config::load(path)?;
    if cfg.pin_path != running.pin_path {
        return Err(DaemonError::PinPathMoved {
            from: running.pin_path.clone(),
            to: cfg.pin_path.clone(),
        });
    }
    let dp = load_datapath(&cfg)?;
    Ok((cfg, dp))
}

fn load_datapath(cfg: &Config) -> Result<Datapath, BpfError> {
    Datapath::load(
        cfg,
        LoadOptions {
            attach: true,
            pin: true,
        },
    )
}

fn sweeper_for(cfg: &Config) -> expiry::Sweeper {
    expiry::Sweeper {
        timeouts: cfg.timeouts.clone(),
        quarantine: cfg.port_quarantine,
        blocks: (cfg.mode == PoolMode::PortBlock).then_some(cfg.blocks),
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

/// Sleeps until the data path wakes the ring buffer, a neighbour
/// notification arrives, or `wait` has passed. NAT log records do not wake
/// the ring until a batch of them is unread (bpf/events.h), so the loop
/// must not wait longer than its 50 ms.
fn wait_for_events(rb: &libbpf_rs::RingBuffer, neighbours: &neigh::Listener, wait: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [
        PollFd::new(bpf::ring_fd(rb), PollFlags::POLLIN),
        PollFd::new(neighbours.fd(), PollFlags::POLLIN),
    ];
    let ms = PollTimeout::from(wait.as_millis().min(1000) as u16);
    let _ = poll(&mut fds, ms);
}

/// One ring-buffer record from the data path.
fn handle_event(
    dp: &Datapath,
    resolver: &mut neigh::Resolver,
    natlog: &mut NatLog,
    ev: &types::cgnat_event,
) {
    let a = |be: u32| Ipv4Addr::from(u32::from_be(be));
    let ts = || log::wall_time(ev.ts_ns, monotonic_ns());
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

/// What to say when sweeps start taking longer than `sweep_interval`, and
/// when they fit in it again (once per change, `overrun` remembers). While
/// they overrun, sweeps run back to back and a session ends up to two
/// sweep durations after its timeout, instead of one interval.
fn overrun_notice(took: Duration, interval: Duration, overrun: &mut bool) -> Option<String> {
    let over = took > interval;
    if over == *overrun {
        return None;
    }
    *overrun = over;
    Some(if over {
        format!(
            "warning: a sweep took {:.2} s, longer than daemon.sweep_interval ({:.2} s): \
             sweeps now run back to back and sessions expire up to {:.1} s after their \
             timeout; a larger sweep_interval, or smaller tables, make expiry regular again",
            took.as_secs_f64(),
            interval.as_secs_f64(),
            2.0 * took.as_secs_f64()
        )
    } else {
        format!(
            "sweeps fit in daemon.sweep_interval again ({:.2} s of {:.2} s)",
            took.as_secs_f64(),
            interval.as_secs_f64()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_overrun_is_told_once_and_so_is_its_end() {
        let ms = Duration::from_millis;
        let mut over = false;
        assert_eq!(overrun_notice(ms(300), ms(1000), &mut over), None);
        let first = overrun_notice(ms(3100), ms(1000), &mut over).expect("overrun told");
        assert!(
            first.contains("3.10 s") && first.contains("6.2 s"),
            "{first}"
        );
        assert_eq!(
            overrun_notice(ms(3200), ms(1000), &mut over),
            None,
            "told once"
        );
        let back = overrun_notice(ms(900), ms(1000), &mut over).expect("end told");
        assert!(back.contains("again"), "{back}");
        assert_eq!(overrun_notice(ms(900), ms(1000), &mut over), None);
    }
}
