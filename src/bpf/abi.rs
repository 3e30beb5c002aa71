//! The constants of the shared ABI (include/cgnat.h) as the daemon uses
//! them. Each is read from the skeleton's generated `types`, which come
//! from the program's BTF: none is written a second time here.

use std::time::Duration;

use super::types;

/// Protocol numbers of the proto fields (`enum cgnat_proto`).
pub const IPPROTO_ICMP: u8 = types::cgnat_proto::CGNAT_PROTO_ICMP.0 as u8;
pub const IPPROTO_TCP: u8 = types::cgnat_proto::CGNAT_PROTO_TCP.0 as u8;
pub const IPPROTO_UDP: u8 = types::cgnat_proto::CGNAT_PROTO_UDP.0 as u8;

/// Length of per-protocol arrays (`cgnat_subscriber.ports`).
pub const PROTOCOLS: usize = types::cgnat_proto_idx::CGNAT_PI__MAX.0 as usize;

/// Slots of the event_lost map: every `enum cgnat_event_type` is below.
pub const EVENT_SLOTS: u32 = types::cgnat_event_lost::CGNAT_EVENT_SLOTS.0;

/// First port of port blocks and deterministic ranges.
pub const PORT_MIN: u32 = types::cgnat_ports::CGNAT_PORT_MIN.0;

/// Blocks per subscriber the data path can track.
pub const MAX_BLOCKS_CAP: u32 = types::cgnat_ports::CGNAT_MAX_BLOCKS_CAP.0;

/// How stale a session's last_seen may be: the data path rewrites it at
/// most this often (`CGNAT_REFRESH_MS`).
pub const REFRESH: Duration = Duration::from_millis(types::cgnat_time::CGNAT_REFRESH_MS.0 as u64);

// Port blocks and ranges stay in the port space; the refresh slack is at
// least one unit of the compact time it is compared in.
const _: () = assert!(PORT_MIN < 65536 && MAX_BLOCKS_CAP >= 1);
const _: () = assert!(REFRESH.as_nanos() >= 1u128 << types::cgnat_time::CGNAT_TIME_SHIFT.0);

/// Name of an IP protocol number.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        _ => "other",
    }
}

/// Index of protocol `proto` in per-protocol arrays (`enum
/// cgnat_proto_idx`), as the data path's proto_idx() (bpf/pool.h) computes
/// it: anything but TCP and UDP counts as ICMP.
pub fn proto_idx(proto: u8) -> usize {
    let i = match proto {
        IPPROTO_TCP => types::cgnat_proto_idx::CGNAT_PI_TCP,
        IPPROTO_UDP => types::cgnat_proto_idx::CGNAT_PI_UDP,
        _ => types::cgnat_proto_idx::CGNAT_PI_ICMP,
    };
    i.0 as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol numbers the program uses are the system's.
    #[test]
    fn protocols_are_the_iana_numbers() {
        assert_eq!(i32::from(IPPROTO_ICMP), nix::libc::IPPROTO_ICMP);
        assert_eq!(i32::from(IPPROTO_TCP), nix::libc::IPPROTO_TCP);
        assert_eq!(i32::from(IPPROTO_UDP), nix::libc::IPPROTO_UDP);
    }

    /// proto_idx() gives each protocol its own slot of the arrays the
    /// data path sizes with CGNAT_PI__MAX.
    #[test]
    fn protocol_indices_fit_the_arrays() {
        let idx = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP].map(proto_idx);
        assert_eq!(idx, [0, 1, 2]);
        assert_eq!(PROTOCOLS, idx.len());
        assert_eq!(PROTOCOLS, types::cgnat_subscriber::default().ports.len());
    }

    /// event_lost is indexed by event type.
    #[test]
    fn every_event_type_has_a_lost_slot() {
        type E = types::cgnat_event_type;
        for ty in [
            E::CGNAT_EV_NEIGH_MISS,
            E::CGNAT_EV_BINDING_CREATE,
            E::CGNAT_EV_FRAG_READY,
            E::CGNAT_EV_BLOCK_ALLOC,
            E::CGNAT_EV_REFUSED,
        ] {
            assert!(ty.0 < EVENT_SLOTS, "{ty:?}");
        }
    }

    /// The daemon's names for these constants are these constants.
    #[test]
    fn daemon_uses_the_abi_values() {
        assert_eq!(crate::expiry::REFRESH_SLACK, REFRESH);
        assert_eq!(crate::pool::PORT_MIN, PORT_MIN);
        assert_eq!(crate::pool::MAX_BLOCKS_CAP, MAX_BLOCKS_CAP);
    }

    /// The sizes include/cgnat.h promises (the kernel memory per entry it
    /// states depends on them).
    #[test]
    fn documented_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<types::cgnat_binding>(), 8);
        assert_eq!(size_of::<types::cgnat_session>(), 16);
    }
}
