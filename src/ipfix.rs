//! The NAT log as IPFIX (RFC 7011) NAT events (RFC 8158), sent over UDP to
//! one collector.
//!
//! Each [`Record`] of the NAT log becomes one Data Record of a fixed
//! Template (the Information Element ids and natEvent values are those of
//! the IANA IPFIX registry):
//!
//! | record | natEvent (IE 230) | template |
//! |---|---|---|
//! | `MappingCreate` | 8 NAT44 BIB create | 256 (RFC 8158 section 4.4, NAT44 BIB) |
//! | `MappingRelease` | 9 NAT44 BIB delete | 256 |
//! | `BlockAlloc` | 16 Port block allocation | 257 (section 4.13, port block) |
//! | `BlockRelease` | 17 Port block de-allocation | 257 |
//! | `Refused`, no free port | 12 NAT ports exhausted | 258 (section 4.7) |
//! | `Refused`, subscriber limit | 13 Quota exceeded, natQuotaExceededEvent 3 (maximum entries per user) | 259 (section 4.8.3) |
//! | `Refused`, table full | 13 Quota exceeded, natQuotaExceededEvent 1 (maximum session entries) | 260 (section 4.8.1) |
//! | `Refused`, subscriber table full | 13 Quota exceeded, natQuotaExceededEvent 4 (maximum subscribers) | 261 (section 4.8.4) |
//! | `Refused`, no pool address | 3 NAT addresses exhausted | 262 (section 4.6) |
//! | `EventsLost` | none: an Options Data Record, notSentFlowTotalCount (IE 166) | 263 (RFC 7011 section 4.3) |
//!
//! The refusal events of the data path carry the subscriber's endpoint
//! and protocol but not the external address, so template 258 reports
//! sourceIPv4Address, protocolIdentifier and sourceTransportPort where
//! RFC 8158 lists postNATSourceIPv4Address. A full binding or session
//! table is reported as maximum session entries (the data path does not
//! say which of the two was full). cgnat has one pool: natPoolId 1.
//!
//! The exporter never blocks: records wait in a bounded queue, the UDP
//! socket is non-blocking, and a record that finds the queue full or whose
//! message cannot be sent is dropped and counted (`failed`, and
//! notSentFlowTotalCount). Templates go first, again every 60 s (RFC 7011
//! section 8.4) and after a failed send (the collector may have
//! restarted); a new exporter (start, reload) sends them first too.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, PoolMode};
use crate::log::Record;

/// The IPFIX port (RFC 7011 section 10.3; IANA service name "ipfix").
pub const DEFAULT_PORT: u16 = 4739;

/// Version Number of the Message Header (RFC 7011 section 3.1).
const VERSION: u16 = 10;
/// Set IDs (RFC 7011 section 3.3.2).
const TEMPLATE_SET: u16 = 2;
const OPTIONS_TEMPLATE_SET: u16 = 3;
const MESSAGE_HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;
/// Messages stay below a 1500-byte path MTU less IP and UDP headers
/// (RFC 7011 section 10.3.3).
const MAX_MESSAGE: usize = 1400;
/// Templates are resent this often over UDP (RFC 7011 section 8.4).
pub const TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
/// Records waiting for the socket; more are dropped and counted.
pub const QUEUE_MAX: usize = 4096;

/// Information Element ids (IANA IPFIX registry; all in the IETF space,
/// enterprise bit clear).
mod ie {
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const OBSERVATION_DOMAIN_ID: u16 = 149;
    pub const NOT_SENT_FLOW_TOTAL_COUNT: u16 = 166;
    pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
    pub const POST_NAPT_SOURCE_TRANSPORT_PORT: u16 = 227;
    pub const NAT_EVENT: u16 = 230;
    pub const NAT_POOL_ID: u16 = 283;
    pub const OBSERVATION_TIME_MILLISECONDS: u16 = 323;
    pub const PORT_RANGE_START: u16 = 361;
    pub const PORT_RANGE_END: u16 = 362;
    pub const PORT_RANGE_STEP_SIZE: u16 = 363;
    pub const PORT_RANGE_NUM_PORTS: u16 = 364;
    pub const NAT_QUOTA_EXCEEDED_EVENT: u16 = 466;
    pub const MAX_SESSION_ENTRIES: u16 = 471;
    pub const MAX_ENTRIES_PER_USER: u16 = 473;
    pub const MAX_SUBSCRIBERS: u16 = 474;
}

