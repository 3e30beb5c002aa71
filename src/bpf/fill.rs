//! Filling the configuration maps from the config at load and reload
//! (pools, prefixes, static mappings, exemptions, tx ports, interface
//! addresses and MACs).

use super::*;

/// The LPM key of a prefix.
fn lpm(p: &ipnetwork::Ipv4Network) -> types::cgnat_lpm_key {
    types::cgnat_lpm_key {
        prefixlen: u32::from(p.prefix()),
        addr: u32::from(p.network()).to_be(),
    }
}

/// The keys of `map` that `keep` does not list. Adopted or reloaded tables
/// hold the previous config: new entries are written first, stale ones
/// removed after, so no lookup ever misses in between.
fn stale(map: &libbpf_rs::Map<'_>, keep: &[Vec<u8>]) -> Vec<Vec<u8>> {
    map.keys().filter(|k| !keep.contains(k)).collect()
}

/// Deletes the stale keys of each (map, name, keys to keep).
fn remove_stale(
    maps: [(&libbpf_rs::Map<'_>, &'static str, &[Vec<u8>]); 2],
) -> Result<(), BpfError> {
    for (map, name, keep) in maps {
        for k in stale(map, keep) {
            map.delete(&k).map_err(map_err(name))?;
        }
    }
    Ok(())
}

const ONE: u8 = 1;

/// The first octets of `prefixes` (struct cgnat_first_octets): octet o
/// is bit o % 64 of word o / 64; a prefix shorter than /8 covers several.
fn first_octets(prefixes: &[ipnetwork::Ipv4Network]) -> types::cgnat_first_octets {
    let mut f = types::cgnat_first_octets::default();
    for p in prefixes {
        let first = u32::from(p.network()) >> 24;
        let span = 1u32 << 8u8.saturating_sub(p.prefix());
        for o in first..(first + span).min(256) {
            f.bits[(o / 64) as usize] |= 1 << (o % 64);
        }
    }
    f
}

impl Datapath {
    /// Writes the configuration maps: the pool, the prefixes, the
    /// exemptions, the static mappings and the interfaces.
    pub(super) fn fill_config_maps(&self, cfg: &Config, ifindexes: &[u32]) -> Result<(), BpfError> {
        self.fill_pool_addrs(cfg)?;
        self.fill_prefixes(cfg)?;
        self.fill_exemptions(cfg)?;
        self.fill_statics(cfg)?;
        self.fill_interfaces(cfg, ifindexes)
    }

    /// The pool's addresses, by index.
    fn fill_pool_addrs(&self, cfg: &Config) -> Result<(), BpfError> {
        let m = &self.skel.maps;
        for (i, a) in cfg.pool_addrs.iter().enumerate() {
            let v: u32 = u32::from(*a).to_be();
            m.pool_addrs
                .update(bytes_of(&(i as u32)), bytes_of(&v), MapFlags::ANY)
                .map_err(map_err("pool_addrs"))?;
        }
        Ok(())
    }

    /// The subscriber prefixes (with their deterministic offsets) and the
    /// pool prefixes.
    fn fill_prefixes(&self, cfg: &Config) -> Result<(), BpfError> {
        let m = &self.skel.maps;
        // A pool prefix removed from the config drains: it stays while any
        // binding uses it (new subscribers never get its addresses).
        let mut in_use = std::collections::BTreeSet::new();
        self.bindings()?.scan(|k, _| {
            in_use.insert(Ipv4Addr::from(u32::from_be(k.addr)));
        })?;
        let keep_pool: Vec<Vec<u8>> = m
            .pool_prefixes
            .keys()
            .filter(|k| {
                from_bytes::<types::cgnat_lpm_key>(k).is_some_and(|lk| {
                    ipnetwork::Ipv4Network::new(
                        Ipv4Addr::from(u32::from_be(lk.addr)),
                        lk.prefixlen as u8,
                    )
                    .is_ok_and(|n| in_use.iter().any(|a| n.contains(*a)))
                })
            })
            .chain(cfg.pool_prefixes.iter().map(|p| bytes_of(&lpm(p)).to_vec()))
            .collect();
        // the first-octet bits cover the trie at every moment: old and new
        // prefixes' while it changes, the new ones' after
        let octets = first_octets(&cfg.internal_prefixes);
        let mut both = octets;
        let old = m
            .internal_octets
            .lookup(bytes_of(&0u32), MapFlags::ANY)
            .map_err(map_err("internal_octets"))?
            .and_then(|v| from_bytes::<types::cgnat_first_octets>(&v));
        if let Some(old) = old {
            for (b, o) in both.bits.iter_mut().zip(old.bits) {
                *b |= o;
            }
        }
        m.internal_octets
            .update(bytes_of(&0u32), bytes_of(&both), MapFlags::ANY)
            .map_err(map_err("internal_octets"))?;
        let slices = cfg.prefix_slices();
        let keep_internal: Vec<Vec<u8>> = slices
            .iter()
            .map(|s| bytes_of(&lpm(&s.prefix)).to_vec())
            .collect();
        for s in &slices {
            let key = bytes_of(&lpm(&s.prefix)).to_vec();
            // A cluster slice's `active` belongs to the cluster engine: a
            // reload keeps it; a new slice starts inactive.
            let active = match m.internal_prefixes.lookup(&key, MapFlags::ANY) {
                Ok(Some(old)) if s.owner != 0 => {
                    from_bytes::<types::cgnat_prefix_info>(&old).map_or(0, |o| o.active)
                }
                _ => u32::from(s.owner == 0),
            };
            let v = types::cgnat_prefix_info {
                network: u32::from(s.prefix.network()).to_be(),
                offset: s.offset,
                pool_first: s.pool_first,
                pool_count: s.pool_count,
                active,
                _pad: 0,
            };
            m.internal_prefixes
                .update(&key, bytes_of(&v), MapFlags::ANY)
                .map_err(map_err("internal_prefixes"))?;
        }
        for p in &cfg.pool_prefixes {
            m.pool_prefixes
                .update(bytes_of(&lpm(p)), bytes_of(&ONE), MapFlags::ANY)
                .map_err(map_err("pool_prefixes"))?;
        }
        remove_stale([
            (&m.internal_prefixes, "internal_prefixes", &keep_internal),
            (&m.pool_prefixes, "pool_prefixes", &keep_pool),
        ])?;
        m.internal_octets
            .update(bytes_of(&0u32), bytes_of(&octets), MapFlags::ANY)
            .map_err(map_err("internal_octets"))
    }

