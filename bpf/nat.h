/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nat.h - bindings, sessions and the translation of TCP, UDP and ICMP
 * query packets (ports: pool.h; the rewriting itself: rewrite.h).
 *
 * Model (RFC 6146 terms): a binding maps an internal endpoint to an external
 * one (endpoint-independent mapping, RFC 4787 REQ-1, RFC 5382 REQ-1, per
 * protocol as RFC 7857 section 5 wants); a session is one binding talking to
 * one remote endpoint. See include/cgnat.h for the maps' keys.
 *
 * Workers return CGNAT_CONTINUE (not handled here, or handled and ready to
 * forward) or an enum cgnat_stat reason that ends processing.
 *
 * Races between CPUs: two CPUs may create the same binding at once; the
 * external port is claimed by inserting the reverse entry with BPF_NOEXIST
 * first, and the loser of the forward insert gives its port back and uses
 * the winner's binding. Session inserts hold the segment's lock
 * (sessions.h), so concurrent creators share one session.
 * last_seen is a plain store (any CPU's recent time is good enough); TCP
 * event bits are ORed atomically.
 */
#ifndef CGNAT_NAT_H
#define CGNAT_NAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "addr.h"
#include "clock.h"
#include "config.h"
#include "csum.h"
#include "events.h"
#include "frag.h"
#include "fwd.h"
#include "icmp_gen.h"
#include "maps.h"
#include "mss.h"
#include "parse.h"
#include "pool.h"
#include "rewrite.h"
#include "route.h"
#include "sessions.h"

/* fib_route() for a packet that gets translated: too big with DF set is
 * answered with "fragmentation needed" carrying the egress MTU. */
static __always_inline int route(struct xdp_md *ctx, struct pkt *p, __be32 saddr,
				 __be32 daddr, struct bpf_fib_lookup *fib)
{
	int rc = fib_route(ctx, p, saddr, daddr, fib);

	if (rc == CGNAT_DROP_FRAG_NEEDED)
		return icmp_frag_needed(ctx, p, fib->mtu_result);
	return rc;
}

/* Is `addr` the router's own address on interface `ifindex`? Such a
 * source is spoofed: the router's address inside the subscriber prefixes
 * must never become a subscriber (a mapping and a NAT log entry naming the
 * router). */
static __always_inline int is_router_addr(__u32 ifindex, __be32 addr)
{
	__be32 *own = bpf_map_lookup_elem(&if_addrs, &ifindex);

	return own && *own == addr;
}

static __always_inline __u8 filtering(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return FILTER_TCP;
	if (proto == IPPROTO_UDP)
		return FILTER_UDP;
	return FILTER_ICMP;
}

/*
 * May a packet from remote address `rem` open a session on the binding
 * whose external endpoint is (ext_addr, ext_port)? Endpoint-independent
 * filtering admits anyone; address-dependent filtering admits remotes the
 * subscriber has sent to from this binding (filter_addr);
 * address-and-port-dependent filtering only existing sessions, so nothing
 * new. A refused packet creates and refreshes nothing (RFC 7857 section 7);
 * an unsolicited SYN is dropped silently, which RFC 5382 REQ-4 allows and
 * which lets a simultaneous open from inside succeed.
 */
static __always_inline int filter_admits(__u8 proto, __be32 ext_addr,
					 __be16 ext_port, __be32 rem, __u8 is_static)
{
	struct cgnat_filter_key fk = { .ext_addr = ext_addr, .rem_addr = rem,
				       .ext_port = ext_port, .proto = proto };
	__u8 mode = filtering(proto);

	/* a static mapping is a port forward: open to everyone */
	if (mode == CGNAT_FILTER_EIF || is_static)
		return 1;
	if (mode == CGNAT_FILTER_APDF)
		return 0;
	return bpf_map_lookup_elem(&filter_addr, &fk) != 0;
}

/* Record that this binding sent to `rem` (address-dependent filtering). */
static __always_inline void filter_note(__u8 proto, __be32 ext_addr,
					__be16 ext_port, __be32 rem, __u64 now)
{
	struct cgnat_filter_key fk = { .ext_addr = ext_addr, .rem_addr = rem,
				       .ext_port = ext_port, .proto = proto };

	if (filtering(proto) == CGNAT_FILTER_ADF)
		bpf_map_update_elem(&filter_addr, &fk, &now, BPF_NOEXIST);
}

#define REFUSAL_EVENTS_PER_SEC 100

/* No mapping can be created for this packet: log it (rate-limited), then
 * answer with ICMP host unreachable (RFC 6888 REQ-11). A busy table is
 * no refusal: the packet is dropped and the sender's retry gets through. */
static __always_inline int refuse(struct xdp_md *ctx, struct pkt *p, int reason)
{
	__u32 k = 0;
	struct cgnat_bucket *b;
	struct cgnat_event *ev;
	__u64 now = bpf_ktime_get_coarse_ns();

	if (reason == CGNAT_DROP_TABLE_BUSY)
		return reason;
	b = bpf_map_lookup_elem(&event_bucket, &k);

	if (b && now - b->stamp_ns >= 1000000000ULL / REFUSAL_EVENTS_PER_SEC) {
		b->stamp_ns = now;
		ev = event_new(CGNAT_EV_REFUSED);
		if (ev) {
			ev->addr = p->ip->saddr;
			ev->port = *p->sport;
			ev->proto = p->proto;
			ev->reason = reason;
			event_send(ev);
		}
	}
	return icmp_host_unreach(ctx, p, reason);
}

/* Find or create the session n->key (as n->s), and return it in *out
 * (the hairpin paths touch it); never evicts (a full table refuses). One
 * that another CPU created meanwhile is shared. If bo is the outbound
 * half of the session's binding, its hint names the session from now on
 * (the binding's newest flow). */
static __always_inline int session_get(struct cgnat_session_slot *n,
				       struct cgnat_session **out,
				       struct cgnat_session_slot *bo)
{
	int r = cgnat_session_put(n, CGNAT_SOP_INSERT);
	__u32 at = (__u32)r & ~CGNAT_SLOT_OLD;
	/* an error names no slot (session_slot()) */
	struct cgnat_session_slot *s = session_slot(at);

	if (!s)
		return session_put_failed(r);
	if (bo)
		session_hint_set(bo, at, &n->key);
	*out = &s->s;
	return CGNAT_CONTINUE;
}

/* The same, without the session. */
static __always_inline int session_create(struct cgnat_session_slot *n,
					  struct cgnat_session_slot *bo)
{
	struct cgnat_session *s;

	return session_get(n, &s, bo);
}

/* TCP event bits of a segment, seen from the subscriber (out) or remote. */
static __always_inline __u32 tcp_events(struct pkt *p, int outbound)
{
	__u32 ev = 0;

	if (p->proto != IPPROTO_TCP)
		return 0;
	if (p->tcp_flags & TCP_FLAG_SYN)
		ev |= outbound ? CGNAT_TCP_SYN_OUT : CGNAT_TCP_SYN_IN;
	if (p->tcp_flags & TCP_FLAG_FIN)
		ev |= outbound ? CGNAT_TCP_FIN_OUT : CGNAT_TCP_FIN_IN;
	if (p->tcp_flags & TCP_FLAG_RST)
		ev |= CGNAT_TCP_RST;
	return ev;
}

/* A bare SYN opens a connection; on a session whose last connection ended
 * (FIN or RST seen) it starts a new life of the same 5-tuple. */
static __always_inline int tcp_is_bare_syn(struct pkt *p)
{
	return p->proto == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) ==
		       TCP_FLAG_SYN;
}

