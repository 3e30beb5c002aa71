//! ICMP errors about translated packets (RFC 5508): the rows of the
//! translation table that cover them.

use super::translation::{sent, session_row};
use super::*;

/// An ICMP error from outside about what left, and what it must become
/// for the subscriber: `quote` of the datagram as sent and as it was
/// before translation.
fn error_in<'a>(
    name: &'static str,
    ty: u8,
    code: u8,
    pkts: impl FnOnce(&Learned) -> (Pkt, Pkt) + 'a,
    quote: impl Fn(&Pkt) -> Vec<u8> + 'a,
) -> Row<'a> {
    with(move |l| {
        let (sent, orig) = pkts(l);
        let p = from_net(Pkt::icmp_msg(
            R10,
            sent.src,
            ty,
            code,
            (0, 0),
            &quote(&sent),
        ));
        let exp = Pkt::icmp_msg(R10, orig.src, ty, code, (0, 0), &quote(&orig))
            .ttl(p.ttl - 1)
            .macs(INT0_MAC, mac_of(orig.src))
            .bytes();
        Case::ext(name, p.bytes())
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(exp)
    })
}

/// The exact bytes of an ICMP error from R10 about `sent`, quoting `quote`.
/// An IPv4 Router Alert option (RFC 2113), 4 bytes.
const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0, 0];

fn error_bytes(to: Ipv4Addr, quote: &[u8]) -> Vec<u8> {
    from_net(Pkt::icmp_msg(R10, to, 3, 3, (0, 0), quote)).bytes()
}