    /// Cluster: this node allocates for the subscribers of the slices in
    /// `mask` (bit id-1) and of no other slice.
    pub fn set_slices_active(&self, cfg: &Config, mask: u64) -> Result<(), BpfError> {
        let m = &self.skel.maps;
        for s in cfg.prefix_slices() {
            if s.owner == 0 {
                continue;
            }
            let key = bytes_of(&lpm(&s.prefix)).to_vec();
            let Some(mut v) = m
                .internal_prefixes
                .lookup(&key, MapFlags::ANY)
                .map_err(map_err("internal_prefixes"))?
                .and_then(|b| from_bytes::<types::cgnat_prefix_info>(&b))
            else {
                continue;
            };
            v.active = u32::from(mask & (1u64 << (s.owner - 1)) != 0);
            m.internal_prefixes
                .update(&key, bytes_of(&v), MapFlags::ANY)
                .map_err(map_err("internal_prefixes"))?;
        }
        Ok(())
    }

    /// Destinations exempt from translation, whole or by port.
    fn fill_exemptions(&self, cfg: &Config) -> Result<(), BpfError> {
        let m = &self.skel.maps;
        let mut keep_any = Vec::new();
        let mut keep_port = Vec::new();
        for e in &cfg.exempt {
            match e.port {
                None => {
                    let k = lpm(&e.prefix);
                    m.exempt_any
                        .update(bytes_of(&k), bytes_of(&ONE), MapFlags::ANY)
                        .map_err(map_err("exempt_any"))?;
                    keep_any.push(bytes_of(&k).to_vec());
                }
                Some(port) => {
                    let k = types::cgnat_lpm_port_key {
                        prefixlen: 16 + u32::from(e.prefix.prefix()),
                        port: port.to_be(),
                        addr: e.prefix.network().octets(),
                        _pad: [0; 2],
                    };
                    m.exempt_port
                        .update(bytes_of(&k), bytes_of(&ONE), MapFlags::ANY)
                        .map_err(map_err("exempt_port"))?;
                    keep_port.push(bytes_of(&k).to_vec());
                }
            }
        }
        remove_stale([
            (&m.exempt_any, "exempt_any", &keep_any),
            (&m.exempt_port, "exempt_port", &keep_port),
        ])
    }

