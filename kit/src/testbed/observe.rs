//! What the test bed observes: ping, packet capture, the router's
//! counters, XDP mode and a dump of its state.

use super::*;

impl Testbed {
    /// `ping -c count -W 1 -i 0.2 dst` from `host`.
    pub fn ping(&self, host: Host, dst: Ipv4Addr, count: u32) -> Result<PingStats> {
        let count_s = count.to_string();
        let dst_s = dst.to_string();
        let args = ["ping", "-n", "-c", &count_s, "-W", "1", "-i", "0.2", &dst_s];
        let timeout = Duration::from_millis(200) * count + Duration::from_secs(10);
        let out = self.exec_timeout(host, &args, timeout)?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_ping(&text).ok_or_else(|| TestbedError::Parse {
            what: format!("ping in {host}"),
            detail: format!(
                "{}{}",
                text.trim_end(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            ),
        })
    }

    /// Starts recording the IPv4 packets that cross `host`'s interfaces
    /// (except `lo`), in both directions.
    pub fn sniff(&self, host: Host) -> Result<Sniffer> {
        Sniffer::start(self, host)
    }

    /// `Ip: ForwDatagrams` of the router's namespace (packets the kernel
    /// forwarded).
    pub fn forw_datagrams(&self) -> Result<u64> {
        let text = self.run(Host::Router, &["cat", "/proc/net/snmp"])?;
        parse_snmp(&text, "Ip", "ForwDatagrams").ok_or_else(|| TestbedError::Parse {
            what: "/proc/net/snmp of the router".into(),
            detail: "no Ip: ForwDatagrams".into(),
        })
    }

    /// What the router's kernel has configured that could carry or filter
    /// traffic besides XDP: see [`KernelBypass::problems`].
    pub fn kernel_bypass_report(&self) -> Result<KernelBypass> {
        let r = Host::Router;
        let ip_forward = self
            .run(r, &["cat", "/proc/sys/net/ipv4/ip_forward"])?
            .trim()
            .to_owned();
        let nft_ruleset = self.run(r, &["nft", "list", "ruleset"])?;
        let mut iptables = self.run(r, &["iptables-save"])?;
        // The legacy backend keeps its own tables; look at both if present.
        if let Ok(out) = self.exec(r, &["iptables-legacy-save"]) {
            if out.status.success() {
                iptables.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
        let iptables_rules = iptables_rule_lines(&iptables);
        let ip_rules_text = self.ip(r, &["rule", "show"])?;
        let ip_rules = ip_rules_text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let count_file = "/proc/sys/net/netfilter/nf_conntrack_count";
        let conntrack = if Path::new(count_file).exists() {
            let c = self.run(r, &["conntrack", "-C"])?;
            c.trim().parse().map_err(|_| TestbedError::Parse {
                what: "conntrack -C".into(),
                detail: c.clone(),
            })?
        } else {
            // nf_conntrack is not even loaded: nothing can be tracked.
            0
        };
        Ok(KernelBypass {
            ip_forward,
            nft_ruleset,
            iptables_rules,
            ip_rules,
            conntrack,
        })
    }

    /// The XDP attachment of a router interface as `ip link` shows it:
    /// `Some("xdp")` (native), `Some("xdpgeneric")`, ... or `None`.
    pub fn xdp_mode(&self, ifname: &str) -> Result<Option<String>> {
        let text = self.ip(Host::Router, &["link", "show", "dev", ifname])?;
        Ok(parse_xdp_mode(&text))
    }

    /// A text dump of the router and switches for failure reports.
    pub fn dump_state(&self) -> String {
        let mut s = String::new();
        let items: [(Host, &[&str]); 8] = [
            (Host::Router, &["ip", "-s", "-d", "link", "show"]),
            (Host::Router, &["ethtool", "-S", INTERNAL_IF]),
            (Host::Router, &["ethtool", "-S", EXTERNAL_IF]),
            (Host::Router, &["ip", "neigh", "show"]),
            (Host::Router, &["ip", "route", "show"]),
            (
                Host::Router,
                &[
                    "sysctl",
                    "net.ipv4.ip_forward",
                    "net.ipv4.conf.lo.forwarding",
                ],
            ),
            (Host::SwitchInt, &["ip", "-s", "link", "show"]),
            (Host::SwitchExt, &["ip", "-s", "link", "show"]),
        ];
        for (h, args) in items {
            s.push_str(&format!("--- {h}: {}\n", args.join(" ")));
            match self.exec(h, args) {
                Ok(o) => {
                    s.push_str(&String::from_utf8_lossy(&o.stdout));
                    s.push_str(&String::from_utf8_lossy(&o.stderr));
                }
                Err(e) => s.push_str(&format!("{e}\n")),
            }
        }
        s
    }
}
