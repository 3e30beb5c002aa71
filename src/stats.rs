//! Verdict counters: names for the data path's reason ids and the per-CPU
//! sums read from the `stats` map.

use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::{bytes_of, from_bytes, types, BpfError};

type S = types::cgnat_stat;

/// Every counter id of include/cgnat.h with its name, in id order.
pub const NAMES: &[(S, &str)] = &[
    (S::CGNAT_FWD_OUT, "fwd_out"),
    (S::CGNAT_FWD_IN, "fwd_in"),
    (S::CGNAT_FWD_HAIRPIN, "fwd_hairpin"),
    (S::CGNAT_FWD_EXEMPT, "fwd_exempt"),
    (S::CGNAT_ICMP_TIME_EXCEEDED, "icmp_time_exceeded"),
    (S::CGNAT_ICMP_FRAG_NEEDED, "icmp_frag_needed"),
    (S::CGNAT_ICMP_HOST_UNREACH, "icmp_host_unreach"),
    (S::CGNAT_PASS_NOT_IPV4, "pass_not_ipv4"),
    (S::CGNAT_PASS_LOCAL, "pass_local"),
    (S::CGNAT_PASS_NOT_NAT, "pass_not_nat"),
    (S::CGNAT_PASS_NOT_FOR_US, "pass_not_for_us"),
    (S::CGNAT_DROP_MALFORMED, "drop_malformed"),
    (S::CGNAT_DROP_IP_CSUM, "drop_ip_checksum"),
    (S::CGNAT_DROP_FRAGMENT, "drop_fragment"),
    (S::CGNAT_FRAG_HELD, "frag_held"),
    (S::CGNAT_NEIGH_HELD, "neigh_held"),
    (S::CGNAT_DROP_SPOOFED, "drop_spoofed"),
    (S::CGNAT_DROP_TO_INTERNAL, "drop_to_internal"),
    (S::CGNAT_DROP_PROTO, "drop_proto"),
    (S::CGNAT_DROP_ICMP_TYPE, "drop_icmp_type"),
    (S::CGNAT_DROP_ICMP_CSUM, "drop_icmp_csum"),
    (S::CGNAT_DROP_NO_BINDING, "drop_no_binding"),
    (S::CGNAT_DROP_FILTERED, "drop_filtered"),
    (S::CGNAT_DROP_TCP_NO_SESSION, "drop_tcp_no_session"),
    (S::CGNAT_DROP_PORTS_EXHAUSTED, "drop_ports_exhausted"),
    (S::CGNAT_DROP_TABLE_FULL, "drop_table_full"),
    (S::CGNAT_DROP_TABLE_BUSY, "drop_table_busy"),
    (S::CGNAT_DROP_SUB_LIMIT, "drop_subscriber_limit"),
    (S::CGNAT_DROP_SUBS_FULL, "drop_subscribers_full"),
    (S::CGNAT_DROP_TTL, "drop_ttl"),
    (S::CGNAT_DROP_FRAG_NEEDED, "drop_frag_needed"),
    (S::CGNAT_DROP_NO_ROUTE, "drop_no_route"),
    (S::CGNAT_DROP_NO_NEIGH, "drop_no_neigh"),
    (S::CGNAT_DROP_NEIGH_FAILED, "drop_neigh_failed"),
    (S::CGNAT_DROP_FIB_OTHER, "drop_fib_other"),
    (S::CGNAT_DROP_NO_TX_PORT, "drop_no_tx_port"),
    (S::CGNAT_DROP_NO_POOL, "drop_no_pool"),
    (S::CGNAT_DROP_NOT_OWNER, "drop_not_owner"),
    (S::CGNAT_DROP_POOL_SOURCE, "drop_pool_source"),
];

/// Name of a counter id.
pub fn name(id: u32) -> &'static str {
    NAMES
        .iter()
        .find(|(s, _)| s.0 == id)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

/// One counter summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub name: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads and sums every counter.
pub fn read(stats: &dyn MapCore) -> Result<Vec<Counter>, BpfError> {
    let mut out = Vec::with_capacity(NAMES.len());
    for (id, name) in NAMES {
        let per_cpu = stats
            .lookup_percpu(bytes_of(&id.0), MapFlags::ANY)
            .map_err(|err| BpfError::Map { map: "stats", err })?
            .unwrap_or_default();
        let (mut packets, mut bytes) = (0u64, 0u64);
        for v in per_cpu {
            if let Some(c) = from_bytes::<types::cgnat_counter>(&v) {
                packets += c.packets;
                bytes += c.bytes;
            }
        }
        out.push(Counter {
            name,
            packets,
            bytes,
        });
    }
    Ok(out)
}

/// Looks one counter up by name in a read.
pub fn get(counters: &[Counter], name: &str) -> u64 {
    counters
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.packets)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_id_has_one_name_in_order() {
        assert_eq!(NAMES.len() as u32, S::CGNAT_STAT__MAX.0);
        for (i, (id, _)) in NAMES.iter().enumerate() {
            assert_eq!(id.0, i as u32);
        }
        let mut names: Vec<_> = NAMES.iter().map(|(_, n)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NAMES.len());
    }
}