    /// Static mappings: both halves of each binding; those no longer
    /// configured go.
    fn fill_statics(&self, cfg: &Config) -> Result<(), BpfError> {
        let bindings = self.bindings()?;
        let static_flag = types::cgnat_binding_flag::CGNAT_BIND_STATIC.0 as u8;
        // static mappings no longer configured go
        for (ek, b) in bindings.dump()? {
            if b.flags & static_flag == 0 {
                continue;
            }
            let still = cfg.statics.iter().any(|st| {
                st.proto == ek.proto
                    && u32::from(*st.external.ip()).to_be() == ek.addr
                    && st.external.port().to_be() == ek.port
                    && u32::from(*st.internal.ip()).to_be() == b.addr
                    && st.internal.port().to_be() == b.port
            });
            if !still {
                bindings.delete(&ek, &b)?;
            }
        }
        for st in &cfg.statics {
            let ik = types::cgnat_endpoint {
                addr: u32::from(*st.internal.ip()).to_be(),
                port: st.internal.port().to_be(),
                proto: st.proto,
                _pad: 0,
            };
            let ek = types::cgnat_endpoint {
                addr: u32::from(*st.external.ip()).to_be(),
                port: st.external.port().to_be(),
                proto: st.proto,
                _pad: 0,
            };
            let to_ext = types::cgnat_binding {
                addr: ek.addr,
                port: ek.port,
                flags: static_flag,
                ..Default::default()
            };
            let to_int = types::cgnat_binding {
                addr: ik.addr,
                port: ik.port,
                flags: static_flag,
                ..Default::default()
            };
            bindings.upsert(&ek, &to_int, &to_ext)?;
        }
        Ok(())
    }

    /// The tx ports, and each NAT interface's address and MAC.
    fn fill_interfaces(&self, cfg: &Config, ifindexes: &[u32]) -> Result<(), BpfError> {
        let m = &self.skel.maps;
        for idx in ifindexes.iter().filter(|i| **i != 0) {
            m.tx_ports
                .update(bytes_of(idx), bytes_of(idx), MapFlags::ANY)
                .map_err(map_err("tx_ports"))?;
        }
        for (name, idx) in [&cfg.internal_if, &cfg.external_if].iter().zip(ifindexes) {
            if let Some(a) = interface_addr(name) {
                let v = u32::from(a).to_be();
                m.if_addrs
                    .update(bytes_of(idx), bytes_of(&v), MapFlags::ANY)
                    .map_err(map_err("if_addrs"))?;
            }
        }
        for name in [&cfg.internal_if, &cfg.external_if] {
            self.set_interface_mac(cfg, name, interface_mac(name))?;
        }
        Ok(())
    }

    /// Sets the MAC frames to interface `name` must carry to be translated
    /// (map `if_macs`, by side; `None`: no check). At load, and when the
    /// interface's MAC changes under the daemon (`src/watch.rs`).
    pub fn set_interface_mac(
        &self,
        cfg: &Config,
        name: &str,
        mac: Option<[u8; 6]>,
    ) -> Result<(), BpfError> {
        let v = types::cgnat_if_mac {
            addr: mac.unwrap_or_default(),
            set: u8::from(mac.is_some()),
            _pad: 0,
        };
        // slot 0: internal (and one-armed), slot 1: external
        let slots = [
            (0u32, cfg.internal_if == name),
            (1u32, cfg.external_if == name),
        ];
        for (slot, _) in slots.iter().filter(|(_, is)| *is) {
            self.skel
                .maps
                .if_macs
                .update(bytes_of(slot), bytes_of(&v), MapFlags::ANY)
                .map_err(map_err("if_macs"))?;
        }
        Ok(())
    }

    /// Sets the address the ICMP errors generated on interface `ifindex`
    /// come from (map `if_addrs`, filled at load), or removes it (`None`:
    /// no error is generated there then). The daemon calls it when an
    /// interface's address changes under it (`src/watch.rs`).
    pub fn set_interface_addr(
        &self,
        ifindex: u32,
        addr: Option<std::net::Ipv4Addr>,
    ) -> Result<(), BpfError> {
        let m = &self.skel.maps.if_addrs;
        match addr {
            Some(a) => m
                .update(
                    bytes_of(&ifindex),
                    bytes_of(&u32::from(a).to_be()),
                    MapFlags::ANY,
                )
                .map_err(map_err("if_addrs")),
            // absent already is fine
            None => {
                let _ = m.delete(bytes_of(&ifindex));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(prefixes: &[&str]) -> Vec<u32> {
        let nets: Vec<ipnetwork::Ipv4Network> =
            prefixes.iter().map(|p| p.parse().unwrap()).collect();
        let f = first_octets(&nets);
        (0..256u32)
            .filter(|o| f.bits[(o / 64) as usize] >> (o % 64) & 1 == 1)
            .collect()
    }

    #[test]
    fn first_octets_cover_the_prefixes() {
        assert_eq!(bits(&["100.64.0.0/10"]), [100]);
        assert_eq!(
            bits(&["100.64.0.0/10", "10.0.0.0/8", "192.168.0.0/16"]),
            [10, 100, 192]
        );
        assert_eq!(bits(&["10.0.0.0/7"]), [10, 11]);
        assert_eq!(bits(&["0.0.0.0/0"]).len(), 256);
        assert_eq!(
            bits(&["255.255.255.0/24", "63.0.0.0/8", "64.0.0.0/8"]),
            [63, 64, 255]
        );
        assert!(bits(&[]).is_empty());
    }
}
