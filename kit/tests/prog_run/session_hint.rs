//! The session hint of a binding's outbound half (struct cgnat_bind_out):
//! set by an established packet while it is 0 and by the creation of a
//! session of an existing binding, and never trusted for a slot that does
//! not hold the packet's own session.

use cgnat::bpf::{bytes_of, from_bytes};
use libbpf_rs::{MapCore, MapFlags};

use super::*;

const SRC: Ep = (H11, 7000);

fn flow(rem: Ep, payload: &[u8]) -> Pkt {
    from_sub(Pkt::udp(SRC, rem, payload))
}

/// The key of the outbound half of SRC/UDP.
fn out_half() -> types::cgnat_session_key {
    types::cgnat_session_key {
        ext_addr: be32(SRC.0),
        ext_port: SRC.1.to_be(),
        proto: PROTO_UDP,
        kind: types::cgnat_slot_kind::CGNAT_KIND_BIND_OUT.0 as u8,
        ..Default::default()
    }
}

/// Where the outbound half of SRC/UDP lives: (segment, slot), and the
/// segment. The session table's API gives a half's binding only, so the
/// segments are read as they are.
fn find_half(h: &Harness) -> Result<(u32, usize, types::cgnat_session_seg), String> {
    let (_, segments) = h.tables.sessions.maps()[0];
    let want = out_half();
    for si in 0u32.. {
        let Some(v) = segments
            .lookup(bytes_of(&si), MapFlags::ANY)
            .map_err(|e| e.to_string())?
        else {
            break;
        };
        let seg: types::cgnat_session_seg = from_bytes(&v).ok_or("a segment")?;
        let at = seg.slot.iter().position(|s| {
            s.key.slot_state == types::cgnat_slot_state::CGNAT_SLOT_LIVE.0 as u8
                && bytes_of(&types::cgnat_session_key {
                    slot_state: 0,
                    slot_dist: 0,
                    ..s.key
                }) == bytes_of(&want)
        });
        if let Some(i) = at {
            return Ok((si, i, seg));
        }
    }
    Err("no outbound half".into())
}

fn read_half(h: &Harness) -> Result<types::cgnat_bind_out, String> {
    let (_, i, seg) = find_half(h)?;
    from_bytes(bytes_of(&seg.slot[i].s)).ok_or_else(|| "outbound half: size".to_string())
}

/// Writes the outbound half's hint, as nothing but the data path does.
fn write_hint(h: &Harness, hint: u64) -> Result<(), String> {
    let (si, i, mut seg) = find_half(h)?;
    let mut v: types::cgnat_bind_out = from_bytes(bytes_of(&seg.slot[i].s)).ok_or("size")?;
    v.session_hint = hint;
    seg.slot[i].s = from_bytes(bytes_of(&v)).ok_or("size")?;
    let (_, segments) = h.tables.sessions.maps()[0];
    segments
        .update(bytes_of(&si), bytes_of(&seg), MapFlags::ANY)
        .map_err(|e| e.to_string())
}

fn hint_of(h: &Harness) -> Result<u64, String> {
    read_half(h).map(|v| v.session_hint)
}

/// A datagram of `p`'s flow, established, which must leave from `eh`.
fn out_row<'a>(name: &'static str, p: Pkt) -> Row<'a> {
    with(move |l| {
        Case::int(name, p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, l.ep("eh")))
    })
}

#[test]
fn session_hint() {
    table_test("session_hint", "h", &config_text("", ""), |_| {
        let (a, b) = ((R10, 3478), (R20, 3478));
        vec![
            Case::int(
                "flow A, first datagram (a new binding)",
                flow(a, b"a1").bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| {
                let p = flow(a, b"a1");
                Ok(outbound(&p, h.external_of(&p)?))
            })
            .into(),
            learn_ext("eh", &flow(a, b"a1")),
            check("a new binding's hint is 0", |h, _| match hint_of(h)? {
                0 => Ok(()),
                x => Err(format!("hint {x:#x}")),
            }),
            out_row("flow A, established", flow(a, b"a2")),
            learn("the hint an established packet set", |h, l| {
                let x = hint_of(h)?;
                if x as u32 == 0 || x >> 32 == 0 {
                    return Err(format!("hint {x:#x}: no slot or no tag"));
                }
                l.set_num("hint_a", x);
                Ok(())
            }),
            out_row("flow B of the same binding, first datagram", flow(b, b"b1")),
            learn("the hint a new session of the binding set", |h, l| {
                let (x, ha) = (hint_of(h)?, l.num("hint_a").unwrap_or(0));
                if x as u32 == ha as u32 || x >> 32 == ha >> 32 {
                    return Err(format!("hint {x:#x}, flow A's {ha:#x}: not moved to B"));
                }
                l.set_num("hint_b", x);
                Ok(())
            }),
            // A's tag with B's slot: A's packets read B's slot, which must
            // not pass for A's session
            step(move |h, l| {
                let (ha, hb) = (l.num("hint_a").unwrap_or(0), l.num("hint_b").unwrap_or(0));
                write_hint(h, (ha & !0xffff_ffff) | (hb & 0xffff_ffff)).expect("the hint");
                let eh = l.ep("eh");
                for rem in [a, b] {
                    let mut s = h.session(eh, rem, PROTO_UDP).expect("session");
                    s.last_seen = 0;
                    h.put_session(eh, rem, PROTO_UDP, Some(s)).expect("session");
                }
            }),
            out_row("flow A, hint naming flow B's slot", flow(a, b"a3")),
            check("flow A's session refreshed, B's untouched", move |h, l| {
                let eh = l.ep("eh");
                let seen = |rem| h.session(eh, rem, PROTO_UDP).map(|s| s.last_seen);
                match (seen(a), seen(b)) {
                    (Some(x), Some(0)) if x != 0 => Ok(()),
                    other => Err(format!("last_seen of A, B: {other:?}")),
                }
            }),
        ]
    });
}
