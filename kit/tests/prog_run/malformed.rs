//! Frames that must not be translated: malformed, not IPv4, not NAT's.

use super::*;

/// Frames that must not be translated: exact verdicts and counters.
#[test]
fn malformed_and_other() {
    // ICMP generation off: expired or oversized packets are dropped
    let config = config_text("", "[icmp]\nrate_limit = 0");
    table_test("malformed_and_other", "m", &config, malformed_rows);
}

fn set16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// `base` changed by `edit`.
fn edited(base: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut f = base.to_vec();
    edit(&mut f);
    f
}

/// A frame from the subscriber side that must come back untouched with
/// `verdict`, counted under `counter`.
fn int<'a>(name: &str, frame: Vec<u8>, verdict: u32, counter: &'static str) -> Row<'a> {
    Case::int(name, frame).verdict(verdict, counter).into()
}

/// [`int`] from the internet side.
fn ext<'a>(name: &str, frame: Vec<u8>, verdict: u32, counter: &'static str) -> Row<'a> {
    Case::ext(name, frame).verdict(verdict, counter).into()
}

/// BPF_PROG_TEST_RUN refuses an XDP frame shorter than an Ethernet header
/// with EINVAL before the program runs: the run must fail exactly so, and
/// no counter may move (a frame the program saw is counted).
fn refused<'a>(short: Vec<u8>) -> Row<'a> {
    step(move |h, _| {
        let before = h.counters();
        let r = match h.test_run(Side::Internal, Port::Int0, &short) {
            Err(e) if e.contains("os error 22") => {
                let after = h.counters();
                if after == before {
                    Ok(())
                } else {
                    Err(format!(
                        "counters moved for a refused frame: {before:?} -> {after:?}"
                    ))
                }
            }
            Err(e) => Err(format!("10-byte frame: {e} (expected EINVAL)")),
            Ok((v, _)) => Err(format!(
                "10-byte frame reached the program: {} (the kernel must refuse it with EINVAL)",
                verdict_name(v)
            )),
        };
        h.check("10-byte frame refused with EINVAL, nothing counted", r);
    })
}

/// A packet to the router itself that must not create a binding for
/// (`src`, `id_or_port`, `proto`).
fn local<'a>(name: &str, p: Pkt, id_or_port: u16, what: &'static str) -> Row<'a> {
    let q = p.clone();
    Case::int(name, p.bytes())
        .verdict(XDP_PASS, "pass_local")
        .after(move |h| {
            ensure!(
                h.binding_out(q.src, id_or_port, q.proto()).is_none(),
                "a binding was created for {what}"
            );
            Ok(q.bytes())
        })
        .into()
}

