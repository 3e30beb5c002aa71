//! The NAT log as IPFIX (RFC 7011, RFC 8158) end to end: cgnat runs with
//! `log.output = "ipfix"` and a collector on an external host of the test
//! bed (a UDP socket this test reads); a subscriber's UDP flow creates a
//! binding; what the collector received is written to a pcap file and
//! decoded by tshark (its "cflow" dissector), an IPFIX implementation
//! independent of cgnat's. The Data Record must carry natEvent 8 (NAT44
//! BIB create), the subscriber's address and port, the external address
//! and port the far end saw, the protocol, and come after its template
//! (tshark decodes a Data Set only with the template it has already seen).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use cgnat_kit::testbed::{cannot_run, in_pool, udp_exchange, Host, Testbed, UdpReflector};

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
    let datagrams = collect(&collector, T);
    assert!(
        datagrams.iter().any(|(_, d)| has_set(d, 256)),
        "no Data Set 256 among {} datagrams; cgnat log:\n{}",
        datagrams.len(),
        cgnat.log()
    );
    let pcap = tb.dir().join("ipfix.pcap");
    std::fs::write(&pcap, pcap_file(&datagrams, collector_addr)).expect("writing the pcap");

    let mut argv = vec!["-r".to_string(), pcap.display().to_string()];
    argv.extend(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"].map(String::from));
    for f in FIELDS {
        argv.extend(["-e".to_string(), f.to_string()]);
    }
    let out = Command::new("tshark")
        .args(&argv)
        .output()
        .expect("running tshark");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("tshark fields {FIELDS:?}:\n{text}");
    let frames: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();

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

/// Datagrams arriving on `sock` until one holds Data Set 256 and 500 ms
/// more have passed, or `timeout`.
fn collect(sock: &UdpSocket, timeout: Duration) -> Vec<(SocketAddrV4, Vec<u8>)> {
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
            if has_set(&d, 256) {
                until = until.min(Instant::now() + Duration::from_millis(500));
            }
            out.push((from, d));
        }
    }
    out
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
