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

/* Rewrite the quoted packet's source or destination endpoint (`end`:
 * ADDR_SRC or ADDR_DST) and the checksums that cover it. The ICMP
 * checksum covers every field stored: their changes are added up and
 * applied to it once. */
static __always_inline void icmp_inner_rewrite(struct pkt *p, int end,
					       __be32 addr, __be16 port)
{
	struct iphdr *in = p->inner;
	__be32 *ap = end == ADDR_DST ? &in->daddr : &in->saddr;
	__be16 *pp = end == ADDR_DST ? p->inner_dport : p->inner_sport;
	__be32 old_a = *ap;
	__be16 old_p = *pp;
	__u32 d = csum_delta4(old_a, addr) + csum_delta2(old_p, port);
	__sum16 c;

	if (p->inner_csum) {
		/* an ICMP checksum covers no pseudo-header */
		c = *p->inner_csum;
		csum_apply(&c, (p->inner_proto != IPPROTO_ICMP ? csum_delta4(old_a, addr) : 0) +
				       csum_delta2(old_p, port));
		if (p->inner_proto == IPPROTO_UDP && c == 0)
			c = CSUM_MANGLED_0;
		d += csum_delta2(*p->inner_csum, c);
		*p->inner_csum = c;
	}
	c = in->check;
	csum_replace4(&c, old_a, addr);
	d += csum_delta2(in->check, c);
	in->check = c;
	*pp = port;
	*ap = addr;
	csum_apply(p->l4_csum, d);
}

/*
 * RFC 5508 REQ-3/3a: an error with a bad ICMP checksum, or a bad checksum
 * of the embedded IP header, is dropped (the embedded L4 checksum is not
 * checked, REQ-3c). The ICMP sum covers the whole message: the ICMP header
 * and the embedded IP header (whose own sum is checked on the way), then
 * the rest of the quote. Everything is summed 32 bits at a time, which
 * keeps the 16-bit words paired (each part starts 4-aligned from the
 * message's start): the fixed 28 bytes unrolled, options and the rest in
 * bounded loops, a 16-bit and an 8-bit tail (padded with zero).
 */
#define ICMP_MSG_MAX 1520 /* a full-size error */
#define ICMP_REST_MAX_WORDS \
	((ICMP_MSG_MAX - sizeof(struct icmphdr) - sizeof(struct iphdr)) / 4)

static __always_inline int icmp_error_csum_ok(struct pkt *p)
{
	void *data_end = p->data_end;
	struct iphdr *in = p->inner;
	__u32 *w = (__u32 *)in, *rest;
	__u32 len = bpf_ntohs(p->ip->tot_len) - p->ip->ihl * 4;
	__u32 hl = in->ihl * 4, i, words, tail;
	__u64 sum;

	if (len > ICMP_MSG_MAX || len < sizeof(struct icmphdr) + hl ||
	    (void *)(in + 1) > data_end)
		return 0;
	/* the embedded IP header, options included */
	sum = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];
	for (i = 5; i < 15; i++) {
		if (i >= hl / 4 || (void *)(w + i + 1) > data_end)
			break;
		sum += w[i];
	}
	if (csum_fold64(sum) != 0xffff)
		return 0;
	/* the ICMP header (the parser checked it lies before `in`) */
	w = (__u32 *)((struct icmphdr *)in - 1);
	sum += (__u64)w[0] + w[1];
	/* the rest of the message */
	rest = (__u32 *)((__u8 *)in + hl);
	len -= sizeof(struct icmphdr) + hl;
	barrier_var(len); /* bounded again below, for the verifier */
	if (len > ICMP_MSG_MAX)
		return 0;
	words = len / 4;
	for (i = 0; i < ICMP_REST_MAX_WORDS; i++) {
		if (i >= words || (void *)(rest + i + 1) > data_end)
			break;
		sum += rest[i];
	}
	tail = len & 3;
	if (tail) {
		__u8 *t = (__u8 *)rest + (len & ~3u);

		if (tail & 2) {
			if ((void *)(t + 2) > data_end)
				return 0;
			sum += *(__u16 *)t;
			t += 2;
		}
		if (tail & 1) {
			if ((void *)(t + 1) > data_end)
				return 0;
			sum += *t;
		}
	}
	return csum_fold64(sum) == 0xffff;
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
	if (!is_internal(ip->saddr))
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
