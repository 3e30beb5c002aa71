//! A pure-Rust reference model of cgnat's NAT semantics, written from the
//! RFCs and the documented behaviour (README, include/cgnat.h, bpf/*.h
//! comments), never from the program's maps' values.
//!
//! State: bindings (endpoint-independent mapping, RFC 4787 REQ-1), paired
//! external address per subscriber (REQ-2), sessions keyed in the external
//! realm with TCP event bits and inbound/hairpin flags, address-dependent
//! filtering records, per-subscriber port and session counts (limits).
//!
//! `step` takes one frame (described by its fields, as a parser would) and
//! the ingress interface and returns the expected verdict, counter and
//! output frame. The external port of a new binding is random in the
//! program: the model takes the one the program created (the new key of
//! `bind_in`, given by the runner) only if it satisfies every constraint
//! (in the pool, the subscriber's paired address, the source port kept
//! when free, same port class, parity if configured, not held by another
//! binding), and predicts exactly from then on.
//!
//! Not modelled (covered by tests/prog_run.rs and the end-to-end tests):
//! time (expiry, quarantine, inbound refresh, new-mapping rate limits),
//! port-block and deterministic allocation, port exhaustion (the program's
//! random search makes it nondeterministic), full tables, fragments,
//! exemptions, MSS clamping, DF-clear datagrams (keyed-hash IP ID).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use cgnat::config::Filtering;

use crate::frame::*;
use crate::harness::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use crate::netns::{generated_error, mac_of, EXT0_MAC, INT0_MAC, ROUTER_EXT, ROUTER_INT};

pub type Ep = (Ipv4Addr, u16);
/// (address, port or ICMP identifier, protocol)
pub type Key = (Ipv4Addr, u16, u8);

/// Session key, external realm: (ext addr, ext port, remote addr, remote
/// port (0 for ICMP), proto).
pub type SKey = (Ipv4Addr, u16, Ipv4Addr, u16, u8);

#[derive(Debug, Clone)]
pub struct ModelCfg {
    pub filt_tcp: Filtering,
    pub filt_udp: Filtering,
    pub filt_icmp: Filtering,
    pub limit_ports: u32,
    pub limit_sessions: u32,
    pub parity: bool,
    /// icmp.rate_limit > 0 (large enough never to run out in a test)
    pub icmp_errors: bool,
    pub pool_prefixes: Vec<(Ipv4Addr, u8)>,
    pub pool_addrs: Vec<Ipv4Addr>,
    pub internal_prefixes: Vec<(Ipv4Addr, u8)>,
    /// Networks the router has routes to (the test namespace: connected
    /// networks only); anything else, and the router's own addresses,
    /// bpf_fib_lookup does not forward (pass to the kernel).
    pub routed: Vec<(Ipv4Addr, u8)>,
    /// [[static]] mappings: (proto, internal, external).
    pub statics: Vec<(u8, Ep, Ep)>,
}

fn in_prefixes(a: Ipv4Addr, ps: &[(Ipv4Addr, u8)]) -> bool {
    ps.iter().any(|(n, l)| {
        let m = if *l == 0 { 0 } else { u32::MAX << (32 - l) };
        u32::from(a) & m == u32::from(*n) & m
    })
}

#[derive(Debug, Clone, Default)]
pub struct Sub {
    /// Paired external address, known once a binding revealed it.
    pub ext: Option<Ipv4Addr>,
    pub ports: [u32; 3],
    pub sessions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sess {
    pub int: Ep,
    pub inbound: bool,
    pub hairpin: bool,
    pub tcp: u32,
}

pub const SYN_OUT: u32 = 1;
pub const SYN_IN: u32 = 2;
pub const FIN_OUT: u32 = 4;
pub const FIN_IN: u32 = 8;
pub const RST: u32 = 16;
pub const LOOSE: u32 = 32;

/// The TCP state shown for a session's event bits, from the states of RFC
/// 7857 section 2 (the RFC 6146 machine) as the event bits can tell them:
/// - an RST was seen: "reset", transitory for 4 minutes (section 2.2);
/// - both sides sent FIN: "closing" (V4 FIN + V6 FIN RCV), transitory;
/// - the connection was established (a SYN each way, or picked up
///   mid-stream) and one side sent FIN: "fin_one" (V4 or V6 FIN RCV),
///   still on the established timer;
/// - a FIN before the connection was established ends an attempt that
///   never opened: "closing";
/// - established, no FIN: "established";
/// - a SYN one way only: "init" (V4 or V6 INIT).
pub fn tcp_state_name(bits: u32) -> &'static str {
    let established = bits & LOOSE != 0 || bits & (SYN_OUT | SYN_IN) == SYN_OUT | SYN_IN;
    let fins = (bits & FIN_OUT != 0, bits & FIN_IN != 0);
    if bits & RST != 0 {
        "reset"
    } else if fins == (true, true) {
        "closing"
    } else if fins.0 || fins.1 {
        if established {
            "fin_one"
        } else {
            "closing"
        }
    } else if established {
        "established"
    } else {
        "init"
    }
}

