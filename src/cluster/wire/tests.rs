//! Unit tests of `cluster::wire`.
use super::*;

const KEY: &[u8] = b"cgnat-test-key-0123456789abcdef!";

fn key() -> Key {
    Key::new(KEY).unwrap()
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn addr(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.next() as u32)
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `body` followed by its tag: a datagram that passes the MAC check
/// whatever `body` holds.
fn remac(body: &[u8], key: &Key) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&key.tag(body));
    out
}

fn header(kind: Kind, seq: u64) -> Header {
    Header {
        kind,
        node: 3,
        epoch: 1_700_000_000_123_456_789,
        seq,
    }
}

fn session(i: u32) -> Record {
    Record::Session {
        proto: 6,
        ext_addr: Ipv4Addr::new(192, 0, 2, (i % 256) as u8),
        ext_port: (i % 65536) as u16,
        rem_addr: Ipv4Addr::new(198, 51, 100, 7),
        rem_port: 443,
        int_addr: Ipv4Addr::from(0x6440_0000 + i),
        int_port: 50000,
        flags: 3,
        tcp: i.wrapping_mul(7),
        idle_ms: i,
    }
}

/// One of each record, every field distinct from its neighbours.
fn one_of_each() -> Vec<Record> {
    vec![
        Record::Hello {
            active: 0x8000_0000_0000_0005,
            want: 0x4000_0000_0000_0001,
            resynced: true,
        },
        Record::Hello {
            active: 0,
            want: 0,
            resynced: false,
        },
        Record::Binding {
            proto: 17,
            int_addr: Ipv4Addr::new(100, 64, 1, 2),
            int_port: 5353,
            ext_addr: Ipv4Addr::new(192, 0, 2, 9),
            ext_port: 61000,
            flags: 0xa5,
        },
        Record::BindingGone {
            proto: 1,
            ext_addr: Ipv4Addr::new(192, 0, 2, 10),
            ext_port: 7,
        },
        session(77),
        Record::SessionGone {
            proto: 6,
            ext_addr: Ipv4Addr::new(192, 0, 2, 11),
            ext_port: 1024,
            rem_addr: Ipv4Addr::new(203, 0, 113, 5),
            rem_port: 80,
        },
        Record::Subscriber {
            int_addr: Ipv4Addr::new(100, 64, 9, 9),
            ext_addr: Ipv4Addr::new(192, 0, 2, 12),
            pool_idx: 0xdead_beef,
            det_lo: 2048,
        },
        Record::Block {
            ext_addr: Ipv4Addr::new(192, 0, 2, 13),
            block: 63,
            owner: Ipv4Addr::new(100, 64, 3, 4),
            slot: 2,
        },
        Record::BlockGone {
            ext_addr: Ipv4Addr::new(192, 0, 2, 14),
            block: 0x0102_0304,
        },
        Record::Acks { seqs: vec![] },
        Record::Acks {
            seqs: vec![1, u64::MAX, 0x0102_0304_0506_0708],
        },
    ]
}

fn random_record(rng: &mut Rng) -> Record {
    match rng.below(9) {
        0 => Record::Hello {
            active: rng.next(),
            want: rng.next(),
            resynced: rng.next() & 1 == 1,
        },
        1 => Record::Binding {
            proto: rng.next() as u8,
            int_addr: rng.addr(),
            int_port: rng.next() as u16,
            ext_addr: rng.addr(),
            ext_port: rng.next() as u16,
            flags: rng.next() as u8,
        },
        2 => Record::BindingGone {
            proto: rng.next() as u8,
            ext_addr: rng.addr(),
            ext_port: rng.next() as u16,
        },
        3 => Record::Session {
            proto: rng.next() as u8,
            ext_addr: rng.addr(),
            ext_port: rng.next() as u16,
            rem_addr: rng.addr(),
            rem_port: rng.next() as u16,
            int_addr: rng.addr(),
            int_port: rng.next() as u16,
            flags: rng.next() as u8,
            tcp: rng.next() as u32,
            idle_ms: rng.next() as u32,
        },
        4 => Record::SessionGone {
            proto: rng.next() as u8,
            ext_addr: rng.addr(),
            ext_port: rng.next() as u16,
            rem_addr: rng.addr(),
            rem_port: rng.next() as u16,
        },
        5 => Record::Subscriber {
            int_addr: rng.addr(),
            ext_addr: rng.addr(),
            pool_idx: rng.next() as u32,
            det_lo: rng.next() as u16,
        },
        6 => Record::Block {
            ext_addr: rng.addr(),
            block: rng.next() as u32,
            owner: rng.addr(),
            slot: rng.next() as u32,
        },
        7 => Record::BlockGone {
            ext_addr: rng.addr(),
            block: rng.next() as u32,
        },
        _ => {
            let n = rng.below(20);
            Record::Acks {
                seqs: (0..n).map(|_| rng.next()).collect(),
            }
        }
    }
}

