//! Address and port geometry of the allocation modes, computed from the
//! config alone: the numbers the XDP program is given (rodata), and the
//! deterministic mapping (RFC 7422) with its inverse for `cgnat forward` and
//! `cgnat reverse`.
//!
//! The XDP program allocates; this module only describes. Ports below
//! [`PORT_MIN`] are never handed out by port-block or deterministic mode
//! (RFC 7422 section 3: the system ports are reserved).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnetwork::Ipv4Network;

pub use crate::bpf::abi::{MAX_BLOCKS_CAP, PORT_MIN};
/// Ports available to blocks and ranges: PORT_MIN..=65535.
pub const PORTS: u32 = 65536 - PORT_MIN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("block_size must be between 8 and 32768 (got {0})")]
    BlockSize(u32),
    #[error("max_blocks must be between 1 and {MAX_BLOCKS_CAP} (got {0})")]
    MaxBlocks(u32),
    #[error(
        "{hosts} subscribers on {addrs} external addresses leave {ports} ports each; \
         deterministic mode needs at least {min} (add external addresses or use port-block)"
    )]
    TooFewPorts {
        hosts: u64,
        addrs: usize,
        ports: u32,
        min: u32,
    },
}

/// Port-block geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    pub block_size: u32,
    pub max_blocks: u32,
    pub per_addr: u32,
}

impl Blocks {
    pub fn new(block_size: u32, max_blocks: u32) -> Result<Blocks, PoolError> {
        if !(8..=32768).contains(&block_size) {
            return Err(PoolError::BlockSize(block_size));
        }
        if !(1..=MAX_BLOCKS_CAP).contains(&max_blocks) {
            return Err(PoolError::MaxBlocks(max_blocks));
        }
        Ok(Blocks {
            block_size,
            max_blocks,
            per_addr: PORTS / block_size,
        })
    }

    /// The ports of block `n`.
    pub fn ports(&self, n: u32) -> RangeInclusive<u16> {
        let lo = PORT_MIN + n * self.block_size;
        lo as u16..=(lo + self.block_size - 1) as u16
    }

    /// The block holding `port`, if any.
    pub fn block_of(&self, port: u16) -> Option<u32> {
        let p = u32::from(port);
        if p < PORT_MIN {
            return None;
        }
        let n = (p - PORT_MIN) / self.block_size;
        (n < self.per_addr).then_some(n)
    }
}

/// The deterministic mapping (RFC 7422): subscribers are numbered across
/// the internal prefixes in config order; `hosts_per_addr` consecutive
/// subscribers share an external address, each with `ports_per_host`
/// consecutive ports from [`PORT_MIN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deterministic {
    internal: Vec<Ipv4Network>,
    pool: Vec<Ipv4Addr>,
    pub hosts_per_addr: u32,
    pub ports_per_host: u32,
}

/// Fewest ports per subscriber deterministic mode accepts.
pub const DET_MIN_PORTS: u32 = 64;

impl Deterministic {
    pub fn new(internal: &[Ipv4Network], pool: &[Ipv4Addr]) -> Result<Deterministic, PoolError> {
        let hosts: u64 = internal.iter().map(|p| u64::from(p.size())).sum();
        let addrs = pool.len().max(1) as u64;
        let per_addr = hosts.div_ceil(addrs).max(1);
        let ports = (u64::from(PORTS) / per_addr) as u32;
        if ports < DET_MIN_PORTS {
            return Err(PoolError::TooFewPorts {
                hosts,
                addrs: pool.len(),
                ports,
                min: DET_MIN_PORTS,
            });
        }
        Ok(Deterministic {
            internal: internal.to_vec(),
            pool: pool.to_vec(),
            hosts_per_addr: per_addr as u32,
            ports_per_host: ports,
        })
    }

    /// The number of `addr` across the internal prefixes.
    fn number(&self, addr: Ipv4Addr) -> Option<u64> {
        let mut offset = 0u64;
        for p in &self.internal {
            if p.contains(addr) {
                return Some(offset + u64::from(u32::from(addr) - u32::from(p.network())));
            }
            offset += u64::from(p.size());
        }
        None
    }

    /// The external address and port range of subscriber `addr`.
    pub fn forward(&self, addr: Ipv4Addr) -> Option<(Ipv4Addr, RangeInclusive<u16>)> {
        let n = self.number(addr)?;
        let per = u64::from(self.hosts_per_addr);
        let ext = *self.pool.get((n / per) as usize)?;
        let lo = PORT_MIN + (n % per) as u32 * self.ports_per_host;
        Some((ext, lo as u16..=(lo + self.ports_per_host - 1) as u16))
    }

