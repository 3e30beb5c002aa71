//! The NAT log as IPFIX (RFC 7011, RFC 8158) end to end: cgnat runs with
//! `log.output = "ipfix"` and a collector on an external host of the test
//! bed (a UDP socket this test reads); a subscriber's UDP flow creates a
//! binding; what the collector received is written to a pcap file and
//! decoded by tshark (its "cflow" dissector), an IPFIX implementation
//! independent of cgnat's. The Data Record must carry natEvent 8 (NAT44
//! BIB create), the subscriber's address and port, the external address
//! and port the far end saw, the protocol, and come after its template
//! (tshark decodes a Data Set only with the template it has already seen).

mod common;
mod ops;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cgnat_kit::testbed::{cannot_run, in_pool, udp_exchange, Host, Testbed, UdpReflector};
use common::Bed;
use ops::{metric, parse_metrics, scrape};

const T: Duration = Duration::from_secs(5);
const DOMAIN: u32 = 42;

/// tshark fields, one line per frame (values of one field joined by ',').
const FIELDS: [&str; 10] = [
    "cflow.flowset_id",
    "cflow.template_id",
    "cflow.sequence",
    "cflow.od_id",
    "cflow.nat_event",
    "cflow.srcaddr",
    "cflow.srcport",
    "cflow.post_natsource_ipv4_address",
    "cflow.post_naptsource_transport_port",
    "cflow.protocol",
];

/// tshark's names of the template fields, with their IANA ids.
const TEMPLATE_FIELDS: [&str; 18] = [
    "observationTimeMilliseconds (323)",
    "natEvent (230)",
    "IP_SRC_ADDR (8)",
    "postNATSourceIPv4Address (225)",
    "PROTOCOL (4)",
    "L4_SRC_PORT (7)",
    "postNAPTSourceTransportPort (227)",
    "portRangeStart (361)",
    "portRangeEnd (362)",
    "portRangeStepSize (363)",
    "portRangeNumPorts (364)",
    "natQuotaExceededEvent (466)",
    "maxEntriesPerUser (473)",
    "maxSessionEntries (471)",
    "maxSubscribers (474)",
    "natPoolId (283)",
    "observationDomainId (149)",
    "notSentFlowTotalCount (166)",
];

