//! The read-only commands of the `cgnat` CLI and `cgnat stop --detach`:
//! each reads the running daemon's pinned tables (or only the config)
//! and prints a table or JSON on stdout.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use crate::bpf::{self, BpfError, Tables};
use crate::config::{Config, ConfigError};
use crate::lookup::LookupError;
use crate::{expiry, lookup, stats};

/// Why a command failed (main prints it and exits with status 1).
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error(transparent)]
    Top(#[from] crate::top::TopError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot enter network namespace {ns}: {err}")]
    Netns { ns: String, err: String },
}

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

/// Moves this process into the network namespace /run/netns/NAME.
pub fn enter_netns(ns: &str) -> Result<(), CmdError> {
    let path = Path::new("/run/netns").join(ns);
    let err = |e: String| CmdError::Netns {
        ns: ns.to_owned(),
        err: e,
    };
    let f = std::fs::File::open(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| err(e.to_string()))
}

/// The config as a read-only command uses it: the pin path is where this
/// process can read the daemon's tables (src/instance.rs).
fn cli_config(path: &Path) -> Result<Config, ConfigError> {
    let mut cfg = Config::load(path)?;
    cfg.pin_path = crate::instance::locate_pins(&cfg.pin_path);
    Ok(cfg)
}

/// The config and the running daemon's tables.
fn open_tables(path: &Path) -> Result<(Config, Tables), CmdError> {
    let cfg = cli_config(path)?;
    let t = Tables::open_pinned(&cfg.pin_path)?;
    Ok((cfg, t))
}

/// `cgnat check`: validates the config, prints a summary and the warnings.
pub fn check(path: &Path) -> Result<(), CmdError> {
    let cfg = Config::load(path)?;
    crate::daemon::warn_permissions(path);
    for w in crate::veth::warnings(&cfg) {
        eprintln!("cgnat: {w}");
    }
    outln!(
        "{}: ok ({} external addresses, {} internal prefixes, {} sessions max)",
        cfg.file.display(),
        cfg.pool_addrs.len(),
        cfg.internal_prefixes.len(),
        cfg.max_sessions
    );
    if let Some(cl) = &cfg.cluster {
        outln!("cluster: this is {}", cl.summary());
        for n in &cl.nodes {
            let addrs = cfg
                .pool_addrs
                .iter()
                .filter(|a| n.serves_external(**a))
                .count();
            outln!(
                "  slice {}: {} subscriber addresses -> {addrs} external addresses",
                n.id,
                n.subscribers
                    .iter()
                    .map(|p| u64::from(p.size()))
                    .sum::<u64>()
            );
        }
    }
    Ok(())
}

/// `cgnat stats`: the data path's counters.
pub fn stats(path: &Path, json: bool) -> Result<(), CmdError> {
    let (_, t) = open_tables(path)?;
    let c = stats::read(&t.stats)?;
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

/// What `cgnat sessions` shows: every filter given must match.
pub struct SessionFilter {
    pub subscriber: Option<Ipv4Addr>,
    /// IP or IP:PORT.
    pub external: Option<String>,
    pub proto: Option<String>,
}

/// `cgnat sessions`: the sessions with state and remaining time.
pub fn sessions(path: &Path, f: &SessionFilter, json: bool) -> Result<(), CmdError> {
    let (cfg, t) = open_tables(path)?;
    let (ext_ip, ext_port) = match &f.external {
        None => (None, None),
        Some(e) => match e.parse::<SocketAddrV4>() {
            Ok(sa) => (Some(*sa.ip()), Some(sa.port())),
            Err(_) => (
                Some(e.parse::<Ipv4Addr>().map_err(|_| {
                    CmdError::Usage(format!("--external {e:?}: expected IP or IP:PORT"))
                })?),
                None,
            ),
        },
    };
    let list: Vec<_> = expiry::list_sessions(&t, &cfg.timeouts, crate::clock::monotonic_ns())?
        .into_iter()
        .filter(|s| f.subscriber.is_none_or(|a| s.internal.0 == a))
        .filter(|s| ext_ip.is_none_or(|a| s.external.0 == a))
        .filter(|s| ext_port.is_none_or(|p| s.external.1 == p))
        .filter(|s| f.proto.as_deref().is_none_or(|p| s.proto == p))
        .collect();
    print_sessions(&list, json);
    Ok(())
}

/// `cgnat status`: whether the data path is in place and how full it is.
pub fn status(path: &Path, json: bool) -> Result<(), CmdError> {
    let st = lookup::status(&cli_config(path)?)?;
    if json {
        outln!("{}", st.json());
    } else {
        outln!("{st}");
    }
    Ok(())
}

/// `cgnat pool`: per external address, subscribers and bindings.
pub fn pool(path: &Path, json: bool) -> Result<(), CmdError> {
    let (cfg, t) = open_tables(path)?;
    let rows = lookup::pool(&cfg, &t)?;
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
        return Ok(());
    }
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
    Ok(())
}