/// What the program must do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub verdict: u32,
    pub counter: &'static str,
    pub frame: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub cfg: Option<ModelCfg>,
    pub bind_out: BTreeMap<Key, Ep>,
    pub bind_in: BTreeMap<Key, Ep>,
    /// External endpoints in creation order (targets for inbound ops).
    pub ext_order: Vec<Key>,
    pub subs: BTreeMap<Ipv4Addr, Sub>,
    pub sessions: BTreeMap<SKey, Sess>,
    /// (ext addr, ext port, proto, remote addr): address-dependent filtering.
    pub filter: BTreeSet<(Ipv4Addr, u16, u8, Ipv4Addr)>,
    /// External endpoints of static mappings (port forwards: admitted by
    /// every filtering mode).
    pub statics: BTreeSet<Key>,
    pub sent: Vec<Pkt>,
    pub delivered: Vec<Pkt>,
}

fn pidx(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 0,
        PROTO_UDP => 1,
        _ => 2,
    }
}

fn tcp_flags(p: &Pkt) -> Option<u8> {
    match &p.l4 {
        L4::Tcp { flags, .. } => Some(*flags),
        _ => None,
    }
}

fn ports(p: &Pkt) -> (u16, u16) {
    match &p.l4 {
        L4::Udp { sport, dport, .. } | L4::Tcp { sport, dport, .. } => (*sport, *dport),
        L4::Icmp { id, .. } => (*id, *id),
        L4::Raw { .. } => (0, 0),
    }
}

fn icmp_type(p: &Pkt) -> Option<u8> {
    match &p.l4 {
        L4::Icmp { ty, .. } => Some(*ty),
        _ => None,
    }
}

/// TCP event bits of a segment, seen from the subscriber or the remote.
fn tcp_events(p: &Pkt, outbound: bool) -> u32 {
    let Some(f) = tcp_flags(p) else { return 0 };
    let mut ev = 0;
    if f & TCP_SYN != 0 {
        ev |= if outbound { SYN_OUT } else { SYN_IN };
    }
    if f & TCP_FIN != 0 {
        ev |= if outbound { FIN_OUT } else { FIN_IN };
    }
    if f & TCP_RST != 0 {
        ev |= RST;
    }
    ev
}

/// A SYN without ACK or RST: the only segment that opens a connection.
fn bare_syn(p: &Pkt) -> bool {
    tcp_flags(p).is_some_and(|f| f & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN)
}

fn rem_port(proto: u8, port: u16) -> u16 {
    if proto == PROTO_ICMP {
        0
    } else {
        port
    }
}

/// The quoted packet of an ICMP error frame built by the runner: the
/// logical packet and how many bytes after its IP header are quoted.
#[derive(Debug, Clone)]
pub struct Quote {
    pub pkt: Pkt,
    pub len: usize,
    /// The runner broke the error's ICMP checksum (RFC 5508 REQ-3: drop).
    pub bad_csum: bool,
}

fn drop(p: &Pkt, counter: &'static str) -> Expect {
    Expect {
        verdict: XDP_DROP,
        counter,
        frame: p.bytes(),
    }
}

