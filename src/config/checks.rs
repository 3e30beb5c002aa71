//! Validation of each part of the raw configuration: every function
//! returns the part ready to use or an error naming the file, the field and
//! why.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;

use crate::bpf::abi::{IPPROTO_TCP, IPPROTO_UDP};

use super::raw::{RawConfig, RawLog, RawMetrics, RawNat, RawStatic, RawTimeouts};
use super::{
    ConfigError, Exemption, LogOutput, PoolMode, StaticMapping, Timeouts, MAX_POOL_ADDRS,
    MAX_PREFIXES,
};

/// The numbering: subscriber prefixes, pool prefixes, and the pool's
/// addresses in config order without duplicates.
pub(super) struct Numbering {
    pub(super) internal_prefixes: Vec<Ipv4Network>,
    pub(super) pool_prefixes: Vec<Ipv4Network>,
    pub(super) pool_addrs: Vec<Ipv4Addr>,
}

/// Builds the errors of one file.
pub(super) struct Checker<'a> {
    pub(super) file: &'a Path,
}

impl Checker<'_> {
    pub(super) fn invalid(&self, field: &'static str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            field,
            reason,
        }
    }

    pub(super) fn duration(&self, field: &'static str, s: &str) -> Result<Duration, ConfigError> {
        parse_duration(s).map_err(|r| self.invalid(field, r))
    }

    /// An interface name as the kernel accepts it.
    pub(super) fn interface(&self, field: &'static str, name: &str) -> Result<String, ConfigError> {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            Err(self.invalid(field, format!("{name:?} is not an interface name")))
        } else {
            Ok(name.to_owned())
        }
    }

    /// The subscriber prefixes, the pool prefixes and the pool's
    /// addresses, which must not overlap (RFC 4787 REQ-7).
    pub(super) fn numbering(&self, nat: &RawNat) -> Result<Numbering, ConfigError> {
        let invalid = |field, reason| self.invalid(field, reason);
        let internal_prefixes = parse_prefixes(&nat.internal_prefixes)
            .map_err(|r| invalid("nat.internal_prefixes", r))?;
        let pool_prefixes =
            parse_prefixes(&nat.external_pool).map_err(|r| invalid("nat.external_pool", r))?;
        for p in &pool_prefixes {
            if let Some(i) = internal_prefixes.iter().find(|i| overlaps(p, i)) {
                return Err(invalid(
                    "nat.external_pool",
                    format!(
                        "{p} overlaps internal prefix {i}: inside and outside numbering must not \
                         conflict (RFC 4787 REQ-7)"
                    ),
                ));
            }
        }
        for (a, pa) in pool_prefixes.iter().enumerate() {
            for pb in &pool_prefixes[a + 1..] {
                if overlaps(pa, pb) {
                    return Err(invalid(
                        "nat.external_pool",
                        format!("{pa} and {pb} overlap"),
                    ));
                }
            }
        }
        let total: u64 = pool_prefixes.iter().map(|p| p.size() as u64).sum();
        if total > MAX_POOL_ADDRS as u64 {
            return Err(invalid(
                "nat.external_pool",
                format!("{total} addresses; at most {MAX_POOL_ADDRS} are supported"),
            ));
        }
        let mut seen = BTreeSet::new();
        let pool_addrs: Vec<Ipv4Addr> = pool_prefixes
            .iter()
            .flat_map(|p| p.iter())
            .filter(|a| seen.insert(*a))
            .collect();
        for a in &pool_addrs {
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                return Err(invalid(
                    "nat.external_pool",
                    format!("{a} cannot be an external address"),
                ));
            }
        }
        Ok(Numbering {
            internal_prefixes,
            pool_prefixes,
            pool_addrs,
        })
    }

    /// The table sizes and the MSS clamp.
    pub(super) fn sizes(&self, nat: &RawNat) -> Result<(), ConfigError> {
        if nat.mss_clamp != 0 && nat.mss_clamp < 536 {
            return Err(self.invalid(
                "nat.mss_clamp",
                format!(
                    "{} is below the IPv4 minimum MSS of 536 (0 turns clamping off)",
                    nat.mss_clamp
                ),
            ));
        }
        if nat.max_sessions < 16 {
            return Err(self.invalid("nat.max_sessions", "must be at least 16".into()));
        }
        if nat.max_bindings < 16 {
            return Err(self.invalid("nat.max_bindings", "must be at least 16".into()));
        }
        Ok(())
    }

    /// The session timeouts: each at least 1 s; the opening and closing
    /// TCP timeouts default to `tcp_transitory`.
    pub(super) fn timeouts(&self, raw: &RawTimeouts) -> Result<Timeouts, ConfigError> {
        let dur = |field, s: &str| self.duration(field, s);
        let transitory = dur("timeouts.tcp_transitory", &raw.tcp_transitory)?;
        let mut udp_ports = BTreeMap::new();
        for (port, d) in &raw.udp_ports {
            let p: u16 = port.parse().map_err(|_| {
                self.invalid(
                    "timeouts.udp_ports",
                    format!("{port:?} is not a port number"),
                )
            })?;
            udp_ports.insert(p, dur("timeouts.udp_ports", d)?);
        }
        let timeouts = Timeouts {
            udp: dur("timeouts.udp", &raw.udp)?,
            tcp_established: dur("timeouts.tcp_established", &raw.tcp_established)?,
            tcp_opening: match &raw.tcp_opening {
                Some(d) => dur("timeouts.tcp_opening", d)?,
                None => transitory,
            },
            tcp_closing: match &raw.tcp_closing {
                Some(d) => dur("timeouts.tcp_closing", d)?,
                None => transitory,
            },
            icmp: dur("timeouts.icmp", &raw.icmp)?,
            fragment: dur("timeouts.fragment", &raw.fragment)?,
            udp_ports,
        };
        let mut all = vec![
            ("timeouts.udp", timeouts.udp),
            ("timeouts.tcp_established", timeouts.tcp_established),
            ("timeouts.tcp_transitory", transitory),
            ("timeouts.tcp_opening", timeouts.tcp_opening),
            ("timeouts.tcp_closing", timeouts.tcp_closing),
            ("timeouts.icmp", timeouts.icmp),
            ("timeouts.fragment", timeouts.fragment),
        ];
        all.extend(
            timeouts
                .udp_ports
                .values()
                .map(|d| ("timeouts.udp_ports", *d)),
        );
        for (field, d) in all {
            if d < Duration::from_secs(1) {
                return Err(self.invalid(field, "must be at least 1s".into()));
            }
        }
        Ok(timeouts)
    }

    /// The route cache lifetime, the port quarantine, the sweep interval
    /// and the pin path.
    pub(super) fn daemon(
        &self,
        raw: &RawConfig,
    ) -> Result<(Duration, Duration, Duration), ConfigError> {
        let route_cache = self.duration("interfaces.route_cache", &raw.interfaces.route_cache)?;
        if route_cache > Duration::from_secs(60) {
            return Err(self.invalid(
                "interfaces.route_cache",
                "must be at most 60s (0s turns the cache off)".into(),
            ));
        }
        let port_quarantine = self.duration("nat.port_quarantine", &raw.nat.port_quarantine)?;
        let sweep_interval = self.duration("daemon.sweep_interval", &raw.daemon.sweep_interval)?;
        if sweep_interval < Duration::from_millis(100) || sweep_interval > Duration::from_secs(60) {
            return Err(self.invalid(
                "daemon.sweep_interval",
                "must be between 100ms and 60s".into(),
            ));
        }
        if !raw.daemon.pin_path.is_absolute() {
            return Err(self.invalid(
                "daemon.pin_path",
                format!("{} is not an absolute path", raw.daemon.pin_path.display()),
            ));
        }
        Ok((route_cache, port_quarantine, sweep_interval))
    }

    /// Port-block geometry, and the deterministic mapping in that mode.
    pub(super) fn pool(
        &self,
        raw: &RawConfig,
        internal_prefixes: &[Ipv4Network],
        pool_addrs: &[Ipv4Addr],
    ) -> Result<(crate::pool::Blocks, Option<crate::pool::Deterministic>), ConfigError> {
        let blocks =
            crate::pool::Blocks::new(raw.pool.block_size, raw.pool.max_blocks).map_err(|e| {
                let field = match e {
                    crate::pool::PoolError::MaxBlocks(_) => "pool.max_blocks",
                    _ => "pool.block_size",
                };
                self.invalid(field, e.to_string())
            })?;
        let deterministic = match raw.pool.mode {
            PoolMode::Deterministic => Some(
                crate::pool::Deterministic::new(internal_prefixes, pool_addrs)
                    .map_err(|e| self.invalid("pool.mode", e.to_string()))?,
            ),
            _ => None,
        };
        if raw.pool.max_subscribers < 16 {
            return Err(self.invalid("pool.max_subscribers", "must be at least 16".into()));
        }
        Ok((blocks, deterministic))
    }

    /// Static mappings: inside the prefixes, no port 0, none twice.
    pub(super) fn statics(
        &self,
        raw: &[RawStatic],
        internal_prefixes: &[Ipv4Network],
        pool_prefixes: &[Ipv4Network],
    ) -> Result<Vec<StaticMapping>, ConfigError> {
        let invalid = |field, reason| self.invalid(field, reason);
        let mut statics: Vec<StaticMapping> = Vec::new();
        for st in raw {
            let proto = match st.proto.as_str() {
                "tcp" => IPPROTO_TCP,
                "udp" => IPPROTO_UDP,
                other => {
                    return Err(invalid(
                        "static.proto",
                        format!("{other:?}: use \"tcp\" or \"udp\""),
                    ))
                }
            };
            let ep = |field: &'static str, v: &str| {
                v.parse::<SocketAddrV4>()
                    .map_err(|_| invalid(field, format!("{v:?} is not an ip:port")))
            };
            let internal = ep("static.internal", &st.internal)?;
            let external = ep("static.external", &st.external)?;
            if !internal_prefixes.iter().any(|p| p.contains(*internal.ip())) {
                return Err(invalid(
                    "static.internal",
                    format!("{internal} is not in nat.internal_prefixes"),
                ));
            }
            if !pool_prefixes.iter().any(|p| p.contains(*external.ip())) {
                return Err(invalid(
                    "static.external",
                    format!("{external} is not in nat.external_pool"),
                ));
            }
            if internal.port() == 0 {
                return Err(invalid("static.internal", "port 0 cannot be mapped".into()));
            }
            if external.port() == 0 {
                return Err(invalid("static.external", "port 0 cannot be mapped".into()));
            }
            if statics
                .iter()
                .any(|o| o.proto == proto && o.internal == internal)
            {
                return Err(invalid(
                    "static.internal",
                    format!("{} {internal} is mapped twice", st.proto),
                ));
            }
            if statics
                .iter()
                .any(|o| o.proto == proto && o.external == external)
            {
                return Err(invalid(
                    "static.external",
                    format!("{} {external} is mapped twice", st.proto),
                ));
            }
            statics.push(StaticMapping {
                proto,
                internal,
                external,
            });
        }
        Ok(statics)
    }

    /// Destinations exempt from translation: a prefix, or a prefix and a
    /// port.
    pub(super) fn exemptions(&self, nat: &RawNat) -> Result<Vec<Exemption>, ConfigError> {
        let invalid = |field, reason| self.invalid(field, reason);
        let mut exempt = Vec::new();
        for e in &nat.exempt {
            let (pfx, port) = match e.split_once(':') {
                Some((a, p)) => (
                    a,
                    Some(p.parse::<u16>().map_err(|_| {
                        invalid("nat.exempt", format!("{e:?}: {p:?} is not a port"))
                    })?),
                ),
                None => (e.as_str(), None),
            };
            let prefix =
                parse_prefixes(&[pfx.to_owned()]).map_err(|r| invalid("nat.exempt", r))?[0];
            exempt.push(Exemption { prefix, port });
        }
        Ok(exempt)
    }

    /// Where the NAT log goes.
    pub(super) fn log(&self, raw: &RawLog) -> Result<LogOutput, ConfigError> {
        let invalid = |field, reason| self.invalid(field, reason);
        let log = match raw.output.as_deref().unwrap_or("off") {
            "off" => LogOutput::Off,
            "file" => LogOutput::File(raw.file.clone().ok_or_else(|| {
                invalid("log.file", "output = \"file\" needs a file path".into())
            })?),
            "syslog" => {
                let t = raw.syslog.clone().unwrap_or_else(|| "/dev/log".into());
                match t.strip_prefix("udp:") {
                    Some(a) => LogOutput::SyslogUdp(a.parse().map_err(|_| {
                        invalid("log.syslog", format!("{a:?} is not host:port (IP address)"))
                    })?),
                    None => LogOutput::SyslogUnix(PathBuf::from(t)),
                }
            }
            "ipfix" => LogOutput::Ipfix {
                collector: collector(raw.collector.as_deref())
                    .map_err(|r| invalid("log.collector", r))?,
                observation_domain: raw.observation_domain,
            },
            other => {
                return Err(invalid(
                    "log.output",
                    format!("{other:?}: use \"off\", \"file\", \"syslog\" or \"ipfix\""),
                ))
            }
        };
        Ok(log)
    }

    /// The Prometheus endpoint ("" disables it).
    pub(super) fn metrics(
        &self,
        raw: &RawMetrics,
    ) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if raw.listen.is_empty() {
            return Ok(None);
        }
        raw.listen.parse().map(Some).map_err(|_| {
            self.invalid(
                "metrics.listen",
                format!("{:?} is not ip:port (\"\" disables)", raw.listen),
            )
        })
    }
}