/// `cgnat stop --detach`: removes what a daemon left pinned.
pub fn stop(path: &Path, detach: bool) -> Result<(), CmdError> {
    if !detach {
        return Err(CmdError::Usage(
            "`cgnat stop` needs --detach: it removes every session and stops forwarding \
             (stop the daemon itself with SIGTERM / systemctl stop)"
                .into(),
        ));
    }
    let cfg = Config::load(path)?;
    let removed = bpf::detach(&cfg.pin_path)?;
    outln!(
        "removed {} pinned objects from {}",
        removed.len(),
        cfg.pin_path.display()
    );
    Ok(())
}

/// `cgnat forward`: the external address and ports of a subscriber.
pub fn forward(path: &Path, addr: Ipv4Addr) -> Result<(), CmdError> {
    outln!("{}", lookup::forward(&cli_config(path)?, addr)?);
    Ok(())
}

/// `cgnat reverse`: the subscriber behind an external ip:port.
pub fn reverse(path: &Path, endpoint: SocketAddrV4) -> Result<(), CmdError> {
    outln!("{}", lookup::reverse(&cli_config(path)?, endpoint)?);
    Ok(())
}

/// `cgnat top`: the live view, or with `batch` its text `iterations` times.
/// `cgnat cluster [--json] [failback]`: what the running daemon of this
/// network namespace last wrote about its cluster.
pub fn cluster(path: &Path, json: bool, action: Option<&str>) -> Result<(), CmdError> {
    let cfg = Config::load(path)?;
    let Some(cl) = &cfg.cluster else {
        return Err(CmdError::Usage(format!(
            "{} has no [cluster] table",
            path.display()
        )));
    };
    let pid = crate::instance::daemon_pid(&cfg.pin_path).ok_or_else(|| {
        CmdError::Usage(format!(
            "no running cgnat daemon in this network namespace uses {}",
            cfg.pin_path.display()
        ))
    })?;
    match action {
        None => {}
        Some("failback") => {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGUSR2,
            )
            .map_err(|e| CmdError::Usage(format!("cannot signal daemon {pid}: {e}")))?;
            outln!("asked node {} (pid {pid}) to take its slice back", cl.id);
            return Ok(());
        }
        Some(other) => {
            return Err(CmdError::Usage(format!(
                "unknown cluster action {other:?} (known: failback)"
            )))
        }
    }
    let text = crate::instance::read_status(&cfg.pin_path).ok_or_else(|| {
        CmdError::Usage(format!("daemon {pid} has written no cluster status yet"))
    })?;
    if json {
        outln!("{}", text.trim_end());
        return Ok(());
    }
    let s: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CmdError::Usage(format!("unreadable cluster status: {e}")))?;
    outln!(
        "node {} serves slices {} (resynced: {}, failback: {}, sync lag {} ms)",
        s["id"],
        s["serves"],
        s["resynced"],
        s["failback"].as_str().unwrap_or("?"),
        s["lag_ms"]
    );
    for n in &cl.nodes {
        let subs: Vec<String> = n.subscribers.iter().map(|p| p.to_string()).collect();
        let pool: Vec<String> = n.pool.iter().map(|p| p.to_string()).collect();
        outln!(
            "  slice {}: subscribers {} -> pool {}",
            n.id,
            subs.join(","),
            pool.join(",")
        );
    }
    if let Some(peers) = s["peers"].as_array() {
        for p in peers {
            outln!(
                "  peer {} {}: {}, serves {}, heard {} ms ago, {} unacked",
                p["id"],
                p["address"].as_str().unwrap_or("?"),
                if p["alive"].as_bool() == Some(true) {
                    "up"
                } else {
                    "DOWN"
                },
                p["serves"],
                p["heard_ms_ago"],
                p["unacked"]
            );
        }
    }
    outln!("  counters: {}", s["counters"]);
    Ok(())
}

pub fn top(path: &Path, interval: &str, batch: bool, iterations: u32) -> Result<(), CmdError> {
    let every = crate::config::parse_duration(interval)
        .map_err(|e| CmdError::Usage(format!("--interval: {e}")))?;
    if every < std::time::Duration::from_millis(100) {
        return Err(CmdError::Usage("--interval: at least 100ms".into()));
    }
    let (cfg, t) = open_tables(path)?;
    if batch {
        crate::top::run_batch(&cfg, &t, every, iterations)?;
    } else {
        crate::top::run_interactive(&cfg, &t, every)?;
    }
    Ok(())
}

/// `cgnat subscribers`: external address, ports per protocol, sessions.
pub fn subscribers(path: &Path, json: bool) -> Result<(), CmdError> {
    let (_, t) = open_tables(path)?;
    let list = lookup::subscribers(&t)?;
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
        return Ok(());
    }
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
    Ok(())
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
