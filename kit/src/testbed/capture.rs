//! Packet capture.

use super::*;

/// An IPv4 packet a [`Sniffer`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (1 ICMP, 6 TCP, 17 UDP).
    pub proto: u8,
    /// Ports for TCP/UDP, 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    /// ICMP type and code for ICMP.
    pub icmp: Option<(u8, u8)>,
    /// Sent by this host (rather than received).
    pub outgoing: bool,
}

/// Records IPv4 packets on a host's interfaces (an AF_PACKET socket in its
/// namespace), until dropped.
pub struct Sniffer {
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    pub(super) fn start(tb: &Testbed, host: Host) -> Result<Sniffer> {
        let fd = tb
            .in_ns(host, || {
                socket::socket(
                    AddressFamily::Packet,
                    SockType::Raw,
                    SockFlag::SOCK_CLOEXEC,
                    SockProtocol::EthAll,
                )
            })?
            .map_err(sys_err(format!("AF_PACKET socket in {host}")))?;
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &timeval(Duration::from_millis(50)),
        )
        .map_err(sys_err("SO_RCVTIMEO"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket::recvfrom::<socket::LinkAddr>(fd.as_raw_fd(), &mut buf)
                else {
                    continue;
                };
                let Some(ll) = from else { continue };
                // ifindex 1 is lo in every namespace.
                if ll.ifindex() == 1 {
                    continue;
                }
                let outgoing = ll.pkttype() == 4; // PACKET_OUTGOING
                if let Some(seen) = parse_ether_ipv4(&buf[..n], outgoing) {
                    if let Ok(mut v) = log2.lock() {
                        v.push(seen);
                    }
                }
            }
        });
        // Let the socket settle before the caller sends anything.
        thread::sleep(Duration::from_millis(20));
        Ok(Sniffer {
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Packets seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses an Ethernet frame carrying IPv4 (no VLAN).
pub fn parse_ether_ipv4(frame: &[u8], outgoing: bool) -> Option<Seen> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 || ip.len() < ihl {
        return None;
    }
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[ihl..];
    let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
    let (mut sport, mut dport, mut icmp) = (0, 0, None);
    if first_fragment {
        match proto {
            6 | 17 if l4.len() >= 4 => {
                sport = u16::from_be_bytes([l4[0], l4[1]]);
                dport = u16::from_be_bytes([l4[2], l4[3]]);
            }
            1 if l4.len() >= 2 => icmp = Some((l4[0], l4[1])),
            _ => {}
        }
    }
    Some(Seen {
        src,
        dst,
        proto,
        sport,
        dport,
        icmp,
        outgoing,
    })
}
