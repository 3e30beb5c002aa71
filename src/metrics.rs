//! The Prometheus endpoint: a small HTTP server on `metrics.listen` whose
//! `/metrics` reads the pinned tables at every scrape (so it needs no state
//! of the daemon but a few gauges), summing per-CPU counters. Built on the
//! `prometheus-client` crate's registry and text encoder.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bpf::abi::{proto_name, IPPROTO_TCP};
use crate::bpf::{types, Tables};
use crate::config::Config;
use crate::expiry::{tcp_state, tcp_state_name};

/// What only the daemon knows, shared with the server thread.
#[derive(Debug, Default)]
pub struct DaemonGauges {
    pub sweeps: AtomicU64,
    pub last_sweep_us: AtomicU64,
    /// CPU time of the last sweep (the sweeping thread's, kernel included).
    pub last_sweep_cpu_us: AtomicU64,
    /// CPU time of all sweeps.
    pub sweep_cpu_ns: AtomicU64,
    pub sessions_expired: AtomicU64,
    pub bindings_released: AtomicU64,
    pub log_written: AtomicU64,
    pub log_failed: AtomicU64,
    /// The cluster engine's last status (cluster nodes only).
    pub cluster: std::sync::Mutex<Option<crate::cluster::engine::Status>>,
}

impl DaemonGauges {
    pub fn set_cluster(&self, s: &crate::cluster::engine::Status) {
        if let Ok(mut c) = self.cluster.lock() {
            *c = Some(s.clone());
        }
    }
}

type Labels = Vec<(String, String)>;

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

/// The text exposition of every metric, read now.
pub fn render(cfg: &Config, t: &Tables, d: &DaemonGauges) -> Result<String, String> {
    let mut reg = Registry::with_prefix("cgnat");
    verdicts(&mut reg, t)?;
    sessions(&mut reg, cfg, t)?;
    let per_addr = bindings(&mut reg, cfg, t);
    pool(&mut reg, cfg, &per_addr);
    subscribers(&mut reg, cfg, t);
    events_lost(&mut reg, t);
    daemon(&mut reg, d);
    cluster(&mut reg, d);
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| e.to_string())?;
    Ok(out)
}

/// State sync and slices of a cluster node.
fn cluster(reg: &mut Registry, d: &DaemonGauges) {
    let Some(s) = d.cluster.lock().ok().and_then(|c| c.clone()) else {
        return;
    };
    let c = &s.counters;
    counter(reg, "cluster_messages_sent", "Sync datagrams sent", c.sent);
    counter(
        reg,
        "cluster_messages_received",
        "Sync datagrams accepted",
        c.received,
    );
    counter(
        reg,
        "cluster_messages_acked",
        "Reliable sync messages acknowledged",
        c.acked,
    );
    counter(
        reg,
        "cluster_messages_resent",
        "Reliable sync messages resent",
        c.resent,
    );
    counter(
        reg,
        "cluster_records_sent",
        "State records sent to peers",
        c.records_sent,
    );
    counter(
        reg,
        "cluster_records_applied",
        "Peer state records installed",
        c.records_applied,
    );
    counter(
        reg,
        "cluster_conflicts",
        "Peer records refused because they contradict a live local entry",
        c.conflicts,
    );
    counter(
        reg,
        "cluster_sync_paused",
        "Sync intervals a peer got nothing new because its acknowledgements lagged",
        c.sync_paused,
    );
    let rejected = Family::<Labels, Counter>::default();
    for (reason, n) in &c.rejected {
        rejected
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(*n);
    }
    reg.register(
        "cluster_rejected",
        "Sync datagrams rejected (forged, replayed, truncated, unknown sender)",
        rejected,
    );
    gauge(
        reg,
        "cluster_sync_lag_ms",
        "Age of the oldest unacknowledged sync message",
        s.lag_ms as i64,
    );
    gauge(
        reg,
        "cluster_resynced",
        "1 once this node holds its live peers' state",
        i64::from(s.resynced),
    );
    let up = Family::<Labels, Gauge>::default();
    for p in &s.peers {
        up.get_or_create(&vec![("peer".to_string(), p.id.to_string())])
            .set(i64::from(p.alive));
    }
    reg.register("cluster_peer_up", "1 while a peer's heartbeat arrives", up);
    let owned = Family::<Labels, Gauge>::default();
    for id in &s.serves {
        owned
            .get_or_create(&vec![("slice".to_string(), id.to_string())])
            .set(1);
    }
    reg.register(
        "cluster_slice_served",
        "Slices (by owner node id) this node serves",
        owned,
    );
}

