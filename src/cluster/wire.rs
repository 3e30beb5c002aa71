//! The datagram format of cluster state sync.
//!
//! One UDP datagram is one [`Message`]; all integers are big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `CGNS` |
//! | 1 | version, 1 |
//! | 1 | [`Kind`] |
//! | 2 | sender node id |
//! | 8 | epoch: the sender's start time, ns since the UNIX epoch |
//! | 8 | seq: unique per datagram from one sender to one peer within an epoch |
//! | 2 | record count |
//! | ... | the records, each a type byte and its body |
//! | 32 | HMAC-SHA256 over every byte before it, with the cluster [`Key`] |
//!
//! A datagram is at most [`MAX_DATAGRAM`] bytes. Every record but
//! [`Record::Acks`] has a fixed-size body, so a cut-short record is always
//! detected ([`Reject::Truncated`]); `Acks` is a u16 count and that many
//! u64 seqs.
//!
//! [`decode`] verifies the tag (in constant time) before it looks at any
//! other byte than the length: a datagram not made with the cluster key is
//! [`Reject::BadMac`] whatever it holds, and nothing an outsider sends
//! reaches the record parser. The parse is canonical: a datagram that
//! decodes is exactly what [`encode`] makes of the decoded message.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"CGNS";
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// Bytes before the first record: magic, version, kind, node, epoch, seq,
/// record count.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 8 + 8 + 2;
/// Bytes of the HMAC-SHA256 tag at the end of every datagram.
pub const TAG_LEN: usize = 32;
/// The largest datagram: below a 1500-byte path MTU less IP and UDP
/// headers.
pub const MAX_DATAGRAM: usize = 1400;
/// Bytes of records one datagram can carry.
pub const MAX_RECORDS_LEN: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
/// The most seqs one [`Record::Acks`] can carry in one datagram.
pub const MAX_ACKS: usize = (MAX_RECORDS_LEN - 1 - 2) / 8;

/// Record type bytes.
mod rtype {
    pub const HELLO: u8 = 1;
    pub const BINDING: u8 = 2;
    pub const BINDING_GONE: u8 = 3;
    pub const SESSION: u8 = 4;
    pub const SESSION_GONE: u8 = 5;
    pub const SUBSCRIBER: u8 = 6;
    pub const BLOCK: u8 = 7;
    pub const BLOCK_GONE: u8 = 8;
    pub const ACKS: u8 = 9;
}

type HmacSha256 = Hmac<Sha256>;

/// What a message is for. Which records a kind carries is the engine's
/// convention; [`decode`] does not check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Periodic liveness and role announcement (a [`Record::Hello`]).
    Hello = 1,
    /// State changes, sent reliably (acknowledged, resent).
    Update = 2,
    /// Acknowledgements (a [`Record::Acks`]).
    Ack = 3,
    /// "Send me all your state."
    ResyncRequest = 4,
    /// "That was all my state."
    ResyncDone = 5,
}

impl Kind {
    /// The kind's byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for Kind {
    type Error = Reject;

    /// The kind of a wire byte; an unknown byte is [`Reject::BadKind`].
    fn try_from(byte: u8) -> Result<Kind, Reject> {
        match byte {
            1 => Ok(Kind::Hello),
            2 => Ok(Kind::Update),
            3 => Ok(Kind::Ack),
            4 => Ok(Kind::ResyncRequest),
            5 => Ok(Kind::ResyncDone),
            _ => Err(Reject::BadKind),
        }
    }
}

