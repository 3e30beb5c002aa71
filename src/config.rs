//! The TOML configuration: parsing, defaults (from the RFCs) and validation.
//!
//! `Config::load` either returns a fully validated configuration or an
//! error naming the file, the field and the reason; nothing is attached
//! before a config has passed here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::Deserialize;

/// Largest number of external addresses in the pool (the pool array map is
/// sized from it; 65,536 addresses cover any realistic CGN).
pub const MAX_POOL_ADDRS: usize = 65_536;
/// Largest number of prefixes in either LPM trie.
pub const MAX_PREFIXES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: PathBuf,
        field: &'static str,
        reason: String,
    },
}

/// How the XDP programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver mode: the fast path; refused by interfaces without support.
    #[default]
    Native,
    /// Generic (SKB) mode: works everywhere, slowly. Only on request.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Which device `bpf_fib_lookup` treats as the ingress of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FibLookup {
    /// Look up as if from `lo`; cgnat enables forwarding on `lo` only, so
    /// the kernel never forwards a packet from a real interface.
    #[default]
    Loopback,
    /// Look up from the ingress interface; forwarding must be enabled on
    /// both NAT interfaces (classic router setup).
    Ingress,
}

/// Inbound filtering behaviour of a protocol (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Any remote may reach a live mapping (RFC 4787 REQ-8, RFC 6888 REQ-7).
    #[default]
    EndpointIndependent,
    /// Only remote addresses the subscriber sent to from that mapping.
    AddressDependent,
    /// Only remote address:port pairs the subscriber sent to.
    AddressAndPortDependent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FilteringConfig {
    #[serde(default)]
    pub udp: Filtering,
    #[serde(default)]
    pub tcp: Filtering,
    #[serde(default)]
    pub icmp: Filtering,
}

impl FilteringConfig {
    /// True if any protocol uses address-dependent filtering.
    pub fn any_address_dependent(&self) -> bool {
        [self.udp, self.tcp, self.icmp].contains(&Filtering::AddressDependent)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interfaces: RawInterfaces,
    nat: RawNat,
    #[serde(default)]
    filtering: FilteringConfig,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    daemon: RawDaemon,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterfaces {
    internal: String,
    external: String,
    #[serde(default)]
    xdp_mode: XdpMode,
    #[serde(default)]
    fib_lookup: FibLookup,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNat {
    internal_prefixes: Vec<String>,
    external_pool: Vec<String>,
    #[serde(default = "default_max_sessions")]
    max_sessions: u32,
    #[serde(default = "default_max_bindings")]
    max_bindings: u32,
    #[serde(default)]
    inbound_refresh: bool,
    #[serde(default = "default_quarantine")]
    port_quarantine: String,
    #[serde(default)]
    preserve_parity: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    #[serde(default = "default_udp")]
    udp: String,
    #[serde(default = "default_tcp_established")]
    tcp_established: String,
    #[serde(default = "default_tcp_transitory")]
    tcp_transitory: String,
    tcp_opening: Option<String>,
    tcp_closing: Option<String>,
    #[serde(default = "default_icmp")]
    icmp: String,
    #[serde(default)]
    udp_ports: BTreeMap<String, String>,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            udp: default_udp(),
            tcp_established: default_tcp_established(),
            tcp_transitory: default_tcp_transitory(),
            tcp_opening: None,
            tcp_closing: None,
            icmp: default_icmp(),
            udp_ports: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(default = "default_pin_path")]
    pin_path: PathBuf,
    #[serde(default = "default_sweep_interval")]
    sweep_interval: String,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            pin_path: default_pin_path(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

fn default_max_sessions() -> u32 {
    1 << 20
}
fn default_max_bindings() -> u32 {
    1 << 18
}
/// RFC 6888 REQ-8: a freed port is not reused for at least 120 s.
fn default_quarantine() -> String {
    "120s".into()
}
/// RFC 4787 REQ-5c: UDP mapping timer of 300 s recommended.
fn default_udp() -> String {
    "300s".into()
}
/// RFC 5382 REQ-5: established idle timeout at least 2 h 4 min.
fn default_tcp_established() -> String {
    "2h4m".into()
}
/// RFC 5382 REQ-5 / RFC 7857 section 2.1: transitory at least 4 min.
fn default_tcp_transitory() -> String {
    "4m".into()
}
/// RFC 5508 REQ-2: ICMP query timer at least 60 s.
fn default_icmp() -> String {
    "60s".into()
}
fn default_pin_path() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/cgnat")
}
fn default_sweep_interval() -> String {
    "1s".into()
}

/// Per-protocol idle timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub udp: Duration,
    pub tcp_established: Duration,
    /// Opening: SYN seen one way only (RFC 7857 section 2.1).
    pub tcp_opening: Duration,
    /// Closing: FIN both ways, or RST (RFC 7857 section 2.1, 2.2).
    pub tcp_closing: Duration,
    pub icmp: Duration,
    /// UDP timeouts by remote (destination) port (RFC 4787 REQ-5a).
    pub udp_ports: BTreeMap<u16, Duration>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub internal_if: String,
    pub external_if: String,
    pub xdp_mode: XdpMode,
    pub fib_lookup: FibLookup,
    pub internal_prefixes: Vec<Ipv4Network>,
    pub pool_prefixes: Vec<Ipv4Network>,
    /// Every address of the pool, in config order, without duplicates.
    pub pool_addrs: Vec<Ipv4Addr>,
    pub max_sessions: u32,
    pub max_bindings: u32,
    pub inbound_refresh: bool,
    pub port_quarantine: Duration,
    pub preserve_parity: bool,
    pub filtering: FilteringConfig,
    pub timeouts: Timeouts,
    pub pin_path: PathBuf,
    pub sweep_interval: Duration,
}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::parse(&text, file)
    }