/// Packets and bytes by verdict reason, and the drops among them.
fn verdicts(reg: &mut Registry, t: &Tables) -> Result<(), String> {
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    for c in crate::stats::read(&t.stats).map_err(|e| e.to_string())? {
        let l = vec![("reason".to_string(), c.name.to_string())];
        packets.get_or_create(&l).inc_by(c.packets);
        bytes.get_or_create(&l).inc_by(c.bytes);
        if c.name.starts_with("drop_") {
            drops.get_or_create(&l).inc_by(c.packets);
        }
    }
    reg.register("packets", "Packets by verdict reason", packets);
    reg.register("bytes", "Bytes by verdict reason", bytes);
    reg.register("drops", "Dropped packets by reason", drops);
    Ok(())
}

/// Sessions by protocol and state, and the table's size.
fn sessions(reg: &mut Registry, cfg: &Config, t: &Tables) -> Result<(), String> {
    let mut counts: BTreeMap<(&'static str, &'static str), i64> = BTreeMap::new();
    t.sessions
        .scan(|k, s| {
            let state = match k.proto {
                IPPROTO_TCP => tcp_state_name(tcp_state(s.tcp)),
                _ => "active",
            };
            *counts.entry((proto_name(k.proto), state)).or_default() += 1;
        })
        .map_err(|e| e.to_string())?;
    let sessions = Family::<Labels, Gauge>::default();
    for ((proto, state), n) in counts {
        sessions
            .get_or_create(&vec![
                ("proto".to_string(), proto.to_string()),
                ("state".to_string(), state.to_string()),
            ])
            .set(n);
    }
    reg.register("sessions", "Sessions by protocol and state", sessions);
    gauge(
        reg,
        "sessions_capacity",
        "Session table size",
        i64::from(cfg.max_sessions),
    );
    Ok(())
}

/// Live bindings by protocol, quarantined ports and the table's size;
/// returns the bindings per external address (network order).
fn bindings(reg: &mut Registry, cfg: &Config, t: &Tables) -> BTreeMap<u32, i64> {
    let bindings = Family::<Labels, Gauge>::default();
    let mut per_addr: BTreeMap<u32, i64> = BTreeMap::new();
    let mut quarantined = 0i64;
    let quarantine = types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8;
    let mut per_proto: BTreeMap<&'static str, i64> = BTreeMap::new();
    let _ = t.bindings.scan(|ek, b| {
        if b.flags & quarantine != 0 {
            quarantined += 1;
            return;
        }
        *per_proto.entry(proto_name(ek.proto)).or_default() += 1;
        *per_addr.entry(ek.addr).or_default() += 1;
    });
    for (proto, n) in per_proto {
        bindings
            .get_or_create(&vec![("proto".to_string(), proto.to_string())])
            .set(n);
    }
    reg.register("bindings", "Live bindings by protocol", bindings);
    gauge(
        reg,
        "ports_quarantined",
        "External ports in quarantine",
        quarantined,
    );
    gauge(
        reg,
        "bindings_capacity",
        "Binding table size",
        i64::from(cfg.max_bindings),
    );
    per_addr
}