/// One piece of state (or its removal) or control information.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// `active`: bit n-1 set = the sender is currently active (allocating)
    /// for node n's slice (so nodes 1 to 64). `want`: the slices the sender
    /// asks to serve (its own, once it may take it back). `resynced`: the
    /// sender holds a complete copy of its live peers' state.
    Hello {
        active: u64,
        want: u64,
        resynced: bool,
    },
    /// An endpoint-independent mapping: internal address:port of `proto`
    /// to external address:port.
    Binding {
        proto: u8,
        int_addr: Ipv4Addr,
        int_port: u16,
        ext_addr: Ipv4Addr,
        ext_port: u16,
        flags: u8,
    },
    /// The binding of `proto` at the external address:port is gone.
    BindingGone {
        proto: u8,
        ext_addr: Ipv4Addr,
        ext_port: u16,
    },
    /// A session: a binding's flow with one remote endpoint. `tcp` is the
    /// data path's TCP state word, `idle_ms` the time since its last packet.
    Session {
        proto: u8,
        ext_addr: Ipv4Addr,
        ext_port: u16,
        rem_addr: Ipv4Addr,
        rem_port: u16,
        int_addr: Ipv4Addr,
        int_port: u16,
        flags: u8,
        tcp: u32,
        idle_ms: u32,
    },
    /// The session with that remote endpoint is gone.
    SessionGone {
        proto: u8,
        ext_addr: Ipv4Addr,
        ext_port: u16,
        rem_addr: Ipv4Addr,
        rem_port: u16,
    },
    /// A subscriber's external address (`pool_idx` its index in the pool,
    /// `det_lo` its first port in deterministic mode).
    Subscriber {
        int_addr: Ipv4Addr,
        ext_addr: Ipv4Addr,
        pool_idx: u32,
        det_lo: u16,
    },
    /// Port block `block` of `ext_addr` belongs to subscriber `owner`
    /// (in its slot `slot`).
    Block {
        ext_addr: Ipv4Addr,
        block: u32,
        owner: Ipv4Addr,
        slot: u32,
    },
    /// Port block `block` of `ext_addr` is free again.
    BlockGone { ext_addr: Ipv4Addr, block: u32 },
    /// The seqs of reliable messages received (in [`Kind::Ack`] messages);
    /// at most [`MAX_ACKS`] fit in one datagram.
    Acks { seqs: Vec<u64> },
}

impl Record {
    /// Bytes the record takes on the wire, type byte included.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Record::Hello { .. } => 8 + 8 + 1,
            Record::Binding { .. } => 1 + 4 + 2 + 4 + 2 + 1,
            Record::BindingGone { .. } => 1 + 4 + 2,
            Record::Session { .. } => 1 + 4 + 2 + 4 + 2 + 4 + 2 + 1 + 4 + 4,
            Record::SessionGone { .. } => 1 + 4 + 2 + 4 + 2,
            Record::Subscriber { .. } => 4 + 4 + 4 + 2,
            Record::Block { .. } => 4 + 4 + 4 + 4,
            Record::BlockGone { .. } => 4 + 4,
            Record::Acks { seqs } => 2 + 8 * seqs.len(),
        }
    }

    /// Appends the record. The caller has checked that the message fits
    /// a datagram, so an `Acks` count fits a u16.
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Record::Hello {
                active,
                want,
                resynced,
            } => {
                out.push(rtype::HELLO);
                out.extend_from_slice(&active.to_be_bytes());
                out.extend_from_slice(&want.to_be_bytes());
                out.push(u8::from(*resynced));
            }
            Record::Binding {
                proto,
                int_addr,
                int_port,
                ext_addr,
                ext_port,
                flags,
            } => {
                out.push(rtype::BINDING);
                out.push(*proto);
                put_endpoint(out, *int_addr, *int_port);
                put_endpoint(out, *ext_addr, *ext_port);
                out.push(*flags);
            }
            Record::BindingGone {
                proto,
                ext_addr,
                ext_port,
            } => {
                out.push(rtype::BINDING_GONE);
                out.push(*proto);
                put_endpoint(out, *ext_addr, *ext_port);
            }
            Record::Session {
                proto,
                ext_addr,
                ext_port,
                rem_addr,
                rem_port,
                int_addr,
                int_port,
                flags,
                tcp,
                idle_ms,
            } => {
                out.push(rtype::SESSION);
                out.push(*proto);
                put_endpoint(out, *ext_addr, *ext_port);
                put_endpoint(out, *rem_addr, *rem_port);
                put_endpoint(out, *int_addr, *int_port);
                out.push(*flags);
                out.extend_from_slice(&tcp.to_be_bytes());
                out.extend_from_slice(&idle_ms.to_be_bytes());
            }
            Record::SessionGone {
                proto,
                ext_addr,
                ext_port,
                rem_addr,
                rem_port,
            } => {
                out.push(rtype::SESSION_GONE);
                out.push(*proto);
                put_endpoint(out, *ext_addr, *ext_port);
                put_endpoint(out, *rem_addr, *rem_port);
            }
            Record::Subscriber {
                int_addr,
                ext_addr,
                pool_idx,
                det_lo,
            } => {
                out.push(rtype::SUBSCRIBER);
                out.extend_from_slice(&int_addr.octets());
                out.extend_from_slice(&ext_addr.octets());
                out.extend_from_slice(&pool_idx.to_be_bytes());
                out.extend_from_slice(&det_lo.to_be_bytes());
            }
            Record::Block {
                ext_addr,
                block,
                owner,
                slot,
            } => {
                out.push(rtype::BLOCK);
                out.extend_from_slice(&ext_addr.octets());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(&owner.octets());
                out.extend_from_slice(&slot.to_be_bytes());
            }
            Record::BlockGone { ext_addr, block } => {
                out.push(rtype::BLOCK_GONE);
                out.extend_from_slice(&ext_addr.octets());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Record::Acks { seqs } => {
                out.push(rtype::ACKS);
                out.extend_from_slice(&(seqs.len() as u16).to_be_bytes());
                for seq in seqs {
                    out.extend_from_slice(&seq.to_be_bytes());
                }
            }
        }
    }

    /// Reads one record: [`Reject::Truncated`] if the bytes end inside
    /// it, [`Reject::BadRecord`] for an unknown type or an invalid field.
    fn read(r: &mut Reader<'_>) -> Result<Record, Reject> {
        match r.u8()? {
            rtype::HELLO => Ok(Record::Hello {
                active: r.u64()?,
                want: r.u64()?,
                resynced: r.flag()?,
            }),
            rtype::BINDING => Ok(Record::Binding {
                proto: r.u8()?,
                int_addr: r.addr()?,
                int_port: r.u16()?,
                ext_addr: r.addr()?,
                ext_port: r.u16()?,
                flags: r.u8()?,
            }),
            rtype::BINDING_GONE => Ok(Record::BindingGone {
                proto: r.u8()?,
                ext_addr: r.addr()?,
                ext_port: r.u16()?,
            }),
            rtype::SESSION => Ok(Record::Session {
                proto: r.u8()?,
                ext_addr: r.addr()?,
                ext_port: r.u16()?,
                rem_addr: r.addr()?,
                rem_port: r.u16()?,
                int_addr: r.addr()?,
                int_port: r.u16()?,
                flags: r.u8()?,
                tcp: r.u32()?,
                idle_ms: r.u32()?,
            }),
            rtype::SESSION_GONE => Ok(Record::SessionGone {
                proto: r.u8()?,
                ext_addr: r.addr()?,
                ext_port: r.u16()?,
                rem_addr: r.addr()?,
                rem_port: r.u16()?,
            }),
            rtype::SUBSCRIBER => Ok(Record::Subscriber {
                int_addr: r.addr()?,
                ext_addr: r.addr()?,
                pool_idx: r.u32()?,
                det_lo: r.u16()?,
            }),
            rtype::BLOCK => Ok(Record::Block {
                ext_addr: r.addr()?,
                block: r.u32()?,
                owner: r.addr()?,
                slot: r.u32()?,
            }),
            rtype::BLOCK_GONE => Ok(Record::BlockGone {
                ext_addr: r.addr()?,
                block: r.u32()?,
            }),
            rtype::ACKS => read_acks(r),
            _ => Err(Reject::BadRecord),
        }
    }
}