    /// Parses and validates `text`; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid {
            file: file.to_owned(),
            field,
            reason,
        };

        let iface = |field: &'static str, name: &str| {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                Err(invalid(field, format!("{name:?} is not an interface name")))
            } else {
                Ok(name.to_owned())
            }
        };
        let internal_if = iface("interfaces.internal", &raw.interfaces.internal)?;
        let external_if = iface("interfaces.external", &raw.interfaces.external)?;

        let internal_prefixes = parse_prefixes(&raw.nat.internal_prefixes)
            .map_err(|r| invalid("nat.internal_prefixes", r))?;
        let pool_prefixes =
            parse_prefixes(&raw.nat.external_pool).map_err(|r| invalid("nat.external_pool", r))?;
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

        if raw.nat.max_sessions < 16 {
            return Err(invalid("nat.max_sessions", "must be at least 16".into()));
        }
        if raw.nat.max_bindings < 16 {
            return Err(invalid("nat.max_bindings", "must be at least 16".into()));
        }

        let dur = |field: &'static str, s: &str| parse_duration(s).map_err(|r| invalid(field, r));
        let transitory = dur("timeouts.tcp_transitory", &raw.timeouts.tcp_transitory)?;
        let mut udp_ports = BTreeMap::new();
        for (port, d) in &raw.timeouts.udp_ports {
            let p: u16 = port.parse().map_err(|_| {
                invalid(
                    "timeouts.udp_ports",
                    format!("{port:?} is not a port number"),
                )
            })?;
            udp_ports.insert(p, dur("timeouts.udp_ports", d)?);
        }
        let timeouts = Timeouts {
            udp: dur("timeouts.udp", &raw.timeouts.udp)?,
            tcp_established: dur("timeouts.tcp_established", &raw.timeouts.tcp_established)?,
            tcp_opening: match &raw.timeouts.tcp_opening {
                Some(d) => dur("timeouts.tcp_opening", d)?,
                None => transitory,
            },
            tcp_closing: match &raw.timeouts.tcp_closing {
                Some(d) => dur("timeouts.tcp_closing", d)?,
                None => transitory,
            },
            icmp: dur("timeouts.icmp", &raw.timeouts.icmp)?,
            udp_ports,
        };
        let mut all = vec![
            ("timeouts.udp", timeouts.udp),
            ("timeouts.tcp_established", timeouts.tcp_established),
            ("timeouts.tcp_transitory", transitory),
            ("timeouts.tcp_opening", timeouts.tcp_opening),
            ("timeouts.tcp_closing", timeouts.tcp_closing),
            ("timeouts.icmp", timeouts.icmp),
        ];
        all.extend(
            timeouts
                .udp_ports
                .values()
                .map(|d| ("timeouts.udp_ports", *d)),
        );
        for (field, d) in all {
            if d < Duration::from_secs(1) {
                return Err(invalid(field, "must be at least 1s".into()));
            }
        }
        let port_quarantine = dur("nat.port_quarantine", &raw.nat.port_quarantine)?;
        let sweep_interval = dur("daemon.sweep_interval", &raw.daemon.sweep_interval)?;
        if sweep_interval < Duration::from_millis(100) || sweep_interval > Duration::from_secs(60) {
            return Err(invalid(
                "daemon.sweep_interval",
                "must be between 100ms and 60s".into(),
            ));
        }
        if !raw.daemon.pin_path.is_absolute() {
            return Err(invalid(
                "daemon.pin_path",
                format!("{} is not an absolute path", raw.daemon.pin_path.display()),
            ));
        }

        Ok(Config {
            file: file.to_owned(),
            internal_if,
            external_if,
            xdp_mode: raw.interfaces.xdp_mode,
            fib_lookup: raw.interfaces.fib_lookup,
            internal_prefixes,
            pool_prefixes,
            pool_addrs,
            max_sessions: raw.nat.max_sessions,
            max_bindings: raw.nat.max_bindings,
            inbound_refresh: raw.nat.inbound_refresh,
            port_quarantine,
            preserve_parity: raw.nat.preserve_parity,
            filtering: raw.filtering,
            timeouts,
            pin_path: raw.daemon.pin_path,
            sweep_interval,
        })
    }

    /// True when both roles share one interface.
    pub fn one_armed(&self) -> bool {
        self.internal_if == self.external_if
    }
}