#[test]
fn ipfix_binding_create_reaches_the_collector_after_its_template() {
    if !nix::unistd::geteuid().is_root() {
        cannot_run("e2e_ipfix: needs root (network namespaces, XDP)");
        return;
    }
    if Command::new("tshark").arg("--version").output().is_err() {
        cannot_run("e2e_ipfix: needs tshark (`make deps`)");
        return;
    }
    let tb = Testbed::new().expect("test bed");
    let collector_addr = Host::E2.sock(4739);
    let collector = tb
        .udp_socket(Host::E2, collector_addr)
        .expect("collector socket on e2");
    let text = format!(
        "{}\n[log]\noutput = \"ipfix\"\ncollector = \"{collector_addr}\"\n\
         observation_domain = {DOMAIN}\n",
        tb.config_toml()
    );
    let config = tb.write_config("ipfix.toml", &text).expect("config");
    let cgnat = tb
        .start_cgnat(cgnat_kit::cgnat_binary(), &config, Duration::from_secs(30))
        .expect("cgnat starts");

    let refl = UdpReflector::start(&tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = tb
        .udp_socket(Host::S1, Host::S1.sock(5000))
        .expect("s1 socket");
    let seen = udp_exchange(&s1, refl.addr(), b"ipfix", T).expect("s1 -> e1");
    assert!(in_pool(*seen.observed.ip()), "not translated: {seen:?}");

    // Everything the collector gets until a Data Set of template 256
    // (NAT44 BIB) has arrived, and a little more.
    let datagrams = collect(&collector, 256, T);
    assert!(
        datagrams.iter().any(|(_, d)| has_set(d, 256)),
        "no Data Set 256 among {} datagrams; cgnat log:\n{}",
        datagrams.len(),
        cgnat.log()
    );
    let pcap = tb.dir().join("ipfix.pcap");
    std::fs::write(&pcap, pcap_file(&datagrams, collector_addr)).expect("writing the pcap");

    assert_well_formed(&pcap);
    let frames = tshark_fields(&pcap, &FIELDS);
    let template_frame = frames
        .iter()
        .position(|f| f[0].split(',').any(|s| s == "2") && f[1].split(',').any(|t| t == "256"))
        .expect("no Template Set defining template 256");
    let record = frames
        .iter()
        .position(|f| f[4] == "8")
        .expect("no record with natEvent 8 (NAT44 BIB create) decoded");
    assert!(
        template_frame < record,
        "the template (frame {}) must come before the record (frame {})",
        template_frame + 1,
        record + 1
    );
    let f = &frames[record];
    assert_eq!(f[0], "256", "the Data Set's template");
    assert_eq!(f[3], DOMAIN.to_string(), "observation domain");
    assert_eq!(f[2], "0", "no Data Record was sent before this one");
    assert_eq!(f[5], Host::S1.addr().to_string(), "sourceIPv4Address");
    assert_eq!(f[6], "5000", "sourceTransportPort");
    assert_eq!(
        f[7],
        seen.observed.ip().to_string(),
        "postNATSourceIPv4Address"
    );
    assert_eq!(
        f[8],
        seen.observed.port().to_string(),
        "postNAPTSourceTransportPort"
    );
    assert_eq!(f[9], "17", "protocolIdentifier (UDP)");

    // The record as tshark's verbose decode shows it, for the reader.
    let verbose = Command::new("tshark")
        .args([
            "-r",
            &pcap.display().to_string(),
            "-V",
            "-Y",
            "cflow.nat_event == 8",
        ])
        .output()
        .expect("running tshark -V");
    let verbose = String::from_utf8_lossy(&verbose.stdout).to_string();
    let flow: Vec<&str> = verbose
        .lines()
        .skip_while(|l| !l.contains("Flow 1"))
        .take(9)
        .collect();
    eprintln!("tshark -V:\n{}", flow.join("\n"));
    assert!(
        verbose.contains("Nat Event: NAT44 BIB create (8)"),
        "tshark -V: {verbose}"
    );

    // Every template names the Information Elements of RFC 8158 and RFC
    // 7011 as tshark knows them from the IANA registry.
    let templates = Command::new("tshark")
        .args([
            "-r",
            &pcap.display().to_string(),
            "-V",
            "-Y",
            "cflow.flowset_id == 2",
        ])
        .output()
        .expect("running tshark -V");
    let templates = String::from_utf8_lossy(&templates.stdout).to_string();
    for name in TEMPLATE_FIELDS {
        assert!(
            templates.contains(&format!("Type: {name}")),
            "no {name} in the templates:\n{templates}"
        );
    }

    let status = cgnat.stop().expect("cgnat stops");
    assert!(status.success(), "cgnat exited with {status}");
}

/// Port-block geometry of the exhaustion test: 2 blocks of 8 ports.
const BLOCK: u16 = 8;
const MAX_BLOCKS: u16 = 2;

/// Port-block mode, 2 blocks of 8 ports: s1 opens UDP flows until it holds
/// all 16 ports of its 2 blocks, s2 opens one flow, then s1 tries 3 more
/// (refused). tshark decodes what the collector received: the templates
/// before any data, every Sequence Number the count of Data Records sent
/// before, nothing malformed, and exactly these records: natEvent 16 (port
/// block allocation) for each block, its subscriber, the external address
/// the far end saw and a port range of 8 ports that together hold exactly
/// the ports the far end saw; natEvent 13 (quota exceeded, maximum entries
/// per user: 16) for s1's refused flows; nothing else.
#[test]
fn ipfix_port_blocks_and_their_exhaustion_decode_as_the_test_did() {
    if !has_tshark() {
        return;
    }
    let Some(mut bed) = Bed::new() else { return };
    let collector_addr = Host::E2.sock(4739);
    let collector = bed
        .tb
        .udp_socket(Host::E2, collector_addr)
        .expect("collector socket on e2");
    let text = format!(
        "{}\n[pool]\nmode = \"port-block\"\nblock_size = {BLOCK}\nmax_blocks = {MAX_BLOCKS}\n\
         [log]\noutput = \"ipfix\"\ncollector = \"{collector_addr}\"\n\
         observation_domain = {DOMAIN}\n",
        bed.tb.config_toml()
    );
    bed.start_text("ipfix-blocks.toml", &text);
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");

    let held = usize::from(BLOCK * MAX_BLOCKS);
    let mut s1_flows = Vec::new();
    let mut s1_seen = Vec::new();
    for i in 0..held {
        let s = bed
            .tb
            .udp_socket(Host::S1, Host::S1.sock(0))
            .expect("s1 socket");
        let seen = udp_exchange(&s, refl.addr(), format!("flow {i}").as_bytes(), T)
            .unwrap_or_else(|e| panic!("s1 flow {i} of {held}: {e}"));
        s1_seen.push(seen.observed);
        s1_flows.push(s);
    }
    let s2 = bed
        .tb
        .udp_socket(Host::S2, Host::S2.sock(0))
        .expect("s2 socket");
    let s2_seen = udp_exchange(&s2, refl.addr(), b"s2", T)
        .expect("s2 flow")
        .observed;
    let refused_tries = 3;
    for i in 0..refused_tries {
        let s = bed
            .tb
            .udp_socket(Host::S1, Host::S1.sock(0))
            .expect("s1 socket");
        let r = udp_exchange(&s, refl.addr(), b"beyond", Duration::from_secs(1));
        assert!(
            r.is_err(),
            "flow {i} beyond s1's 2 blocks got through: {r:?}"
        );
    }
    let s1_ext = *s1_seen[0].ip();
    assert!(
        s1_seen.iter().all(|o| *o.ip() == s1_ext),
        "s1 on several external addresses: {s1_seen:?}"
    );
    let s1_ports: BTreeSet<u16> = s1_seen.iter().map(|o| o.port()).collect();
    assert_eq!(s1_ports.len(), held, "s1's flows share ports: {s1_seen:?}");

    // The refusals come last: everything has been sent once they are in.
    let datagrams = collect(&collector, 259, T);
    let pcap = bed.tb.dir().join("ipfix-blocks.pcap");
    std::fs::write(&pcap, pcap_file(&datagrams, collector_addr)).expect("writing the pcap");
    assert_well_formed(&pcap);
    let frames = tshark_fields(
        &pcap,
        &[
            "cflow.flowset_id",
            "cflow.template_id",
            "cflow.sequence",
            "cflow.od_id",
            "cflow.nat_event",
            "cflow.srcaddr",
            "cflow.post_natsource_ipv4_address",
            "cflow.port_range_start",
            "cflow.port_range_end",
            "cflow.port_range_step_size",
            "cflow.port_range_num_ports",
            "cflow.nat_quota_exceeded_event",
            "cflow.max_entries_per_user",
        ],
    );
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let first_template = frames
        .iter()
        .position(|f| list(&f[0]).contains(&"2".to_string()))
        .expect("no Template Set");
    let first_data = frames
        .iter()
        .position(|f| {
            list(&f[0])
                .iter()
                .any(|s| s.parse::<u16>().unwrap_or(0) >= 256)
        })
        .expect("no Data Set");
    assert!(
        first_template < first_data,
        "the templates (frame {}) must come before the data (frame {})",
        first_template + 1,
        first_data + 1
    );
    for t in [257, 259] {
        assert!(
            frames[first_template][1] == t.to_string()
                || list(&frames[first_template][1]).contains(&t.to_string()),
            "the first Template Set does not define {t}: {:?}",
            frames[first_template]
        );
    }

    // Records, in order. Both templates carry natEvent and
    // sourceIPv4Address; the port ranges belong to the natEvent 16
    // records and the quota fields to the natEvent 13 records, in order.
    let mut blocks = Vec::new();
    let mut quotas = Vec::new();
    let mut sent = 0usize;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(
            f[3],
            DOMAIN.to_string(),
            "frame {}: observation domain",
            i + 1
        );
        assert_eq!(
            f[2],
            sent.to_string(),
            "frame {}: the Sequence Number counts the Data Records sent before",
            i + 1
        );
        let events = list(&f[4]);
        let src = list(&f[5]);
        assert_eq!(events.len(), src.len(), "frame {}: {f:?}", i + 1);
        let (mut b, mut q) = (0, 0);
        for (ev, src) in events.iter().zip(&src) {
            match ev.as_str() {
                "16" => {
                    let at = |c: usize| list(&f[c])[b].clone();
                    blocks.push((
                        src.clone(),
                        at(6),
                        at(7).parse::<u16>().unwrap(),
                        at(8).parse::<u16>().unwrap(),
                        at(9),
                        at(10),
                    ));
                    b += 1;
                }
                "13" => {
                    quotas.push((
                        src.clone(),
                        list(&f[11])[q].clone(),
                        list(&f[12])[q].clone(),
                    ));
                    q += 1;
                }
                other => panic!("frame {}: unexpected natEvent {other}: {f:?}", i + 1),
            }
        }
        sent += events.len();
    }
    eprintln!(
        "port block records {blocks:?}\nquota records {quotas:?}\n\
         s1 saw as {s1_ext} ports {s1_ports:?}, s2 as {s2_seen}"
    );
    eprintln!(
        "tshark -V:\n{}",
        tshark_verbose(&pcap, "cflow.nat_event == 16", "Flow 1", 10)
    );

    let (s1_blocks, other): (Vec<_>, Vec<_>) = blocks
        .iter()
        .partition(|b| b.0 == Host::S1.addr().to_string());
    assert_eq!(
        s1_blocks.len(),
        usize::from(MAX_BLOCKS),
        "s1's block allocations: {blocks:?}"
    );
    let mut in_blocks = BTreeSet::new();
    for (_, post, start, end, step, num) in &s1_blocks {
        assert_eq!(*post, s1_ext.to_string(), "postNATSourceIPv4Address");
        assert_eq!(end - start + 1, BLOCK, "portRangeStart..End: {start}-{end}");
        assert_eq!(*step, "1", "portRangeStepSize");
        assert_eq!(*num, BLOCK.to_string(), "portRangeNumPorts");
        in_blocks.extend(*start..=*end);
    }
    assert_eq!(
        in_blocks, s1_ports,
        "s1's blocks hold exactly the ports e1 saw from it"
    );
    assert_eq!(other.len(), 1, "s2's block allocations: {blocks:?}");
    let (src, post, start, end, ..) = other[0];
    assert_eq!(*src, Host::S2.addr().to_string(), "sourceIPv4Address");
    assert_eq!(
        *post,
        s2_seen.ip().to_string(),
        "s2's postNATSourceIPv4Address"
    );
    assert!(
        (*start..=*end).contains(&s2_seen.port()) && end - start + 1 == BLOCK,
        "s2's port {} outside its block {start}-{end}",
        s2_seen.port()
    );

    // One record per refused datagram (udp_exchange sends each more than
    // once), at least one.
    assert!(
        !quotas.is_empty(),
        "{refused_tries} refused flows, no quota record"
    );
    for (src, event, max) in &quotas {
        assert_eq!(*src, Host::S1.addr().to_string(), "the refused subscriber");
        assert_eq!(
            event, "3",
            "natQuotaExceededEvent: maximum entries per user"
        );
        assert_eq!(*max, held.to_string(), "maxEntriesPerUser: 2 blocks of 8");
    }
    drop(s1_flows);
}