/// Per external address: bindings and the share of its ports in use.
fn pool(reg: &mut Registry, cfg: &Config, per_addr: &BTreeMap<u32, i64>) {
    let used = Family::<Labels, Gauge>::default();
    let util = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for a in &cfg.pool_addrs {
        let be = u32::from(*a).to_be();
        let v = per_addr.get(&be).copied().unwrap_or(0);
        let l = vec![("address".to_string(), a.to_string())];
        used.get_or_create(&l).set(v);
        // ports of all three protocols against 3 x 64512 usable ports
        util.get_or_create(&l).set(v as f64 / (3.0 * 64512.0));
    }
    reg.register("pool_ports_used", "Bindings per external address", used);
    reg.register(
        "pool_utilisation",
        "Share of an external address's ports in use",
        util,
    );
}

/// Subscribers holding state, and those at a port or session limit.
fn subscribers(reg: &mut Registry, cfg: &Config, t: &Tables) {
    let mut subs = 0i64;
    let mut at_limit = 0i64;
    for (_, s) in t.subscriber_list().unwrap_or_default() {
        subs += 1;
        let l = &cfg.limits;
        if (l.ports > 0 && s.ports.iter().any(|p| *p >= l.ports))
            || (l.sessions > 0 && s.sessions >= l.sessions)
        {
            at_limit += 1;
        }
    }
    gauge(reg, "subscribers", "Subscribers holding state", subs);
    gauge(
        reg,
        "subscribers_at_limit",
        "Subscribers at a port or session limit",
        at_limit,
    );
}

/// Ring-buffer events the data path lost, by type.
fn events_lost(reg: &mut Registry, t: &Tables) {
    let lost = Family::<Labels, Counter>::default();
    for (ty, total) in t.events_lost() {
        lost.get_or_create(&vec![("type".to_string(), ty.to_string())])
            .inc_by(total);
    }
    reg.register(
        "events_lost",
        "Ring-buffer events lost (buffer full), by type",
        lost,
    );
}

/// What only the daemon knows: sweeps and the NAT log.
fn daemon(reg: &mut Registry, d: &DaemonGauges) {
    counter(
        reg,
        "sweeps",
        "Expiry sweeps run",
        d.sweeps.load(Ordering::Relaxed),
    );
    gauge(
        reg,
        "last_sweep_microseconds",
        "Duration of the last expiry sweep",
        d.last_sweep_us.load(Ordering::Relaxed) as i64,
    );
    gauge(
        reg,
        "last_sweep_cpu_microseconds",
        "CPU time of the last expiry sweep (its thread, kernel time included)",
        d.last_sweep_cpu_us.load(Ordering::Relaxed) as i64,
    );
    let cpu: Counter<f64, AtomicU64> = Counter::default();
    cpu.inc_by(d.sweep_cpu_ns.load(Ordering::Relaxed) as f64 / 1e9);
    reg.register(
        "sweep_cpu_seconds",
        "CPU time of all expiry sweeps (their thread, kernel time included)",
        cpu,
    );
    counter(
        reg,
        "sessions_expired",
        "Sessions expired by sweeps",
        d.sessions_expired.load(Ordering::Relaxed),
    );
    counter(
        reg,
        "bindings_released",
        "Bindings released by sweeps",
        d.bindings_released.load(Ordering::Relaxed),
    );
    counter(
        reg,
        "log_records",
        "NAT log records written",
        d.log_written.load(Ordering::Relaxed),
    );
    counter(
        reg,
        "log_failures",
        "NAT log records that could not be written",
        d.log_failed.load(Ordering::Relaxed),
    );
}

/// Serves `/metrics` on `addr` from a thread; returns the bound address.
pub fn serve(
    addr: SocketAddr,
    cfg: Arc<std::sync::Mutex<Config>>,
    gauges: Arc<DaemonGauges>,
) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("metrics.listen {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let cfg = match cfg.lock() {
                    Ok(c) => c.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                let _ = handle(stream, &cfg, &gauges);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(local)
}

fn handle(stream: TcpStream, cfg: &Config, gauges: &DaemonGauges) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = if path == "/metrics" {
        match Tables::open_pinned(&cfg.pin_path)
            .map_err(|e| e.to_string())
            .and_then(|t| render(cfg, &t, gauges))
        {
            Ok(b) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                b,
            ),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".into())
    };
    let mut s = stream;
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
