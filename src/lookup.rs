//! Answers about who uses what: `cgnat forward`, `cgnat reverse` and
//! `cgnat subscribers`. Deterministic mode answers from the config alone
//! (RFC 7422: no per-session state to log); the other modes read the
//! running daemon's pinned tables.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::abi::{proto_idx, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, PROTOCOLS};
use crate::bpf::{bytes_of, from_bytes, types, BpfError, Tables};
use crate::config::{Config, PoolMode};

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0} is not in nat.internal_prefixes")]
    NotSubscriber(Ipv4Addr),
    #[error("{0} is not in nat.external_pool")]
    NotExternal(Ipv4Addr),
    #[error("{0} belongs to no subscriber now")]
    Unused(SocketAddrV4),
    #[error("{0} holds nothing now")]
    Idle(Ipv4Addr),
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// Where a subscriber is (or would be) on the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub subscriber: Ipv4Addr,
    pub external: Ipv4Addr,
    /// Port ranges, inclusive; empty when ports are allocated one by one.
    pub ranges: Vec<(u16, u16)>,
    /// "deterministic" (from the config) or "live" (running daemon).
    pub source: &'static str,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.subscriber, self.external)?;
        for (lo, hi) in &self.ranges {
            write!(f, " ports {lo}-{hi}")?;
        }
        write!(f, " ({})", self.source)
    }
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

pub fn forward(cfg: &Config, sub: Ipv4Addr) -> Result<Placement, LookupError> {
    if !cfg.internal_prefixes.iter().any(|p| p.contains(sub)) {
        return Err(LookupError::NotSubscriber(sub));
    }
    if let Some(d) = &cfg.deterministic {
        let (ext, r) = d.forward(sub).ok_or(LookupError::NotSubscriber(sub))?;
        return Ok(Placement {
            subscriber: sub,
            external: ext,
            ranges: vec![(*r.start(), *r.end())],
            source: "deterministic",
        });
    }
    let t = Tables::open_pinned(&cfg.pin_path)?;
    let key = u32::from(sub).to_be();
    let s = t
        .subscribers
        .lookup(bytes_of(&key), MapFlags::ANY)
        .map_err(|err| BpfError::Map {
            map: "subscribers",
            err,
        })?
        .and_then(|v| from_bytes::<types::cgnat_subscriber>(&v))
        .ok_or(LookupError::Idle(sub))?;
    let mut ranges = Vec::new();
    if cfg.mode == PoolMode::PortBlock {
        for slot in 0..cfg.blocks.max_blocks {
            let k = types::cgnat_sub_block_key { sub: key, slot };
            if let Ok(Some(v)) = t.sub_blocks.lookup(bytes_of(&k), MapFlags::ANY) {
                if let Some(n) = from_bytes::<u32>(&v) {
                    let r = cfg.blocks.ports(n);
                    ranges.push((*r.start(), *r.end()));
                }
            }
        }
        ranges.sort_unstable();
    }
    Ok(Placement {
        subscriber: sub,
        external: addr(s.ext_addr),
        ranges,
        source: "live",
    })
}

pub fn reverse(cfg: &Config, ep: SocketAddrV4) -> Result<Placement, LookupError> {
    let ext = *ep.ip();
    if !cfg.pool_prefixes.iter().any(|p| p.contains(ext)) {
        return Err(LookupError::NotExternal(ext));
    }
    if let Some(d) = &cfg.deterministic {
        let sub = d.reverse(ext, ep.port()).ok_or(LookupError::Unused(ep))?;
        return forward(cfg, sub);
    }
    let t = Tables::open_pinned(&cfg.pin_path)?;
    if cfg.mode == PoolMode::PortBlock {
        if let Some(n) = cfg.blocks.block_of(ep.port()) {
            let k = types::cgnat_block_key {
                ext_addr: u32::from(ext).to_be(),
                block: n,
            };
            if let Ok(Some(v)) = t.blocks.lookup(bytes_of(&k), MapFlags::ANY) {
                if let Some(b) = from_bytes::<types::cgnat_block>(&v) {
                    let r = cfg.blocks.ports(n);
                    return Ok(Placement {
                        subscriber: addr(b.owner),
                        external: ext,
                        ranges: vec![(*r.start(), *r.end())],
                        source: "live",
                    });
                }
            }
        }
    }
    // a binding of any protocol on that port
    for proto in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP] {
        let k = types::cgnat_endpoint {
            addr: u32::from(ext).to_be(),
            port: ep.port().to_be(),
            proto,
            _pad: 0,
        };
        if let Ok(Some(b)) = t.bindings.get_in(&k) {
            if b.flags & types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8 == 0 {
                return Ok(Placement {
                    subscriber: addr(b.addr),
                    external: ext,
                    ranges: vec![(ep.port(), ep.port())],
                    source: "live",
                });
            }
        }
    }
    Err(LookupError::Unused(ep))
}

/// One row of `cgnat subscribers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberView {
    pub subscriber: Ipv4Addr,
    pub external: Ipv4Addr,
    pub ports: [u32; 3],
    pub sessions: u32,
}