/* Refresh a session. A TCP event seen for the first time (SYN, FIN, RST
 * from either side) always restarts the timer, so the state's timeout
 * counts from the segment that entered it (RFC 7857 section 2.2: 4 minutes
 * after the RST). */
static __always_inline void session_touch(struct cgnat_session *s, __u64 now,
					  __u32 ev, int refresh)
{
	__u32 t = cgnat_time(now);
	int new_ev = ev && (s->tcp & ev) != ev;

	if ((refresh && t - s->last_seen > (__u32)((CGNAT_REFRESH_MS * 1000000ULL) >> CGNAT_TIME_SHIFT)) ||
	    new_ev)
		s->last_seen = t;
	if ((refresh || new_ev) && (s->flags & CGNAT_SESS_DYING))
		s->flags &= ~CGNAT_SESS_DYING;
	if (new_ev)
		__sync_fetch_and_or(&s->tcp, ev);
}

/* The remote port of a session: TCP/UDP port, 0 for ICMP queries. */
static __always_inline __be16 remote_port(struct pkt *p, __be16 port)
{
	return p->proto == IPPROTO_ICMP ? 0 : port;
}

/* *k becomes the key of the other side of a hairpinned flow: the
 * target's session, whose remote is the sender's external endpoint. */
static __always_inline void hairpin_key(struct cgnat_session_key *k, struct pkt *p,
					const struct cgnat_binding *ext)
{
	*k = (struct cgnat_session_key){
		.ext_addr = p->ip->daddr, .ext_port = *p->dport, .rem_addr = ext->addr,
		.rem_port = remote_port(p, ext->port), .proto = p->proto,
	};
}

