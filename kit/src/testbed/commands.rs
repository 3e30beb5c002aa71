//! Commands.

use super::*;

/// Runs `argv` with a time limit; the child is killed when it is exceeded.
/// The exit status is not checked (see [`check_output`]).
pub fn run_command(argv: &[&str], timeout: Duration) -> Result<Output> {
    let cmd = argv.join(" ");
    let (prog, args) = argv.split_first().ok_or_else(|| TestbedError::Spawn {
        cmd: cmd.clone(),
        source: io::Error::new(ErrorKind::InvalidInput, "empty command"),
    })?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TestbedError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    for (is_out, pipe) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            let _ = tx.send((is_out, v));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestbedError::CommandTimeout { cmd, timeout });
            }
            Ok(None) => {
                thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err(format!("waiting for `{cmd}`"))(e)),
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        // A grandchild holding the pipes open must not block us forever.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match rx.recv_timeout(left) {
            Ok((true, v)) => stdout = v,
            Ok((false, v)) => stderr = v,
            Err(_) => return Err(TestbedError::CommandTimeout { cmd, timeout }),
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Turns a non-zero exit into [`TestbedError::Command`]; else gives stdout.
pub fn check_output(cmd: &str) -> impl FnOnce(Output) -> Result<String> + '_ {
    move |out| {
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TestbedError::Command {
                cmd: cmd.to_owned(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
            })
        }
    }
}

#[derive(Default)]
pub(super) struct LogState {
    lines: Vec<String>,
    open: u8,
}

/// A background process with its output collected; stopped on drop.
pub struct Background {
    child: Option<Child>,
    cmd: String,
    log: Arc<(Mutex<LogState>, Condvar)>,
}

impl Background {
    pub(crate) fn start(argv: &[&str]) -> Result<Background> {
        let cmd = argv.join(" ");
        let (prog, args) = argv.split_first().ok_or_else(|| TestbedError::Spawn {
            cmd: cmd.clone(),
            source: io::Error::new(ErrorKind::InvalidInput, "empty command"),
        })?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let log = Arc::new((
            Mutex::new(LogState {
                lines: Vec::new(),
                open: 2,
            }),
            Condvar::new(),
        ));
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                if let Some(p) = pipe {
                    for line in BufReader::new(p).lines() {
                        let Ok(line) = line else { break };
                        let (m, cv) = &*log;
                        if let Ok(mut st) = m.lock() {
                            st.lines.push(line);
                        }
                        cv.notify_all();
                    }
                }
                let (m, cv) = &*log;
                if let Ok(mut st) = m.lock() {
                    st.open = st.open.saturating_sub(1);
                }
                cv.notify_all();
            });
        }
        Ok(Background {
            child: Some(child),
            cmd,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        let (m, _) = &*self.log;
        match m.lock() {
            Ok(st) => st.lines.join("\n"),
            Err(_) => String::new(),
        }
    }

    /// Waits until a line satisfies `pred` and returns it. Fails when the
    /// process closes its output first or `timeout` passes.
    pub fn wait_for_line(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut st = m
            .lock()
            .map_err(|_| TestbedError::Protocol("log lock poisoned".into()))?;
        loop {
            if let Some(l) = st.lines.iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            let now = Instant::now();
            if st.open == 0 || now >= deadline {
                let what = if st.open == 0 {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| wait_timeout(c, Duration::from_secs(2)).ok().flatten())
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "still running".into());
                    format!(
                        "`{}` ended its output ({status}) before the expected line",
                        self.cmd
                    )
                } else {
                    format!("`{}` printed no expected line within {timeout:?}", self.cmd)
                };
                return Err(TestbedError::Process {
                    what,
                    log: st.lines.join("\n"),
                });
            }
            st = cv
                .wait_timeout(st, deadline - now)
                .map_err(|_| TestbedError::Protocol("log lock poisoned".into()))?
                .0;
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit (then SIGKILL and
    /// an error).
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(TestbedError::Protocol(format!(
                "`{}` was already stopped",
                self.cmd
            )));
        };
        let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        match wait_timeout(&mut child, timeout) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(TestbedError::Process {
                    what: format!("`{}` did not exit within {timeout:?} of SIGTERM", self.cmd),
                    log: self.log(),
                })
            }
            Err(e) => Err(io_err(format!("waiting for `{}`", self.cmd))(e)),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if !matches!(
                wait_timeout(&mut child, Duration::from_secs(5)),
                Ok(Some(_))
            ) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub(super) fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// True for the daemon's readiness line, `[cgnat:] attached...` (for
/// instance `cgnat: attached; pool 24 addresses ...`), printed once every XDP
/// program is attached. Per-interface lines such as `cgnat: xdp_internal
/// attached to int0` do not count.
pub fn is_attached_line(line: &str) -> bool {
    let l = line.trim_start();
    let l = l.strip_prefix("cgnat:").unwrap_or(l).trim_start();
    l.starts_with("attached")
}

/// The running cgnat daemon (in the router namespace). Stopped on drop.
pub struct Cgnat {
    pub(super) proc: Background,
    pub(super) attached: String,
    pub(super) bin: PathBuf,
    pub(super) config: PathBuf,
    pub(super) ns: String,
}

impl Cgnat {
    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The line in which the daemon reported that it had attached.
    pub fn attached_line(&self) -> &str {
        &self.attached
    }

    /// The process (to wait for more log lines, for instance).
    pub fn process(&mut self) -> &mut Background {
        &mut self.proc
    }

    /// Raw output of `cgnat stats --config FILE` (run in the router ns).
    pub fn stats_text(&self) -> Result<String> {
        let bin = self.bin.display().to_string();
        let cfg = self.config.display().to_string();
        let argv = [
            "ip", "netns", "exec", &self.ns, &bin, "stats", "--config", &cfg,
        ];
        let out = run_command(&argv, CMD_TIMEOUT)?;
        check_output(&argv.join(" "))(out)
    }

    /// `cgnat stats` parsed: name → (packets, bytes).
    pub fn stats(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        Ok(parse_stats(&self.stats_text()?))
    }

    /// SIGTERM, and the exit status (within 10 s).
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.proc.stop(Duration::from_secs(10))
    }
}