impl Model {
    pub fn new(cfg: ModelCfg) -> Model {
        let mut m = Model {
            cfg: Some(cfg.clone()),
            ..Model::default()
        };
        // static mappings: bindings from the start, of no subscriber
        for (proto, int, ext) in cfg.statics {
            m.bind_out.insert((int.0, int.1, proto), ext);
            m.bind_in.insert((ext.0, ext.1, proto), int);
            m.ext_order.push((ext.0, ext.1, proto));
            m.statics.insert((ext.0, ext.1, proto));
        }
        m
    }

    fn cfg(&self) -> &ModelCfg {
        self.cfg.as_ref().expect("model config")
    }

    fn filtering(&self, proto: u8) -> Filtering {
        let c = self.cfg();
        match proto {
            PROTO_TCP => c.filt_tcp,
            PROTO_UDP => c.filt_udp,
            _ => c.filt_icmp,
        }
    }

    fn internal(&self, a: Ipv4Addr) -> bool {
        in_prefixes(a, &self.cfg().internal_prefixes)
    }

    /// fib_route() answers "not forwarded" (to the kernel).
    fn local(&self, a: Ipv4Addr) -> bool {
        a == ROUTER_INT || a == ROUTER_EXT || !in_prefixes(a, &self.cfg().routed)
    }

    /// A subscriber packet cgnat does not translate: the router's own, or
    /// dropped under `reason`.
    fn untranslated(&self, p: &Pkt, reason: &'static str) -> Expect {
        if self.local(p.dst) {
            Expect {
                verdict: XDP_PASS,
                counter: "pass_local",
                frame: p.bytes(),
            }
        } else {
            drop(p, reason)
        }
    }

    fn in_pool(&self, a: Ipv4Addr) -> bool {
        in_prefixes(a, &self.cfg().pool_prefixes)
    }

    /// May `rem` open a session on the binding with external endpoint
    /// (ext, proto)?
    fn admits(&self, ext: Ep, proto: u8, rem: Ipv4Addr) -> bool {
        if self.statics.contains(&(ext.0, ext.1, proto)) {
            return true;
        }
        match self.filtering(proto) {
            Filtering::EndpointIndependent => true,
            Filtering::AddressAndPortDependent => false,
            Filtering::AddressDependent => self.filter.contains(&(ext.0, ext.1, proto, rem)),
        }
    }

    fn note(&mut self, ext: Ep, proto: u8, rem: Ipv4Addr) {
        if self.filtering(proto) == Filtering::AddressDependent {
            self.filter.insert((ext.0, ext.1, proto, rem));
        }
    }

    /// subscriber_add_session(): the session limit.
    fn add_session(&mut self, sub: Ipv4Addr) -> bool {
        let lim = self.cfg().limit_sessions;
        match self.subs.get_mut(&sub) {
            None => true,
            Some(s) if lim > 0 && s.sessions >= lim => false,
            Some(s) => {
                s.sessions += 1;
                true
            }
        }
    }

    /// An ICMP error cgnat generates itself (rate limit permitting), or the
    /// drop counted under `dropped`.
    fn gen_error(
        &self,
        p: &Pkt,
        ingress_int: bool,
        ty: u8,
        code: u8,
        sent: &'static str,
        dropped: &'static str,
    ) -> Expect {
        if !self.cfg().icmp_errors || p.vlan.is_some() {
            return drop(p, dropped);
        }
        let router = if ingress_int { ROUTER_INT } else { ROUTER_EXT };
        Expect {
            verdict: XDP_TX,
            counter: sent,
            frame: generated_error(p, router, ty, code, 0),
        }
    }

    fn ttl_exceeded(&self, p: &Pkt, ingress_int: bool) -> Expect {
        self.gen_error(p, ingress_int, 11, 0, "icmp_time_exceeded", "drop_ttl")
    }