/// natEvent values (IANA "NAT Event Type", RFC 8158 section 4.1).
pub mod nat_event {
    pub const ADDRESSES_EXHAUSTED: u8 = 3;
    pub const NAT44_BIB_CREATE: u8 = 8;
    pub const NAT44_BIB_DELETE: u8 = 9;
    pub const PORTS_EXHAUSTED: u8 = 12;
    pub const QUOTA_EXCEEDED: u8 = 13;
    pub const PORT_BLOCK_ALLOCATION: u8 = 16;
    pub const PORT_BLOCK_DEALLOCATION: u8 = 17;
}

/// natQuotaExceededEvent values (IANA "NAT Quota Exceeded Event Type",
/// RFC 8158 section 4.8).
pub mod quota_event {
    pub const MAX_SESSION_ENTRIES: u32 = 1;
    pub const MAX_ENTRIES_PER_USER: u32 = 3;
    pub const MAX_SUBSCRIBERS: u32 = 4;
}

/// Template IDs (256 and up, RFC 7011 section 3.4.1).
pub mod template_id {
    pub const BIB: u16 = 256;
    pub const PORT_BLOCK: u16 = 257;
    pub const PORTS_EXHAUSTED: u16 = 258;
    pub const QUOTA_PER_USER: u16 = 259;
    pub const QUOTA_SESSIONS: u16 = 260;
    pub const QUOTA_SUBSCRIBERS: u16 = 261;
    pub const ADDRESSES_EXHAUSTED: u16 = 262;
    pub const NOT_SENT: u16 = 263;
}

/// A Template Record: the first `scope` fields are scope fields (an
/// Options Template, RFC 7011 section 3.4.2.2) when `scope` > 0.
struct Template {
    id: u16,
    scope: u16,
    /// (Information Element id, length in octets).
    fields: &'static [(u16, u16)],
}

const TIME: (u16, u16) = (ie::OBSERVATION_TIME_MILLISECONDS, 8);
const EVENT: (u16, u16) = (ie::NAT_EVENT, 1);

const TEMPLATES: [Template; 8] = [
    Template {
        id: template_id::BIB,
        scope: 0,
        fields: &[
            TIME,
            EVENT,
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::PROTOCOL_IDENTIFIER, 1),
            (ie::SOURCE_TRANSPORT_PORT, 2),
            (ie::POST_NAPT_SOURCE_TRANSPORT_PORT, 2),
        ],
    },
    Template {
        id: template_id::PORT_BLOCK,
        scope: 0,
        fields: &[
            TIME,
            EVENT,
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::PORT_RANGE_START, 2),
            (ie::PORT_RANGE_END, 2),
            (ie::PORT_RANGE_STEP_SIZE, 2),
            (ie::PORT_RANGE_NUM_PORTS, 2),
        ],
    },
    Template {
        id: template_id::PORTS_EXHAUSTED,
        scope: 0,
        fields: &[
            TIME,
            EVENT,
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::PROTOCOL_IDENTIFIER, 1),
            (ie::SOURCE_TRANSPORT_PORT, 2),
        ],
    },
    Template {
        id: template_id::QUOTA_PER_USER,
        scope: 0,
        fields: &[
            TIME,
            EVENT,
            (ie::NAT_QUOTA_EXCEEDED_EVENT, 4),
            (ie::MAX_ENTRIES_PER_USER, 4),
            (ie::SOURCE_IPV4_ADDRESS, 4),
        ],
    },
    Template {
        id: template_id::QUOTA_SESSIONS,
        scope: 0,
        fields: &[
            TIME,
            EVENT,
            (ie::NAT_QUOTA_EXCEEDED_EVENT, 4),
            (ie::MAX_SESSION_ENTRIES, 4),
        ],
    },
    Template {
        id: template_id::QUOTA_SUBSCRIBERS,
        scope: 0,
        fields: &[
            TIME,
            EVENT,
            (ie::NAT_QUOTA_EXCEEDED_EVENT, 4),
            (ie::MAX_SUBSCRIBERS, 4),
        ],
    },
    Template {
        id: template_id::ADDRESSES_EXHAUSTED,
        scope: 0,
        fields: &[TIME, EVENT, (ie::NAT_POOL_ID, 4)],
    },
    Template {
        id: template_id::NOT_SENT,
        scope: 1,
        fields: &[
            (ie::OBSERVATION_DOMAIN_ID, 4),
            (ie::NOT_SENT_FLOW_TOTAL_COUNT, 8),
            TIME,
        ],
    },
];

