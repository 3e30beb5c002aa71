//! Packet-level tests of the XDP data path through BPF_PROG_TEST_RUN.
//!
//! Each test creates its own network namespace (veth pairs int0/ext0 with
//! fixed MACs, addresses and permanent neighbours, lo forwarding on), loads
//! the program there exactly as the daemon does (`Datapath::load`, not
//! attached), and runs a table of rows (`prog_run/table.rs`): packet cases,
//! checks of the maps, and what later rows learn from earlier ones (an
//! external endpoint the program chose). Every case asserts the XDP verdict,
//! that exactly its counter grew by one packet, and the exact output frame
//! (built here from scratch, checksums recomputed independently; frames that
//! are passed or dropped must come back untouched). Finally all counters
//! must sum to the number of runs.
//!
//! Needs root and iproute2: without them the tests print a message and
//! return, except under CI=true where they fail.
//!
//! The tables are grouped by concern in `prog_run/*.rs`; this file holds
//! what they share.
//!
//! Run: cargo test --test prog_run -- --nocapture

#[path = "prog_run/harness.rs"]
mod harness;
#[path = "prog_run/netns.rs"]
mod netns;
#[path = "prog_run/table.rs"]
mod table;

#[path = "prog_run/concurrency.rs"]
mod concurrency;
#[path = "prog_run/filtering.rs"]
mod filtering;
#[path = "prog_run/fragments.rs"]
mod fragments;
#[path = "prog_run/full_tables.rs"]
mod full_tables;
#[path = "prog_run/icmp_errors.rs"]
mod icmp_errors;
#[path = "prog_run/malformed.rs"]
mod malformed;
#[path = "prog_run/pool_modes.rs"]
mod pool_modes;
#[path = "prog_run/ports.rs"]
mod ports;
#[path = "prog_run/router.rs"]
mod router;
#[path = "prog_run/session_hint.rs"]
mod session_hint;
#[path = "prog_run/translation.rs"]
mod translation;

use std::net::Ipv4Addr;

use cgnat::bpf::{types, Side};

use cgnat_kit::frame;
use frame::*;
use harness::*;
use netns::*;
use table::*;

const H11: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
const H12: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 12);
const R10: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const R20: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

const SYN_OUT: u32 = types::cgnat_tcp_event::CGNAT_TCP_SYN_OUT.0;
const SYN_IN: u32 = types::cgnat_tcp_event::CGNAT_TCP_SYN_IN.0;
const TCP_LOOSE: u32 = types::cgnat_tcp_event::CGNAT_TCP_LOOSE.0;
const FIN_OUT: u32 = types::cgnat_tcp_event::CGNAT_TCP_FIN_OUT.0;
const SESS_INBOUND: u8 = types::cgnat_session_flag::CGNAT_SESS_INBOUND.0 as u8;
const SESS_HAIRPIN: u8 = types::cgnat_session_flag::CGNAT_SESS_HAIRPIN.0 as u8;
const SESS_ONE_SIDED: u8 = types::cgnat_session_flag::CGNAT_SESS_ONE_SIDED.0 as u8;

/// What an outbound packet must become: source = `ext`, TTL - 1, out of
/// ext0 to the destination's neighbour MAC.
fn outbound(p: &Pkt, ext: Ep) -> Vec<u8> {
    outbound_to(p, ext, mac_of(p.dst))
}

/// [`outbound`] toward a next hop whose MAC is `mac`.
fn outbound_to(p: &Pkt, ext: Ep, mac: Mac) -> Vec<u8> {
    p.clone()
        .with_src(ext.0, ext.1)
        .ttl(p.ttl - 1)
        .macs(EXT0_MAC, mac)
        .bytes()
}

/// What an inbound packet must become: destination = `int` (whose MAC is
/// `mac`), TTL - 1, out of int0.
fn inbound_to(p: &Pkt, int: Ep, mac: Mac) -> Vec<u8> {
    p.clone()
        .with_dst(int.0, int.1)
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac)
        .bytes()
}

fn inbound(p: &Pkt, int: Ep) -> Vec<u8> {
    inbound_to(p, int, mac_of(int.0))
}

fn session_check(
    h: &Harness,
    ext: (Ipv4Addr, u16),
    rem: (Ipv4Addr, u16),
    proto: u8,
    int: (Ipv4Addr, u16),
    flags: u8,
    tcp_bits: u32,
) -> Result<(), String> {
    let s = h.session(ext, rem, proto).ok_or_else(|| {
        format!(
            "no session {}:{} <-> {}:{} /{proto}",
            ext.0, ext.1, rem.0, rem.1
        )
    })?;
    ensure!(
        addr_of(s.int_addr) == int.0 && u16::from_be(s.int_port) == int.1,
        "session points to {}:{}, expected {}:{}",
        addr_of(s.int_addr),
        u16::from_be(s.int_port),
        int.0,
        int.1
    );
    ensure!(
        s.flags == flags,
        "session flags {:#x}, expected {flags:#x}",
        s.flags
    );
    ensure!(
        s.tcp & tcp_bits == tcp_bits,
        "session tcp events {:#x} lack {tcp_bits:#x}",
        s.tcp
    );
    let age = cgnat::expiry::idle_ns(cgnat::expiry::monotonic_ns(), s.last_seen);
    ensure!(
        age < 10_000_000_000,
        "session last_seen {} is {age} ns old",
        s.last_seen
    );
    Ok(())
}

/// The expected frame with the IP ID the program chose (a keyed hash the
/// test cannot predict).
fn with_out_id(mut exp: Vec<u8>, out: &[u8], ip_off: usize) -> Result<Vec<u8>, String> {
    ensure!(
        out.len() >= ip_off + 20,
        "output of {} bytes has no IP header",
        out.len()
    );
    set_ip_id(&mut exp, ip_off, ip_id(out, ip_off));
    Ok(exp)
}

/// What a hairpinned packet must become: source = `src` (the sender's
/// external endpoint), destination = `to`, TTL - 1, back out of int0.
fn hairpin(p: &Pkt, src: Ep, to: Ep) -> Vec<u8> {
    p.clone()
        .with_src(src.0, src.1)
        .with_dst(to.0, to.1)
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac_of(to.0))
        .bytes()
}

/// An outbound packet that must create a binding (any pool endpoint), and
/// the binding learned as `name`.
fn bind_row<'a>(case: impl Into<String>, p: Pkt, name: impl Into<String>) -> Row<'a> {
    let q = p.clone();
    vec![
        Case::int(case, p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| Ok(outbound(&q, h.external_of(&q)?)))
            .into(),
        learn_ext(name, &p),
    ]
    .into()
}

/// A UDP datagram from `src:port` that opens a binding, learned as `name`.
fn open_binding<'a>(name: impl Into<String>, src: Ipv4Addr, port: u16) -> Row<'a> {
    let p = from_sub(Pkt::udp((src, port), (R10, 3478), b"open"));
    bind_row(format!("binding for {src}:{port}"), p, name)
}
