//! Parsers of `ip route` and `birdc` output for the cluster bed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One route as `ip route show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLine {
    /// `unicast` or the type `ip` prints first (`unreachable`, `blackhole`..).
    pub kind: String,
    pub via: Option<Ipv4Addr>,
    pub metric: u32,
    pub line: String,
}

/// Parses the lines of `ip route show` (one prefix or several).
pub fn parse_routes(text: &str) -> Vec<RouteLine> {
    const TYPES: [&str; 8] = [
        "unreachable",
        "blackhole",
        "prohibit",
        "throw",
        "local",
        "broadcast",
        "multicast",
        "anycast",
    ];
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace))
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let kind = t
                .first()
                .filter(|k| TYPES.contains(k))
                .map(|k| k.to_string())
                .unwrap_or_else(|| "unicast".into());
            let after = |key: &str| t.windows(2).find(|w| w[0] == key).map(|w| w[1].to_owned());
            RouteLine {
                kind,
                via: after("via").and_then(|v| v.parse().ok()),
                metric: after("metric").and_then(|m| m.parse().ok()).unwrap_or(0),
                line: l.to_owned(),
            }
        })
        .collect()
}

/// The BGP protocols of `birdc show protocols` with their Info column's
/// first word (`Established`, `Active`, `Connect`, ...).
pub fn parse_bgp_protocols(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() >= 5 && t[1] == "BGP")
                .then(|| (t[0].to_owned(), t.get(5).copied().unwrap_or("").to_owned()))
        })
        .collect()
}

/// The sessions of `birdc show bfd sessions`: address → state (`Up`,
/// `Down`, `Init`, `AdminDown`).
pub fn parse_bfd_sessions(text: &str) -> BTreeMap<Ipv4Addr, String> {
    text.lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let addr = t.first()?.parse::<Ipv4Addr>().ok()?;
            Some((addr, t.get(2)?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_bed::*;

    #[test]
    fn route_lines() {
        let t = "default via 10.0.1.12 dev up0 proto bird metric 32 \n\
unreachable 203.0.113.8/29 metric 100 \n\
203.0.113.8/29 via 10.0.2.11 dev dn0 proto bird metric 32 \n\
10.0.1.0/24 dev up0 proto kernel scope link src 10.0.1.1 \n\
10.8.0.0/16 proto bird metric 32 \n\tnexthop via 10.0.1.11 dev up0 weight 1 \n";
        let r = parse_routes(t);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].via, Some(node_int(2)));
        assert_eq!((r[0].kind.as_str(), r[0].metric), ("unicast", 32));
        assert_eq!(
            (r[1].kind.as_str(), r[1].via, r[1].metric),
            ("unreachable", None, 100)
        );
        assert_eq!(r[2].via, Some(node_ext(1)));
        assert_eq!((r[3].via, r[3].metric), (None, 0));
        assert_eq!(r[4].via, None);
    }

    #[test]
    fn bird_output() {
        let p = "BIRD 2.0.12 ready.\n\
Name       Proto      Table      State  Since         Info\n\
device1    Device     ---        up     07:25:34.714  \n\
node1      BGP        ---        up     07:25:35.472  Established   \n\
node2      BGP        ---        start  07:25:49.091  Connect       Error: BFD session down\n";
        let m = parse_bgp_protocols(p);
        assert_eq!(m.len(), 2);
        assert_eq!(m["node1"], "Established");
        assert_eq!(m["node2"], "Connect");
        let b = "BIRD 2.0.12 ready.\nbfd1:\n\
IP address                Interface  State      Since         Interval  Timeout\n\
10.0.1.11                 up0        Up         07:26:00.611    0.100    0.300\n\
10.0.1.12                 up0        Down       07:25:35.467    1.000    0.000\n";
        let s = parse_bfd_sessions(b);
        assert_eq!(s[&node_int(1)], "Up");
        assert_eq!(s[&node_int(2)], "Down");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn configs_exist() {
        for h in BIRD_HOSTS {
            let c = bird_config(h).unwrap();
            assert!(c.is_file(), "{} missing", c.display());
        }
        assert!(bird_config("s1").is_none());
        assert_eq!(node_int(2), Ipv4Addr::new(10, 0, 1, 12));
        assert_eq!(node_sync(1), Ipv4Addr::new(10, 0, 3, 11));
    }
}