const KINDS: [Kind; 5] = [
    Kind::Hello,
    Kind::Update,
    Kind::Ack,
    Kind::ResyncRequest,
    Kind::ResyncDone,
];

#[test]
fn every_record_kind_round_trips() {
    let key = key();
    for (i, record) in one_of_each().into_iter().enumerate() {
        let msg = Message {
            header: header(KINDS[i % KINDS.len()], i as u64 + 1),
            records: vec![record],
        };
        let bytes = encode(&msg, &key).unwrap();
        assert_eq!(bytes.len(), msg.encoded_len());
        assert_eq!(decode(&bytes, &key), Ok(msg));
    }
}

#[test]
fn all_records_in_one_message_round_trip() {
    let key = key();
    for kind in KINDS {
        let msg = Message {
            header: Header {
                kind,
                node: u16::MAX,
                epoch: u64::MAX,
                seq: u64::MAX - 1,
            },
            records: one_of_each(),
        };
        let bytes = encode(&msg, &key).unwrap();
        assert_eq!(decode(&bytes, &key), Ok(msg));
    }
    let empty = Message {
        header: header(Kind::ResyncRequest, 9),
        records: vec![],
    };
    let bytes = encode(&empty, &key).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + TAG_LEN);
    assert_eq!(decode(&bytes, &key), Ok(empty));
}

/// Written by hand from the layout; the tag computed apart (Python's
/// hmac module) over the bytes before it.
const HELLO_FIXTURE: &str = "
    43474e53 01 01 0002 0102030405060708 0000000000000001 0001
    01 0000000000000003 0000000000000002 01
    199f8012f862b3e7de69bacdd69f4b7ed6c721c66a495f1ae4c196e88ba34a05";

const UPDATE_FIXTURE: &str = "
    43474e53 01 02 0102 17f0a1b2c3d4e5f6 000000000000002a 0002
    02 06 64400001 04d2 c0000201 9c40 01
    08 c0000201 00000007
    f629ecf623741e44b9ac33e33eae9c528819c245203b6fc2550bedf01950bf97";

#[test]
fn hello_encodes_to_the_documented_bytes() {
    let msg = Message {
        header: Header {
            kind: Kind::Hello,
            node: 2,
            epoch: 0x0102_0304_0506_0708,
            seq: 1,
        },
        records: vec![Record::Hello {
            active: 0b11,
            want: 0b10,
            resynced: true,
        }],
    };
    let expected = hex(HELLO_FIXTURE);
    assert_eq!(encode(&msg, &key()).unwrap(), expected);
    assert_eq!(decode(&expected, &key()), Ok(msg));
}

#[test]
fn update_encodes_to_the_documented_bytes() {
    let ext = Ipv4Addr::new(192, 0, 2, 1);
    let msg = Message {
        header: Header {
            kind: Kind::Update,
            node: 0x0102,
            epoch: 0x17f0_a1b2_c3d4_e5f6,
            seq: 42,
        },
        records: vec![
            Record::Binding {
                proto: 6,
                int_addr: Ipv4Addr::new(100, 64, 0, 1),
                int_port: 1234,
                ext_addr: ext,
                ext_port: 40000,
                flags: 1,
            },
            Record::BlockGone {
                ext_addr: ext,
                block: 7,
            },
        ],
    };
    let expected = hex(UPDATE_FIXTURE);
    assert_eq!(encode(&msg, &key()).unwrap(), expected);
    assert_eq!(decode(&expected, &key()), Ok(msg));
}

#[test]
fn another_key_is_bad_mac() {
    let msg = Message {
        header: header(Kind::Update, 5),
        records: one_of_each(),
    };
    let bytes = encode(&msg, &key()).unwrap();
    let other = Key::new(b"cgnat-test-key-0123456789abcdef?").unwrap();
    assert_eq!(decode(&bytes, &other), Err(Reject::BadMac));
    assert_eq!(decode(&hex(HELLO_FIXTURE), &other), Err(Reject::BadMac));
}

