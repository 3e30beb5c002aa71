//! Frame building and independent checksum verification for the
//! BPF_PROG_TEST_RUN suites (`tests/prog_run.rs`, `differential.rs`,
//! `garbage.rs`, `rfc_cases.rs`) and the benchmark's frames.
//!
//! Frames are described logically (`Pkt`) and serialised with every length
//! and checksum computed from scratch here (RFC 1071), never taken from the
//! program. Outputs are verified twice: by `verify_checksums` (the one's
//! complement sum over each checksummed region, checksum field included,
//! must be 0xffff) and by `verify_with_etherparse` (etherparse recomputes
//! each checksum and compares with the field).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub type Mac = [u8; 6];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

/// One's complement sum of big-endian 16-bit words (odd tail padded with
/// zero), not yet folded.
pub fn sum_words(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|c| {
            u64::from(u16::from_be_bytes([
                c[0],
                if c.len() == 2 { c[1] } else { 0 },
            ]))
        })
        .sum()
}

/// Folds a sum to 16 bits with end-around carry.
pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`, each
/// of even length except possibly the last.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    !fold(parts.iter().map(|p| sum_words(p)).sum())
}

pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// Transport part of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        /// Send checksum 0 ("none", RFC 768).
        no_csum: bool,
    },
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        /// TCP options, a multiple of 4 bytes.
        opts: Vec<u8>,
        payload: Vec<u8>,
    },
    /// ICMP with an (id, seq) rest-of-header: echo and timestamp.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    /// Any other protocol, bytes as given.
    Raw { proto: u8, bytes: Vec<u8> },
}

/// An Ethernet + IPv4 frame described by its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkt {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// 802.1Q TCI, if tagged.
    pub vlan: Option<u16>,
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset, host order.
    pub frag: u16,
    pub ttl: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP options, a multiple of 4 bytes.
    pub options: Vec<u8>,
    pub l4: L4,
    /// Bytes after the IP datagram (Ethernet padding).
    pub trailer: Vec<u8>,
}

impl Pkt {
    fn base(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Pkt {
        Pkt {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            vlan: None,
            tos: 0,
            id: 0x1c46,
            frag: IP_DF,
            ttl: 64,
            src,
            dst,
            options: Vec::new(),
            l4,
            trailer: Vec::new(),
        }
    }

    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Pkt {
        Pkt::base(
            src.0,
            dst.0,
            L4::Udp {
                sport: src.1,
                dport: dst.1,
                payload: payload.to_vec(),
                no_csum: false,
            },
        )
    }

    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Pkt {
        Pkt::base(
            src.0,
            dst.0,
            L4::Tcp {
                sport: src.1,
                dport: dst.1,
                seq: 0x1234_5678,
                ack: if flags & TCP_ACK != 0 { 0x0bad_cafe } else { 0 },
                flags,
                window: 64240,
                opts: Vec::new(),
                payload: Vec::new(),
            },
        )
    }

    /// ICMP echo request (type 8) or reply (type 0) or any (id, seq) type.
    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, id: u16, seq: u16) -> Pkt {
        Pkt::base(
            src,
            dst,
            L4::Icmp {
                ty,
                code: 0,
                id,
                seq,
                payload: b"abcdefghijklmnopqrstuvwabcdefghi".to_vec(),
            },
        )
    }

    /// Any ICMP message with a 4-byte rest-of-header (id, seq): errors
    /// carry their quote as payload.
    pub fn icmp_msg(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ty: u8,
        code: u8,
        rest: (u16, u16),
        payload: &[u8],
    ) -> Pkt {
        Pkt::base(
            src,
            dst,
            L4::Icmp {
                ty,
                code,
                id: rest.0,
                seq: rest.1,
                payload: payload.to_vec(),
            },
        )
    }

    pub fn raw(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, bytes: &[u8]) -> Pkt {
        Pkt::base(
            src,
            dst,
            L4::Raw {
                proto,
                bytes: bytes.to_vec(),
            },
        )
    }

    pub fn macs(mut self, src: Mac, dst: Mac) -> Pkt {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    pub fn vlan(mut self, tci: u16) -> Pkt {
        self.vlan = Some(tci);
        self
    }

    pub fn options(mut self, opts: &[u8]) -> Pkt {
        assert_eq!(opts.len() % 4, 0, "IP options must fill 32-bit words");
        self.options = opts.to_vec();
        self
    }

    pub fn frag(mut self, frag: u16) -> Pkt {
        self.frag = frag;
        self
    }

    /// Sets the TCP options (a multiple of 4 bytes).
    pub fn tcp_opts(mut self, o: &[u8]) -> Pkt {
        if let L4::Tcp { opts, .. } = &mut self.l4 {
            *opts = o.to_vec();
        }
        self
    }

    /// The first `n` bytes of the IP payload after the header, with the
    /// header: an ICMP error's quote of any length.
    pub fn quote_len(&self, n: usize) -> Vec<u8> {
        let b = self.bytes();
        b[self.ip_offset()..(self.l4_offset() + n).min(b.len())].to_vec()
    }

    /// Pads the frame to `len` bytes with zeros after the datagram.
    pub fn pad_to(mut self, len: usize) -> Pkt {
        let n = self.bytes().len() - self.trailer.len();
        self.trailer = vec![0; len.saturating_sub(n)];
        self
    }

    /// The IP header and the first 8 bytes after it: what an ICMP error
    /// quotes (RFC 792).
    pub fn quote(&self) -> Vec<u8> {
        let b = self.bytes();
        b[self.ip_offset()..self.l4_offset() + 8].to_vec()
    }

    /// One fragment of this datagram: bytes `start..end` of the IP payload
    /// (the transport segment, its checksum covering the whole datagram),
    /// offset `start / 8`, MF if `more`, DF clear.
    pub fn fragment(&self, start: usize, end: usize, more: bool) -> Vec<u8> {
        assert_eq!(start % 8, 0, "fragment offsets are in 8-byte units");
        let seg = self.l4_bytes();
        let mut f = self.clone();
        f.frag = (start / 8) as u16 | if more { IP_MF } else { 0 };
        f.l4 = L4::Raw {
            proto: self.proto(),
            bytes: seg[start..end.min(seg.len())].to_vec(),
        };
        f.bytes()
    }

    pub fn no_udp_csum(mut self) -> Pkt {
        if let L4::Udp { no_csum, .. } = &mut self.l4 {
            *no_csum = true;
        }
        self
    }

    pub fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Udp { .. } => PROTO_UDP,
            L4::Tcp { .. } => PROTO_TCP,
            L4::Icmp { .. } => PROTO_ICMP,
            L4::Raw { proto, .. } => *proto,
        }
    }

    /// Source port, or the ICMP identifier.
    pub fn sport(&self) -> u16 {
        match &self.l4 {
            L4::Udp { sport, .. } | L4::Tcp { sport, .. } => *sport,
            L4::Icmp { id, .. } => *id,
            L4::Raw { .. } => 0,
        }
    }

    /// Sets the source address and port (ICMP: identifier).
    pub fn with_src(mut self, addr: Ipv4Addr, port: u16) -> Pkt {
        self.src = addr;
        match &mut self.l4 {
            L4::Udp { sport, .. } | L4::Tcp { sport, .. } => *sport = port,
            L4::Icmp { id, .. } => *id = port,
            L4::Raw { .. } => {}
        }
        self
    }

    /// Sets the destination address and port (ICMP: identifier).
    pub fn with_dst(mut self, addr: Ipv4Addr, port: u16) -> Pkt {
        self.dst = addr;
        match &mut self.l4 {
            L4::Udp { dport, .. } | L4::Tcp { dport, .. } => *dport = port,
            L4::Icmp { id, .. } => *id = port,
            L4::Raw { .. } => {}
        }
        self
    }

    /// Offset of the IPv4 header in the serialised frame.
    pub fn ip_offset(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    /// Offset of the transport header in the serialised frame.
    pub fn l4_offset(&self) -> usize {
        self.ip_offset() + 20 + self.options.len()
    }

    /// The transport segment with its checksum computed here.
    pub fn l4_bytes(&self) -> Vec<u8> {
        match &self.l4 {
            L4::Udp {
                sport,
                dport,
                payload,
                no_csum,
            } => {
                let len = 8 + payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                if !*no_csum {
                    let ph = pseudo_header(self.src, self.dst, PROTO_UDP, len);
                    let mut c = internet_checksum(&[&ph, &b]);
                    if c == 0 {
                        c = 0xffff; // RFC 768: a computed 0 is sent as all ones
                    }
                    b[6..8].copy_from_slice(&c.to_be_bytes());
                }
                b
            }
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                opts,
                payload,
            } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                assert_eq!(opts.len() % 4, 0, "TCP options must fill 32-bit words");
                b.push(((5 + opts.len() / 4) as u8) << 4);
                b.push(*flags);
                b.extend_from_slice(&window.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(opts);
                b.extend_from_slice(payload);
                let ph = pseudo_header(self.src, self.dst, PROTO_TCP, b.len());
                let c = internet_checksum(&[&ph, &b]);
                b[16..18].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Icmp {
                ty,
                code,
                id,
                seq,
                payload,
            } => {
                let mut b = vec![*ty, *code, 0, 0];
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(payload);
                let c = internet_checksum(&[&b]);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }

    /// The whole frame.
    pub fn bytes(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let ihl = 5 + self.options.len() / 4;
        let tot = ihl * 4 + l4.len();
        let mut ip = Vec::with_capacity(tot);
        ip.push(0x40 | ihl as u8);
        ip.push(self.tos);
        ip.extend_from_slice(&(tot as u16).to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.proto());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.options);
        let c = internet_checksum(&[&ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&l4);
        ip.extend_from_slice(&self.trailer);
        eth(self.dst_mac, self.src_mac, self.vlan, ETH_P_IP, &ip)
    }
}

/// An Ethernet frame (optionally 802.1Q-tagged) around `payload`.
pub fn eth(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Rewrites the IPv4 header checksum of a frame in place (after editing
/// header bytes on purpose), so only the intended defect remains.
pub fn fix_ip_csum(frame: &mut [u8], ip_off: usize) {
    let ihl = usize::from(frame[ip_off] & 0x0f) * 4;
    let end = (ip_off + ihl.max(20)).min(frame.len());
    frame[ip_off + 10] = 0;
    frame[ip_off + 11] = 0;
    let c = internet_checksum(&[&frame[ip_off..end]]);
    frame[ip_off + 10..ip_off + 12].copy_from_slice(&c.to_be_bytes());
}

/// The IP identification of a frame whose IP header is at `ip_off`.
pub fn ip_id(frame: &[u8], ip_off: usize) -> u16 {
    u16::from_be_bytes([frame[ip_off + 4], frame[ip_off + 5]])
}

/// Sets the IP identification (and the header checksum).
pub fn set_ip_id(frame: &mut [u8], ip_off: usize, id: u16) {
    frame[ip_off + 4..ip_off + 6].copy_from_slice(&id.to_be_bytes());
    fix_ip_csum(frame, ip_off);
}

/// The IPv4 header offset of a frame (after one optional VLAN tag).
fn ip_header_offset(frame: &[u8]) -> Result<usize, String> {
    if frame.len() < 14 {
        return Err(format!(
            "frame of {} bytes has no Ethernet header",
            frame.len()
        ));
    }
    let mut off = 12;
    let mut et = u16::from_be_bytes([frame[off], frame[off + 1]]);
    if et == ETH_P_8021Q || et == 0x88a8 {
        off += 4;
        if frame.len() < off + 2 {
            return Err("truncated VLAN tag".into());
        }
        et = u16::from_be_bytes([frame[off], frame[off + 1]]);
    }
    if et != ETH_P_IP {
        return Err(format!("EtherType {et:#06x} is not IPv4"));
    }
    Ok(off + 2)
}

/// Checks every checksum of an IPv4 frame by summing each covered region
/// with its checksum field: a correct region sums to 0xffff.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let off = ip_header_offset(frame)?;
    let ip = frame.get(off..).ok_or("no IP header")?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err("not an IPv4 header".into());
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || tot < ihl || tot > ip.len() {
        return Err(format!(
            "bad IHL {ihl} / total length {tot} (have {})",
            ip.len()
        ));
    }
    let s = fold(sum_words(&ip[..ihl]));
    if s != 0xffff {
        return Err(format!(
            "IPv4 header checksum {:#06x} is wrong (sum {s:#06x})",
            u16::from_be_bytes([ip[10], ip[11]])
        ));
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Ok(()); // a fragment: the transport checksum spans fragments
    }
    let proto = ip[9];
    let seg = &ip[ihl..tot];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    match proto {
        PROTO_UDP | PROTO_TCP => {
            let field = if proto == PROTO_UDP { 6 } else { 16 };
            if seg.len() < field + 2 {
                return Err("transport header truncated".into());
            }
            let c = u16::from_be_bytes([seg[field], seg[field + 1]]);
            if proto == PROTO_UDP && c == 0 {
                return Ok(()); // no checksum
            }
            let ph = pseudo_header(src, dst, proto, seg.len());
            let s = fold(sum_words(&ph) + sum_words(seg));
            if s != 0xffff {
                return Err(format!(
                    "{} checksum {c:#06x} is wrong (sum {s:#06x})",
                    if proto == PROTO_UDP { "UDP" } else { "TCP" }
                ));
            }
        }
        PROTO_ICMP => {
            let s = fold(sum_words(seg));
            if s != 0xffff {
                return Err(format!("ICMP checksum is wrong (sum {s:#06x})"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The same checks done by etherparse: it recomputes each checksum from the
/// parsed headers and we compare with what the frame carries.
pub fn verify_with_etherparse(frame: &[u8]) -> Result<(), String> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    let p = SlicedPacket::from_ethernet(frame).map_err(|e| format!("etherparse: {e}"))?;
    let ip = match &p.net {
        Some(NetSlice::Ipv4(ip)) => ip,
        _ => return Err("etherparse: no IPv4 header".into()),
    };
    let hdr = ip.header().to_header();
    let want = hdr.calc_header_checksum();
    if want != hdr.header_checksum {
        return Err(format!(
            "etherparse: IPv4 checksum {:#06x}, expected {want:#06x}",
            hdr.header_checksum
        ));
    }
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            if h.checksum != 0 {
                let want = h
                    .calc_checksum_ipv4(&hdr, u.payload())
                    .map_err(|e| e.to_string())?;
                if want != h.checksum {
                    return Err(format!(
                        "etherparse: UDP checksum {:#06x}, expected {want:#06x}",
                        h.checksum
                    ));
                }
            }
        }
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            let want = h
                .calc_checksum_ipv4(&hdr, t.payload())
                .map_err(|e| e.to_string())?;
            if want != h.checksum {
                return Err(format!(
                    "etherparse: TCP checksum {:#06x}, expected {want:#06x}",
                    h.checksum
                ));
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let h = i.header();
            let want = h.icmp_type.calc_checksum(i.payload());
            if want != h.checksum {
                return Err(format!(
                    "etherparse: ICMP checksum {:#06x}, expected {want:#06x}",
                    h.checksum
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A one-line description of a frame, for messages.
pub fn describe(frame: &[u8]) -> String {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return format!("{} bytes (unparsable)", frame.len());
    };
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return format!("{} bytes (not IPv4)", frame.len());
    };
    let h = ip.header();
    let (s, d) = (h.source_addr(), h.destination_addr());
    let t = match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            format!(
                "UDP {s}:{} -> {d}:{}",
                u.source_port(),
                u.destination_port()
            )
        }
        Some(TransportSlice::Tcp(t)) => {
            format!(
                "TCP {s}:{} -> {d}:{}",
                t.source_port(),
                t.destination_port()
            )
        }
        Some(TransportSlice::Icmpv4(i)) => format!("ICMP {s} -> {d} {:?}", i.icmp_type()),
        _ => format!("proto {} {s} -> {d}", h.protocol().0),
    };
    format!("{t} ttl {}", h.ttl())
}

/// A hex dump of two frames with the differing bytes marked.
pub fn diff(expected: &[u8], actual: &[u8]) -> String {
    let mut out = String::new();
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let _ = writeln!(
        out,
        "expected {} bytes [{}], got {} bytes [{}]; first difference at offset {first}",
        expected.len(),
        describe(expected),
        actual.len(),
        describe(actual)
    );
    let n = expected.len().max(actual.len());
    for row in (0..n).step_by(16) {
        let line = |f: &[u8]| {
            (row..(row + 16).min(n))
                .map(|i| f.get(i).map_or("  ".into(), |b| format!("{b:02x}")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let marks: String = (row..(row + 16).min(n))
            .map(|i| {
                if expected.get(i) != actual.get(i) {
                    "^^ "
                } else {
                    "   "
                }
            })
            .collect();
        let _ = writeln!(out, "  {row:04x} exp {}", line(expected));
        let _ = writeln!(out, "  {row:04x} got {}", line(actual));
        if marks.contains('^') {
            let _ = writeln!(out, "           {}", marks.trim_end());
        }
    }
    out
}

#[cfg(test)]
mod self_tests {
    use super::*;

    /// RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_example() {
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&d)), 0xddf2);
        assert_eq!(internet_checksum(&[&d]), !0xddf2);
    }

    /// Frames built here pass both verifiers, and a flipped bit fails them.
    #[test]
    fn built_frames_verify() {
        let a = Ipv4Addr::new(100, 64, 0, 11);
        let b = Ipv4Addr::new(198, 51, 100, 10);
        for p in [
            Pkt::udp((a, 5000), (b, 3478), b"hello"),
            Pkt::tcp((a, 40000), (b, 80), TCP_SYN),
            Pkt::icmp(a, b, 8, 0x4242, 1),
            Pkt::udp((a, 5000), (b, 3478), b"opt").options(&[1, 1, 1, 1]),
            Pkt::udp((a, 5000), (b, 3478), b"vlan").vlan(100),
        ] {
            let f = p.bytes();
            verify_checksums(&f).unwrap();
            verify_with_etherparse(&f).unwrap();
            let mut g = f.clone();
            let last = g.len() - 1;
            g[last] ^= 0x10;
            assert!(verify_checksums(&g).is_err());
            assert!(verify_with_etherparse(&g).is_err());
            let mut g = f.clone();
            g[p.ip_offset() + 8] ^= 1; // TTL
            assert!(verify_checksums(&g).is_err());
            assert!(verify_with_etherparse(&g).is_err());
        }
    }
}