/*
 * Subscriber -> anywhere. Handles packets whose source is a subscriber
 * (an existing binding, or nat.internal_prefixes); CGNAT_CONTINUE without
 * touching anything otherwise. Destinations in the pool are hairpinned:
 * the packet leaves with the sender's external endpoint as source (RFC 4787
 * REQ-9a) and the target's internal endpoint as destination.
 */
static __always_inline int nat_outbound(struct xdp_md *ctx, struct pkt *p)
{
	struct iphdr *ip = p->ip;
	struct cgnat_endpoint ik = {};
	/* the session being looked up or made: its key, its value (first
	 * the key of the binding's outbound half) */
	struct cgnat_session_slot ns = {};
	struct cgnat_session_key tk; /* the target's side (hairpin_key()) */
	struct cgnat_session *s = 0, *t = 0;
	struct cgnat_subscriber *sub = 0;
	struct cgnat_session_slot *bo; /* the binding's outbound half */
	struct cgnat_binding ext = {};
	struct bpf_fib_lookup *fib = packet_fib();
	__be32 new_dst;
	__be16 new_dport;
	__u8 hairpin_static = 0, hairpin = 0;
	__u64 now;
	__u32 ev;
	int rc;

	if (!fib)
		return CGNAT_DROP_FIB_OTHER;
	if (p->unsupported || !p->sport || !p->dport ||
	    (p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHO)) {
		if (!is_internal(ip->saddr))
			return CGNAT_CONTINUE;
		rc = fib_route(ctx, p, ip->saddr, ip->daddr, fib);
		if (rc == CGNAT_PASS_LOCAL)
			return rc;
		return p->unsupported ? p->unsupported : CGNAT_DROP_ICMP_TYPE;
	}

	ik.addr = ip->saddr;
	ik.port = *p->sport;
	ik.proto = p->proto;
	bind_out_key(&ns.key, ik.addr, ik.port, ik.proto);
	bo = session_slot((__u32)cgnat_session_find(&ns.key));
	ns.key.kind = CGNAT_KIND_SESSION;
	if (bo) {
		ext = binding_read(slot_binding(bo));
		ns.key.ext_addr = ext.addr;
		ns.key.ext_port = ext.port;
		ns.key.rem_addr = ip->daddr;
		ns.key.rem_port = remote_port(p, *p->dport);
		ns.key.proto = p->proto;
		s = session_lookup_hinted(bo, &ns.key);
		if (s)
			goto established;
	} else {
		if (!is_internal(ip->saddr) ||
		    is_router_addr(p->ifindex, ip->saddr))
			return CGNAT_CONTINUE;
		/* the external address is chosen with the binding, below;
		 * routes are looked up with the internal source meanwhile */
		ext.addr = ip->saddr;
	}

	/* A new session. Nothing is created before the packet is known to be
	 * forwardable: the router's own addresses pass to the kernel. */
	ev = tcp_events(p, 1);
	if (p->proto == IPPROTO_TCP && !(ev & CGNAT_TCP_SYN_OUT)) {
		if (ev & CGNAT_TCP_RST)
			return CGNAT_DROP_TCP_NO_SESSION;
		ev |= CGNAT_TCP_LOOSE;
	}
	if (lpm_has(&pool_prefixes, ip->daddr)) {
		/* hairpin: the target must be a live binding; ICMP queries
		 * are not hairpinned (RFC 5508 REQ-7: Basic NAT only) */
		if (p->proto == IPPROTO_ICMP)
			return CGNAT_DROP_NO_BINDING;
		struct cgnat_binding tb;

		if (!binding_in(ip->daddr, *p->dport, p->proto, &tb))
			return CGNAT_DROP_NO_BINDING;
		new_dst = tb.addr;
		new_dport = tb.port;
		hairpin_static = tb.flags & CGNAT_BIND_STATIC;
		ns.s.flags = CGNAT_SESS_HAIRPIN;
		hairpin = 1;
		rc = route(ctx, p, ext.addr, new_dst, fib);
	} else {
		new_dst = ip->daddr;
		new_dport = *p->dport;
		rc = route(ctx, p, ext.addr, ip->daddr, fib);
		if (rc == CGNAT_CONTINUE &&
		    exempt(ip->daddr, p->proto == IPPROTO_ICMP ? 0 : *p->dport)) {
			/* forwarded as it is (RFC 6888 REQ-6) */
			rc = egress_ready(ctx, p, rc, fib);
			if (rc == CGNAT_CONTINUE)
				rc = forward(p, fib);
			return rc == CGNAT_CONTINUE ? CGNAT_FWD_EXEMPT : rc;
		}
	}
	rc = egress_ready(ctx, p, rc, fib);
	if (rc != CGNAT_CONTINUE)
		return rc;

	now = p->now;
	if (!bo) {
		sub = subscriber_get(ip->saddr, now, &rc);
		if (!sub)
			return rc == CGNAT_DROP_NOT_OWNER ? rc : refuse(ctx, p, rc);
		rc = binding_create(&ik, sub, now, &ext);
		if (rc != CGNAT_CONTINUE)
			return refuse(ctx, p, rc);
		ns.key.ext_addr = ext.addr;
		ns.key.ext_port = ext.port;
		ns.key.rem_addr = ip->daddr;
		ns.key.rem_port = remote_port(p, *p->dport);
		ns.key.proto = p->proto;
	}
	/* a hairpin session translates to its target (include/cgnat.h) */
	ns.s.int_addr = hairpin ? new_dst : ip->saddr;
	ns.s.int_port = hairpin ? new_dport : *p->sport;
	ns.s.tcp = ev;
	ns.s.last_seen = cgnat_time(now);
	if (hairpin) {
		/* The target's side of the same flow, as if it came inbound:
		 * only a SYN opens TCP, and its own filtering applies. */
		hairpin_key(&tk, p, &ext);
		t = session_lookup(&tk);
		if (!t && p->proto == IPPROTO_TCP && !tcp_is_bare_syn(p))
			return CGNAT_DROP_TCP_NO_SESSION;
	}
	/* a new binding's subscriber is at hand; else it is looked up */
	rc = sub ? subscriber_count_session(sub) : subscriber_add_session(ip->saddr);
	if (rc == CGNAT_CONTINUE) {
		if (hairpin)
			rc = session_get(&ns, &s, bo);
		else
			rc = session_create(&ns, bo);
	}
	if (rc != CGNAT_CONTINUE)
		return refuse(ctx, p, rc);
	filter_note(p->proto, ext.addr, ext.port, ip->daddr, now);
	/* to its own external endpoint: both sides are this one session
	 * (counted once) */
	if (hairpin && !t && ip->daddr == ext.addr && *p->dport == ext.port)
		t = s;
	if (hairpin && !t) {
		/* The sender's side exists by now, even if the target filters
		 * this packet, so two subscribers behind address-dependent
		 * filtering open a path to each other like any two peers;
		 * until the target's side exists it is marked one-sided. */
		s->flags |= CGNAT_SESS_ONE_SIDED;
		if (!filter_admits(p->proto, ip->daddr, *p->dport, ext.addr,
				   hairpin_static))
			return CGNAT_DROP_FILTERED;
		/* the target's side translates back to the sender */
		ns.key = tk;
		ns.s.int_addr = ip->saddr;
		ns.s.int_port = *p->sport;
		ns.s.flags = CGNAT_SESS_HAIRPIN | CGNAT_SESS_INBOUND;
		ns.s.tcp = tcp_events(p, 0);
		rc = subscriber_add_session(new_dst);
		if (rc == CGNAT_CONTINUE)
			rc = session_get(&ns, &t, 0);
		if (rc != CGNAT_CONTINUE)
			return rc;
		s->flags &= ~CGNAT_SESS_ONE_SIDED;
	} else if (t) {
		/* the target opened its side first (simultaneous open): this
		 * packet is inbound for it */
		session_touch(t, now, tcp_events(p, 0), INBOUND_REFRESH);
	}
	goto translate;

established:
	now = p->now;
	ev = tcp_events(p, 1);
	if (tcp_is_bare_syn(p) && (s->tcp & (CGNAT_TCP_FIN_OUT | CGNAT_TCP_FIN_IN |
					     CGNAT_TCP_RST)))
		s->tcp = 0;
	if (s->flags & CGNAT_SESS_HAIRPIN) {
		/* the session holds the target; the target's side of the
		 * flow is looked up only to be touched (a TCP event, inbound
		 * refresh), or on a one-sided session, whose target is
		 * taken from the binding until the session ends */
		hairpin = 1;
		new_dst = s->int_addr;
		new_dport = s->int_port;
		if (s->flags & CGNAT_SESS_ONE_SIDED) {
			struct cgnat_binding tb;

			if (!binding_in(ip->daddr, *p->dport, p->proto, &tb))
				return CGNAT_DROP_NO_BINDING;
			new_dst = tb.addr;
			new_dport = tb.port;
		}
		if (ev || INBOUND_REFRESH || (s->flags & CGNAT_SESS_ONE_SIDED)) {
			hairpin_key(&tk, p, &ext);
			t = session_lookup(&tk);
			if (!t)
				return CGNAT_DROP_NO_BINDING;
		}
	} else {
		new_dst = ip->daddr;
		new_dport = *p->dport;
	}
	rc = egress_ready(ctx, p, route(ctx, p, ext.addr, new_dst, fib), fib);
	if (rc != CGNAT_CONTINUE)
		return rc;
	session_touch(s, now, ev, 1);
	if (t)
		session_touch(t, now, tcp_events(p, 0), INBOUND_REFRESH);

translate:
	mss_clamp(p);
	if (hairpin) {
		struct cgnat_frag_key orig = frag_key_of(ip);

		out_fix_id(ip);
		rewrite_endpoints(p, ext.addr, ext.port, new_dst, new_dport);
		frag_remember(p, &orig, CGNAT_FWD_HAIRPIN);
		rc = forward(p, fib);
		return rc == CGNAT_CONTINUE ? CGNAT_FWD_HAIRPIN : rc;
	}
	out_fix_id(ip);
	rewrite_endpoint(p, ADDR_SRC, ext.addr, ext.port);
	rc = forward(p, fib);
	return rc == CGNAT_CONTINUE ? CGNAT_FWD_OUT : rc;
}

