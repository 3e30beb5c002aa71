//! The NAT log (RFC 6888 section 4): one record per mapping (dynamic mode)
//! or per port block (port-block mode), refusals, and lost events, as JSON
//! lines in a file, RFC 5424 syslog messages or IPFIX NAT events
//! (RFC 8158, [`crate::ipfix`]). Destinations are never
//! logged (RFC 6888 REQ-12). Deterministic mode logs no mappings: they
//! follow from the config (RFC 7422).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bpf::abi::proto_name;
use crate::config::LogOutput;
use crate::ipfix::{Exporter, Quota};

/// One NAT log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    MappingCreate {
        proto: u8,
        subscriber: (Ipv4Addr, u16),
        external: (Ipv4Addr, u16),
    },
    MappingRelease {
        proto: u8,
        subscriber: (Ipv4Addr, u16),
        external: (Ipv4Addr, u16),
    },
    BlockAlloc {
        subscriber: Ipv4Addr,
        external: Ipv4Addr,
        ports: (u16, u16),
    },
    BlockRelease {
        subscriber: Ipv4Addr,
        external: Ipv4Addr,
        ports: (u16, u16),
    },
    Refused {
        proto: u8,
        subscriber: (Ipv4Addr, u16),
        reason: &'static str,
    },
    EventsLost {
        count: u64,
    },
}

impl Record {
    fn event(&self) -> &'static str {
        match self {
            Record::MappingCreate { .. } => "mapping-create",
            Record::MappingRelease { .. } => "mapping-release",
            Record::BlockAlloc { .. } => "block-alloc",
            Record::BlockRelease { .. } => "block-release",
            Record::Refused { .. } => "mapping-refused",
            Record::EventsLost { .. } => "events-lost",
        }
    }

    /// (key, value, quoted) fields, in order.
    fn fields(&self) -> Vec<(&'static str, String, bool)> {
        let ep = |f: &mut Vec<_>, k: &'static str, kp: &'static str, e: &(Ipv4Addr, u16)| {
            f.push((k, e.0.to_string(), true));
            f.push((kp, e.1.to_string(), false));
        };
        let mut f = Vec::new();
        match self {
            Record::MappingCreate {
                proto,
                subscriber,
                external,
            }
            | Record::MappingRelease {
                proto,
                subscriber,
                external,
            } => {
                f.push(("proto", proto_name(*proto).to_string(), true));
                ep(&mut f, "subscriber", "subscriber_port", subscriber);
                ep(&mut f, "external", "external_port", external);
            }
            Record::BlockAlloc {
                subscriber,
                external,
                ports,
            }
            | Record::BlockRelease {
                subscriber,
                external,
                ports,
            } => {
                f.push(("subscriber", subscriber.to_string(), true));
                f.push(("external", external.to_string(), true));
                f.push(("port_first", ports.0.to_string(), false));
                f.push(("port_last", ports.1.to_string(), false));
            }
            Record::Refused {
                proto,
                subscriber,
                reason,
            } => {
                f.push(("proto", proto_name(*proto).to_string(), true));
                ep(&mut f, "subscriber", "subscriber_port", subscriber);
                f.push(("reason", reason.to_string(), true));
            }
            Record::EventsLost { count } => f.push(("count", count.to_string(), false)),
        }
        f
    }

    /// A JSON line (no trailing newline).
    pub fn json(&self, ts: SystemTime) -> String {
        let mut s = format!(
            "{{\"ts\":\"{}\",\"event\":\"{}\"",
            rfc3339(ts),
            self.event()
        );
        for (k, v, quoted) in self.fields() {
            if quoted {
                s.push_str(&format!(",\"{k}\":\"{v}\""));
            } else {
                s.push_str(&format!(",\"{k}\":{v}"));
            }
        }
        s.push('}');
        s
    }

    /// An RFC 5424 message, facility local0, severity info (warning for
    /// refusals and losses).
    pub fn syslog(&self, ts: SystemTime, host: &str, pid: u32) -> String {
        let severity = match self {
            Record::Refused { .. } | Record::EventsLost { .. } => 4,
            _ => 6,
        };
        let pri = 16 * 8 + severity;
        let mut sd = String::from("[cgnat@32473");
        for (k, v, _) in self.fields() {
            sd.push_str(&format!(" {k}=\"{v}\""));
        }
        sd.push(']');
        format!(
            "<{pri}>1 {} {host} cgnat {pid} {} {sd}",
            rfc3339(ts),
            self.event().to_uppercase()
        )
    }
}

/// RFC 3339 UTC with milliseconds, without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

enum Sink {
    Off,
    File { path: PathBuf, file: File },
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket),
    Ipfix(Exporter),
}

/// Where NAT log records go.
pub struct NatLog {
    sink: Sink,
    host: String,
    pid: u32,
    /// Records written, and records lost to write errors.
    pub written: u64,
    pub failed: u64,
}

