//! Deployments on veth (containers, labs, namespace test beds).
//!
//! Two properties of veth matter to an XDP router (README, "Running on
//! veth"):
//! - frames sent back out of the ingress veth with XDP_TX reach the peer
//!   only when the peer runs an XDP program (the kernel wakes the peer's
//!   NAPI for XDP_TX only then); a redirect through the devmap wakes it
//!   whenever the peer has NAPI (GRO or XDP), so `interfaces.send_back =
//!   "auto"` redirects on veth;
//! - a veth hands XDP frames exactly as the sender left them: with tx
//!   checksum offload on the sending side, or GRO-merged frames
//!   re-segmented upstream, the TCP/UDP checksum holds only the
//!   pseudo-header sum, which no incremental update can make right. Only
//!   the operator can fix that (checksum offload off on the senders).

use crate::config::{Config, SendBack};
use crate::netlink::link_kind;

/// Is the interface called `name` (in this network namespace) a veth?
pub fn is_veth(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name)
        .ok()
        .and_then(|idx| link_kind(idx).ok().flatten())
        .is_some_and(|k| k == "veth")
}

/// The NAT interfaces of `cfg` that are veths.
pub fn veths(cfg: &Config) -> Vec<&str> {
    let mut v: Vec<&str> = vec![cfg.internal_if.as_str()];
    if !cfg.one_armed() {
        v.push(cfg.external_if.as_str());
    }
    v.retain(|n| is_veth(n));
    v
}

/// Should frames leaving by their ingress interface be redirected through
/// the devmap instead of XDP_TX?
pub fn redirect_back(cfg: &Config) -> bool {
    match cfg.send_back {
        SendBack::XdpTx => false,
        SendBack::Redirect => true,
        SendBack::Auto => !veths(cfg).is_empty(),
    }
}

/// What the operator must know about the veths among the NAT interfaces
/// (one line each; empty when there is none).
pub fn warnings(cfg: &Config) -> Vec<String> {
    veths(cfg)
        .into_iter()
        .map(|name| {
            format!(
                "warning: {name} is a veth: its peer needs GRO on (`ethtool -K PEER gro on`) or an \
                 XDP program to receive what cgnat redirects to it; every sender behind it must \
                 fill in TCP/UDP checksums (`ethtool -K IF tx off` on the hosts' veths) and \
                 nothing upstream of cgnat may aggregate frames with GRO, or translated \
                 packets arrive with bad checksums{} (README: \"Running on veth\")",
                if cfg.send_back == SendBack::XdpTx {
                    "; interfaces.send_back = \"xdp_tx\": frames sent back out of it wait in \
                     its peer's queue unless the peer runs an XDP program"
                } else {
                    ""
                }
            )
        })
        .collect()
}