fn put_endpoint(out: &mut Vec<u8>, addr: Ipv4Addr, port: u16) {
    out.extend_from_slice(&addr.octets());
    out.extend_from_slice(&port.to_be_bytes());
}

/// The body of an `Acks` record; the count is checked against the bytes
/// left before anything is allocated.
fn read_acks(r: &mut Reader<'_>) -> Result<Record, Reject> {
    let count = usize::from(r.u16()?);
    if r.remaining() < count * 8 {
        return Err(Reject::Truncated);
    }
    let seqs = (0..count).map(|_| r.u64()).collect::<Result<_, _>>()?;
    Ok(Record::Acks { seqs })
}

/// The fixed part of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub kind: Kind,
    /// The sender's node id.
    pub node: u16,
    /// The sender's start time in ns since the UNIX epoch.
    pub epoch: u64,
    /// Unique per datagram from the sender to this peer within the epoch.
    pub seq: u64,
}

/// One datagram's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    pub header: Header,
    pub records: Vec<Record>,
}

impl Message {
    /// Bytes the message takes on the wire, header and tag included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + records_len(&self.records) + TAG_LEN
    }
}

/// Bytes the records take on the wire.
pub fn records_len(records: &[Record]) -> usize {
    records.iter().map(Record::encoded_len).sum()
}

/// The cluster's shared secret, ready to make and check tags. `Debug`
/// never shows it.
#[derive(Clone)]
pub struct Key {
    mac: HmacSha256,
}