pub(super) fn icmp_error_rows<'a>() -> Vec<Row<'a>> {
    let untranslated = |l: &Learned| sent(l).with_src(H11, 5000);
    vec![
        // port unreachable from 198.51.100.10 about .11's translated
        // datagram
        error_in(
            "inbound ICMP port unreachable: outer dst and quoted source restored",
            3,
            3,
            move |l| (sent(l), untranslated(l)),
            Pkt::quote,
        ),
        with(|l| {
            let free = l.ep("free");
            let stray = Pkt::udp(free, (R10, 3478), b"?").ttl(63);
            Case::ext(
                "inbound ICMP error quoting an unbound port",
                error_bytes(free.0, &stray.quote()),
            )
            .verdict(XDP_DROP, "drop_no_binding")
        }),
        // RFC 5508 REQ-3: errors with a bad ICMP checksum or a bad embedded
        // IP header checksum are dropped; an odd-length message is summed
        // right
        with(|l| {
            let mut bad = error_bytes(l.ep("e11").0, &sent(l).quote());
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            Case::ext("inbound ICMP error with a bad ICMP checksum", bad)
                .verdict(XDP_DROP, "drop_icmp_csum")
        }),
        with(|l| {
            let mut q = sent(l).quote();
            q[10] ^= 0xff; // embedded IP header checksum
            Case::ext(
                "inbound ICMP error with a bad embedded IP checksum",
                error_bytes(l.ep("e11").0, &q),
            )
            .verdict(XDP_DROP, "drop_icmp_csum")
        }),
        // the message is summed in 32-bit words, then a 16-bit and an
        // 8-bit tail; the embedded header's options are summed too
        [
            ("inbound ICMP error of odd length (13-byte L4 quote)", 13),
            (
                "inbound ICMP error quoting 14 bytes of L4 (a 16-bit tail)",
                14,
            ),
            (
                "inbound ICMP error quoting 15 bytes of L4 (16- and 8-bit tails)",
                15,
            ),
        ]
        .into_iter()
        .map(|(name, n)| {
            error_in(
                name,
                3,
                3,
                move |l| (sent(l), untranslated(l)),
                move |p| p.quote_len(n),
            )
        })
        .collect::<Vec<_>>()
        .into(),
        error_in(
            "inbound ICMP error quoting a datagram with IP options",
            3,
            3,
            move |l| {
                let opts = ROUTER_ALERT;
                (sent(l).options(&opts), untranslated(l).options(&opts))
            },
            Pkt::quote,
        ),
        with(|l| {
            let mut bad = error_bytes(l.ep("e11").0, &sent(l).quote_len(15));
            let at = bad.len() - 2;
            bad[at] ^= 0x01;
            Case::ext("inbound ICMP error with a bad byte in its 16-bit tail", bad)
                .verdict(XDP_DROP, "drop_icmp_csum")
        }),
        with(|l| {
            let mut q = sent(l).options(&ROUTER_ALERT).quote();
            q[22] ^= 0x01; // the embedded header's option, its sum now wrong
            Case::ext(
                "inbound ICMP error whose embedded IP options do not match their checksum",
                error_bytes(l.ep("e11").0, &q),
            )
            .verdict(XDP_DROP, "drop_icmp_csum")
        }),
        // .11 answers the datagram it got from 198.51.100.20:9999 with an
        // error
        with(|l| {
            let e11 = l.ep("e11");
            let got = Pkt::udp((R20, 9999), (H11, 5000), b"unsolicited").ttl(63);
            let p = from_sub(Pkt::icmp_msg(H11, R20, 3, 3, (0, 0), &got.quote()));
            let exp = Pkt::icmp_msg(
                e11.0,
                R20,
                3,
                3,
                (0, 0),
                &got.clone().with_dst(e11.0, e11.1).quote(),
            )
            .ttl(p.ttl - 1)
            .macs(EXT0_MAC, mac_of(R20))
            .bytes();
            Case::int(
                "outbound ICMP port unreachable: outer src and quoted dst translated",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(exp)
        }),
        // time exceeded from a router on the path about .11's echo request
        // (traceroute with ping): the quoted ICMP identifier and checksum
        error_in(
            "inbound time exceeded about an echo request: identifier restored",
            11,
            0,
            |l| {
                let (e11, ei) = (l.ep("e11"), l.ep("ei"));
                let echo = Pkt::icmp(e11.0, R10, 8, ei.1, 1).ttl(1);
                let back = echo.clone().with_src(H11, 0x4242);
                (echo, back)
            },
            Pkt::quote,
        ),
        // about .11's TCP SYN: 8 quoted bytes (no TCP checksum in the
        // quote), then a longer quote that holds the checksum, which must
        // follow
        error_in(
            "inbound host unreachable about a TCP SYN, 8-byte L4 quote",
            3,
            1,
            |l| syn_and_back(l.ep("et")),
            |p| p.quote_len(8),
        ),
        error_in(
            "inbound host unreachable about a TCP SYN, 20-byte L4 quote",
            3,
            1,
            |l| syn_and_back(l.ep("et")),
            |p| p.quote_len(20),
        ),
        // about a UDP datagram sent without checksum: the quoted 0 stays 0
        learn_ext(
            "e5001",
            &from_sub(Pkt::udp((H11, 5001), (R10, 3478), b"no checksum").no_udp_csum()),
        ),
        error_in(
            "inbound port unreachable about a checksum-less UDP datagram",
            3,
            3,
            |l| {
                let e5001 = l.ep("e5001");
                let q5001 = from_sub(Pkt::udp((H11, 5001), (R10, 3478), b"no checksum"))
                    .no_udp_csum()
                    .ttl(63);
                (q5001.clone().with_src(e5001.0, e5001.1), q5001)
            },
            Pkt::quote,
        ),
        // too big for int0 (MTU 1500) on the way in, DF set
        with(|l| {
            let p = from_net(Pkt::udp((R10, 3478), l.ep("e11"), &[0x42; 1572]));
            Case::ext(
                "inbound 1600 bytes with DF: fragmentation needed from ext0's address",
                p.bytes(),
            )
            .verdict(XDP_TX, "icmp_frag_needed")
            .frame(generated_error(&p, ROUTER_EXT, 3, 4, 1500))
        }),
        // FIN from the subscriber is recorded on the TCP session
        with(|l| {
            let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_FIN | TCP_ACK));
            Case::int("outbound FIN on the TCP session", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound(&p, l.ep("et")))
        }),
        session_row(
            "TCP session has FIN_OUT",
            "et",
            (R10, 80),
            PROTO_TCP,
            (H11, 40000),
            0,
            SYN_OUT | SYN_IN | FIN_OUT,
        ),
    ]
}

/// .11's TCP SYN as it left from `et`, and as it was sent.
fn syn_and_back(et: Ep) -> (Pkt, Pkt) {
    let syn = Pkt::tcp(et, (R10, 80), TCP_SYN).ttl(63);
    let back = syn.clone().with_src(H11, 40000);
    (syn, back)
}
