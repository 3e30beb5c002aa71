//! cgnat: a carrier-grade NAT44 whose data path is one XDP program.
//!
//! The library holds everything the `cgnat` binary and the tests share:
//! configuration, the BPF loader, expiry, and the network-namespace test bed.

pub mod bench;
pub mod bpf;
pub mod clock;
pub mod config;
pub mod demo;
pub mod expiry;
pub mod inject;
pub mod instance;
pub mod log;
pub mod lookup;
pub mod metrics;
pub mod neigh;
pub mod netlink;
pub mod pool;
pub mod routes;
pub mod stats;
pub mod testbed;
pub mod veth;
pub mod watch;