fn malformed_rows(_: &NetNs) -> Vec<Row<'_>> {
    use Ipv4Addr as A;
    let udp = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"payload!"));
    let good = udp.bytes();
    let ip = udp.ip_offset();
    let l4 = udp.l4_offset();
    let tcp = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
    let tcp_good = tcp.bytes();
    let tl4 = tcp.l4_offset();
    let icmp = from_sub(Pkt::icmp(H11, R10, 8, 7, 1));
    let opts = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"opts").options(&[1, 1, 1, 0]));
    let pool1 = A::new(203, 0, 113, 1);
    let outsider = A::new(10, 1, 2, 3);
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&mac_of(H11));
    arp.extend_from_slice(&H11.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&ROUTER_INT.octets());
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]);
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    v6.extend_from_slice(&[0x13, 0x88, 0x0d, 0x96, 0, 8, 0, 0]);
    let gre = [0u8, 0, 0x08, 0, 0x45, 0, 0, 20];
    let (drop, pass) = (XDP_DROP, XDP_PASS);
    vec![
        // A wrong IPv4 header checksum: never translated (RFC 1812 5.2.2),
        // with and without options, from either side.
        int(
            "IPv4 header checksum wrong (source bit flipped)",
            edited(&good, |f| f[ip + 12] ^= 0x01), // flipped in transit
            drop,
            "drop_ip_checksum",
        ),
        int(
            "IPv4 header checksum wrong in the options",
            edited(&opts.bytes(), |f| f[ip + 21] ^= 0x80),
            drop,
            "drop_ip_checksum",
        ),
        ext(
            "inbound, IPv4 header checksum wrong",
            edited(
                &from_net(Pkt::udp((R10, 3478), (ROUTER_EXT, 5000), b"in")).bytes(),
                |f| f[ip + 10] ^= 0xff,
            ),
            drop,
            "drop_ip_checksum",
        ),
        refused(good[..10].to_vec()),
        int(
            "truncated Ethernet: 802.1Q tag cut off",
            edited(&good[..14], |f| set16(f, 12, ETH_P_8021Q)), // tag announced, frame ends
            drop,
            "drop_malformed",
        ),
        int(
            "truncated Ethernet: VLAN header half there",
            edited(&good[..14], |f| {
                set16(f, 12, ETH_P_8021Q);
                f.extend_from_slice(&[0x00, 0x64]); // TCI only, no inner EtherType
            }),
            drop,
            "drop_malformed",
        ),
        int(
            "EtherType IPv4 without IP header",
            good[..14].to_vec(),
            drop,
            "drop_malformed",
        ),
        int(
            "IPv4 header truncated (12 of 20 bytes)",
            good[..ip + 12].to_vec(),
            drop,
            "drop_malformed",
        ),
        int(
            "IHL 4",
            edited(&good, |f| {
                f[ip] = 0x44;
                fix_ip_csum(f, ip);
            }),
            drop,
            "drop_malformed",
        ),
        int(
            "IP version 6 under EtherType IPv4",
            edited(&good, |f| {
                f[ip] = 0x65;
                fix_ip_csum(f, ip);
            }),
            drop,
            "drop_malformed",
        ),
        int(
            "tot_len smaller than the IHL header",
            edited(&good, |f| {
                f[ip] = 0x46; // a 24-byte header in a 22-byte datagram
                set16(f, ip + 2, 22);
                fix_ip_csum(f, ip);
            }),
            drop,
            "drop_malformed",
        ),
        int(
            "tot_len one byte larger than the frame",
            edited(&good, |f| {
                set16(f, ip + 2, (good.len() - ip) as u16 + 1);
                fix_ip_csum(f, ip);
            }),
            drop,
            "drop_malformed",
        ),
        int(
            "UDP length larger than the IP payload",
            edited(&good, |f| set16(f, l4 + 4, (good.len() - l4) as u16 + 1)),
            drop,
            "drop_malformed",
        ),
        int(
            "UDP length 7",
            edited(&good, |f| set16(f, l4 + 4, 7)),
            drop,
            "drop_malformed",
        ),
        int(
            "UDP header beyond tot_len (padding after)",
            edited(&good, |f| {
                set16(f, ip + 2, 20 + 6); // UDP header cut by tot_len (frame longer)
                fix_ip_csum(f, ip);
            }),
            drop,
            "drop_malformed",
        ),
        int(
            "TCP doff 4",
            edited(&tcp_good, |f| f[tl4 + 12] = 4 << 4),
            drop,
            "drop_malformed",
        ),
        int(
            "TCP doff 6 past the segment",
            edited(&tcp_good, |f| f[tl4 + 12] = 6 << 4), // options claimed, 20 bytes
            drop,
            "drop_malformed",
        ),
        int(
            "TCP header beyond tot_len (padding after)",
            edited(&tcp_good, |f| {
                set16(f, ip + 2, 20 + 12);
                fix_ip_csum(f, ip);
            }),
            drop,
            "drop_malformed",
        ),
        int(
            "ICMP header truncated (6 of 8 bytes)",
            edited(&icmp.bytes(), |f| {
                f.truncate(icmp.l4_offset() + 6);
                set16(f, ip + 2, 26);
                fix_ip_csum(f, ip);
            }),
            drop,
            "drop_malformed",
        ),
        // (translated fragments are in the `fragments` test)
        int(
            "later fragment from a non-subscriber source",
            Pkt::udp((outsider, 5000), (R10, 3478), b"later fragment")
                .macs(mac_of(H11), INT0_MAC)
                .frag(185)
                .bytes(),
            drop,
            "drop_spoofed",
        ),
        ext(
            "later fragment from the internet, first never seen: held",
            from_net(Pkt::udp((R10, 3478), (pool1, 5000), b"frag"))
                .frag(185)
                .bytes(),
            drop,
            "frag_held",
        ),
        ext(
            "first fragment from the internet to an unbound port",
            from_net(Pkt::udp((R10, 3478), (pool1, 5000), b"frag"))
                .frag(IP_MF)
                .bytes(),
            drop,
            "drop_no_binding",
        ),
        int(
            "spoofed source 10.1.2.3 on the internal side",
            Pkt::udp((outsider, 5000), (R10, 3478), b"spoofed")
                .macs(mac_of(H11), INT0_MAC)
                .bytes(),
            drop,
            "drop_spoofed",
        ),
        int(
            "non-subscriber source to the router itself",
            Pkt::udp((outsider, 5000), (ROUTER_INT, 53), b"to router")
                .macs(mac_of(H11), INT0_MAC)
                .bytes(),
            pass,
            "pass_local",
        ),
        int(
            "ARP request",
            eth([0xff; 6], mac_of(H11), None, ETH_P_ARP, &arp),
            pass,
            "pass_not_ipv4",
        ),
        int(
            "802.1Q-tagged ARP",
            eth([0xff; 6], mac_of(H11), Some(100), ETH_P_ARP, &arp),
            pass,
            "pass_not_ipv4",
        ),
        int(
            "IPv6 UDP",
            eth(INT0_MAC, mac_of(H11), None, ETH_P_IPV6, &v6),
            pass,
            "pass_not_ipv4",
        ),
        ext(
            "IPv6 on the external side",
            eth(EXT0_MAC, mac_of(R10), None, ETH_P_IPV6, &v6),
            pass,
            "pass_not_ipv4",
        ),
        local(
            "UDP from a subscriber to the router 100.64.0.1",
            from_sub(Pkt::udp((H11, 6000), (ROUTER_INT, 53), b"dns query")),
            6000,
            "a packet to the router",
        ),
        local(
            "ICMP echo from a subscriber to the router",
            from_sub(Pkt::icmp(H11, ROUTER_INT, 8, 9, 1)),
            9,
            "a ping to the router",
        ),
        int(
            "GRE from a subscriber to the router",
            from_sub(Pkt::raw(H11, ROUTER_INT, PROTO_GRE, &gre)).bytes(),
            pass,
            "pass_local",
        ),
        int(
            "GRE (proto 47) from a subscriber to outside",
            from_sub(Pkt::raw(H11, R10, PROTO_GRE, &gre)).bytes(),
            drop,
            "drop_proto",
        ),
        ext(
            "GRE from outside to a pool address",
            from_net(Pkt::raw(R10, pool1, PROTO_GRE, &gre)).bytes(),
            drop,
            "drop_proto",
        ),
        int(
            "ICMP timestamp (type 13) from a subscriber",
            from_sub(Pkt::icmp(H11, R10, 13, 1, 1)).bytes(),
            drop,
            "drop_icmp_type",
        ),
        int(
            "ICMP echo reply from a subscriber",
            from_sub(Pkt::icmp(H11, R10, 0, 1, 1)).bytes(),
            drop,
            "drop_icmp_type",
        ),
        ext(
            "ICMP echo request from outside to a pool address",
            from_net(Pkt::icmp(R10, pool1, 8, 1, 1)).bytes(),
            drop,
            "drop_no_binding",
        ),
        int(
            "TCP RST from a subscriber without session",
            from_sub(Pkt::tcp((H11, 40001), (R10, 80), TCP_RST | TCP_ACK)).bytes(),
            drop,
            "drop_tcp_no_session",
        ),
        ext(
            "inbound malformed (IHL 4)",
            edited(
                &from_net(Pkt::udp((R10, 3478), (pool1, 5000), b"x")).bytes(),
                |f| {
                    f[14] = 0x44;
                    fix_ip_csum(f, 14);
                },
            ),
            drop,
            "drop_malformed",
        ),
        int(
            "TTL 1 outbound, ICMP generation off",
            from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 1"))
                .ttl(1)
                .bytes(),
            drop,
            "drop_ttl",
        ),
        int(
            "TTL 0 outbound, ICMP generation off",
            from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 0"))
                .ttl(0)
                .bytes(),
            drop,
            "drop_ttl",
        ),
        int(
            "1600 bytes with DF, ICMP generation off",
            from_sub(Pkt::udp((H11, 5004), (R10, 3478), &[1; 1572])).bytes(),
            drop,
            "drop_frag_needed",
        ),
        ext(
            "inbound to an address outside every prefix",
            from_net(Pkt::udp((R10, 3478), (A::new(8, 8, 8, 8), 53), b"transit")).bytes(),
            pass,
            "pass_not_nat",
        ),
        check("no packet of this table created a binding", |h, _| {
            let n = h.bindings_out();
            ensure!(n == 0, "{n} outbound halves");
            Ok(())
        }),
    ]
}