    /// The subscriber that external `ext:port` belongs to.
    pub fn reverse(&self, ext: Ipv4Addr, port: u16) -> Option<Ipv4Addr> {
        let idx = self.pool.iter().position(|a| *a == ext)? as u64;
        let p = u32::from(port);
        if p < PORT_MIN {
            return None;
        }
        let slot = (p - PORT_MIN) / self.ports_per_host;
        if slot >= self.hosts_per_addr {
            return None;
        }
        let mut n = idx * u64::from(self.hosts_per_addr) + u64::from(slot);
        for pfx in &self.internal {
            let size = u64::from(pfx.size());
            if n < size {
                return Some(Ipv4Addr::from(u32::from(pfx.network()) + n as u32));
            }
            n -= size;
        }
        None
    }

    /// (network, offset) of each internal prefix: the data path's table.
    pub fn prefix_offsets(internal: &[Ipv4Network]) -> Vec<(Ipv4Network, u32)> {
        let mut offset = 0u64;
        internal
            .iter()
            .map(|p| {
                let o = offset;
                offset += u64::from(p.size());
                (*p, o.min(u64::from(u32::MAX)) as u32)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn pool(prefixes: &[&str]) -> Vec<Ipv4Addr> {
        prefixes.iter().flat_map(|p| net(p).iter()).collect()
    }

    #[test]
    fn deterministic_round_trip_for_every_port() {
        // 2 internal prefixes (512 + 256 hosts) on 16 + 8 addresses.
        let internal = [net("100.64.0.0/23"), net("100.65.0.0/24")];
        let p = pool(&["203.0.113.0/28", "192.0.2.200/29"]);
        let d = Deterministic::new(&internal, &p).unwrap();
        assert_eq!(d.hosts_per_addr, 32); // ceil(768 / 24)
        assert_eq!(d.ports_per_host, 64512 / 32);
        let mut seen = std::collections::HashSet::new();
        for pfx in &internal {
            for a in pfx.iter() {
                let (ext, range) = d.forward(a).unwrap();
                assert!(p.contains(&ext));
                assert_eq!(range.clone().count() as u32, d.ports_per_host);
                for port in range {
                    assert!(port >= 1024);
                    assert!(seen.insert((ext, port)), "{ext}:{port} given twice");
                    assert_eq!(d.reverse(ext, port), Some(a), "{ext}:{port}");
                }
            }
        }
        assert_eq!(seen.len() as u32, 768 * d.ports_per_host);
        assert_eq!(d.reverse(p[0], 1023), None);
        assert_eq!(d.reverse("198.51.100.1".parse().unwrap(), 2000), None);
        assert_eq!(d.forward("10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn deterministic_uses_the_whole_pool() {
        // RFC 6888 REQ-13: every address, nearly every port.
        let internal = [net("100.64.0.0/22")];
        let p = pool(&["203.0.113.0/28"]);
        let d = Deterministic::new(&internal, &p).unwrap();
        let used: std::collections::HashSet<_> = internal[0]
            .iter()
            .map(|a| d.forward(a).unwrap().0)
            .collect();
        assert_eq!(used.len(), p.len());
        let total = 1024 * d.ports_per_host;
        assert!(f64::from(total) / f64::from(16 * PORTS) > 0.99);
    }

    #[test]
    fn deterministic_refuses_too_few_ports() {
        let e = Deterministic::new(&[net("100.64.0.0/10")], &pool(&["203.0.113.0/28"]));
        assert!(matches!(e, Err(PoolError::TooFewPorts { .. })));
    }

    #[test]
    fn block_geometry() {
        let b = Blocks::new(256, 4).unwrap();
        assert_eq!(b.per_addr, 252);
        assert_eq!(b.ports(0), 1024..=1279);
        assert_eq!(b.ports(251), 65280..=65535);
        assert_eq!(b.block_of(1024), Some(0));
        assert_eq!(b.block_of(1279), Some(0));
        assert_eq!(b.block_of(1280), Some(1));
        assert_eq!(b.block_of(80), None);
        for n in 0..b.per_addr {
            for port in b.ports(n) {
                assert_eq!(b.block_of(port), Some(n));
            }
        }
        assert!(Blocks::new(4, 4).is_err());
        assert!(Blocks::new(256, 0).is_err());
        assert!(Blocks::new(256, 33).is_err());
    }
}
