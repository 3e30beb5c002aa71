//! TCP.

use super::*;

/// Which request a [`TcpServer`] served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    /// `UP <seed>\n` + data until EOF; reply `<peer> <bytes> <hash>\n`.
    Upload,
    /// `DOWN <bytes> <seed>\n`; reply `<peer>\n` + pattern data, then EOF.
    Download,
    /// `WHO\n`; reply `<peer>\n`, keep the connection until the client closes.
    Whoami,
}

/// One connection a [`TcpServer`] served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRecord {
    pub peer: SocketAddrV4,
    pub mode: TcpMode,
    /// Bytes received (upload) or sent (download).
    pub bytes: u64,
    /// FNV-1a 64 of those bytes.
    pub hash: u64,
    /// Set when the connection failed midway.
    pub error: Option<String>,
}

/// A TCP server speaking the small protocol of [`TcpMode`]; records every
/// connection.
pub struct TcpServer {
    addr: SocketAddrV4,
    log: Arc<Mutex<Vec<TcpRecord>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(tb: &Testbed, host: Host, bind: SocketAddrV4) -> Result<TcpServer> {
        let listener = tb
            .in_ns(host, move || TcpListener::bind(bind))?
            .map_err(io_err(format!("listening on TCP {bind} in {host}")))?;
        let addr = sock_v4(listener.local_addr().map_err(io_err("local_addr"))?)?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("O_NONBLOCK on listener"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, SocketAddr::V4(peer))) => {
                        let log = Arc::clone(&log2);
                        let stop = Arc::clone(&stop2);
                        thread::spawn(move || {
                            let rec = serve_tcp(s, peer, &stop);
                            if let Ok(mut v) = log.lock() {
                                v.push(rec);
                            }
                        });
                    }
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(TcpServer {
            addr,
            log,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Connections completed so far.
    pub fn records(&self) -> Vec<TcpRecord> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn serve_tcp(s: TcpStream, peer: SocketAddrV4, stop: &AtomicBool) -> TcpRecord {
    let mut rec = TcpRecord {
        peer,
        mode: TcpMode::Whoami,
        bytes: 0,
        hash: Fnv64::new().finish(),
        error: None,
    };
    if let Err(e) = serve_tcp_inner(s, peer, stop, &mut rec) {
        rec.error = Some(e.to_string());
    }
    rec
}

pub(super) fn serve_tcp_inner(
    s: TcpStream,
    peer: SocketAddrV4,
    stop: &AtomicBool,
    rec: &mut TcpRecord,
) -> Result<()> {
    let deadline = Instant::now() + SERVER_IO_TIMEOUT;
    s.set_nonblocking(false).map_err(io_err("blocking"))?;
    let mut w = s.try_clone().map_err(io_err("try_clone"))?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let header = {
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if read_by(&mut r, &mut b, deadline, "request header")? == 0 {
                break;
            }
            if b[0] == b'\n' || line.len() > 100 {
                break;
            }
            line.push(b[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    };
    let words: Vec<&str> = header.split_whitespace().collect();
    match words.as_slice() {
        ["UP", _seed] => {
            rec.mode = TcpMode::Upload;
            let mut h = Fnv64::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(TestbedError::Protocol("server stopped".into()));
                }
                let n = read_by(&mut r, &mut buf, deadline, "upload data")?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                rec.bytes += n as u64;
            }
            rec.hash = h.finish();
            let reply = format!("{peer} {} {:016x}\n", rec.bytes, rec.hash);
            write_all_by(&mut w, reply.as_bytes(), deadline)?;
            let _ = w.shutdown(Shutdown::Write);
        }
        ["DOWN", bytes, seed] => {
            rec.mode = TcpMode::Download;
            let parse = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| TestbedError::Protocol(format!("bad request {header:?}")))
            };
            let (bytes, seed) = (parse(bytes)?, parse(seed)?);
            write_all_by(&mut w, format!("{peer}\n").as_bytes(), deadline)?;
            let mut pat = Pattern::new(seed);
            let mut h = Fnv64::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                if stop.load(Ordering::Relaxed) {
                    return Err(TestbedError::Protocol("server stopped".into()));
                }
                let n = left.min(buf.len() as u64) as usize;
                pat.fill(&mut buf[..n]);
                h.update(&buf[..n]);
                write_all_by(&mut w, &buf[..n], deadline)?;
                rec.bytes += n as u64;
                left -= n as u64;
            }
            rec.hash = h.finish();
            let _ = w.shutdown(Shutdown::Write);
        }
        ["WHO"] => {
            rec.mode = TcpMode::Whoami;
            write_all_by(&mut w, format!("{peer}\n").as_bytes(), deadline)?;
        }
        _ => return Err(TestbedError::Protocol(format!("bad request {header:?}"))),
    }
    // Wait for the client's close so that we do not reset the connection.
    let mut buf = [0u8; 4096];
    while read_by(&mut r, &mut buf, deadline, "client close")? > 0 {}
    Ok(())
}