/*
 * Internet -> subscriber: packets to an external endpoint with a session,
 * or with a binding whose filtering admits a new session (endpoint-
 * independent filtering, RFC 4787 REQ-8 and RFC 6888 REQ-7). Anything
 * else is CGNAT_CONTINUE, untouched.
 */
static __always_inline int nat_inbound(struct xdp_md *ctx, struct pkt *p)
{
	struct iphdr *ip = p->ip;
	/* the session being looked up or made: its key, its value */
	struct cgnat_session_slot ns = {};
	struct cgnat_session *s;
	struct bpf_fib_lookup *fib = packet_fib();
	__be32 int_addr;
	__be16 int_port;
	__u64 now;
	__u32 ev;
	int rc;

	if (!fib)
		return CGNAT_DROP_FIB_OTHER;
	/* (sport/dport are set whenever unsupported is 0; the NULL test is
	 * for the verifier, which cannot correlate the two) */
	if (p->unsupported || !p->sport || !p->dport ||
	    (p->proto == IPPROTO_ICMP && p->icmp_type != ICMP_ECHOREPLY))
		return CGNAT_CONTINUE;

	ns.key.ext_addr = ip->daddr;
	ns.key.ext_port = *p->dport;
	ns.key.rem_addr = ip->saddr;
	ns.key.rem_port = remote_port(p, *p->sport);
	ns.key.proto = p->proto;
	ev = tcp_events(p, 0);
	s = session_lookup(&ns.key);
	if (s) {
		/* a hairpin session's remote is one of our own endpoints,
		 * which never sends from outside */
		if (s->flags & CGNAT_SESS_HAIRPIN)
			return CGNAT_DROP_POOL_SOURCE;
		int_addr = s->int_addr;
		int_port = s->int_port;
	} else {
		struct cgnat_binding b;

		if (!binding_in(ip->daddr, *p->dport, p->proto, &b))
			return CGNAT_CONTINUE;
		/* sessions with a remote in the pool are hairpin sessions
		 * only (include/cgnat.h) */
		if (lpm_has(&pool_prefixes, ip->saddr))
			return CGNAT_DROP_POOL_SOURCE;
		/* Only a SYN may open a TCP session from outside (RFC 5382). */
		if (p->proto == IPPROTO_TCP && !tcp_is_bare_syn(p))
			return CGNAT_DROP_TCP_NO_SESSION;
		if (!filter_admits(p->proto, ip->daddr, *p->dport, ip->saddr,
				   b.flags & CGNAT_BIND_STATIC))
			return CGNAT_DROP_FILTERED;
		int_addr = b.addr;
		int_port = b.port;
	}

	rc = route(ctx, p, ip->saddr, int_addr, fib);
	if (rc == CGNAT_PASS_LOCAL)
		return CGNAT_DROP_FIB_OTHER;
	rc = egress_ready(ctx, p, rc, fib);
	if (rc != CGNAT_CONTINUE)
		return rc;

	now = p->now;
	if (s) {
		session_touch(s, now, ev, INBOUND_REFRESH);
	} else {
		ns.s.int_addr = int_addr;
		ns.s.int_port = int_port;
		ns.s.flags = CGNAT_SESS_INBOUND;
		ns.s.tcp = ev;
		ns.s.last_seen = cgnat_time(now);
		rc = subscriber_add_session(int_addr);
		if (rc == CGNAT_CONTINUE)
			rc = session_create(&ns, 0);
		if (rc != CGNAT_CONTINUE)
			return rc;
	}

	mss_clamp(p);
	struct cgnat_frag_key orig = frag_key_of(ip);

	rewrite_endpoint(p, ADDR_DST, int_addr, int_port);
	frag_remember(p, &orig, CGNAT_FWD_IN);
	rc = forward(p, fib);
	return rc == CGNAT_CONTINUE ? CGNAT_FWD_IN : rc;
}