    /// Takes the external endpoint the program created for internal
    /// endpoint `ik` (`created`: the new bind_in key) if it satisfies
    /// every constraint.
    fn accept_binding(&mut self, ik: Key, created: Option<Key>) -> Result<Ep, String> {
        let Some((ea, ep, eproto)) = created else {
            return Err(format!(
                "model: a binding for {}:{}/{} must be created, the program created none",
                ik.0, ik.1, ik.2
            ));
        };
        let c = self.cfg().clone();
        let mut why = Vec::new();
        if eproto != ik.2 {
            why.push(format!("protocol {eproto}, expected {}", ik.2));
        }
        if !c.pool_addrs.contains(&ea) {
            why.push(format!("{ea} is not a pool address"));
        }
        let sub = self.subs.get(&ik.0).cloned().unwrap_or_default();
        if let Some(a) = sub.ext {
            if a != ea {
                why.push(format!(
                    "subscriber {} is paired with {a}, not {ea} (RFC 4787 REQ-2)",
                    ik.0
                ));
            }
        }
        if self.bind_in.contains_key(&(ea, ep, eproto)) {
            why.push(format!("{ea}:{ep}/{eproto} is held by another binding"));
        }
        let orig_free = !self.bind_in.contains_key(&(ea, ik.1, ik.2));
        if orig_free && ep != ik.1 {
            why.push(format!(
                "source port {} is free on {ea} and was not kept (RFC 7857 section 9)",
                ik.1
            ));
        }
        if ik.2 != PROTO_ICMP && ep != ik.1 {
            if (ik.1 < 1024) != (ep < 1024) || ep == 0 {
                why.push(format!(
                    "port {ep} is not in the class of {} (RFC 4787 REQ-3a)",
                    ik.1
                ));
            }
            if c.parity && ep % 2 != ik.1 % 2 {
                why.push(format!("port {ep} lost the parity of {} (REQ-4)", ik.1));
            }
        }
        if !why.is_empty() {
            return Err(format!(
                "program bound {}:{}/{} to {ea}:{ep}/{eproto}: {}",
                ik.0,
                ik.1,
                ik.2,
                why.join("; ")
            ));
        }
        let e = (ea, ep);
        self.bind_out.insert(ik, e);
        self.bind_in.insert((ea, ep, eproto), (ik.0, ik.1));
        self.ext_order.push((ea, ep, eproto));
        let s = self.subs.entry(ik.0).or_default();
        s.ext = Some(ea);
        s.ports[pidx(ik.2)] += 1;
        Ok(e)
    }

    /// One frame. `created`: the bind_in key the program created while
    /// processing it, if any (the model checks it must, and that it may).
    pub fn step(
        &mut self,
        ingress_int: bool,
        p: &Pkt,
        quote: Option<&Quote>,
        created: Option<Key>,
    ) -> Result<Expect, String> {
        let mut created = created;
        let r = if ingress_int {
            self.internal_side(p, quote, &mut created)
        } else {
            self.external_side(p, quote)
        }?;
        if let Some(k) = created {
            return Err(format!(
                "program created binding {}:{}/{} which the model did not expect",
                k.0, k.1, k.2
            ));
        }
        Ok(r)
    }

