//! The `[cluster]` table: this node's id, its peers, the shared key and
//! how subscribers and the external pool are split into one slice per
//! node. Every node runs the same file apart from `cluster.id`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::Deserialize;

use super::checks::{overlaps, parse_prefixes, Checker};
use super::{ConfigError, PoolMode, StaticMapping};

/// Most nodes a cluster may have (slices are a 64-bit mask on the wire).
pub const MAX_NODES: u16 = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    id: u16,
    key_file: PathBuf,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_heartbeat")]
    heartbeat: String,
    #[serde(default = "default_dead_after")]
    dead_after: String,
    #[serde(default)]
    failback: Failback,
    #[serde(default = "default_route_table")]
    route_table: u32,
    #[serde(default = "default_route_metric")]
    route_metric: u32,
    #[serde(default = "default_session_age")]
    session_age: String,
    #[serde(default = "default_sync_interval")]
    sync_interval: String,
    #[serde(default)]
    nodes: Vec<RawNode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: u16,
    address: String,
    subscribers: Vec<String>,
    pool: Vec<String>,
}

fn default_port() -> u16 {
    7946
}
fn default_heartbeat() -> String {
    "200ms".into()
}
fn default_dead_after() -> String {
    "1s".into()
}
fn default_route_table() -> u32 {
    200
}
fn default_route_metric() -> u32 {
    100
}
fn default_session_age() -> String {
    "0s".into()
}
fn default_sync_interval() -> String {
    "250ms".into()
}

/// What a node does with its own slice when it comes back after a peer
/// served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Failback {
    /// Take the slice back as soon as the resync from the peer is done.
    #[default]
    Immediate,
    /// Stay backup until `cgnat cluster failback` is run on this node.
    Manual,
}

/// One node of the cluster and its slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: u16,
    /// Where its sync messages come from and go to.
    pub address: Ipv4Addr,
    /// Its subscribers (parts of `nat.internal_prefixes`).
    pub subscribers: Vec<Ipv4Network>,
    /// Its part of the pool (parts of `nat.external_pool`).
    pub pool: Vec<Ipv4Network>,
}

impl Node {
    /// Bit of this node in slice masks.
    pub fn bit(&self) -> u64 {
        1u64 << (self.id - 1)
    }

    pub fn serves_subscriber(&self, a: Ipv4Addr) -> bool {
        self.subscribers.iter().any(|p| p.contains(a))
    }

    pub fn serves_external(&self, a: Ipv4Addr) -> bool {
        self.pool.iter().any(|p| p.contains(a))
    }
}

/// A validated `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This node's id.
    pub id: u16,
    pub key_file: PathBuf,
    /// UDP port of the sync protocol, on every node.
    pub port: u16,
    /// How often a node tells its peers it is alive.
    pub heartbeat: Duration,
    /// A peer not heard from for this long is dead: its slice is taken over.
    pub dead_after: Duration,
    pub failback: Failback,
    /// Kernel routing table the node writes the routes it wants announced
    /// into (for BIRD or FRR to import); 0: none.
    pub route_table: u32,
    /// Metric of the routes of slices this node serves; a slice it only
    /// backs up gets twice this.
    pub route_metric: u32,
    /// Sessions younger than this are not sent to peers (0: all).
    pub session_age: Duration,
    /// How often the tables are compared with what peers were sent.
    pub sync_interval: Duration,
    /// Every node, sorted by id.
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn me(&self) -> &Node {
        self.node(self.id)
            .expect("checked: the id is one of the nodes")
    }

    pub fn node(&self, id: u16) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn peers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.id != self.id)
    }

    /// One line naming this node, its sync endpoint and its routing table.
    pub fn summary(&self) -> String {
        format!(
            "node {} of {}, sync on {}:{}, routes in table {}",
            self.id,
            self.nodes.len(),
            self.me().address,
            self.port,
            self.route_table
        )
    }

    /// The node whose slice holds subscriber `a`.
    pub fn owner_of_subscriber(&self, a: Ipv4Addr) -> Option<u16> {
        self.nodes
            .iter()
            .find(|n| n.serves_subscriber(a))
            .map(|n| n.id)
    }

    /// The node whose slice holds external address `a`.
    pub fn owner_of_external(&self, a: Ipv4Addr) -> Option<u16> {
        self.nodes
            .iter()
            .find(|n| n.serves_external(a))
            .map(|n| n.id)
    }
}