/// Result of [`Testbed::tcp_upload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpUpload {
    /// The client's own address.
    pub local: SocketAddrV4,
    /// The peer address the server saw.
    pub server_saw: SocketAddrV4,
    pub sent_bytes: u64,
    pub sent_hash: u64,
    pub server_bytes: u64,
    pub server_hash: u64,
    pub elapsed: Duration,
}

/// Result of [`Testbed::tcp_download`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpDownload {
    pub local: SocketAddrV4,
    pub server_saw: SocketAddrV4,
    pub expected_bytes: u64,
    pub expected_hash: u64,
    pub got_bytes: u64,
    pub got_hash: u64,
    pub elapsed: Duration,
}

/// Sends `WHO` on an open connection to a [`TcpServer`] and returns the
/// peer address the server saw. The connection stays open.
pub fn tcp_whoami(s: &mut TcpStream, timeout: Duration) -> Result<SocketAddrV4> {
    let deadline = Instant::now() + timeout;
    write_all_by(s, b"WHO\n", deadline)?;
    let line = read_line_by(s, deadline, "WHO reply")?;
    parse_sock(&line)
}

pub(super) fn deadline_left(deadline: Instant, what: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(TestbedError::Timeout {
            what: what.to_owned(),
            timeout: Duration::ZERO,
        });
    }
    Ok(left)
}

pub(super) fn write_all_by(s: &mut TcpStream, mut data: &[u8], deadline: Instant) -> Result<()> {
    while !data.is_empty() {
        let left = deadline_left(deadline, "TCP write")?;
        s.set_write_timeout(Some(left.min(Duration::from_secs(1))))
            .map_err(io_err("SO_SNDTIMEO"))?;
        match s.write(data) {
            Ok(0) => {
                return Err(TestbedError::Protocol(
                    "TCP connection closed while writing".into(),
                ))
            }
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(io_err("TCP write")(e)),
        }
    }
    Ok(())
}

/// Reads into `buf` (0 = EOF) within `deadline`. `r` must wrap a TcpStream
/// so that the read timeout can be set; it is set through `TcpTimeout`.
pub(super) fn read_by<R: Read + TcpTimeout>(
    r: &mut R,
    buf: &mut [u8],
    deadline: Instant,
    what: &str,
) -> Result<usize> {
    loop {
        let left = deadline_left(deadline, what)?;
        r.set_timeout(left.min(Duration::from_secs(1)))
            .map_err(io_err("SO_RCVTIMEO"))?;
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(io_err(format!("TCP read ({what})"))(e)),
        }
    }
}

pub(super) trait TcpTimeout {
    fn set_timeout(&self, d: Duration) -> io::Result<()>;
}

impl TcpTimeout for TcpStream {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

impl TcpTimeout for BufReader<TcpStream> {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.get_ref().set_read_timeout(Some(d))
    }
}

pub(super) fn read_line_by(s: &mut TcpStream, deadline: Instant, what: &str) -> Result<String> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if read_by(s, &mut b, deadline, what)? == 0 || b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 200 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

pub(super) fn parse_sock(s: &str) -> Result<SocketAddrV4> {
    s.trim()
        .parse()
        .map_err(|_| TestbedError::Protocol(format!("not an address: {s:?}")))
}

pub(super) fn parse_upload_reply(line: &str) -> Result<(SocketAddrV4, u64, u64)> {
    let bad = || TestbedError::Protocol(format!("bad upload reply {line:?}"));
    let mut w = line.split_whitespace();
    let saw = parse_sock(w.next().ok_or_else(bad)?)?;
    let n = w.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let h = w
        .next()
        .and_then(|x| u64::from_str_radix(x, 16).ok())
        .ok_or_else(bad)?;
    Ok((saw, n, h))
}
