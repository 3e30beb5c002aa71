//! The configuration file as serde reads it, before validation: one
//! struct per TOML table, with the defaults of fields left out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{FibLookup, FilteringConfig, IcmpConfig, Limits, PoolMode, SendBack, XdpMode};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    #[serde(default)]
    pub(super) mode: PoolMode,
    #[serde(default = "default_block_size")]
    pub(super) block_size: u32,
    #[serde(default = "default_max_blocks")]
    pub(super) max_blocks: u32,
    #[serde(default = "default_max_subscribers")]
    pub(super) max_subscribers: u32,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            mode: PoolMode::Dynamic,
            block_size: default_block_size(),
            max_blocks: default_max_blocks(),
            max_subscribers: default_max_subscribers(),
        }
    }
}

pub(super) fn default_block_size() -> u32 {
    256
}
pub(super) fn default_max_blocks() -> u32 {
    4
}
pub(super) fn default_max_subscribers() -> u32 {
    65_536
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatic {
    pub(super) proto: String,
    pub(super) internal: String,
    pub(super) external: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default)]
    pub(super) output: Option<String>,
    #[serde(default)]
    pub(super) file: Option<PathBuf>,
    #[serde(default)]
    pub(super) syslog: Option<String>,
    #[serde(default)]
    pub(super) collector: Option<String>,
    #[serde(default = "default_observation_domain")]
    pub(super) observation_domain: u32,
}

pub(super) fn default_observation_domain() -> u32 {
    1
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            output: None,
            file: None,
            syslog: None,
            collector: None,
            observation_domain: default_observation_domain(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    #[serde(default = "default_metrics_listen")]
    pub(super) listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_metrics_listen(),
        }
    }
}

pub(super) fn default_metrics_listen() -> String {
    "127.0.0.1:9469".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) interfaces: RawInterfaces,
    pub(super) nat: RawNat,
    #[serde(default)]
    pub(super) pool: RawPool,
    #[serde(default)]
    pub(super) limits: Limits,
    #[serde(default, rename = "static")]
    pub(super) statics: Vec<RawStatic>,
    #[serde(default)]
    pub(super) filtering: FilteringConfig,
    #[serde(default)]
    pub(super) icmp: IcmpConfig,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) cluster: Option<super::cluster::RawCluster>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterfaces {
    pub(super) internal: String,
    pub(super) external: String,
    #[serde(default)]
    pub(super) xdp_mode: XdpMode,
    #[serde(default)]
    pub(super) fib_lookup: FibLookup,
    #[serde(default = "default_route_cache")]
    pub(super) route_cache: String,
    #[serde(default)]
    pub(super) send_back: SendBack,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNat {
    pub(super) internal_prefixes: Vec<String>,
    pub(super) external_pool: Vec<String>,
    #[serde(default = "default_max_sessions")]
    pub(super) max_sessions: u32,
    #[serde(default = "default_max_bindings")]
    pub(super) max_bindings: u32,
    #[serde(default)]
    pub(super) inbound_refresh: bool,
    #[serde(default = "default_quarantine")]
    pub(super) port_quarantine: String,
    #[serde(default)]
    pub(super) preserve_parity: bool,
    #[serde(default)]
    pub(super) mss_clamp: u16,
    #[serde(default = "default_max_fragments")]
    pub(super) max_fragments: u32,
    #[serde(default)]
    pub(super) exempt: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    #[serde(default = "default_udp")]
    pub(super) udp: String,
    #[serde(default = "default_tcp_established")]
    pub(super) tcp_established: String,
    #[serde(default = "default_tcp_transitory")]
    pub(super) tcp_transitory: String,
    pub(super) tcp_opening: Option<String>,
    pub(super) tcp_closing: Option<String>,
    #[serde(default = "default_icmp")]
    pub(super) icmp: String,
    #[serde(default = "default_fragment")]
    pub(super) fragment: String,
    #[serde(default)]
    pub(super) udp_ports: BTreeMap<String, String>,
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
            fragment: default_fragment(),
            udp_ports: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    #[serde(default = "default_pin_path")]
    pub(super) pin_path: PathBuf,
    #[serde(default = "default_sweep_interval")]
    pub(super) sweep_interval: String,
    #[serde(default)]
    pub(super) detach_on_exit: bool,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            pin_path: default_pin_path(),
            sweep_interval: default_sweep_interval(),
            detach_on_exit: false,
        }
    }
}

pub(super) fn default_max_sessions() -> u32 {
    1 << 20
}
pub(super) fn default_max_fragments() -> u32 {
    4096
}
pub(super) fn default_max_bindings() -> u32 {
    1 << 18
}
/// RFC 6888 REQ-8: a freed port is not reused for at least 120 s.
pub(super) fn default_quarantine() -> String {
    "120s".into()
}
/// RFC 4787 REQ-5c: UDP mapping timer of 300 s recommended.
pub(super) fn default_udp() -> String {
    "300s".into()
}
/// RFC 5382 REQ-5: established idle timeout at least 2 h 4 min.
pub(super) fn default_tcp_established() -> String {
    "2h4m".into()
}
/// RFC 5382 REQ-5 / RFC 7857 section 2.1: transitory at least 4 min.
pub(super) fn default_tcp_transitory() -> String {
    "4m".into()
}
/// RFC 5508 REQ-2: ICMP query timer at least 60 s.
pub(super) fn default_icmp() -> String {
    "60s".into()
}
/// RFC 6146 section 4: FRAGMENT_MIN is 2 s; a little more for slow links.
pub(super) fn default_fragment() -> String {
    "5s".into()
}
pub(super) fn default_pin_path() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/cgnat")
}
pub(super) fn default_sweep_interval() -> String {
    "1s".into()
}
pub(super) fn default_route_cache() -> String {
    "1s".into()
}
