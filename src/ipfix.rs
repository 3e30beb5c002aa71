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
            "drop_sub_limit" => {
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
            "drop_subs_full" => {
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
            match self.send(&m) {
                Ok(()) => self.templates_sent = Some(now),
                // Data waits behind its templates (bounded by QUEUE_MAX).
                Err(_) => return,
            }
        }
        while !self.queue.is_empty() {
            let (sets, n) = self.data_sets();
            let m = message(export_time, self.sequence, self.ctx.domain, &sets);
            match self.send(&m) {
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

    /// One datagram. A refusal reported by the socket belongs to an
    /// earlier datagram (an ICMP port unreachable came back): this one was
    /// not sent, so it is tried once more.
    fn send(&self, m: &[u8]) -> io::Result<()> {
        match self.sock.send(m) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => self.sock.send(m).map(|_| ()),
            r => r.map(|_| ()),
        }
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
mod tests {
    use super::*;

    const MS: u64 = 1_795_996_321_042; // 2026-11-29T23:52:01.042Z

    fn ctx() -> Context {
        Context {
            domain: 1,
            quota: Quota {
                per_user: 1024,
                sessions: 65536,
                subscribers: 4096,
            },
            not_sent: 7,
        }
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The Template Set and Options Template Set, written out field by
    /// field from RFC 7011 sections 3.3.2, 3.4.1, 3.4.2.2 and the IANA
    /// Information Element ids.
    #[test]
    fn template_sets_byte_for_byte() {
        #[rustfmt::skip]
        let want: &[u8] = &[
            // Template Set: Set ID 2, length 4 + 32+36+24+24+20+20+16 = 176
            0x00, 0x02, 0x00, 0xb0,
            // 256: 7 fields
            0x01, 0x00, 0x00, 0x07,
            0x01, 0x43, 0x00, 0x08, // observationTimeMilliseconds (323), 8
            0x00, 0xe6, 0x00, 0x01, // natEvent (230), 1
            0x00, 0x08, 0x00, 0x04, // sourceIPv4Address (8), 4
            0x00, 0xe1, 0x00, 0x04, // postNATSourceIPv4Address (225), 4
            0x00, 0x04, 0x00, 0x01, // protocolIdentifier (4), 1
            0x00, 0x07, 0x00, 0x02, // sourceTransportPort (7), 2
            0x00, 0xe3, 0x00, 0x02, // postNAPTSourceTransportPort (227), 2
            // 257: 8 fields
            0x01, 0x01, 0x00, 0x08,
            0x01, 0x43, 0x00, 0x08,
            0x00, 0xe6, 0x00, 0x01,
            0x00, 0x08, 0x00, 0x04,
            0x00, 0xe1, 0x00, 0x04,
            0x01, 0x69, 0x00, 0x02, // portRangeStart (361), 2
            0x01, 0x6a, 0x00, 0x02, // portRangeEnd (362), 2
            0x01, 0x6b, 0x00, 0x02, // portRangeStepSize (363), 2
            0x01, 0x6c, 0x00, 0x02, // portRangeNumPorts (364), 2
            // 258: 5 fields
            0x01, 0x02, 0x00, 0x05,
            0x01, 0x43, 0x00, 0x08,
            0x00, 0xe6, 0x00, 0x01,
            0x00, 0x08, 0x00, 0x04,
            0x00, 0x04, 0x00, 0x01,
            0x00, 0x07, 0x00, 0x02,
            // 259: 5 fields
            0x01, 0x03, 0x00, 0x05,
            0x01, 0x43, 0x00, 0x08,
            0x00, 0xe6, 0x00, 0x01,
            0x01, 0xd2, 0x00, 0x04, // natQuotaExceededEvent (466), 4
            0x01, 0xd9, 0x00, 0x04, // maxEntriesPerUser (473), 4
            0x00, 0x08, 0x00, 0x04,
            // 260: 4 fields
            0x01, 0x04, 0x00, 0x04,
            0x01, 0x43, 0x00, 0x08,
            0x00, 0xe6, 0x00, 0x01,
            0x01, 0xd2, 0x00, 0x04,
            0x01, 0xd7, 0x00, 0x04, // maxSessionEntries (471), 4
            // 261: 4 fields
            0x01, 0x05, 0x00, 0x04,
            0x01, 0x43, 0x00, 0x08,
            0x00, 0xe6, 0x00, 0x01,
            0x01, 0xd2, 0x00, 0x04,
            0x01, 0xda, 0x00, 0x04, // maxSubscribers (474), 4
            // 262: 3 fields
            0x01, 0x06, 0x00, 0x03,
            0x01, 0x43, 0x00, 0x08,
            0x00, 0xe6, 0x00, 0x01,
            0x01, 0x1b, 0x00, 0x04, // natPoolId (283), 4
            // Options Template Set: Set ID 3, length 4 + 6 + 12 = 22
            0x00, 0x03, 0x00, 0x16,
            // 263: 3 fields, 1 scope field
            0x01, 0x07, 0x00, 0x03, 0x00, 0x01,
            0x00, 0x95, 0x00, 0x04, // observationDomainId (149), 4 (scope)
            0x00, 0xa6, 0x00, 0x08, // notSentFlowTotalCount (166), 8
            0x01, 0x43, 0x00, 0x08,
        ];
        assert_eq!(template_sets(), want);
    }

    #[test]
    fn bib_create_message_byte_for_byte() {
        let rec = Record::MappingCreate {
            proto: 17,
            subscriber: (a("100.64.0.11"), 5000),
            external: (a("203.0.113.5"), 40001),
        };
        let (id, data) = data_record(&rec, MS, &ctx());
        assert_eq!(id, 256);
        let mut set = vec![0x01, 0x00, 0x00, 4 + 22];
        set.extend_from_slice(&data);
        #[rustfmt::skip]
        let want: &[u8] = &[
            // Message Header: version 10, length 16 + 26 = 42,
            // export time 1795996321, sequence 5, domain 1
            0x00, 0x0a, 0x00, 0x2a,
            0x6b, 0x0c, 0xba, 0xa1,
            0x00, 0x00, 0x00, 0x05,
            0x00, 0x00, 0x00, 0x01,
            // Data Set 256, length 26
            0x01, 0x00, 0x00, 0x1a,
            // observationTimeMilliseconds 1795996321042 = 0x1a2_29b9_0512
            0x00, 0x00, 0x01, 0xa2, 0x29, 0xb9, 0x05, 0x12,
            0x08,                   // natEvent 8: NAT44 BIB create
            100, 64, 0, 11,         // sourceIPv4Address
            203, 0, 113, 5,         // postNATSourceIPv4Address
            17,                     // protocolIdentifier UDP
            0x13, 0x88,             // sourceTransportPort 5000
            0x9c, 0x41,             // postNAPTSourceTransportPort 40001
        ];
        assert_eq!(message(1_795_996_321, 5, 1, &set), want);
    }

    #[test]
    fn data_records_byte_for_byte() {
        let c = ctx();
        let t: [u8; 8] = [0x00, 0x00, 0x01, 0xa2, 0x29, 0xb9, 0x05, 0x12];
        let with_time = |ev: Option<u8>, rest: &[u8]| {
            let mut v = t.to_vec();
            v.extend(ev);
            v.extend_from_slice(rest);
            v
        };
        let cases: Vec<(Record, u16, Vec<u8>)> = vec![
            (
                Record::MappingRelease {
                    proto: 6,
                    subscriber: (a("100.64.0.11"), 443),
                    external: (a("203.0.113.5"), 1024),
                },
                256,
                with_time(
                    Some(9),
                    &[100, 64, 0, 11, 203, 0, 113, 5, 6, 0x01, 0xbb, 0x04, 0x00],
                ),
            ),
            (
                Record::BlockAlloc {
                    subscriber: a("100.64.0.11"),
                    external: a("203.0.113.5"),
                    ports: (1024, 1279),
                },
                257,
                // ports 1024..1279 step 1, 256 ports
                with_time(
                    Some(16),
                    &[
                        100, 64, 0, 11, 203, 0, 113, 5, 0x04, 0x00, 0x04, 0xff, 0x00, 0x01, 0x01,
                        0x00,
                    ],
                ),
            ),
            (
                Record::BlockRelease {
                    subscriber: a("100.64.0.11"),
                    external: a("203.0.113.5"),
                    ports: (1024, 1279),
                },
                257,
                with_time(
                    Some(17),
                    &[
                        100, 64, 0, 11, 203, 0, 113, 5, 0x04, 0x00, 0x04, 0xff, 0x00, 0x01, 0x01,
                        0x00,
                    ],
                ),
            ),
            (
                Record::Refused {
                    proto: 17,
                    subscriber: (a("100.64.0.11"), 5000),
                    reason: "drop_ports_exhausted",
                },
                258,
                with_time(Some(12), &[100, 64, 0, 11, 17, 0x13, 0x88]),
            ),
            (
                Record::Refused {
                    proto: 17,
                    subscriber: (a("100.64.0.11"), 5000),
                    reason: "drop_sub_limit",
                },
                259,
                // quota event 3, maxEntriesPerUser 1024, the subscriber
                with_time(Some(13), &[0, 0, 0, 3, 0, 0, 0x04, 0x00, 100, 64, 0, 11]),
            ),
            (
                Record::Refused {
                    proto: 6,
                    subscriber: (a("100.64.0.11"), 5000),
                    reason: "drop_table_full",
                },
                260,
                // quota event 1, maxSessionEntries 65536
                with_time(Some(13), &[0, 0, 0, 1, 0, 1, 0, 0]),
            ),
            (
                Record::Refused {
                    proto: 6,
                    subscriber: (a("100.64.0.11"), 5000),
                    reason: "drop_subs_full",
                },
                261,
                // quota event 4, maxSubscribers 4096
                with_time(Some(13), &[0, 0, 0, 4, 0, 0, 0x10, 0]),
            ),
            (
                Record::Refused {
                    proto: 1,
                    subscriber: (a("100.64.0.11"), 7),
                    reason: "drop_no_pool",
                },
                262,
                // natEvent 3, natPoolId 1
                with_time(Some(3), &[0, 0, 0, 1]),
            ),
        ];
        for (rec, id, want) in cases {
            assert_eq!(data_record(&rec, MS, &c), (id, want), "{rec:?}");
        }
        // Options Data Record: scope observationDomainId 1, then
        // notSentFlowTotalCount 7 and the time.
        let mut want = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        want.extend_from_slice(&t);
        assert_eq!(
            data_record(&Record::EventsLost { count: 3 }, MS, &c),
            (263, want)
        );
    }

    /// Every template's record length is the sum of its field lengths.
    #[test]
    fn records_match_their_templates() {
        let recs = [
            Record::MappingCreate {
                proto: 17,
                subscriber: (a("100.64.0.1"), 1),
                external: (a("203.0.113.1"), 2),
            },
            Record::BlockAlloc {
                subscriber: a("100.64.0.1"),
                external: a("203.0.113.1"),
                ports: (8, 15),
            },
            Record::EventsLost { count: 1 },
        ];
        for r in recs {
            let (id, data) = data_record(&r, MS, &ctx());
            let t = TEMPLATES.iter().find(|t| t.id == id).unwrap();
            let len: u16 = t.fields.iter().map(|f| f.1).sum();
            assert_eq!(data.len(), usize::from(len), "{r:?}");
        }
    }

    /// Templates first, then data; the Sequence Number counts Data Records
    /// sent before each message; a full queue drops and counts.
    #[test]
    fn exporter_sends_templates_first_and_counts_records() {
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut e = Exporter::open(collector.local_addr().unwrap(), 9, Quota::default()).unwrap();
        let rec = Record::MappingCreate {
            proto: 17,
            subscriber: (a("100.64.0.11"), 5000),
            external: (a("203.0.113.5"), 40001),
        };
        let ts = UNIX_EPOCH + Duration::from_millis(MS);
        e.push(&rec, ts);
        e.push(&rec, ts);
        let now = Instant::now();
        e.flush(now, ts);
        let mut buf = [0u8; 2048];
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[16..18],
            &[0, 2],
            "the first message holds the templates"
        );
        assert_eq!(&buf[8..12], &[0, 0, 0, 0], "sequence 0");
        assert_eq!(&buf[12..16], &[0, 0, 0, 9], "observation domain");
        assert_eq!(n, 16 + template_sets().len());
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(n, 16 + 4 + 2 * 22, "both records in one Data Set");
        assert_eq!(&buf[16..20], &[1, 0, 0, 48]);
        assert_eq!(e.written, 2);

        e.push(&rec, ts);
        e.flush(now + Duration::from_secs(1), ts);
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(n, 16 + 4 + 22, "no templates before the refresh");
        assert_eq!(&buf[8..12], &[0, 0, 0, 2], "two records sent before");

        e.flush(now + TEMPLATE_REFRESH, ts);
        collector.recv(&mut buf).unwrap();
        assert_eq!(&buf[16..18], &[0, 2], "templates again after 60 s");

        for _ in 0..QUEUE_MAX + 5 {
            e.push(&rec, ts);
        }
        assert_eq!(e.failed, 5);
        assert_eq!(e.ctx.not_sent, 5);
    }
}