    fn internal_side(
        &mut self,
        p: &Pkt,
        quote: Option<&Quote>,
        created: &mut Option<Key>,
    ) -> Result<Expect, String> {
        if !self.internal(p.src) {
            // not a subscriber: only the router may be its target
            return Ok(self.untranslated(p, "drop_spoofed"));
        }
        if let Some(q) = quote {
            return Ok(self.error_out(p, q));
        }
        let proto = p.proto();
        if proto == PROTO_ICMP && icmp_type(p) != Some(8) {
            return Ok(self.untranslated(p, "drop_icmp_type"));
        }
        let (sport, dport) = ports(p);
        let ik: Key = (p.src, sport, proto);
        let b = self.bind_out.get(&ik).copied();
        if let Some(ext) = b {
            let sk = (ext.0, ext.1, p.dst, rem_port(proto, dport), proto);
            if self.sessions.contains_key(&sk) {
                return Ok(self.established(p, ext, sk));
            }
        }
        // a new session
        let mut ev = tcp_events(p, true);
        if proto == PROTO_TCP && ev & SYN_OUT == 0 {
            if ev & RST != 0 {
                return Ok(drop(p, "drop_tcp_no_session"));
            }
            ev |= LOOSE;
        }
        let mut target: Option<(Ep, Ep)> = None; // (target ext, target int)
        if self.in_pool(p.dst) {
            if proto == PROTO_ICMP {
                return Ok(drop(p, "drop_no_binding"));
            }
            match self.bind_in.get(&(p.dst, dport, proto)) {
                None => return Ok(drop(p, "drop_no_binding")),
                Some(int) => target = Some(((p.dst, dport), *int)),
            }
        }
        if p.ttl <= 1 {
            return Ok(self.ttl_exceeded(p, true));
        }
        let ext = match b {
            Some(e) => e,
            None => {
                // subscriber_get + binding_create
                let lim = self.cfg().limit_ports;
                let sub = self.subs.entry(p.src).or_default();
                if lim > 0 && sub.ports[pidx(proto)] >= lim {
                    return Ok(self.refuse(p));
                }
                self.accept_binding(ik, created.take())?
            }
        };
        let sk: SKey = (ext.0, ext.1, p.dst, rem_port(proto, dport), proto);
        let tk: Option<SKey> =
            target.map(|(te, _)| (te.0, te.1, ext.0, rem_port(proto, ext.1), proto));
        let t_exists = tk.is_some_and(|k| self.sessions.contains_key(&k));
        if target.is_some() && !t_exists && proto == PROTO_TCP && !bare_syn(p) {
            return Ok(drop(p, "drop_tcp_no_session"));
        }
        if !self.add_session(p.src) {
            return Ok(self.refuse(p));
        }
        self.sessions.insert(
            sk,
            Sess {
                int: (p.src, sport),
                inbound: false,
                hairpin: target.is_some(),
                tcp: ev,
            },
        );
        self.note(ext, proto, p.dst);
        // to its own external endpoint, the target's side is this session
        let t_exists = t_exists || tk == Some(sk);
        if let (Some((te, tint)), Some(tk)) = (target, tk) {
            if !t_exists {
                if !self.admits(te, proto, ext.0) {
                    return Ok(drop(p, "drop_filtered"));
                }
                if !self.add_session(tint.0) {
                    return Ok(drop(p, "drop_subscriber_limit"));
                }
                self.sessions.entry(tk).or_insert(Sess {
                    int: tint,
                    inbound: true,
                    hairpin: true,
                    tcp: tcp_events(p, false),
                });
            } else {
                let t = self.sessions.get_mut(&tk).expect("t");
                t.tcp |= tcp_events(p, false);
            }
            return Ok(self.hairpin_out(p, ext, tint));
        }
        Ok(self.translated_out(p, ext))
    }

    fn refuse(&self, p: &Pkt) -> Expect {
        self.gen_error(p, true, 3, 1, "icmp_host_unreach", "drop_subscriber_limit")
    }

    fn translated_out(&mut self, p: &Pkt, ext: Ep) -> Expect {
        let out = p
            .clone()
            .with_src(ext.0, ext.1)
            .ttl(p.ttl - 1)
            .macs(EXT0_MAC, mac_of(p.dst));
        self.sent.push(out.clone());
        Expect {
            verdict: XDP_REDIRECT,
            counter: "fwd_out",
            frame: out.bytes(),
        }
    }

    fn hairpin_out(&mut self, p: &Pkt, ext: Ep, tint: Ep) -> Expect {
        let out = p
            .clone()
            .with_src(ext.0, ext.1)
            .with_dst(tint.0, tint.1)
            .ttl(p.ttl - 1)
            .macs(INT0_MAC, mac_of(tint.0));
        self.delivered.push(out.clone());
        Expect {
            verdict: XDP_TX,
            counter: "fwd_hairpin",
            frame: out.bytes(),
        }
    }

    fn established(&mut self, p: &Pkt, ext: Ep, sk: SKey) -> Expect {
        let proto = p.proto();
        let (_, dport) = ports(p);
        let ev = tcp_events(p, true);
        {
            let s = self.sessions.get_mut(&sk).expect("session");
            if bare_syn(p) && s.tcp & (FIN_OUT | FIN_IN | RST) != 0 {
                s.tcp = 0; // a new life of the same 5-tuple
            }
        }
        let hairpin = self.sessions[&sk].hairpin;
        let mut t = None;
        if hairpin {
            let tk = (p.dst, dport, ext.0, rem_port(proto, ext.1), proto);
            match self.sessions.get(&tk) {
                None => return drop(p, "drop_no_binding"),
                Some(ts) => t = Some((tk, ts.int)),
            }
        }
        if p.ttl <= 1 {
            return self.ttl_exceeded(p, true);
        }
        self.sessions.get_mut(&sk).expect("session").tcp |= ev;
        if let Some((tk, tint)) = t {
            self.sessions.get_mut(&tk).expect("t").tcp |= tcp_events(p, false);
            return self.hairpin_out(p, ext, tint);
        }
        self.translated_out(p, ext)
    }

