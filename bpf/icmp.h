/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * icmp.h - translation of ICMP error messages (RFC 5508 section 4).
 *
 * An error quotes the packet that caused it. Coming from outside, the
 * quote is one of our translated outbound packets: its source (the
 * external endpoint) is restored to the subscriber's internal endpoint and
 * the outer destination follows (REQ-4). Coming from a subscriber, the
 * quote is an inbound packet: its destination becomes the external
 * endpoint again and the outer source the pool address (REQ-5); if the
 * outer destination is itself one of our external endpoints the error is
 * hairpinned and both translations apply (REQ-7). Type and code are kept;
 * the outer IP, ICMP, embedded IP and (when quoted) embedded L4 checksums
 * are all updated incrementally. The mapping is found through the binding
 * tables only: an error neither creates, refreshes nor deletes state
 * (RFC 5508 REQ-6, RFC 7857 section 7.1). Errors that match no mapping are
 * dropped (counted drop_no_binding).
 *
 * Workers return CGNAT_CONTINUE (not ours) or an enum cgnat_stat reason.
 */
#ifndef CGNAT_ICMP_H
#define CGNAT_ICMP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "csum.h"
#include "fwd.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "route.h"
#include "sessions.h"

/* Store a 16/32-bit field inside the ICMP message, updating its checksum. */
static __always_inline void icmp_store16(__sum16 *csum, __be16 *field, __be16 v)
{
	csum_replace2(csum, *field, v);
	*field = v;
}

static __always_inline void icmp_store32(__sum16 *csum, __be32 *field, __be32 v)
{
	csum_replace4(csum, *field, v);
	*field = v;
}

/* Rewrite the quoted packet's source or destination endpoint (`end`:
 * ADDR_SRC or ADDR_DST); every store inside the ICMP message also updates
 * the ICMP checksum. */
static __always_inline void icmp_inner_rewrite(struct pkt *p, int end,
					       __be32 addr, __be16 port)
{
	struct iphdr *in = p->inner;
	__sum16 *oc = p->l4_csum;
	__be32 *ap = end == ADDR_DST ? &in->daddr : &in->saddr;
	__be16 *pp = end == ADDR_DST ? p->inner_dport : p->inner_sport;
	__be32 old_a = *ap;
	__be16 old_p = *pp;
	__sum16 c;

	if (p->inner_csum) {
		c = *p->inner_csum;
		if (p->inner_proto != IPPROTO_ICMP)
			csum_replace4(&c, old_a, addr);
		csum_replace2(&c, old_p, port);
		if (p->inner_proto == IPPROTO_UDP && c == 0)
			c = CSUM_MANGLED_0;
		icmp_store16(oc, p->inner_csum, c);
	}
	icmp_store16(oc, pp, port);
	c = in->check;
	csum_replace4(&c, old_a, addr);
	icmp_store16(oc, &in->check, c);
	icmp_store32(oc, ap, addr);
}

/* RFC 5508 REQ-3/3a: an error with a bad ICMP checksum, or a bad
 * checksum of the embedded IP header, is dropped (the embedded L4 checksum
 * is not checked, REQ-3c). The ICMP sum covers the whole message. */
#define ICMP_MSG_MAX_WORDS 760 /* 1520 bytes: a full-size error */

static __always_inline int icmp_error_csum_ok(struct pkt *p)
{
	void *data_end = p->data_end;
	__u16 *w = (__u16 *)p->l4_csum - 1; /* start of the ICMP header */
	__u32 len = bpf_ntohs(p->ip->tot_len) - p->ip->ihl * 4;
	__u32 i, words = len / 2, sum = 0;
	struct iphdr *in = p->inner;

	if (len > ICMP_MSG_MAX_WORDS * 2)
		return 0;
	for (i = 0; i < ICMP_MSG_MAX_WORDS; i++) {
		if (i >= words || (void *)(w + i + 1) > data_end)
			break;
		sum += w[i];
	}
	if ((len & 1) && (void *)((__u8 *)w + len) <= data_end)
		sum += *((__u8 *)w + len - 1); /* odd tail, padded with zero */
	if (csum_fold32(sum) != 0xffff)
		return 0;
	w = (__u16 *)in;
	sum = 0;
	for (i = 0; i < 30; i++) {
		if (i >= in->ihl * 2u || (void *)(w + i + 1) > data_end)
			break;
		sum += w[i];
	}
	return csum_fold32(sum) == 0xffff;
}