/// The collector is down (nothing listens on its port; e2 answers ICMP
/// port unreachable): subscribers' flows still cross the NAT, `cgnat
/// stats` answers and its forwarding counters grow, and the daemon counts
/// the records it could not deliver (cgnat_log_failures_total on its
/// metrics endpoint). The NAT log has one output at a time, so there is
/// no other output to keep working beside IPFIX.
#[test]
fn ipfix_collector_down_keeps_the_nat_serving_and_counts_the_losses() {
    let Some(mut bed) = Bed::new() else { return };
    let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9469);
    let collector_addr = Host::E2.sock(4740);
    let text = format!(
        "{}\n[log]\noutput = \"ipfix\"\ncollector = \"{collector_addr}\"\n\
         [metrics]\nlisten = \"{listen}\"\n",
        bed.tb.config_toml()
    );
    bed.start_text("ipfix-down.toml", &text);
    let refl = UdpReflector::start(&bed.tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let metrics = |bed: &Bed| {
        let body = scrape(&bed.tb, listen).unwrap_or_else(|e| panic!("scrape: {e}"));
        let m = parse_metrics(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let get =
            |n: &str| metric(&m, n, &[]).unwrap_or_else(|| panic!("no {n} in:\n{body}")) as u64;
        (
            get("cgnat_log_records_total"),
            get("cgnat_log_failures_total"),
        )
    };

    let mut flows = Vec::new();
    let mut fwd_out = Vec::new();
    let mut failures = Vec::new();
    for round in 0..5u16 {
        for i in 0..10u16 {
            let port = 5000 + round * 10 + i;
            let s = bed
                .tb
                .udp_socket(Host::S1, Host::S1.sock(port))
                .expect("s1 socket");
            let seen = udp_exchange(&s, refl.addr(), b"down", T)
                .unwrap_or_else(|e| panic!("flow from {port} with the collector down: {e}"));
            assert!(in_pool(*seen.observed.ip()), "not translated: {seen:?}");
            flows.push(s);
        }
        std::thread::sleep(Duration::from_millis(300));
        fwd_out.push(bed.counters().get("fwd_out").copied().unwrap_or(0));
        failures.push(metrics(&bed));
    }
    eprintln!("fwd_out after each round of 10 flows: {fwd_out:?}");
    eprintln!("(log records, log failures) after each round: {failures:?}");
    assert!(
        fwd_out.windows(2).all(|w| w[1] >= w[0] + 10),
        "forwarding counters did not grow by the flows: {fwd_out:?}"
    );
    let (_, failed) = *failures.last().unwrap();
    assert!(
        failed > 0,
        "50 NAT44 BIB creates to a collector that is down, none counted lost: \
         (records, failures) {failures:?}\n{}",
        bed.log()
    );
    assert!(bed.alive(), "the daemon died: {}", bed.log());
}

fn has_tshark() -> bool {
    if Command::new("tshark").arg("--version").output().is_ok() {
        return true;
    }
    cannot_run("e2e_ipfix: needs tshark (`make deps`)");
    false
}

/// Datagrams arriving on `sock` until one holds a Data Set `last` and 500
/// ms more have passed, or `timeout`.
fn collect(sock: &UdpSocket, last: u16, timeout: Duration) -> Vec<(SocketAddrV4, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut until = deadline;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Some(left) =
        Some(until.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
    {
        sock.set_read_timeout(Some(left)).expect("SO_RCVTIMEO");
        if let Ok((n, SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
            let d = buf[..n].to_vec();
            if has_set(&d, last) {
                until = until.min(Instant::now() + Duration::from_millis(500));
            }
            out.push((from, d));
        }
    }
    out
}

/// `tshark -r pcap -T fields` with `fields`: one row per frame, one
/// column per field, the values of a field in one frame joined by ','.
fn tshark_fields(pcap: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut argv = vec!["-r".to_string(), pcap.display().to_string()];
    argv.extend(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"].map(String::from));
    for f in fields {
        argv.extend(["-e".to_string(), f.to_string()]);
    }
    let out = Command::new("tshark")
        .args(&argv)
        .output()
        .expect("running tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("tshark fields {fields:?}:\n{text}");
    text.lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// tshark decodes every frame of `pcap` without a malformed packet or an
/// expert item of severity error.
fn assert_well_formed(pcap: &Path) {
    let out = Command::new("tshark")
        .args([
            "-r",
            &pcap.display().to_string(),
            "-Y",
            "_ws.malformed || _ws.expert.severity >= error",
        ])
        .output()
        .expect("running tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = String::from_utf8_lossy(&out.stdout);
    assert!(
        bad.trim().is_empty(),
        "tshark flags these frames malformed or in error:\n{bad}"
    );
}

/// tshark's verbose decode of the frames matching `filter`, from the first
/// line containing `from`, `lines` lines.
fn tshark_verbose(pcap: &Path, filter: &str, from: &str, lines: usize) -> String {
    let out = Command::new("tshark")
        .args([
            "-r",
            &pcap.display().to_string(),
            "-V",
            "-c",
            "1",
            "-Y",
            filter,
        ])
        .output()
        .expect("running tshark -V");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .skip_while(|l| !l.contains(from))
        .take(lines)
        .collect::<Vec<_>>()
        .join("\n")
}

/// True if the IPFIX message `m` holds a Set with this ID (RFC 7011
/// sections 3.1 and 3.3.2).
fn has_set(m: &[u8], id: u16) -> bool {
    let mut at = 16;
    while at + 4 <= m.len() {
        let set = u16::from_be_bytes([m[at], m[at + 1]]);
        let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
        if set == id {
            return true;
        }
        if len < 4 {
            return false;
        }
        at += len;
    }
    false
}

/// A pcap file (LINKTYPE_RAW: IPv4 packets) of the datagrams as they
/// reached `to`, with IPv4 and UDP headers rebuilt around each payload.
fn pcap_file(datagrams: &[(SocketAddrV4, Vec<u8>)], to: SocketAddrV4) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]); // thiszone, sigfigs
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    for (i, (from, payload)) in datagrams.iter().enumerate() {
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&from.ip().octets());
        ip.extend_from_slice(&to.ip().octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(&from.port().to_be_bytes());
        ip.extend_from_slice(&to.port().to_be_bytes());
        ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]); // no UDP checksum (RFC 768)
        ip.extend_from_slice(payload);
        f.extend_from_slice(&(i as u32).to_le_bytes()); // seconds: the order
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(total as u32).to_le_bytes());
        f.extend_from_slice(&(total as u32).to_le_bytes());
        f.extend_from_slice(&ip);
    }
    f
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
