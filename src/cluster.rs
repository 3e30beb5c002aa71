//! Cluster state sync: cgnat nodes send each other their NAT state
//! (bindings, sessions, subscribers, port blocks) over UDP so that a backup
//! node can take over a failed node's subscribers with the same external
//! address and port.
//!
//! [`wire`] is the authenticated datagram format; [`link`] is the state
//! kept per peer (replay protection, reliable resending, liveness). Both
//! are pure: no sockets, no BPF, time passed in. [`state`] reads and
//! installs the tables' entries, [`export`] writes the routes a routing
//! daemon announces, [`slices`] decides who serves which slice, and
//! [`engine`] runs it all in the daemon.

pub mod engine;
pub mod export;
pub mod install;
pub mod link;
pub mod slices;
pub mod state;
pub mod wire;