    fn external_side(&mut self, p: &Pkt, quote: Option<&Quote>) -> Result<Expect, String> {
        // RFC 6598 section 4: shared addresses are filtered on ingress
        // links; from outside, a subscriber's source to the pool is spoofed
        if self.internal(p.src) && self.in_pool(p.dst) {
            return Ok(drop(p, "drop_spoofed"));
        }
        if let Some(q) = quote {
            return Ok(self.error_in(p, q));
        }
        let proto = p.proto();
        let (sport, dport) = ports(p);
        let other = |m: &Model| {
            if m.in_pool(p.dst) {
                drop(p, "drop_no_binding")
            } else if m.internal(p.dst) {
                drop(p, "drop_to_internal")
            } else {
                Expect {
                    verdict: XDP_PASS,
                    counter: "pass_not_nat",
                    frame: p.bytes(),
                }
            }
        };
        if proto == PROTO_ICMP && icmp_type(p) != Some(0) {
            return Ok(other(self));
        }
        let sk: SKey = (p.dst, dport, p.src, rem_port(proto, sport), proto);
        let ev = tcp_events(p, false);
        let int = match self.sessions.get(&sk) {
            Some(s) => s.int,
            None => {
                let Some(int) = self.bind_in.get(&(p.dst, dport, proto)).copied() else {
                    return Ok(other(self));
                };
                if proto == PROTO_TCP && !bare_syn(p) {
                    return Ok(drop(p, "drop_tcp_no_session"));
                }
                if !self.admits((p.dst, dport), proto, p.src) {
                    return Ok(drop(p, "drop_filtered"));
                }
                int
            }
        };
        if p.ttl <= 1 {
            return Ok(self.ttl_exceeded(p, false));
        }
        match self.sessions.get_mut(&sk) {
            Some(s) => s.tcp |= ev,
            None => {
                if !self.add_session(int.0) {
                    return Ok(drop(p, "drop_subscriber_limit"));
                }
                self.sessions.insert(
                    sk,
                    Sess {
                        int,
                        inbound: true,
                        hairpin: false,
                        tcp: ev,
                    },
                );
            }
        }
        let out = p
            .clone()
            .with_dst(int.0, int.1)
            .ttl(p.ttl - 1)
            .macs(INT0_MAC, mac_of(int.0));
        self.delivered.push(out.clone());
        Ok(Expect {
            verdict: XDP_REDIRECT,
            counter: "fwd_in",
            frame: out.bytes(),
        })
    }

    /// Is the quote one cgnat can translate (TCP, UDP or echo request, 8
    /// bytes of it)? Else the error is an unsupported ICMP type.
    fn quote_ok(q: &Quote) -> bool {
        q.len >= 8
            && q.pkt.frag & 0x1fff == 0
            && match &q.pkt.l4 {
                L4::Udp { .. } | L4::Tcp { .. } => true,
                L4::Icmp { ty, .. } => *ty == 8,
                L4::Raw { .. } => false,
            }
    }

    /// The error frame with a rewritten outer header and quote.
    fn error_frame(
        p: &Pkt,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        q: &Pkt,
        qlen: usize,
        macs: (Mac, Mac),
    ) -> Vec<u8> {
        let L4::Icmp {
            ty, code, id, seq, ..
        } = &p.l4
        else {
            unreachable!("an ICMP error")
        };
        let mut e = Pkt::icmp_msg(src, dst, *ty, *code, (*id, *seq), &q.quote_len(qlen));
        e.tos = p.tos;
        e.id = p.id;
        e.frag = p.frag;
        e.ttl = p.ttl - 1;
        e.options = p.options.clone();
        e.vlan = p.vlan;
        e.macs(macs.0, macs.1).bytes()
    }