/* Internet -> subscriber error about one of our outbound packets. */
static __always_inline int nat_icmp_error_in(struct xdp_md *ctx, struct pkt *p)
{
	struct iphdr *ip = p->ip, *in = p->inner;
	struct bpf_fib_lookup *fib = packet_fib();
	struct cgnat_binding b;
	__be32 int_addr;
	__be16 int_port;
	int rc;

	if (!fib)
		return CGNAT_DROP_FIB_OTHER;
	/* the error must be addressed to the quoted packet's source */
	if (ip->daddr != in->saddr)
		return CGNAT_CONTINUE;
	if (!binding_in(in->saddr, *p->inner_sport, p->inner_proto, &b))
		return CGNAT_CONTINUE;
	if (!icmp_error_csum_ok(p))
		return CGNAT_DROP_ICMP_CSUM;
	int_addr = b.addr;
	int_port = b.port;

	rc = fib_route(ctx, p, ip->saddr, int_addr, fib);
	if (rc == CGNAT_PASS_LOCAL)
		return CGNAT_DROP_FIB_OTHER;
	rc = egress_ready(ctx, p, rc, fib); /* no ICMP about ICMP errors */
	if (rc != CGNAT_CONTINUE)
		return rc;
	icmp_inner_rewrite(p, ADDR_SRC, int_addr, int_port);
	ip_set_addr(ip, ADDR_DST, int_addr);
	rc = forward(p, fib);
	return rc == CGNAT_CONTINUE ? CGNAT_FWD_IN : rc;
}

/* Subscriber -> anywhere error about a packet it received through us. */
static __always_inline int nat_icmp_error_out(struct xdp_md *ctx, struct pkt *p)
{
	struct iphdr *ip = p->ip, *in = p->inner;
	struct cgnat_session_key ik;
	struct bpf_fib_lookup *fib = packet_fib();
	struct cgnat_binding b, tb;
	__be32 ext_addr, new_dst = ip->daddr, tgt_addr = 0;
	__be16 ext_port, tgt_port = 0;
	int rc;

	if (!fib)
		return CGNAT_DROP_FIB_OTHER;
	if (!lpm_has(&internal_prefixes, ip->saddr))
		return CGNAT_CONTINUE;
	b.addr = 0;
	if (ip->saddr == in->daddr && p->inner_proto != IPPROTO_ICMP) {
		bind_out_key(&ik, in->daddr, *p->inner_dport, p->inner_proto);
		binding_out(&ik, &b);
	}
	if (!b.addr) {
		rc = fib_route(ctx, p, ip->saddr, ip->daddr, fib);
		return rc == CGNAT_PASS_LOCAL ? rc : CGNAT_DROP_NO_BINDING;
	}
	ext_addr = b.addr;
	ext_port = b.port;
	if (!icmp_error_csum_ok(p))
		return CGNAT_DROP_ICMP_CSUM;

	if (lpm_has(&pool_prefixes, ip->daddr)) {
		/* hairpinned: the quoted packet came from another mapping */
		if (ip->daddr != in->saddr)
			return CGNAT_DROP_NO_BINDING;
		if (!binding_in(in->saddr, *p->inner_sport, p->inner_proto, &tb))
			return CGNAT_DROP_NO_BINDING;
		tgt_addr = tb.addr;
		tgt_port = tb.port;
		new_dst = tgt_addr;
	}
	rc = egress_ready(ctx, p, fib_route(ctx, p, ext_addr, new_dst, fib),
			  fib);
	if (rc != CGNAT_CONTINUE)
		return rc;

	icmp_inner_rewrite(p, ADDR_DST, ext_addr, ext_port);
	ip_set_addr(ip, ADDR_SRC, ext_addr);
	if (tgt_addr) {
		icmp_inner_rewrite(p, ADDR_SRC, tgt_addr, tgt_port);
		ip_set_addr(ip, ADDR_DST, tgt_addr);
	}
	rc = forward(p, fib);
	if (rc != CGNAT_CONTINUE)
		return rc;
	return tgt_addr ? CGNAT_FWD_HAIRPIN : CGNAT_FWD_OUT;
}

#endif /* CGNAT_ICMP_H */