/// The configured limits reported with Quota Exceeded events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// maxEntriesPerUser: ports per subscriber (`limits.ports`, else the
    /// port-block geometry), else `limits.sessions`; 0 when unlimited.
    pub per_user: u32,
    /// maxSessionEntries: the session table's size.
    pub sessions: u32,
    /// maxSubscribers: the subscriber table's size.
    pub subscribers: u32,
}

impl Quota {
    pub fn from_config(cfg: &Config) -> Quota {
        let ports = if cfg.limits.ports != 0 {
            cfg.limits.ports
        } else if cfg.mode == PoolMode::PortBlock {
            cfg.blocks.block_size.saturating_mul(cfg.blocks.max_blocks)
        } else {
            0
        };
        Quota {
            per_user: if ports != 0 {
                ports
            } else {
                cfg.limits.sessions
            },
            sessions: cfg.max_sessions,
            subscribers: cfg.max_subscribers,
        }
    }
}

/// What a Data Record needs beyond its log record.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub domain: u32,
    pub quota: Quota,
    /// notSentFlowTotalCount so far (events lost and records dropped).
    pub not_sent: u64,
}

/// The Template Set and the Options Template Set of every template
/// (RFC 7011 sections 3.3.2, 3.4.1, 3.4.2.2).
pub fn template_sets() -> Vec<u8> {
    let mut out = Vec::new();
    for (set_id, options) in [(TEMPLATE_SET, false), (OPTIONS_TEMPLATE_SET, true)] {
        let start = out.len();
        put16(&mut out, set_id);
        put16(&mut out, 0);
        for t in TEMPLATES.iter().filter(|t| (t.scope > 0) == options) {
            put16(&mut out, t.id);
            put16(&mut out, t.fields.len() as u16);
            if options {
                put16(&mut out, t.scope);
            }
            for (id, len) in t.fields {
                put16(&mut out, *id);
                put16(&mut out, *len);
            }
        }
        set_len(&mut out, start);
    }
    out
}