    /// Internet -> subscriber error about one of our outbound packets
    /// (RFC 5508 REQ-4): state is looked up, never created or refreshed.
    fn error_in(&mut self, p: &Pkt, q: &Quote) -> Expect {
        let no_binding = |m: &Model| {
            if m.in_pool(p.dst) {
                drop(p, "drop_no_binding")
            } else if m.internal(p.dst) {
                drop(p, "drop_to_internal")
            } else {
                Expect {
                    verdict: XDP_PASS,
                    counter: "pass_not_nat",
                    frame: p.bytes(),
                }
            }
        };
        if !Self::quote_ok(q) {
            if self.in_pool(p.dst) {
                return drop(p, "drop_icmp_type");
            }
            return no_binding(self);
        }
        let proto = q.pkt.proto();
        let (qs, _) = ports(&q.pkt);
        if p.dst != q.pkt.src {
            return no_binding(self);
        }
        let Some(int) = self.bind_in.get(&(q.pkt.src, qs, proto)).copied() else {
            return no_binding(self);
        };
        if q.bad_csum {
            return drop(p, "drop_icmp_csum");
        }
        if p.ttl <= 1 {
            return drop(p, "drop_ttl");
        }
        let inner = q.pkt.clone().with_src(int.0, int.1);
        Expect {
            verdict: XDP_REDIRECT,
            counter: "fwd_in",
            frame: Self::error_frame(p, p.src, int.0, &inner, q.len, (INT0_MAC, mac_of(int.0))),
        }
    }

    /// Subscriber -> anywhere error about a packet it received through us
    /// (RFC 5508 REQ-5), hairpinned if it goes to one of our external
    /// endpoints (REQ-7).
    fn error_out(&mut self, p: &Pkt, q: &Quote) -> Expect {
        if !Self::quote_ok(q) {
            return self.untranslated(p, "drop_icmp_type");
        }
        let proto = q.pkt.proto();
        let (qs, qd) = ports(&q.pkt);
        let b = if p.src == q.pkt.dst && proto != PROTO_ICMP {
            self.bind_out.get(&(q.pkt.dst, qd, proto)).copied()
        } else {
            None
        };
        let Some(ext) = b else {
            return self.untranslated(p, "drop_no_binding");
        };
        if q.bad_csum {
            return drop(p, "drop_icmp_csum");
        }
        let mut tgt = None;
        if self.in_pool(p.dst) {
            if p.dst != q.pkt.src {
                return drop(p, "drop_no_binding");
            }
            match self.bind_in.get(&(q.pkt.src, qs, proto)) {
                None => return drop(p, "drop_no_binding"),
                Some(t) => tgt = Some(*t),
            }
        }
        if p.ttl <= 1 {
            return drop(p, "drop_ttl");
        }
        let mut inner = q.pkt.clone().with_dst(ext.0, ext.1);
        match tgt {
            Some(t) => {
                inner = inner.with_src(t.0, t.1);
                Expect {
                    verdict: XDP_TX,
                    counter: "fwd_hairpin",
                    frame: Self::error_frame(p, ext.0, t.0, &inner, q.len, (INT0_MAC, mac_of(t.0))),
                }
            }
            None => Expect {
                verdict: XDP_REDIRECT,
                counter: "fwd_out",
                frame: Self::error_frame(p, ext.0, p.dst, &inner, q.len, (EXT0_MAC, mac_of(p.dst))),
            },
        }
    }

    /// The sessions as `cgnat sessions` would list them: (internal,
    /// external, remote, proto, tcp events, inbound, hairpin).
    pub fn session_rows(&self) -> Vec<(Ep, Ep, Ep, u8, u32, bool, bool)> {
        let mut v: Vec<_> = self
            .sessions
            .iter()
            .map(|(k, s)| {
                (
                    s.int,
                    (k.0, k.1),
                    (k.2, k.3),
                    k.4,
                    s.tcp,
                    s.inbound,
                    s.hairpin,
                )
            })
            .collect();
        v.sort();
        v
    }
}