impl NatLog {
    /// `quota`: the limits IPFIX Quota Exceeded events report.
    pub fn open(out: &LogOutput, quota: Quota) -> Result<NatLog, String> {
        let sink = match out {
            LogOutput::Off => Sink::Off,
            LogOutput::File(path) => Sink::File {
                path: path.clone(),
                file: open_append(path)?,
            },
            LogOutput::SyslogUnix(path) => {
                let s = UnixDatagram::unbound().map_err(|e| format!("syslog socket: {e}"))?;
                Sink::Unix(s, path.clone())
            }
            LogOutput::SyslogUdp(addr) => {
                let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("syslog socket: {e}"))?;
                s.connect(addr)
                    .map_err(|e| format!("syslog server {addr}: {e}"))?;
                Sink::Udp(s)
            }
            LogOutput::Ipfix {
                collector,
                observation_domain,
            } => Sink::Ipfix(
                Exporter::open(*collector, *observation_domain, quota)
                    .map_err(|e| format!("IPFIX collector {collector}: {e}"))?,
            ),
        };
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "-".into());
        Ok(NatLog {
            sink,
            host,
            pid: std::process::id(),
            written: 0,
            failed: 0,
        })
    }

    /// Reopens the file (after rotation: SIGUSR1 or SIGHUP); an IPFIX
    /// exporter sends its templates again with its next message.
    pub fn reopen(&mut self) -> Result<(), String> {
        match &mut self.sink {
            Sink::File { path, file } => *file = open_append(path)?,
            Sink::Ipfix(e) => e.resend_templates(),
            _ => {}
        }
        Ok(())
    }

    /// The limits IPFIX Quota Exceeded events report (after a reload).
    pub fn set_quota(&mut self, quota: Quota) {
        if let Sink::Ipfix(e) = &mut self.sink {
            e.set_quota(quota);
        }
    }

    /// Sends what waits to be sent (IPFIX: templates when due, queued
    /// records) without blocking; nothing to do for the other outputs.
    pub fn flush(&mut self) {
        if let Sink::Ipfix(e) = &mut self.sink {
            e.flush(Instant::now(), SystemTime::now());
            self.written = e.written;
            self.failed = e.failed;
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    pub fn write(&mut self, rec: &Record, ts: SystemTime) {
        let ok = match &mut self.sink {
            Sink::Off => return,
            Sink::File { file, .. } => writeln!(file, "{}", rec.json(ts)).is_ok(),
            Sink::Unix(s, path) => s
                .send_to(rec.syslog(ts, &self.host, self.pid).as_bytes(), &*path)
                .is_ok(),
            Sink::Udp(s) => s
                .send(rec.syslog(ts, &self.host, self.pid).as_bytes())
                .is_ok(),
            // Queued: counted as written or failed when flushed.
            Sink::Ipfix(e) => {
                e.push(rec, ts);
                self.failed = e.failed;
                return;
            }
        };
        if ok {
            self.written += 1;
        } else {
            self.failed += 1;
        }
    }
}

fn open_append(path: &PathBuf) -> Result<File, String> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Wall-clock time of a CLOCK_MONOTONIC timestamp from the data path.
pub fn wall_time(mono_ns: u64, now_mono_ns: u64) -> SystemTime {
    SystemTime::now() - Duration::from_nanos(now_mono_ns.saturating_sub(mono_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_996_321_042) // 2026-11-29T23:52:01.042Z
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(t()), "2026-11-29T23:52:01.042Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn json_record_has_the_rfc6888_fields_and_no_destination() {
        let r = Record::MappingCreate {
            proto: crate::bpf::abi::IPPROTO_UDP,
            subscriber: ("100.64.0.11".parse().unwrap(), 5000),
            external: ("203.0.113.5".parse().unwrap(), 40001),
        };
        assert_eq!(
            r.json(t()),
            "{\"ts\":\"2026-11-29T23:52:01.042Z\",\"event\":\"mapping-create\",\"proto\":\"udp\",\
             \"subscriber\":\"100.64.0.11\",\"subscriber_port\":5000,\"external\":\"203.0.113.5\",\
             \"external_port\":40001}"
        );
    }

    #[test]
    fn syslog_record_is_rfc5424() {
        let r = Record::BlockAlloc {
            subscriber: "100.64.0.11".parse().unwrap(),
            external: "203.0.113.5".parse().unwrap(),
            ports: (1024, 1279),
        };
        assert_eq!(
            r.syslog(t(), "cgn1", 42),
            "<134>1 2026-11-29T23:52:01.042Z cgn1 cgnat 42 BLOCK-ALLOC [cgnat@32473 \
             subscriber=\"100.64.0.11\" external=\"203.0.113.5\" port_first=\"1024\" \
             port_last=\"1279\"]"
        );
        let r = Record::EventsLost { count: 3 };
        assert!(r.syslog(t(), "h", 1).starts_with("<132>1 "));
    }
}
