//! Sockets in a host's namespace: raw, UDP, TCP (connect, listen, bulk
//! transfers).

use super::*;

impl Testbed {
    /// A raw socket (`family`: Inet for raw IP or ICMP, Packet for
    /// link-layer capture) in `host`'s namespace.
    pub fn raw_socket(
        &self,
        host: Host,
        family: AddressFamily,
        proto: SockProtocol,
    ) -> Result<OwnedFd> {
        self.in_ns(host, move || {
            socket::socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto)
        })?
        .map_err(sys_err(format!("raw {family:?} socket in {host}")))
    }

    /// A TCP listener on `local` in `host`'s namespace, with SO_REUSEADDR
    /// (so that the host may first connect out from the same port, making
    /// its NAT mapping known).
    pub fn tcp_listen(&self, host: Host, local: SocketAddrV4) -> Result<TcpListener> {
        let fd = self
            .in_ns(host, move || -> nix::Result<OwnedFd> {
                let fd = socket::socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )?;
                socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
                socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
                socket::listen(&fd, socket::Backlog::new(16)?)?;
                Ok(fd)
            })?
            .map_err(sys_err(format!("listen on {local} in {host}")))?;
        Ok(TcpListener::from(fd))
    }

    /// A UDP socket bound to `local` (port 0: any) in `host`'s namespace.
    pub fn udp_socket(&self, host: Host, local: SocketAddrV4) -> Result<UdpSocket> {
        self.in_ns(host, move || UdpSocket::bind(local))?
            .map_err(io_err(format!("binding UDP {local} in {host}")))
    }

    /// A TCP connection from `host` to `dst`. With `local`, the socket is
    /// bound to it first with SO_REUSEADDR, so that several connections can
    /// share one local port. The connect is bounded by `timeout` (the
    /// kernel retransmits the SYN if the NAT dropped the first one).
    pub fn tcp_connect(
        &self,
        host: Host,
        local: Option<SocketAddrV4>,
        dst: SocketAddrV4,
        timeout: Duration,
    ) -> Result<TcpStream> {
        let what = format!("TCP connect {host} {local:?} -> {dst}");
        let fd = self.in_ns(host, move || -> Result<OwnedFd> {
            let fd = socket::socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(sys_err("socket(AF_INET, SOCK_STREAM)"))?;
            if let Some(local) = local {
                socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
                    .map_err(sys_err("SO_REUSEADDR"))?;
                socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))
                    .map_err(sys_err(format!("bind {local}")))?;
            }
            // A blocking connect honours SO_SNDTIMEO.
            socket::setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))
                .map_err(sys_err("SO_SNDTIMEO"))?;
            match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(dst)) {
                Ok(()) => Ok(fd),
                Err(nix::errno::Errno::EINPROGRESS) | Err(nix::errno::Errno::EAGAIN) => {
                    Err(TestbedError::Timeout {
                        what: format!("connect to {dst}"),
                        timeout,
                    })
                }
                Err(e) => Err(TestbedError::Sys {
                    context: format!("connect to {dst}"),
                    source: e,
                }),
            }
        })??;
        let stream = TcpStream::from(fd);
        stream
            .set_write_timeout(None)
            .map_err(io_err(what.clone()))?;
        stream.set_nodelay(true).map_err(io_err(what))?;
        Ok(stream)
    }

    /// Sends `bytes` bytes of the pattern stream `seed` from `host` to the
    /// [`TcpServer`] at `dst`, and returns what the server counted.
    pub fn tcp_upload(
        &self,
        host: Host,
        local: Option<SocketAddrV4>,
        dst: SocketAddrV4,
        bytes: u64,
        seed: u64,
        timeout: Duration,
    ) -> Result<TcpUpload> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut s = self.tcp_connect(host, local, dst, timeout)?;
        let local = sock_v4(s.local_addr().map_err(io_err("local_addr"))?)?;
        write_all_by(&mut s, format!("UP {seed}\n").as_bytes(), deadline)?;
        let mut pat = Pattern::new(seed);
        let mut hash = Fnv64::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pat.fill(&mut buf[..n]);
            hash.update(&buf[..n]);
            write_all_by(&mut s, &buf[..n], deadline)?;
            left -= n as u64;
        }
        s.shutdown(Shutdown::Write)
            .map_err(io_err("shutdown(write)"))?;
        let line = read_line_by(&mut s, deadline, "upload reply")?;
        let (saw, n, h) = parse_upload_reply(&line)?;
        Ok(TcpUpload {
            local,
            server_saw: saw,
            sent_bytes: bytes,
            sent_hash: hash.finish(),
            server_bytes: n,
            server_hash: h,
            elapsed: start.elapsed(),
        })
    }

    /// Asks the [`TcpServer`] at `dst` for `bytes` bytes of pattern stream
    /// `seed` and hashes what arrives.
    pub fn tcp_download(
        &self,
        host: Host,
        dst: SocketAddrV4,
        bytes: u64,
        seed: u64,
        timeout: Duration,
    ) -> Result<TcpDownload> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut s = self.tcp_connect(host, None, dst, timeout)?;
        let local = sock_v4(s.local_addr().map_err(io_err("local_addr"))?)?;
        write_all_by(
            &mut s,
            format!("DOWN {bytes} {seed}\n").as_bytes(),
            deadline,
        )?;
        let line = read_line_by(&mut s, deadline, "download header")?;
        let saw = parse_sock(&line)?;
        let mut hash = Fnv64::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = read_by(&mut s, &mut buf, deadline, "download data")?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            got += n as u64;
        }
        Ok(TcpDownload {
            local,
            server_saw: saw,
            expected_bytes: bytes,
            expected_hash: pattern_hash(seed, bytes),
            got_bytes: got,
            got_hash: hash.finish(),
            elapsed: start.elapsed(),
        })
    }
}