impl Checker<'_> {
    /// `[cluster]`: ids, addresses, the key file, and slices that cover the
    /// subscribers and the pool exactly once and fit the pool mode.
    pub(super) fn cluster(
        &self,
        raw: &RawCluster,
        sub: &SliceInputs,
    ) -> Result<Cluster, ConfigError> {
        let invalid = |field, reason: String| self.invalid(field, reason);
        if raw.nodes.len() < 2 {
            return Err(invalid(
                "cluster.nodes",
                "a cluster needs at least two [[cluster.nodes]]".into(),
            ));
        }
        let mut nodes = Vec::new();
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for n in &raw.nodes {
            if n.id == 0 || n.id > MAX_NODES {
                return Err(invalid(
                    "cluster.nodes.id",
                    format!("{} is not a node id (1 to {MAX_NODES})", n.id),
                ));
            }
            if !ids.insert(n.id) {
                return Err(invalid(
                    "cluster.nodes.id",
                    format!("node {} is listed twice", n.id),
                ));
            }
            let address: Ipv4Addr = n.address.parse().map_err(|_| {
                invalid(
                    "cluster.nodes.address",
                    format!("node {}: {:?} is not an IPv4 address", n.id, n.address),
                )
            })?;
            if !addrs.insert(address) {
                return Err(invalid(
                    "cluster.nodes.address",
                    format!("{address} is the address of two nodes"),
                ));
            }
            let subscribers = parse_prefixes(&n.subscribers)
                .map_err(|r| invalid("cluster.nodes.subscribers", format!("node {}: {r}", n.id)))?;
            let pool = parse_prefixes(&n.pool)
                .map_err(|r| invalid("cluster.nodes.pool", format!("node {}: {r}", n.id)))?;
            nodes.push(Node {
                id: n.id,
                address,
                subscribers,
                pool,
            });
        }
        nodes.sort_by_key(|n| n.id);
        if !ids.contains(&raw.id) {
            return Err(invalid(
                "cluster.id",
                format!("{} is not the id of any [[cluster.nodes]]", raw.id),
            ));
        }
        self.slices_cover(
            "cluster.nodes.subscribers",
            &nodes,
            |n| &n.subscribers,
            sub.internal,
            "nat.internal_prefixes",
        )?;
        self.slices_cover(
            "cluster.nodes.pool",
            &nodes,
            |n| &n.pool,
            sub.pool,
            "nat.external_pool",
        )?;
        self.slices_fit_mode(&nodes, sub)?;
        self.key_file(&raw.key_file)?;
        let heartbeat = self.duration("cluster.heartbeat", &raw.heartbeat)?;
        let dead_after = self.duration("cluster.dead_after", &raw.dead_after)?;
        if heartbeat.is_zero() || dead_after < heartbeat * 2 {
            return Err(invalid(
                "cluster.dead_after",
                format!(
                    "must be at least two heartbeats ({heartbeat:?}), so one lost message does \
                     not declare a peer dead"
                ),
            ));
        }
        let sync_interval = self.duration("cluster.sync_interval", &raw.sync_interval)?;
        if sync_interval.is_zero() {
            return Err(invalid("cluster.sync_interval", "must not be 0".into()));
        }
        if raw.route_metric == 0 || raw.route_metric > u32::MAX / 2 {
            return Err(invalid(
                "cluster.route_metric",
                format!(
                    "{} is out of range (1 to {})",
                    raw.route_metric,
                    u32::MAX / 2
                ),
            ));
        }
        if raw.route_table >= 253 && raw.route_table <= 255 {
            return Err(invalid(
                "cluster.route_table",
                format!(
                    "{} is a kernel table (default, main, local); pick one of its own",
                    raw.route_table
                ),
            ));
        }
        Ok(Cluster {
            id: raw.id,
            key_file: raw.key_file.clone(),
            port: raw.port,
            heartbeat,
            dead_after,
            failback: raw.failback,
            route_table: raw.route_table,
            route_metric: raw.route_metric,
            session_age: self.duration("cluster.session_age", &raw.session_age)?,
            sync_interval,
            nodes,
        })
    }

    /// Every slice lies inside `whole`, no two slices overlap, and
    /// together they cover all of it: no address without an owner.
    fn slices_cover(
        &self,
        field: &'static str,
        nodes: &[Node],
        part: impl Fn(&Node) -> &Vec<Ipv4Network>,
        whole: &[Ipv4Network],
        whole_name: &str,
    ) -> Result<(), ConfigError> {
        let all: Vec<(u16, Ipv4Network)> = nodes
            .iter()
            .flat_map(|n| part(n).iter().map(move |p| (n.id, *p)))
            .collect();
        for (i, (id, p)) in all.iter().enumerate() {
            if !whole
                .iter()
                .any(|w| w.contains(p.network()) && w.prefix() <= p.prefix())
            {
                return Err(
                    self.invalid(field, format!("node {id}: {p} is not inside {whole_name}"))
                );
            }
            if let Some((other, q)) = all[i + 1..].iter().find(|(_, q)| overlaps(p, q)) {
                return Err(self.invalid(
                    field,
                    format!("node {id}'s {p} overlaps node {other}'s {q}: slices must not overlap"),
                ));
            }
        }
        for w in whole {
            let covered: u64 = all
                .iter()
                .filter(|(_, p)| w.contains(p.network()))
                .map(|(_, p)| u64::from(p.size()))
                .sum();
            if covered != u64::from(w.size()) {
                let hole = w
                    .iter()
                    .find(|a| !all.iter().any(|(_, p)| p.contains(*a)))
                    .unwrap_or(w.network());
                return Err(self.invalid(
                    field,
                    format!(
                        "{hole} (in {whole_name} {w}) is in no node's slice: every address needs \
                         an owner"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Deterministic mode fixes each subscriber's external address: every
    /// subscriber of a slice must map into the same slice's pool. Static
    /// mappings stay inside one slice.
    fn slices_fit_mode(&self, nodes: &[Node], sub: &SliceInputs) -> Result<(), ConfigError> {
        if let (PoolMode::Deterministic, Some(det)) = (sub.mode, sub.deterministic) {
            for n in nodes {
                for p in &n.subscribers {
                    for a in [p.network(), p.broadcast()] {
                        let Some((ext, _)) = det.forward(a) else {
                            continue;
                        };
                        if !n.serves_external(ext) {
                            return Err(self.invalid(
                                "cluster.nodes.pool",
                                format!(
                                    "deterministic mode maps node {}'s subscriber {a} to {ext}, \
                                     which is not in node {}'s pool: split the pool where the \
                                     subscribers split (see `cgnat forward`)",
                                    n.id, n.id
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for s in sub.statics {
            let owner = nodes.iter().find(|n| n.serves_subscriber(*s.internal.ip()));
            if let Some(n) = owner {
                if !n.serves_external(*s.external.ip()) {
                    return Err(self.invalid(
                        "static.external",
                        format!(
                            "{} belongs to node {}'s subscribers, but {} is not in its pool",
                            s.internal.ip(),
                            n.id,
                            s.external.ip()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The key file can be read, holds a long enough key, and only its
    /// owner may read it (the engine reads it the same way).
    fn key_file(&self, path: &std::path::Path) -> Result<(), ConfigError> {
        crate::cluster::wire::Key::from_file(path)
            .map(|_| ())
            .map_err(|e| self.invalid("cluster.key_file", e.to_string()))
    }
}

/// What the slice checks need from the rest of the configuration.
pub(super) struct SliceInputs<'a> {
    pub(super) internal: &'a [Ipv4Network],
    pub(super) pool: &'a [Ipv4Network],
    pub(super) mode: PoolMode,
    pub(super) deterministic: Option<&'a crate::pool::Deterministic>,
    pub(super) statics: &'a [StaticMapping],
}