/* Neither direction took the packet. */
static __always_inline int nat_other(struct xdp_md *ctx, struct pkt *p,
				     __u32 side)
{
	struct bpf_fib_lookup *fib = packet_fib();
	int rc;

	if (!fib)
		return CGNAT_DROP_FIB_OTHER;
	if (side == CGNAT_SIDE_INTERNAL) {
		/* source is no subscriber: only the router may be its target
		 * (RFC 6888 section 7, ingress filtering) */
		rc = fib_route(ctx, p, p->ip->saddr, p->ip->daddr, fib);
		return rc == CGNAT_PASS_LOCAL ? rc : CGNAT_DROP_SPOOFED;
	}
	if (lpm_has(&pool_prefixes, p->ip->daddr))
		return p->unsupported ? p->unsupported : CGNAT_DROP_NO_BINDING;
	/* subscribers are reachable only through their mappings (RFC 6598),
	 * or from exempt sources (RFC 6888 REQ-6) */
	if (is_internal(p->ip->daddr)) {
		if (!exempt(p->ip->saddr, p->sport && p->proto != IPPROTO_ICMP ?
						  *p->sport : 0))
			return CGNAT_DROP_TO_INTERNAL;
		rc = fib_route(ctx, p, p->ip->saddr, p->ip->daddr, fib);
		if (rc == CGNAT_PASS_LOCAL)
			return CGNAT_DROP_TO_INTERNAL;
		rc = egress_ready(ctx, p, rc, fib);
		if (rc == CGNAT_CONTINUE)
			rc = forward(p, fib);
		return rc == CGNAT_CONTINUE ? CGNAT_FWD_EXEMPT : rc;
	}
	return CGNAT_PASS_NOT_NAT;
}

#endif /* CGNAT_NAT_H */
