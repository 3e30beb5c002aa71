//! cgnat: a carrier-grade NAT44 whose data path is one XDP program.
//!
//! The library is the product: configuration, the BPF loader, the tables,
//! expiry, logs, metrics and what the `cgnat` binary runs. The test bed,
//! benchmark and demo live in the `cgnat-kit` crate (kit/), which uses it.

pub mod bpf;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod expiry;
pub mod inject;
pub mod instance;
pub mod ipfix;
pub mod log;
pub mod lookup;
pub mod metrics;
pub mod neigh;
pub mod netlink;
pub mod pool;
pub mod routes;
pub mod stats;
pub mod top;
pub mod veth;
pub mod watch;
