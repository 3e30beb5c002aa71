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

fn malformed_rows(_: &NetNs) -> Vec<Row<'_>> {
    let mut rows: Vec<Row> = Vec::new();
    let udp = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"payload!"));
    let good = udp.bytes();
    let ip = udp.ip_offset();
    let l4 = udp.l4_offset();
    let tcp = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
    let tcp_good = tcp.bytes();

    // A wrong IPv4 header checksum: never translated (RFC 1812 5.2.2), with
    // and without options, from either side.
    let mut f = good.clone();
    f[ip + 12] ^= 0x01; // a source address bit flipped in transit
    rows.push(
        Case::int("IPv4 header checksum wrong (source bit flipped)", f)
            .verdict(XDP_DROP, "drop_ip_checksum")
            .into(),
    );
    let opt = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"opts").options(&[1, 1, 1, 0]));
    let mut f = opt.bytes();
    f[ip + 21] ^= 0x80; // inside the options
    rows.push(
        Case::int("IPv4 header checksum wrong in the options", f)
            .verdict(XDP_DROP, "drop_ip_checksum")
            .into(),
    );
    let mut f = from_net(Pkt::udp((R10, 3478), (ROUTER_EXT, 5000), b"in")).bytes();
    f[ip + 10] ^= 0xff;
    rows.push(
        Case::ext("inbound, IPv4 header checksum wrong", f)
            .verdict(XDP_DROP, "drop_ip_checksum")
            .into(),
    );

    // BPF_PROG_TEST_RUN refuses an XDP frame shorter than an Ethernet
    // header with EINVAL before the program runs: the run must fail exactly
    // so, and no counter may move (a frame the program saw is counted).
    let short = good[..10].to_vec();
    rows.push(step(move |h, _| {
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
    }));

    let mut f = good[..14].to_vec();
    set16(&mut f, 12, ETH_P_8021Q); // tag announced, frame ends
    rows.push(
        Case::int("truncated Ethernet: 802.1Q tag cut off", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = good[..14].to_vec();
    set16(&mut f, 12, ETH_P_8021Q);
    f.extend_from_slice(&[0x00, 0x64]); // TCI only, no inner EtherType
    rows.push(
        Case::int("truncated Ethernet: VLAN header half there", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    rows.push(
        Case::int("EtherType IPv4 without IP header", good[..14].to_vec())
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    rows.push(
        Case::int(
            "IPv4 header truncated (12 of 20 bytes)",
            good[..ip + 12].to_vec(),
        )
        .verdict(XDP_DROP, "drop_malformed")
        .into(),
    );

    let mut f = good.clone();
    f[ip] = 0x44;
    fix_ip_csum(&mut f, ip);
    rows.push(
        Case::int("IHL 4", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = good.clone();
    f[ip] = 0x65;
    fix_ip_csum(&mut f, ip);
    rows.push(
        Case::int("IP version 6 under EtherType IPv4", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = good.clone();
    f[ip] = 0x46; // a 24-byte header in a 22-byte datagram
    set16(&mut f, ip + 2, 22);
    fix_ip_csum(&mut f, ip);
    rows.push(
        Case::int("tot_len smaller than the IHL header", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = good.clone();
    let tot = (good.len() - ip) as u16;
    set16(&mut f, ip + 2, tot + 1);
    fix_ip_csum(&mut f, ip);
    rows.push(
        Case::int("tot_len one byte larger than the frame", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = good.clone();
    let ulen = (good.len() - l4) as u16;
    set16(&mut f, l4 + 4, ulen + 1);
    rows.push(
        Case::int("UDP length larger than the IP payload", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = good.clone();
    set16(&mut f, l4 + 4, 7);
    rows.push(
        Case::int("UDP length 7", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = good.clone();
    set16(&mut f, ip + 2, 20 + 6); // UDP header cut by tot_len (frame longer)
    fix_ip_csum(&mut f, ip);
    rows.push(
        Case::int("UDP header beyond tot_len (padding after)", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );

    let tl4 = tcp.l4_offset();
    let mut f = tcp_good.clone();
    f[tl4 + 12] = 4 << 4;
    rows.push(
        Case::int("TCP doff 4", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = tcp_good.clone();
    f[tl4 + 12] = 6 << 4; // options claimed, segment has 20 bytes
    rows.push(
        Case::int("TCP doff 6 past the segment", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let mut f = tcp_good.clone();
    set16(&mut f, ip + 2, 20 + 12);
    fix_ip_csum(&mut f, ip);
    rows.push(
        Case::int("TCP header beyond tot_len (padding after)", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );
    let icmp = from_sub(Pkt::icmp(H11, R10, 8, 7, 1));
    let mut f = icmp.bytes();
    f.truncate(icmp.l4_offset() + 6);
    set16(&mut f, ip + 2, 26);
    fix_ip_csum(&mut f, ip);
    rows.push(
        Case::int("ICMP header truncated (6 of 8 bytes)", f)
            .verdict(XDP_DROP, "drop_malformed")
            .into(),
    );

    // (translated fragments are in the `fragments` test)
    let later = Pkt::udp(
        (Ipv4Addr::new(10, 1, 2, 3), 5000),
        (R10, 3478),
        b"later fragment",
    )
    .macs(mac_of(H11), INT0_MAC)
    .frag(185);
    rows.push(
        Case::int("later fragment from a non-subscriber source", later.bytes())
            .verdict(XDP_DROP, "drop_spoofed")
            .into(),
    );
    let later = from_net(Pkt::udp(
        (R10, 3478),
        (Ipv4Addr::new(203, 0, 113, 1), 5000),
        b"frag",
    ))
    .frag(185);
    rows.push(
        Case::ext(
            "later fragment from the internet, first never seen: held",
            later.bytes(),
        )
        .verdict(XDP_DROP, "frag_held")
        .into(),
    );
    let first = from_net(Pkt::udp(
        (R10, 3478),
        (Ipv4Addr::new(203, 0, 113, 1), 5000),
        b"frag",
    ))
    .frag(IP_MF);
    rows.push(
        Case::ext(
            "first fragment from the internet to an unbound port",
            first.bytes(),
        )
        .verdict(XDP_DROP, "drop_no_binding")
        .into(),
    );

    let spoof = Pkt::udp((Ipv4Addr::new(10, 1, 2, 3), 5000), (R10, 3478), b"spoofed")
        .macs(mac_of(H11), INT0_MAC);
    rows.push(
        Case::int(
            "spoofed source 10.1.2.3 on the internal side",
            spoof.bytes(),
        )
        .verdict(XDP_DROP, "drop_spoofed")
        .into(),
    );
    let spoof_local = Pkt::udp(
        (Ipv4Addr::new(10, 1, 2, 3), 5000),
        (ROUTER_INT, 53),
        b"to router",
    )
    .macs(mac_of(H11), INT0_MAC);
    rows.push(
        Case::int(
            "non-subscriber source to the router itself",
            spoof_local.bytes(),
        )
        .verdict(XDP_PASS, "pass_local")
        .into(),
    );

    let mut arp = Vec::new();
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&mac_of(H11));
    arp.extend_from_slice(&H11.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&ROUTER_INT.octets());
    rows.push(
        Case::int(
            "ARP request",
            eth([0xff; 6], mac_of(H11), None, ETH_P_ARP, &arp),
        )
        .verdict(XDP_PASS, "pass_not_ipv4")
        .into(),
    );
    rows.push(
        Case::int(
            "802.1Q-tagged ARP",
            eth([0xff; 6], mac_of(H11), Some(100), ETH_P_ARP, &arp),
        )
        .verdict(XDP_PASS, "pass_not_ipv4")
        .into(),
    );
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]);
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    v6.extend_from_slice(&[0x13, 0x88, 0x0d, 0x96, 0, 8, 0, 0]);
    rows.push(
        Case::int(
            "IPv6 UDP",
            eth(INT0_MAC, mac_of(H11), None, ETH_P_IPV6, &v6),
        )
        .verdict(XDP_PASS, "pass_not_ipv4")
        .into(),
    );
    rows.push(
        Case::ext(
            "IPv6 on the external side",
            eth(EXT0_MAC, mac_of(R10), None, ETH_P_IPV6, &v6),
        )
        .verdict(XDP_PASS, "pass_not_ipv4")
        .into(),
    );

    let local = from_sub(Pkt::udp((H11, 6000), (ROUTER_INT, 53), b"dns query"));
    let q = local.clone();
    rows.push(
        Case::int(
            "UDP from a subscriber to the router 100.64.0.1",
            local.bytes(),
        )
        .verdict(XDP_PASS, "pass_local")
        .after(move |h| {
            ensure!(
                h.bind_out(q.src, q.sport(), PROTO_UDP).is_none(),
                "a binding was created for a packet to the router"
            );
            Ok(q.bytes())
        })
        .into(),
    );
    let ping_local = from_sub(Pkt::icmp(H11, ROUTER_INT, 8, 9, 1));
    let q = ping_local.clone();
    rows.push(
        Case::int(
            "ICMP echo from a subscriber to the router",
            ping_local.bytes(),
        )
        .verdict(XDP_PASS, "pass_local")
        .after(move |h| {
            ensure!(
                h.bind_out(q.src, 9, PROTO_ICMP).is_none(),
                "a binding was created for a ping to the router"
            );
            Ok(q.bytes())
        })
        .into(),
    );
    let gre = [0u8, 0, 0x08, 0, 0x45, 0, 0, 20];
    rows.push(
        Case::int(
            "GRE from a subscriber to the router",
            from_sub(Pkt::raw(H11, ROUTER_INT, PROTO_GRE, &gre)).bytes(),
        )
        .verdict(XDP_PASS, "pass_local")
        .into(),
    );
    rows.push(
        Case::int(
            "GRE (proto 47) from a subscriber to outside",
            from_sub(Pkt::raw(H11, R10, PROTO_GRE, &gre)).bytes(),
        )
        .verdict(XDP_DROP, "drop_proto")
        .into(),
    );
    rows.push(
        Case::ext(
            "GRE from outside to a pool address",
            from_net(Pkt::raw(
                R10,
                Ipv4Addr::new(203, 0, 113, 1),
                PROTO_GRE,
                &gre,
            ))
            .bytes(),
        )
        .verdict(XDP_DROP, "drop_proto")
        .into(),
    );
    rows.push(
        Case::int(
            "ICMP timestamp (type 13) from a subscriber",
            from_sub(Pkt::icmp(H11, R10, 13, 1, 1)).bytes(),
        )
        .verdict(XDP_DROP, "drop_icmp_type")
        .into(),
    );
    rows.push(
        Case::int(
            "ICMP echo reply from a subscriber",
            from_sub(Pkt::icmp(H11, R10, 0, 1, 1)).bytes(),
        )
        .verdict(XDP_DROP, "drop_icmp_type")
        .into(),
    );
    rows.push(
        Case::ext(
            "ICMP echo request from outside to a pool address",
            from_net(Pkt::icmp(R10, Ipv4Addr::new(203, 0, 113, 1), 8, 1, 1)).bytes(),
        )
        .verdict(XDP_DROP, "drop_no_binding")
        .into(),
    );
    rows.push(
        Case::int(
            "TCP RST from a subscriber without session",
            from_sub(Pkt::tcp((H11, 40001), (R10, 80), TCP_RST | TCP_ACK)).bytes(),
        )
        .verdict(XDP_DROP, "drop_tcp_no_session")
        .into(),
    );
    rows.push(
        Case::ext("inbound malformed (IHL 4)", {
            let mut f = from_net(Pkt::udp(
                (R10, 3478),
                (Ipv4Addr::new(203, 0, 113, 1), 5000),
                b"x",
            ))
            .bytes();
            f[14] = 0x44;
            fix_ip_csum(&mut f, 14);
            f
        })
        .verdict(XDP_DROP, "drop_malformed")
        .into(),
    );
    rows.push(
        Case::int(
            "TTL 1 outbound, ICMP generation off",
            from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 1"))
                .ttl(1)
                .bytes(),
        )
        .verdict(XDP_DROP, "drop_ttl")
        .into(),
    );
    rows.push(
        Case::int(
            "TTL 0 outbound, ICMP generation off",
            from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 0"))
                .ttl(0)
                .bytes(),
        )
        .verdict(XDP_DROP, "drop_ttl")
        .into(),
    );
    rows.push(
        Case::int(
            "1600 bytes with DF, ICMP generation off",
            from_sub(Pkt::udp((H11, 5004), (R10, 3478), &[1; 1572])).bytes(),
        )
        .verdict(XDP_DROP, "drop_frag_needed")
        .into(),
    );
    rows.push(
        Case::ext(
            "inbound to an address outside every prefix",
            from_net(Pkt::udp(
                (R10, 3478),
                (Ipv4Addr::new(8, 8, 8, 8), 53),
                b"transit",
            ))
            .bytes(),
        )
        .verdict(XDP_PASS, "pass_not_nat")
        .into(),
    );

    rows.push(check(
        "no packet of this table created a binding",
        |h, _| {
            let n = Harness::count_entries(&h.tables.bind_out);
            ensure!(n == 0, "bind_out has {n} entries");
            Ok(())
        },
    ));
    rows
}