pub fn subscribers(t: &Tables) -> Result<Vec<SubscriberView>, LookupError> {
    let mut out: Vec<SubscriberView> = t
        .subscriber_list()?
        .into_iter()
        .map(|(a, s)| SubscriberView {
            subscriber: addr(a),
            external: addr(s.ext_addr),
            ports: s.ports,
            sessions: s.sessions,
        })
        .collect();
    out.sort_by_key(|s| s.subscriber);
    Ok(out)
}

/// One row of `cgnat pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub address: Ipv4Addr,
    pub subscribers: u32,
    /// Live bindings: tcp, udp, icmp.
    pub bindings: [u32; PROTOCOLS],
    pub quarantined: u32,
}

pub fn pool(cfg: &Config, t: &Tables) -> Result<Vec<PoolRow>, LookupError> {
    use std::collections::HashMap;
    let mut rows: Vec<PoolRow> = cfg
        .pool_addrs
        .iter()
        .map(|a| PoolRow {
            address: *a,
            subscribers: 0,
            bindings: [0; PROTOCOLS],
            quarantined: 0,
        })
        .collect();
    let idx: HashMap<Ipv4Addr, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.address, i))
        .collect();
    for s in subscribers(t)? {
        if let Some(&i) = idx.get(&s.external) {
            rows[i].subscribers += 1;
        }
    }
    let q = types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8;
    t.bindings.scan(|ek, b| {
        let Some(&i) = idx.get(&addr(ek.addr)) else {
            return;
        };
        if b.flags & q != 0 {
            rows[i].quarantined += 1;
        } else {
            rows[i].bindings[proto_idx(ek.proto)] += 1;
        }
    })?;
    Ok(rows)
}

/// What `cgnat status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub pin_path: std::path::PathBuf,
    /// Pinned XDP links (program, ifindex).
    pub links: Vec<String>,
    pub sessions: (u64, u32),
    pub bindings: (u64, u32),
    pub subscribers: (u64, u32),
    pub pool_addresses: usize,
    pub mode: &'static str,
}

impl Status {
    pub fn json(&self) -> String {
        format!(
            "{{\"pin_path\":\"{}\",\"attached\":{},\"links\":[{}],\"mode\":\"{}\",\"pool_addresses\":{},\
             \"sessions\":{},\"sessions_capacity\":{},\"bindings\":{},\"bindings_capacity\":{},\
             \"subscribers\":{},\"subscribers_capacity\":{}}}",
            self.pin_path.display(),
            !self.links.is_empty(),
            self.links
                .iter()
                .map(|l| format!("\"{l}\""))
                .collect::<Vec<_>>()
                .join(","),
            self.mode,
            self.pool_addresses,
            self.sessions.0,
            self.sessions.1,
            self.bindings.0,
            self.bindings.1,
            self.subscribers.0,
            self.subscribers.1
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.links.is_empty() {
            writeln!(
                f,
                "data path: not attached (no links pinned in {})",
                self.pin_path.display()
            )?;
        } else {
            writeln!(f, "data path: attached ({})", self.links.join(", "))?;
        }
        writeln!(f, "state:     {}", self.pin_path.display())?;
        writeln!(
            f,
            "pool:      {} addresses, {} allocation",
            self.pool_addresses, self.mode
        )?;
        let pct = |(n, c): (u64, u32)| 100.0 * n as f64 / f64::from(c.max(1));
        writeln!(
            f,
            "sessions:  {} of {} ({:.1}%)",
            self.sessions.0,
            self.sessions.1,
            pct(self.sessions)
        )?;
        writeln!(
            f,
            "bindings:  {} of {} ({:.1}%)",
            self.bindings.0,
            self.bindings.1,
            pct(self.bindings)
        )?;
        write!(
            f,
            "subscribers: {} of {} ({:.1}%)",
            self.subscribers.0,
            self.subscribers.1,
            pct(self.subscribers)
        )
    }
}

pub fn status(cfg: &Config) -> Result<Status, LookupError> {
    let mut links: Vec<String> = std::fs::read_dir(&cfg.pin_path)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("link_"))
                .map(|n| {
                    let rest = n.trim_start_matches("link_");
                    match rest.rsplit_once('_') {
                        Some((prog, idx)) => format!(
                            "{prog} on {}",
                            idx.parse::<u32>()
                                .map(crate::bpf::ifname)
                                .unwrap_or_default()
                        ),
                        None => rest.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    let t = Tables::open_pinned(&cfg.pin_path)?;
    let count = |m: &dyn MapCore| m.keys().count() as u64;
    Ok(Status {
        pin_path: cfg.pin_path.clone(),
        links,
        sessions: (t.sessions.count()?, cfg.max_sessions),
        bindings: (t.bindings.count()?, cfg.max_bindings),
        subscribers: (count(&t.subscribers), cfg.max_subscribers),
        pool_addresses: cfg.pool_addrs.len(),
        mode: match cfg.mode {
            PoolMode::Dynamic => "dynamic",
            PoolMode::PortBlock => "port-block",
            PoolMode::Deterministic => "deterministic",
        },
    })
}