/// The Data Record of `rec` observed at `ms` (milliseconds since the
/// epoch) and its template ID, fields in template order (RFC 7011
/// section 3.4.3; integers in network byte order, section 6.1).
pub fn data_record(rec: &Record, ms: u64, ctx: &Context) -> (u16, Vec<u8>) {
    let mut b = Vec::with_capacity(32);
    let head = |b: &mut Vec<u8>, event: u8| {
        b.extend_from_slice(&ms.to_be_bytes());
        b.push(event);
    };
    let id = match rec {
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
            let ev = if matches!(rec, Record::MappingCreate { .. }) {
                nat_event::NAT44_BIB_CREATE
            } else {
                nat_event::NAT44_BIB_DELETE
            };
            head(&mut b, ev);
            put_addr(&mut b, subscriber.0);
            put_addr(&mut b, external.0);
            b.push(*proto);
            put16(&mut b, subscriber.1);
            put16(&mut b, external.1);
            template_id::BIB
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
            let ev = if matches!(rec, Record::BlockAlloc { .. }) {
                nat_event::PORT_BLOCK_ALLOCATION
            } else {
                nat_event::PORT_BLOCK_DEALLOCATION
            };
            head(&mut b, ev);
            put_addr(&mut b, *subscriber);
            put_addr(&mut b, *external);
            put16(&mut b, ports.0);
            put16(&mut b, ports.1);
            put16(&mut b, 1);
            put16(&mut b, ports.1.wrapping_sub(ports.0).wrapping_add(1));
            template_id::PORT_BLOCK
        }
        Record::Refused {
            proto,
            subscriber,
            reason,
        } => match *reason {
            "drop_subscriber_limit" => {
                head(&mut b, nat_event::QUOTA_EXCEEDED);
                put32(&mut b, quota_event::MAX_ENTRIES_PER_USER);
                put32(&mut b, ctx.quota.per_user);
                put_addr(&mut b, subscriber.0);
                template_id::QUOTA_PER_USER
            }
            "drop_table_full" => {
                head(&mut b, nat_event::QUOTA_EXCEEDED);
                put32(&mut b, quota_event::MAX_SESSION_ENTRIES);
                put32(&mut b, ctx.quota.sessions);
                template_id::QUOTA_SESSIONS
            }
            "drop_subscribers_full" => {
                head(&mut b, nat_event::QUOTA_EXCEEDED);
                put32(&mut b, quota_event::MAX_SUBSCRIBERS);
                put32(&mut b, ctx.quota.subscribers);
                template_id::QUOTA_SUBSCRIBERS
            }
            "drop_no_pool" => {
                head(&mut b, nat_event::ADDRESSES_EXHAUSTED);
                put32(&mut b, 1);
                template_id::ADDRESSES_EXHAUSTED
            }
            // drop_ports_exhausted, and any other reason a mapping
            // could not be made for.
            _ => {
                head(&mut b, nat_event::PORTS_EXHAUSTED);
                put_addr(&mut b, subscriber.0);
                b.push(*proto);
                put16(&mut b, subscriber.1);
                template_id::PORTS_EXHAUSTED
            }
        },
        Record::EventsLost { .. } => {
            put32(&mut b, ctx.domain);
            b.extend_from_slice(&ctx.not_sent.to_be_bytes());
            b.extend_from_slice(&ms.to_be_bytes());
            template_id::NOT_SENT
        }
    };
    (id, b)
}

/// A Message Header (RFC 7011 section 3.1) followed by `sets`.
pub fn message(export_time: u32, sequence: u32, domain: u32, sets: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MESSAGE_HEADER_LEN + sets.len());
    put16(&mut m, VERSION);
    put16(&mut m, (MESSAGE_HEADER_LEN + sets.len()) as u16);
    put32(&mut m, export_time);
    put32(&mut m, sequence);
    put32(&mut m, domain);
    m.extend_from_slice(sets);
    m
}

/// Sends NAT log records to one collector. See the module documentation.
pub struct Exporter {
    sock: UdpSocket,
    ctx: Context,
    queue: VecDeque<(u16, Vec<u8>)>,
    /// Data Records sent so far, modulo 2^32: the Sequence Number of the
    /// next message (RFC 7011 section 3.1).
    sequence: u32,
    /// When the templates were last sent; None: due now.
    templates_sent: Option<Instant>,
    /// Data Records in the last datagram sent.
    last_records: u64,
    /// Data Records sent, and dropped (queue full or send failed).
    pub written: u64,
    pub failed: u64,
}