/// The IPFIX collector: "ip:port", or an address alone for the IPFIX
/// port (RFC 7011 section 10.3).
fn collector(text: Option<&str>) -> Result<SocketAddr, String> {
    let t = text.ok_or("output = \"ipfix\" needs a collector \"ip:port\"")?;
    let addr = match t.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => match t.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, crate::ipfix::DEFAULT_PORT),
            Err(_) => return Err(format!("{t:?} is not ip:port (an IP address, UDP port)")),
        },
    };
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(format!("{t:?}: needs an address and a port other than 0"));
    }
    Ok(addr)
}

pub(super) fn parse_prefixes(list: &[String]) -> Result<Vec<Ipv4Network>, String> {
    if list.is_empty() {
        return Err("must list at least one prefix".into());
    }
    if list.len() > MAX_PREFIXES {
        return Err(format!("at most {MAX_PREFIXES} prefixes are supported"));
    }
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let net: Ipv4Network = s
            .parse()
            .map_err(|e| format!("{s:?} is not an IPv4 prefix ({e})"))?;
        if net.network() != net.ip() {
            return Err(format!(
                "{s:?} has host bits set (did you mean {}/{}?)",
                net.network(),
                net.prefix()
            ));
        }
        out.push(net);
    }
    Ok(out)
}

pub(super) fn overlaps(a: &Ipv4Network, b: &Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Parses durations like "300s", "2h4m", "1m30s", "500ms", "1d".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{s:?} is not a duration like \"300s\" or \"2h4m\""));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            "" => return Err(format!("{s:?}: missing unit (ms, s, m, h or d)")),
            u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m, h or d)")),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}