/// Why a [`Key`] cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cluster key has {len} bytes; at least {} are needed", Key::MIN_LEN)]
    TooShort { len: usize },
    #[error("cannot read cluster key file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cluster key file {} is accessible by group or others (mode {mode:04o}); \
         it must be readable by its owner only (chmod 600)",
        .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "cluster key file {} has {len} bytes (less a trailing newline); at least {} are needed",
        .path.display(),
        Key::MIN_LEN
    )]
    FileTooShort { path: PathBuf, len: usize },
}

impl Key {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// A key of the given bytes, at least [`Key::MIN_LEN`] of them.
    pub fn new(bytes: &[u8]) -> Result<Key, KeyError> {
        if bytes.len() < Key::MIN_LEN {
            return Err(KeyError::TooShort { len: bytes.len() });
        }
        let mac = HmacSha256::new_from_slice(bytes)
            .map_err(|_| KeyError::TooShort { len: bytes.len() })?;
        Ok(Key { mac })
    }

    /// The key in the file at `path`: its bytes less one trailing
    /// newline, at least [`Key::MIN_LEN`] of them. A file whose mode lets
    /// group or others read or write it (mode & 0o077) is refused, checked
    /// on the opened file.
    pub fn from_file(path: &Path) -> Result<Key, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        let mode = file.metadata().map_err(read_err)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_err)?;
        let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        Key::new(secret).map_err(|_| KeyError::FileTooShort {
            path: path.to_path_buf(),
            len: secret.len(),
        })
    }

    /// The tag of `bytes`.
    fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        self.mac
            .clone()
            .chain_update(bytes)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `tag` is the tag of `bytes`, compared in constant time.
    fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        self.mac
            .clone()
            .chain_update(bytes)
            .verify_slice(tag)
            .is_ok()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("cluster message of {len} bytes exceeds the {MAX_DATAGRAM}-byte datagram limit")]
    TooLarge { len: usize },
}

/// The datagram of `msg`, tagged with `key`; [`WireError::TooLarge`] if
/// it would exceed [`MAX_DATAGRAM`] bytes.
pub fn encode(msg: &Message, key: &Key) -> Result<Vec<u8>, WireError> {
    let len = msg.encoded_len();
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLarge { len });
    }
    let mut out = Vec::with_capacity(len);
    put_header(&mut out, &msg.header, msg.records.len());
    for record in &msg.records {
        record.put(&mut out);
    }
    let tag = key.tag(&out);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Appends the header; `count` fits a u16 since the message fits a
/// datagram and every record takes at least 3 bytes.
fn put_header(out: &mut Vec<u8>, header: &Header, count: usize) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(header.kind.as_u8());
    out.extend_from_slice(&header.node.to_be_bytes());
    out.extend_from_slice(&header.epoch.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&(count as u16).to_be_bytes());
}

/// Why a datagram was refused. The first seven come from [`decode`];
/// `UnknownNode` from the caller, `Replayed` and `StaleEpoch` from
/// [`super::link::Inbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("datagram shorter than a header and a tag")]
    Short,
    #[error("not a cgnat cluster datagram (bad magic)")]
    BadMagic,
    #[error("unsupported cluster protocol version")]
    BadVersion,
    #[error("authentication tag does not verify (other key, or altered)")]
    BadMac,
    #[error("unknown message kind")]
    BadKind,
    #[error("record or record list cut short")]
    Truncated,
    #[error("malformed record")]
    BadRecord,
    #[error("sender is not a configured peer")]
    UnknownNode,
    #[error("seq already seen or older than the replay window")]
    Replayed,
    #[error("epoch older than the sender's current one")]
    StaleEpoch,
}

impl Reject {
    /// Every reason, for registering metrics up front.
    pub const ALL: [Reject; 10] = [
        Reject::Short,
        Reject::BadMagic,
        Reject::BadVersion,
        Reject::BadMac,
        Reject::BadKind,
        Reject::Truncated,
        Reject::BadRecord,
        Reject::UnknownNode,
        Reject::Replayed,
        Reject::StaleEpoch,
    ];

    /// A stable snake_case label, the `reason` of
    /// `cgnat_cluster_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Short => "short",
            Reject::BadMagic => "bad_magic",
            Reject::BadVersion => "bad_version",
            Reject::BadMac => "bad_mac",
            Reject::BadKind => "bad_kind",
            Reject::Truncated => "truncated",
            Reject::BadRecord => "bad_record",
            Reject::UnknownNode => "unknown_node",
            Reject::Replayed => "replayed",
            Reject::StaleEpoch => "stale_epoch",
        }
    }
}