#[test]
fn every_truncation_is_rejected() {
    let key = key();
    let msg = Message {
        header: header(Kind::Update, 5),
        records: one_of_each(),
    };
    let bytes = encode(&msg, &key).unwrap();
    for len in 0..bytes.len() {
        let expected = if len < HEADER_LEN + TAG_LEN {
            Reject::Short
        } else {
            Reject::BadMac
        };
        assert_eq!(decode(&bytes[..len], &key), Err(expected), "length {len}");
    }
}

#[test]
fn records_cut_short_under_a_valid_mac_are_truncated() {
    let key = key();
    let msg = Message {
        header: header(Kind::Update, 5),
        records: one_of_each(),
    };
    let bytes = encode(&msg, &key).unwrap();
    let body = &bytes[..bytes.len() - TAG_LEN];
    for len in HEADER_LEN..body.len() {
        let cut = remac(&body[..len], &key);
        assert_eq!(decode(&cut, &key), Err(Reject::Truncated), "length {len}");
    }
    // A header cut short, even under a tag made for it, is too short
    // to be a datagram.
    for len in 0..HEADER_LEN {
        let cut = remac(&body[..len], &key);
        assert_eq!(decode(&cut, &key), Err(Reject::Short), "length {len}");
    }
}

#[test]
fn header_fields_are_checked_after_the_mac() {
    let key = key();
    let msg = Message {
        header: header(Kind::Hello, 1),
        records: vec![],
    };
    let body = encode(&msg, &key).unwrap()[..HEADER_LEN].to_vec();
    let cases: [(usize, u8, Reject); 5] = [
        (0, b'X', Reject::BadMagic),
        (4, 2, Reject::BadVersion),
        (5, 0, Reject::BadKind),
        (5, 6, Reject::BadKind),
        (HEADER_LEN - 1, 1, Reject::Truncated),
    ];
    for (at, byte, reject) in cases {
        let mut altered = body.clone();
        altered[at] = byte;
        assert_eq!(decode(&remac(&altered, &key), &key), Err(reject));
        // Not re-tagged, the same change is only a bad tag.
        let mut unsigned = encode(&msg, &key).unwrap();
        unsigned[at] = byte;
        assert_eq!(decode(&unsigned, &key), Err(Reject::BadMac));
    }
}