impl Exporter {
    /// A non-blocking UDP socket connected to `collector`.
    pub fn open(collector: SocketAddr, domain: u32, quota: Quota) -> io::Result<Exporter> {
        let local: SocketAddr = if collector.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)?;
        sock.connect(collector)?;
        sock.set_nonblocking(true)?;
        Ok(Exporter {
            sock,
            ctx: Context {
                domain,
                quota,
                not_sent: 0,
            },
            queue: VecDeque::new(),
            sequence: 0,
            templates_sent: None,
            last_records: 0,
            written: 0,
            failed: 0,
        })
    }

    pub fn set_quota(&mut self, quota: Quota) {
        self.ctx.quota = quota;
    }

    /// Sends the templates again before the next Data Record.
    pub fn resend_templates(&mut self) {
        self.templates_sent = None;
    }

    /// Queues `rec` (dropped and counted when the queue is full).
    pub fn push(&mut self, rec: &Record, ts: SystemTime) {
        if let Record::EventsLost { count } = rec {
            self.ctx.not_sent = self.ctx.not_sent.saturating_add(*count);
        }
        if self.queue.len() >= QUEUE_MAX {
            self.drop_records(1);
            return;
        }
        let ms = ts
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.queue.push_back(data_record(rec, ms, &self.ctx));
    }

    fn drop_records(&mut self, n: u64) {
        self.failed += n;
        self.ctx.not_sent = self.ctx.not_sent.saturating_add(n);
    }

    /// Sends the templates when due, then the queued records, as long as
    /// the socket takes them; never waits.
    pub fn flush(&mut self, now: Instant, wall: SystemTime) {
        let export_time = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let due = self
            .templates_sent
            .is_none_or(|t| now.duration_since(t) >= TEMPLATE_REFRESH);
        if due {
            let m = message(
                export_time,
                self.sequence,
                self.ctx.domain,
                &template_sets(),
            );
            match self.send(&m, 0) {
                Ok(()) => self.templates_sent = Some(now),
                // Data waits behind its templates (bounded by QUEUE_MAX).
                Err(_) => return,
            }
        }
        while !self.queue.is_empty() {
            let (sets, n) = self.data_sets();
            let m = message(export_time, self.sequence, self.ctx.domain, &sets);
            match self.send(&m, n as u64) {
                Ok(()) => {
                    self.queue.drain(..n);
                    self.sequence = self.sequence.wrapping_add(n as u32);
                    self.written += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.queue.drain(..n);
                    self.drop_records(n as u64);
                    // The collector may come back without our templates.
                    self.templates_sent = None;
                    return;
                }
            }
        }
    }

    /// Data Sets of as many queued records as fit in one message, one Set
    /// per run of records of the same template; and how many records.
    fn data_sets(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut set: Option<(u16, usize)> = None;
        let mut n = 0;
        for (id, rec) in &self.queue {
            let new_set = set.is_none_or(|(s, _)| s != *id);
            let need = rec.len() + if new_set { SET_HEADER_LEN } else { 0 };
            if n > 0 && MESSAGE_HEADER_LEN + out.len() + need > MAX_MESSAGE {
                break;
            }
            if new_set {
                if let Some((_, start)) = set {
                    set_len(&mut out, start);
                }
                set = Some((*id, out.len()));
                put16(&mut out, *id);
                put16(&mut out, 0);
            }
            out.extend_from_slice(rec);
            n += 1;
        }
        if let Some((_, start)) = set {
            set_len(&mut out, start);
        }
        (out, n)
    }

    /// One datagram of `records` Data Records. A refusal reported by the
    /// socket belongs to an earlier datagram (an ICMP port unreachable came
    /// back): the records of the last one sent count as dropped instead of
    /// written, the templates go again (the collector may come back
    /// without them), and this datagram, which was not sent, is tried once
    /// more.
    fn send(&mut self, m: &[u8], records: u64) -> io::Result<()> {
        let r = match self.sock.send(m) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                let lost = std::mem::take(&mut self.last_records);
                self.written = self.written.saturating_sub(lost);
                self.drop_records(lost);
                self.templates_sent = None;
                self.sock.send(m)
            }
            r => r,
        };
        if r.is_ok() {
            self.last_records = records;
        }
        r.map(|_| ())
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_addr(b: &mut Vec<u8>, a: Ipv4Addr) {
    b.extend_from_slice(&a.octets());
}

/// Writes the length of the Set that starts at `start`.
fn set_len(b: &mut [u8], start: usize) {
    let len = (b.len() - start) as u16;
    b[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests;
