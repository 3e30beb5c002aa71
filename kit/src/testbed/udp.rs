//! UDP.

use super::*;

/// A datagram a [`UdpReflector`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// A UDP server that answers every datagram with `"<src ip:port>\n"` plus
/// the payload, `src` being the source it observed, and records what it
/// received.
pub struct UdpReflector {
    addr: SocketAddrV4,
    host: Host,
    log: Arc<(Mutex<Vec<Datagram>>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpReflector {
    /// Binds `bind` in `host`'s namespace and starts answering.
    pub fn start(tb: &Testbed, host: Host, bind: SocketAddrV4) -> Result<UdpReflector> {
        let sock = tb.udp_socket(host, bind)?;
        let addr = sock_v4(sock.local_addr().map_err(io_err("local_addr"))?)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io_err("SO_RCVTIMEO"))?;
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(_) => continue,
                };
                let SocketAddr::V4(from) = from else { continue };
                let payload = buf[..n].to_vec();
                let reply = encode_reflection(from, &payload);
                // Record first: whoever gets the answer may look at the log.
                let (m, cv) = &*log2;
                if let Ok(mut v) = m.lock() {
                    v.push(Datagram { from, payload });
                }
                cv.notify_all();
                let _ = sock.send_to(&reply, from);
            }
        });
        Ok(UdpReflector {
            addr,
            host,
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    pub fn host(&self) -> Host {
        self.host
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Datagram> {
        let (m, _) = &*self.log;
        m.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The distinct sources seen so far, in order of first appearance.
    pub fn sources(&self) -> Vec<SocketAddrV4> {
        let mut out: Vec<SocketAddrV4> = Vec::new();
        for d in self.received() {
            if !out.contains(&d.from) {
                out.push(d.from);
            }
        }
        out
    }

    /// Waits up to `timeout` for a datagram satisfying `pred`.
    pub fn wait_for(
        &self,
        pred: impl Fn(&Datagram) -> bool,
        timeout: Duration,
    ) -> Option<Datagram> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut v = m.lock().ok()?;
        loop {
            if let Some(d) = v.iter().find(|d| pred(d)) {
                return Some(d.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            v = cv.wait_timeout(v, deadline - now).ok()?.0;
        }
    }
}

impl Drop for UdpReflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reflector's answer: `"<ip:port>\n"` followed by the payload.
pub fn encode_reflection(observed: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{observed}\n").into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Inverse of [`encode_reflection`].
pub fn decode_reflection(data: &[u8]) -> Option<(SocketAddrV4, Vec<u8>)> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let addr = std::str::from_utf8(&data[..nl]).ok()?.parse().ok()?;
    Some((addr, data[nl + 1..].to_vec()))
}

/// What a UDP exchange with a [`UdpReflector`] showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reflection {
    /// The source address the reflector observed (after NAT).
    pub observed: SocketAddrV4,
    /// Where the answer came from (as the client saw it).
    pub reply_from: SocketAddrV4,
    /// The payload echoed back.
    pub payload: Vec<u8>,
    /// How many times the request was sent.
    pub attempts: u32,
}

/// Sends `payload` from `sock` to the reflector at `dst` every 200 ms until
/// an answer from `dst` echoing `payload` arrives or `timeout` passes.
/// Other datagrams arriving meanwhile are ignored.
pub fn udp_exchange(
    sock: &UdpSocket,
    dst: SocketAddrV4,
    payload: &[u8],
    timeout: Duration,
) -> Result<Reflection> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    let mut attempts = 0;
    while Instant::now() < deadline {
        sock.send_to(payload, dst)
            .map_err(io_err(format!("sending UDP to {dst}")))?;
        attempts += 1;
        let resend = (Instant::now() + Duration::from_millis(200)).min(deadline);
        loop {
            let left = resend.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(io_err("SO_RCVTIMEO"))?;
            match sock.recv_from(&mut buf) {
                Ok((n, SocketAddr::V4(from))) if from == dst => {
                    if let Some((observed, echoed)) = decode_reflection(&buf[..n]) {
                        if echoed == payload {
                            return Ok(Reflection {
                                observed,
                                reply_from: from,
                                payload: echoed,
                                attempts,
                            });
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // ICMP errors (port unreachable...) surface here: retry.
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    Err(TestbedError::Timeout {
        what: format!("no reflection from {dst} for UDP from {local} ({attempts} attempts)"),
        timeout,
    })
}

/// Waits up to `timeout` for one datagram on `sock`.
pub fn udp_recv(sock: &UdpSocket, timeout: Duration) -> Result<Datagram> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TestbedError::Timeout {
                what: "no UDP datagram".into(),
                timeout,
            });
        }
        sock.set_read_timeout(Some(left))
            .map_err(io_err("SO_RCVTIMEO"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) => {
                return Ok(Datagram {
                    from,
                    payload: buf[..n].to_vec(),
                })
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends `payload` from `sender` to `dst` every 200 ms until `receiver`
/// gets a datagram carrying exactly `payload` (others are skipped), and
/// returns it with the source the receiver saw.
pub fn udp_send_until_received(
    sender: &UdpSocket,
    dst: SocketAddrV4,
    payload: &[u8],
    receiver: &UdpSocket,
    timeout: Duration,
) -> Result<Datagram> {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    while Instant::now() < deadline {
        sender
            .send_to(payload, dst)
            .map_err(io_err(format!("sending UDP to {dst}")))?;
        attempts += 1;
        let resend = (Instant::now() + Duration::from_millis(200)).min(deadline);
        while let Some(left) =
            Some(resend.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
        {
            match udp_recv(receiver, left) {
                Ok(d) if d.payload == payload => return Ok(d),
                Ok(_) => {}
                Err(TestbedError::Timeout { .. }) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Err(TestbedError::Timeout {
        what: format!("UDP to {dst} never arrived ({attempts} attempts)"),
        timeout,
    })
}