#[test]
fn malformed_records_are_bad_record() {
    let key = key();
    let msg = Message {
        header: header(Kind::Update, 1),
        records: vec![Record::Hello {
            active: 1,
            want: 0,
            resynced: false,
        }],
    };
    let body = encode(&msg, &key).unwrap()[..HEADER_LEN + 18].to_vec();
    // Unknown record types.
    for rtype in [0u8, 10, 0xff] {
        let mut altered = body.clone();
        altered[HEADER_LEN] = rtype;
        assert_eq!(decode(&remac(&altered, &key), &key), Err(Reject::BadRecord));
    }
    // A boolean that is neither 0 nor 1.
    let mut altered = body.clone();
    altered[HEADER_LEN + 17] = 2;
    assert_eq!(decode(&remac(&altered, &key), &key), Err(Reject::BadRecord));
    // A byte after the counted records.
    let mut longer = body.clone();
    longer.push(0);
    assert_eq!(decode(&remac(&longer, &key), &key), Err(Reject::BadRecord));
    // An Acks count beyond the bytes there.
    let mut acks = body[..HEADER_LEN].to_vec();
    acks.extend_from_slice(&[rtype::ACKS, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(decode(&remac(&acks, &key), &key), Err(Reject::Truncated));
}

#[test]
fn any_bit_flip_is_bad_mac() {
    let key = key();
    let msg = Message {
        header: header(Kind::Update, 77),
        records: one_of_each(),
    };
    let bytes = encode(&msg, &key).unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(decode(&flipped, &key), Err(Reject::BadMac), "bit {bit}");
    }
}

/// Decodes `bytes`, which must not panic; whatever decodes must encode
/// back to exactly `bytes` (the parse is canonical). Returns whether
/// it decoded.
fn check_canonical(bytes: &[u8], key: &Key) -> bool {
    match decode(bytes, key) {
        Ok(msg) => {
            assert_eq!(encode(&msg, key).as_deref(), Ok(bytes));
            true
        }
        Err(_) => false,
    }
}

#[test]
fn mangled_datagrams_under_a_valid_mac_never_panic() {
    let key = key();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    let mut rejected = 0;
    for round in 0..20_000 {
        let records = (0..rng.below(12))
            .map(|_| random_record(&mut rng))
            .collect();
        let msg = Message {
            header: header(KINDS[rng.below(5)], rng.next()),
            records,
        };
        let bytes = encode(&msg, &key).unwrap();
        let mut body = bytes[..bytes.len() - TAG_LEN].to_vec();
        match round % 4 {
            // Random bit flips.
            0 => {
                for _ in 0..=rng.below(4) {
                    let bit = rng.below(body.len() * 8);
                    body[bit / 8] ^= 1 << (bit % 8);
                }
            }
            // Cut anywhere.
            1 => body.truncate(rng.below(body.len() + 1)),
            // Random bytes after a valid header (record count kept).
            2 => {
                let len = HEADER_LEN + rng.below(200);
                body.resize(len, 0);
                for b in &mut body[HEADER_LEN..] {
                    *b = rng.next() as u8;
                }
            }
            // Entirely random.
            _ => {
                body = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            }
        }
        if check_canonical(&remac(&body, &key), &key) {
            decoded += 1;
        } else {
            rejected += 1;
        }
    }
    // Both outcomes happen: the test exercises the parser, not just
    // the first check.
    assert!(decoded > 100 && rejected > 100, "{decoded} {rejected}");
}

#[test]
fn random_valid_messages_round_trip() {
    let key = key();
    let mut rng = Rng(42);
    for _ in 0..2_000 {
        let records = (0..rng.below(30))
            .map(|_| random_record(&mut rng))
            .collect();
        let msg = Message {
            header: Header {
                kind: KINDS[rng.below(5)],
                node: rng.next() as u16,
                epoch: rng.next(),
                seq: rng.next(),
            },
            records,
        };
        match encode(&msg, &key) {
            Ok(bytes) => assert_eq!(decode(&bytes, &key), Ok(msg)),
            Err(WireError::TooLarge { len }) => {
                assert_eq!(len, msg.encoded_len());
                assert!(len > MAX_DATAGRAM);
            }
        }
    }
}

#[test]
fn encode_refuses_more_than_a_datagram() {
    let key = key();
    let fits = Message {
        header: header(Kind::Ack, 1),
        records: vec![Record::Acks {
            seqs: (0..MAX_ACKS as u64).collect(),
        }],
    };
    let bytes = encode(&fits, &key).unwrap();
    assert!(bytes.len() <= MAX_DATAGRAM);
    assert!(bytes.len() + 8 > MAX_DATAGRAM);
    let mut over = fits.clone();
    over.records = vec![Record::Acks {
        seqs: (0..=MAX_ACKS as u64).collect(),
    }];
    assert_eq!(
        encode(&over, &key),
        Err(WireError::TooLarge {
            len: bytes.len() + 8
        })
    );
    let huge = Message {
        header: header(Kind::Ack, 1),
        records: vec![Record::Acks {
            seqs: vec![0; 70_000],
        }],
    };
    assert!(matches!(
        encode(&huge, &key),
        Err(WireError::TooLarge { .. })
    ));
}

/// Batches, encoded, fit a datagram; concatenated they are the input;
/// no batch could have taken the next batch's first record.
fn check_batches(input: &[Record], batches: &[Vec<Record>]) {
    let key = key();
    for (i, batch) in batches.iter().enumerate() {
        assert!(!batch.is_empty());
        let msg = Message {
            header: header(Kind::Update, i as u64 + 1),
            records: batch.clone(),
        };
        let bytes = encode(&msg, &key).unwrap();
        assert!(bytes.len() <= MAX_DATAGRAM);
        if let Some(next) = batches.get(i + 1) {
            assert!(bytes.len() + next[0].encoded_len() > MAX_DATAGRAM);
        }
    }
    let flat: Vec<Record> = batches.iter().flatten().cloned().collect();
    assert_eq!(flat, input);
}

#[test]
fn batcher_packs_10000_sessions_losing_none() {
    let input: Vec<Record> = (0..10_000).map(session).collect();
    let mut batcher = Batcher::new();
    for record in &input {
        batcher.push(record.clone()).unwrap();
    }
    let batches = batcher.finish();
    check_batches(&input, &batches);
    let per = MAX_RECORDS_LEN / session(0).encoded_len();
    assert_eq!(batches.len(), input.len().div_ceil(per));
}

#[test]
fn batcher_packs_mixed_records_and_streams() {
    let mut rng = Rng(7);
    let input: Vec<Record> = (0..3_000).map(|_| random_record(&mut rng)).collect();
    let mut batcher = Batcher::new();
    let mut batches = Vec::new();
    for (i, record) in input.iter().enumerate() {
        batcher.push(record.clone()).unwrap();
        if i % 100 == 0 {
            batches.extend(batcher.take_full());
        }
    }
    batches.extend(batcher.finish());
    check_batches(&input, &batches);
}

#[test]
fn batcher_refuses_a_record_no_datagram_holds() {
    let mut batcher = Batcher::new();
    assert!(batcher.is_empty());
    let too_many = Record::Acks {
        seqs: vec![1; MAX_ACKS + 1],
    };
    assert!(matches!(
        batcher.push(too_many),
        Err(WireError::TooLarge { .. })
    ));
    assert!(batcher.is_empty());
    batcher
        .push(Record::Acks {
            seqs: vec![1; MAX_ACKS],
        })
        .unwrap();
    assert!(!batcher.is_empty());
    assert_eq!(batcher.finish().len(), 1);
    assert!(Batcher::new().finish().is_empty());
}

#[test]
fn kinds_and_reasons_are_stable() {
    for kind in KINDS {
        assert_eq!(Kind::try_from(kind.as_u8()), Ok(kind));
    }
    assert_eq!(Kind::try_from(0), Err(Reject::BadKind));
    let mut labels: Vec<&str> = Reject::ALL.iter().map(Reject::reason).collect();
    for label in &labels {
        assert!(label.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    }
    assert_eq!(Reject::BadMac.reason(), "bad_mac");
    assert_eq!(Reject::StaleEpoch.reason(), "stale_epoch");
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), Reject::ALL.len());
    assert!(Reject::ALL.iter().all(|r| !r.to_string().is_empty()));
}

