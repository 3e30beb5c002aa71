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

type S = crate::bpf::types::cgnat_stat;

/// The reason's name as the daemon passes it on (from the data path's id).
fn reason(s: S) -> &'static str {
    crate::stats::name(s.0)
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
                    100, 64, 0, 11, 203, 0, 113, 5, 0x04, 0x00, 0x04, 0xff, 0x00, 0x01, 0x01, 0x00,
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
                    100, 64, 0, 11, 203, 0, 113, 5, 0x04, 0x00, 0x04, 0xff, 0x00, 0x01, 0x01, 0x00,
                ],
            ),
        ),
        (
            Record::Refused {
                proto: 17,
                subscriber: (a("100.64.0.11"), 5000),
                reason: reason(S::CGNAT_DROP_PORTS_EXHAUSTED),
            },
            258,
            with_time(Some(12), &[100, 64, 0, 11, 17, 0x13, 0x88]),
        ),
        (
            Record::Refused {
                proto: 17,
                subscriber: (a("100.64.0.11"), 5000),
                reason: reason(S::CGNAT_DROP_SUB_LIMIT),
            },
            259,
            // quota event 3, maxEntriesPerUser 1024, the subscriber
            with_time(Some(13), &[0, 0, 0, 3, 0, 0, 0x04, 0x00, 100, 64, 0, 11]),
        ),
        (
            Record::Refused {
                proto: 6,
                subscriber: (a("100.64.0.11"), 5000),
                reason: reason(S::CGNAT_DROP_TABLE_FULL),
            },
            260,
            // quota event 1, maxSessionEntries 65536
            with_time(Some(13), &[0, 0, 0, 1, 0, 1, 0, 0]),
        ),
        (
            Record::Refused {
                proto: 6,
                subscriber: (a("100.64.0.11"), 5000),
                reason: reason(S::CGNAT_DROP_SUBS_FULL),
            },
            261,
            // quota event 4, maxSubscribers 4096
            with_time(Some(13), &[0, 0, 0, 4, 0, 0, 0x10, 0]),
        ),
        (
            Record::Refused {
                proto: 1,
                subscriber: (a("100.64.0.11"), 7),
                reason: reason(S::CGNAT_DROP_NO_POOL),
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

/// A collector that answers ICMP port unreachable: the records of the
/// datagram it refused count as dropped, not written.
#[test]
fn exporter_counts_records_a_refusing_collector_lost() {
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    let mut e = Exporter::open(addr, 1, Quota::default()).unwrap();
    let rec = Record::MappingCreate {
        proto: 17,
        subscriber: (a("100.64.0.11"), 5000),
        external: (a("203.0.113.5"), 40001),
    };
    let ts = UNIX_EPOCH + Duration::from_millis(MS);
    let now = Instant::now();
    let mut lost_seen = false;
    for i in 0..5 {
        e.push(&rec, ts);
        e.flush(now + Duration::from_millis(i), ts);
        std::thread::sleep(Duration::from_millis(20));
        lost_seen |= e.failed > 0;
    }
    assert!(lost_seen, "written {}, failed {}", e.written, e.failed);
    assert_eq!(e.written + e.failed + e.queue.len() as u64, 5);
    assert!(e.written < 5, "records sent into a refusal counted written");
}
