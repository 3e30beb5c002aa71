//! Parsers of tool output.

use super::*;

/// Result of [`Testbed::ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

/// Parses ping's `N packets transmitted, M received` line.
pub fn parse_ping(text: &str) -> Option<PingStats> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let tx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let rx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some(PingStats {
        transmitted: tx,
        received: rx,
    })
}

/// A value of `/proc/net/snmp`, which comes as pairs of lines
/// `Ip: Forwarding DefaultTTL ...` / `Ip: 2 64 ...`.
pub fn parse_snmp(text: &str, group: &str, field: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let names: Vec<&str> = names[prefix.len()..].split_whitespace().collect();
        let values: Vec<&str> = values[prefix.len()..].split_whitespace().collect();
        if let Some(i) = names.iter().position(|n| *n == field) {
            return values.get(i)?.parse().ok();
        }
    }
    None
}

/// The lines of `iptables-save` output that are rules (not table headers,
/// chain policies, comments or COMMIT).
pub fn iptables_rule_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with('#')
                || l.starts_with('*')
                || l.starts_with(':')
                || *l == "COMMIT")
        })
        .map(str::to_owned)
        .collect()
}

/// The three rules of a fresh namespace, as `ip rule show` prints them.
pub const DEFAULT_IP_RULES: [&str; 3] = [
    "0:\tfrom all lookup local",
    "32766:\tfrom all lookup main",
    "32767:\tfrom all lookup default",
];

pub(super) fn norm_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What could have carried or filtered traffic in the router's kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBypass {
    /// `/proc/sys/net/ipv4/ip_forward`.
    pub ip_forward: String,
    /// `nft list ruleset`.
    pub nft_ruleset: String,
    /// Rule lines of `iptables-save` (and `iptables-legacy-save`).
    pub iptables_rules: Vec<String>,
    /// `ip rule show`, one rule per entry.
    pub ip_rules: Vec<String>,
    /// `conntrack -C` (0 when nf_conntrack is not loaded).
    pub conntrack: u64,
}

impl KernelBypass {
    /// Everything that differs from a kernel that forwards nothing itself:
    /// empty when clean.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.ip_forward != "0" {
            p.push(format!("net.ipv4.ip_forward = {}", self.ip_forward));
        }
        if !self.nft_ruleset.trim().is_empty() {
            p.push(format!(
                "nft ruleset not empty:\n{}",
                self.nft_ruleset.trim_end()
            ));
        }
        if !self.iptables_rules.is_empty() {
            p.push(format!("iptables rules: {:?}", self.iptables_rules));
        }
        let defaults: Vec<String> = DEFAULT_IP_RULES.iter().map(|r| norm_ws(r)).collect();
        let rules: Vec<String> = self.ip_rules.iter().map(|r| norm_ws(r)).collect();
        if rules != defaults {
            p.push(format!(
                "ip rules are not the defaults: {:?}",
                self.ip_rules
            ));
        }
        if self.conntrack != 0 {
            p.push(format!("{} conntrack entries", self.conntrack));
        }
        p
    }
}

/// Parses `cgnat stats` lines `name packets bytes`; other lines are skipped.
pub fn parse_stats(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if let [name, p, b] = w.as_slice() {
            if let (Ok(p), Ok(b)) = (p.parse(), b.parse()) {
                m.insert((*name).to_owned(), (p, b));
            }
        }
    }
    m
}

/// The XDP flag of an `ip link show` line: `xdp`, `xdpgeneric`, `xdpdrv`,
/// `xdpoffload`, `xdpmulti`.
pub fn parse_xdp_mode(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("xdp") && !w.contains(':'))
        .or_else(|| {
            text.split_whitespace()
                .find(|w| w.starts_with("xdp"))
                .and_then(|w| w.split(['/', ':']).next())
        })
        .map(str::to_owned)
}