#[test]
fn key_debug_hides_the_secret() {
    let shown = format!("{:?}", key());
    assert!(!shown.contains("cgnat-test-key"), "{shown}");
    assert!(!shown.contains("63676e6174"), "{shown}");
    assert!(matches!(
        Key::new(b"fifteen bytes!!"),
        Err(KeyError::TooShort { len: 15 })
    ));
    assert!(Key::new(b"sixteen bytes!!!").is_ok());
}

/// A directory of one test's own, removed with everything in it when
/// dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("cgnat-wire-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A file of `contents` and `mode` in the directory.
    fn file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether two keys make the same tags.
fn same_key(a: &Key, b: &Key) -> bool {
    a.tag(b"probe") == b.tag(b"probe")
}

#[test]
fn key_file_strips_one_newline() {
    let scratch = Scratch::new("newline");
    let path = scratch.file("nl", b"cgnat-test-key-0123456789abcdef!\n", 0o600);
    assert!(same_key(&Key::from_file(&path).unwrap(), &key()));
    let path = scratch.file("bare", KEY, 0o400);
    assert!(same_key(&Key::from_file(&path).unwrap(), &key()));
    let path = scratch.file("two", b"cgnat-test-key-0123456789abcdef!\n\n", 0o600);
    let two = Key::from_file(&path).unwrap();
    assert!(!same_key(&two, &key()));
    assert!(same_key(
        &two,
        &Key::new(b"cgnat-test-key-0123456789abcdef!\n").unwrap()
    ));
}

#[test]
fn key_file_refuses_group_or_other_access() {
    let scratch = Scratch::new("modes");
    for mode in [0o640, 0o604, 0o620, 0o602, 0o601, 0o610, 0o644, 0o666] {
        let path = scratch.file(&format!("mode{mode:o}"), KEY, mode);
        match Key::from_file(&path) {
            Err(err @ KeyError::Exposed { .. }) => {
                let text = err.to_string();
                assert!(text.contains(&path.display().to_string()), "{text}");
                assert!(text.contains(&format!("{mode:04o}")), "{text}");
            }
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
}

#[test]
fn key_file_errors_name_the_path() {
    let scratch = Scratch::new("errors");
    let path = scratch.file("short", b"too short\n", 0o600);
    match Key::from_file(&path) {
        Err(err @ KeyError::FileTooShort { len: 9, .. }) => {
            assert!(err.to_string().contains(&path.display().to_string()));
        }
        other => panic!("{other:?}"),
    }
    let missing = path.with_file_name("absent");
    match Key::from_file(&missing) {
        Err(err @ KeyError::Read { .. }) => {
            assert!(err.to_string().contains(&missing.display().to_string()));
        }
        other => panic!("{other:?}"),
    }
}
