//! ICMP.

use super::*;

/// An ICMP message a host received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpSeen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub icmp_type: u8,
    pub code: u8,
    /// Everything after the 8-byte ICMP header.
    pub data: Vec<u8>,
}

/// Records the ICMP messages a host receives (a raw ICMP socket in its
/// namespace), until dropped.
pub struct IcmpCapture {
    log: Arc<Mutex<Vec<IcmpSeen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IcmpCapture {
    pub fn start(tb: &Testbed, host: Host) -> IcmpCapture {
        let fd = tb
            .raw_socket(host, AddressFamily::Inet, SockProtocol::Icmp)
            .unwrap_or_else(|e| panic!("{e}"));
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &timeval(Duration::from_millis(50)),
        )
        .unwrap_or_else(|e| panic!("SO_RCVTIMEO: {e}"));
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
        let log: Arc<Mutex<Vec<IcmpSeen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok(n) = socket::recv(fd.as_raw_fd(), &mut buf, socket::MsgFlags::empty())
                else {
                    continue;
                };
                let p = &buf[..n];
                if p.len() < 20 {
                    continue;
                }
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p.len() < ihl + 8 {
                    continue;
                }
                let seen = IcmpSeen {
                    src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                    dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                    icmp_type: p[ihl],
                    code: p[ihl + 1],
                    data: p[ihl + 8..].to_vec(),
                };
                if let Ok(mut v) = log2.lock() {
                    v.push(seen);
                }
            }
        });
        IcmpCapture {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<IcmpSeen> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for IcmpCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