/// The message in `bytes`. In order: [`Reject::Short`] if it cannot hold
/// a header and a tag; [`Reject::BadMac`] unless the tag verifies with
/// `key`; then `BadMagic`, `BadVersion`, `BadKind`; then the records:
/// `Truncated` if they end early, `BadRecord` for an unknown or invalid
/// record or bytes left after the counted records. Never panics.
/// Does not check the sender, epoch or seq (see [`super::link::Inbound`]).
pub fn decode(bytes: &[u8], key: &Key) -> Result<Message, Reject> {
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(Reject::Short);
    }
    let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    if !key.verify(body, tag) {
        return Err(Reject::BadMac);
    }
    let mut r = Reader { buf: body };
    let (header, count) = read_header(&mut r)?;
    let records = read_records(&mut r, count)?;
    Ok(Message { header, records })
}

/// The header and the record count, after the tag has verified.
fn read_header(r: &mut Reader<'_>) -> Result<(Header, usize), Reject> {
    if r.take::<4>()? != MAGIC {
        return Err(Reject::BadMagic);
    }
    if r.u8()? != VERSION {
        return Err(Reject::BadVersion);
    }
    let header = Header {
        kind: Kind::try_from(r.u8()?)?,
        node: r.u16()?,
        epoch: r.u64()?,
        seq: r.u64()?,
    };
    Ok((header, usize::from(r.u16()?)))
}

/// Exactly `count` records, which must use up the bytes.
fn read_records(r: &mut Reader<'_>, count: usize) -> Result<Vec<Record>, Reject> {
    // Each record takes at least 3 bytes: the count cannot make us
    // reserve more than the datagram justifies.
    let mut records = Vec::with_capacity(count.min(r.remaining() / 3));
    for _ in 0..count {
        records.push(Record::read(r)?);
    }
    if r.remaining() != 0 {
        return Err(Reject::BadRecord);
    }
    Ok(records)
}

/// Reads big-endian fields off a byte slice; running out is
/// [`Reject::Truncated`].
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(Reject::Truncated)?;
        self.buf = rest;
        Ok(*head)
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn u8(&mut self) -> Result<u8, Reject> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Reject> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, Reject> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, Reject> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn addr(&mut self) -> Result<Ipv4Addr, Reject> {
        Ok(Ipv4Addr::from(self.take::<4>()?))
    }

    /// A boolean byte: 0 or 1, anything else is [`Reject::BadRecord`].
    fn flag(&mut self) -> Result<bool, Reject> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Reject::BadRecord),
        }
    }
}

/// Packs records, in order, into as few datagrams as possible: each batch
/// is the longest run of the following records whose message fits
/// [`MAX_DATAGRAM`]. The engine puts each batch in a [`Message`] with a
/// seq of its own.
#[derive(Debug, Default)]
pub struct Batcher {
    full: Vec<Vec<Record>>,
    current: Vec<Record>,
    used: usize,
}

impl Batcher {
    /// An empty batcher.
    pub fn new() -> Batcher {
        Batcher::default()
    }

    /// Adds a record after the others; [`WireError::TooLarge`] (and the
    /// record is not added) if it cannot fit a datagram even alone (an
    /// `Acks` of more than [`MAX_ACKS`] seqs).
    pub fn push(&mut self, record: Record) -> Result<(), WireError> {
        let len = record.encoded_len();
        if len > MAX_RECORDS_LEN {
            return Err(WireError::TooLarge {
                len: HEADER_LEN + len + TAG_LEN,
            });
        }
        if self.used + len > MAX_RECORDS_LEN {
            self.full.push(std::mem::take(&mut self.current));
            self.used = 0;
        }
        self.used += len;
        self.current.push(record);
        Ok(())
    }

    /// The batches completed so far (no further record will join them),
    /// oldest first, to send while more records come.
    pub fn take_full(&mut self) -> Vec<Vec<Record>> {
        std::mem::take(&mut self.full)
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.full.is_empty() && self.current.is_empty()
    }

    /// Every batch not yet taken, the last one partly filled; none if no
    /// record is held.
    pub fn finish(mut self) -> Vec<Vec<Record>> {
        if !self.current.is_empty() {
            self.full.push(self.current);
        }
        self.full
    }
}

#[cfg(test)]
mod tests;
