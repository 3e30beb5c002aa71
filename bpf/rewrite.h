/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * rewrite.h - rewriting the addresses, ports and IP ID of a parsed packet,
 * each store with the incremental update of every checksum that covers
 * it (csum.h, RFC 1624). Used by the translations of nat.h, icmp.h
 * (outer header) and frag.h.
 *
 * `end` is ADDR_SRC or ADDR_DST, a constant at every call site, so each
 * inlined copy touches one field only.
 */
#ifndef CGNAT_REWRITE_H
#define CGNAT_REWRITE_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include "csum.h"
#include "parse.h"

#define ADDR_SRC 0
#define ADDR_DST 1

/* Set the IP header's source or destination address (header checksum
 * only: for a packet without ports, or whose L4 sum is handled apart). */
static __always_inline void ip_set_addr(struct iphdr *ip, int end, __be32 addr)
{
	if (end == ADDR_DST) {
		csum_replace4(&ip->check, ip->daddr, addr);
		ip->daddr = addr;
	} else {
		csum_replace4(&ip->check, ip->saddr, addr);
		ip->saddr = addr;
	}
}

static __always_inline void ip_set_id(struct iphdr *ip, __be16 id)
{
	csum_replace2(&ip->check, ip->id, id);
	ip->id = id;
}

/* Set the source or destination endpoint (address, and port or ICMP query
 * identifier) of the packet: the L4 checksum (which covers the addresses
 * through the pseudo-header, except ICMP's) and the IP header checksum. A
 * UDP checksum that becomes 0 is sent as 0xffff (0 means none). */
static __always_inline void rewrite_endpoint(struct pkt *p, int end,
					     __be32 addr, __be16 port)
{
	struct iphdr *ip = p->ip;

	if (p->l4_csum) {
		if (p->pseudo)
			csum_replace4(p->l4_csum,
				      end == ADDR_DST ? ip->daddr : ip->saddr, addr);
		csum_replace2(p->l4_csum, end == ADDR_DST ? *p->dport : *p->sport,
			      port);
		if (p->proto == IPPROTO_UDP && *p->l4_csum == 0)
			*p->l4_csum = CSUM_MANGLED_0;
	}
	ip_set_addr(ip, end, addr);
	if (end == ADDR_DST)
		*p->dport = port;
	else
		*p->sport = port;
}

/* Set both endpoints of a TCP or UDP packet (hairpinned: RFC 4787
 * REQ-9), as rewrite_endpoint() twice would, with one update of each
 * checksum. */
static __always_inline void rewrite_endpoints(struct pkt *p, __be32 saddr, __be16 sport,
					      __be32 daddr, __be16 dport)
{
	struct iphdr *ip = p->ip;
	__u32 ipd = csum_delta4(ip->saddr, saddr) + csum_delta4(ip->daddr, daddr);

	if (p->l4_csum) {
		csum_apply(p->l4_csum, ipd + csum_delta2(*p->sport, sport) +
					       csum_delta2(*p->dport, dport));
		if (p->proto == IPPROTO_UDP && *p->l4_csum == 0)
			*p->l4_csum = CSUM_MANGLED_0;
	}
	csum_apply(&ip->check, ipd);
	ip->saddr = saddr;
	ip->daddr = daddr;
	*p->sport = sport;
	*p->dport = dport;
}

#endif /* CGNAT_REWRITE_H */