fn parse_prefixes(list: &[String]) -> Result<Vec<Ipv4Network>, String> {
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

fn overlaps(a: &Ipv4Network, b: &Ipv4Network) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[interfaces]
internal = "eth1"
external = "eth0"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["203.0.113.0/28", "192.0.2.200/29"]
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/cgnat.toml"))
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_rfcs() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.timeouts.udp, Duration::from_secs(300));
        assert_eq!(c.timeouts.tcp_established, Duration::from_secs(7440));
        assert_eq!(c.timeouts.tcp_opening, Duration::from_secs(240));
        assert_eq!(c.timeouts.tcp_closing, Duration::from_secs(240));
        assert_eq!(c.filtering.udp, Filtering::EndpointIndependent);
        assert!(!c.preserve_parity);
        assert_eq!(c.timeouts.icmp, Duration::from_secs(60));
        assert_eq!(c.port_quarantine, Duration::from_secs(120));
        assert_eq!(c.xdp_mode, XdpMode::Native);
        assert_eq!(c.pool_addrs.len(), 16 + 8);
        assert_eq!(c.pool_addrs[0], Ipv4Addr::new(203, 0, 113, 0));
        assert_eq!(c.pool_addrs[16], Ipv4Addr::new(192, 0, 2, 200));
        assert!(!c.one_armed());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h4m").unwrap(), Duration::from_secs(7440));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("300").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn pool_overlapping_internal_is_refused() {
        let e = err(&GOOD.replace("203.0.113.0/28", "100.64.1.0/24"));
        assert!(e.contains("/etc/cgnat.toml"), "{e}");
        assert!(e.contains("nat.external_pool"), "{e}");
        assert!(e.contains("REQ-7"), "{e}");
    }

    #[test]
    fn errors_name_file_field_and_reason() {
        let e = err(&GOOD.replace("\"100.64.0.0/10\"", "\"100.64.0.0/33\""));
        assert!(
            e.contains("nat.internal_prefixes") && e.contains("not an IPv4 prefix"),
            "{e}"
        );
        let e = err(&GOOD.replace("\"100.64.0.0/10\"", "\"100.64.0.1/10\""));
        assert!(e.contains("host bits"), "{e}");
        let e = err(&format!("{GOOD}[timeouts]\nudp = \"5 minutes\"\n"));
        assert!(e.contains("timeouts.udp"), "{e}");
        let e = err(&GOOD.replace("external = \"eth0\"", "external = \"eth0\"\nbogus = 1"));
        assert!(e.contains("bogus"), "{e}");
        let e = err(&GOOD.replace("internal = \"eth1\"\n", ""));
        assert!(e.contains("internal"), "{e}");
        let e = err(&GOOD.replace("[\"203.0.113.0/28\", \"192.0.2.200/29\"]", "[]"));
        assert!(e.contains("at least one"), "{e}");
        let e = err(&GOOD.replace("192.0.2.200/29", "203.0.113.8/29"));
        assert!(e.contains("overlap"), "{e}");
        let e = err(&GOOD.replace("\"eth0\"", "\"an-interface-name-too-long\""));
        assert!(e.contains("interfaces.external"), "{e}");
    }

    #[test]
    fn filtering_and_port_timeouts() {
        let c = parse(&format!(
            "{GOOD}[filtering]\nudp = \"address-dependent\"\ntcp = \"address-and-port-dependent\"\n\
             [timeouts]\ntcp_transitory = \"1m\"\ntcp_closing = \"30s\"\n[timeouts.udp_ports]\n53 = \"20s\"\n"
        ))
        .unwrap();
        assert_eq!(c.filtering.udp, Filtering::AddressDependent);
        assert_eq!(c.filtering.tcp, Filtering::AddressAndPortDependent);
        assert_eq!(c.filtering.icmp, Filtering::EndpointIndependent);
        assert!(c.filtering.any_address_dependent());
        assert_eq!(c.timeouts.tcp_opening, Duration::from_secs(60));
        assert_eq!(c.timeouts.tcp_closing, Duration::from_secs(30));
        assert_eq!(
            c.timeouts.udp_ports.get(&53),
            Some(&Duration::from_secs(20))
        );
        let e = err(&format!("{GOOD}[filtering]\nudp = \"symmetric\"\n"));
        assert!(
            e.contains("udp = \"symmetric\"") && e.contains("endpoint-independent"),
            "{e}"
        );
        let e = err(&format!("{GOOD}[timeouts.udp_ports]\ndns = \"20s\"\n"));
        assert!(e.contains("timeouts.udp_ports"), "{e}");
    }

    #[test]
    fn one_armed_and_generic() {
        let c = parse(&GOOD.replace("\"eth1\"", "\"eth0\"").replace(
            "external = \"eth0\"",
            "external = \"eth0\"\nxdp_mode = \"generic\"",
        ))
        .unwrap();
        assert!(c.one_armed());
        assert_eq!(c.xdp_mode, XdpMode::Generic);
    }

    #[test]
    fn shipped_configs_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cgnat.toml");
        Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}
