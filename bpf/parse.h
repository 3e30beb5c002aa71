/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * parse.h - bounds-checked header parsing.
 *
 * Contract: parse_packet() fills struct pkt and returns CGNAT_CONTINUE for a
 * well-formed IPv4 packet, or the reason (enum cgnat_stat) that ends its
 * processing: CGNAT_PASS_NOT_IPV4 or CGNAT_DROP_MALFORMED. A fragment other
 * than the first has p->frag = FRAG_LATER and no L4 fields. A well-formed
 * packet cgnat cannot translate (other protocol, ICMP other than echo and
 * the errors it handles) has p->unsupported set to the drop reason it gets if it needed
 * translation; it may still be for the router itself. Every header is
 * checked against data_end before it is read, and lengths against the IP
 * total length, so a frame that claims more than it carries is never
 * translated.
 */
#ifndef CGNAT_PARSE_H
#define CGNAT_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "cgnat.h"
#include "csum.h"

/* The one "keep going" value of the return vocabulary: anything else a
 * worker returns is an enum cgnat_stat reason that ends processing. */
#define CGNAT_CONTINUE (-1)

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

/* ICMP header (linux/icmp.h pulls in libc headers, so it is not used). */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
		struct {
			__be16 _unused;
			__be16 mtu;
		} frag;
	} un;
};

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* The ICMP errors cgnat translates (RFC 5508 section 4; source quench and
 * redirects are not forwarded, REQ-10c). */
static __always_inline int icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB;
}

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct hdr_cursor {
	void *pos;
};

/* One parsed packet: header pointers and the fields translation needs. */
struct pkt {
	__u64 now;	/* bpf_ktime_get_coarse_ns() at arrival */
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 *sport; /* TCP/UDP source port, or ICMP query identifier */
	__be16 *dport; /* TCP/UDP destination port, or ICMP query identifier */
	__sum16 *l4_csum; /* NULL when the packet carries none (UDP 0) */
	__u8 proto;
	__u8 tcp_flags; /* TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04) */
	__u8 pseudo;	/* L4 checksum covers the IP addresses */
	__u8 icmp_type;
	__u8 frag;	/* 0, FRAG_FIRST or FRAG_LATER */
	__u32 unsupported; /* 0, or the drop reason if it needed translation */
	__be32 nexthop;	/* egress_ready(): the unresolved next hop, or 0 */
	/* ICMP errors: the embedded (quoted) packet */
	struct iphdr *inner;
	__be16 *inner_sport;
	__be16 *inner_dport;
	__sum16 *inner_csum; /* NULL when absent from the quote, or UDP 0 */
	__u8 inner_proto;
	__u32 nexthop_ifindex; /* ... and the interface it is on */
	void *l4;	/* TCP/UDP/ICMP header */
	void *data_end;
	__u32 ifindex;	/* ingress */
	__u32 action;	/* XDP_TX or XDP_REDIRECT once forwarded */
};

#define FRAG_FIRST 1 /* offset 0, more fragments */
#define FRAG_LATER 2 /* offset > 0 */

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* Ethernet plus at most one 802.1Q/802.1ad tag. Returns the EtherType
 * (network order) or -1 if truncated. */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end,
					struct ethhdr **ethp)
{
	struct ethhdr *eth = nh->pos;
	struct vlan_hdr *vh;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return -1;
	*ethp = eth;
	nh->pos = eth + 1;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		vh = nh->pos;
		if ((void *)(vh + 1) > data_end)
			return -1;
		nh->pos = vh + 1;
		proto = vh->encap_proto;
	}
	return proto;
}

/*
 * Sum (ones' complement, unfolded) of the IPv4 options: the 16-bit words
 * from byte 20 up to IHL * 4 of the header at `off` in the packet. A global
 * function, so that its loop is verified once, apart from the callers'
 * states; called for headers with options only. Returns the sum, or -1 if
 * the header runs past the frame (the caller checked it does not).
 */
__noinline int cgnat_ip_opts_sum(struct xdp_md *ctx, __u32 off, __u32 ihl)
{
	void *data_end, *data;
	__u16 *w;
	__u32 sum = 0;
	int i;

	if (!ctx)
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (off > 64)
		return -1;
	w = data + off;
	for (i = 10; i < 30; i++) {
		if (i >= ihl * 2)
			break;
		if ((void *)(w + i + 1) > data_end)
			return -1;
		sum += w[i];
	}
	return sum;
}

/* Does the IPv4 header at `off` carry a correct checksum? A router must
 * not forward a header it cannot trust (RFC 1812 5.2.2): a flipped address
 * bit would be translated as somebody else's. The caller has checked the
 * first 20 bytes against the frame's end. */
static __always_inline int ip_csum_ok(struct xdp_md *ctx, struct iphdr *iph,
				      __u32 off)
{
	__u16 *w = (__u16 *)iph;
	__u32 sum = 0;
	int opts, i;

#pragma unroll
	for (i = 0; i < 10; i++)
		sum += w[i];
	if (iph->ihl > 5) {
		opts = cgnat_ip_opts_sum(ctx, off, iph->ihl);
		if (opts < 0)
			return 0;
		sum += opts;
	}
	return csum_fold32(sum) == 0xffff;
}

/* IPv4 header, options allowed (IHL 5..15). Returns the protocol, -1 if
 * truncated or inconsistent, -2 if its checksum is wrong. */
static __always_inline int parse_iphdr(struct xdp_md *ctx, struct hdr_cursor *nh,
				       void *data_end, struct iphdr **iphp)
{
	struct iphdr *iph = nh->pos;
	__u32 hlen, tot;

	if ((void *)(iph + 1) > data_end)
		return -1;
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	hlen = iph->ihl * 4;
	tot = bpf_ntohs(iph->tot_len);
	if (tot < hlen || nh->pos + hlen > data_end || nh->pos + tot > data_end)
		return -1;
	if (!ip_csum_ok(ctx, iph, (__u32)((void *)iph - (void *)(long)ctx->data)))
		return -2;
	*iphp = iph;
	nh->pos += hlen;
	return iph->protocol;
}

/*
 * An ICMP error: the quote must hold the embedded IP header (options
 * allowed, RFC 5508 REQ-3b) and the first 8 bytes of its TCP, UDP or ICMP
 * echo header; anything after the quote (RFC 4884 extensions) is left
 * alone. The embedded TCP checksum is used only if the quote reaches it.
 * An error whose quote cgnat cannot translate is unsupported, not
 * malformed: it may still be for the router.
 */
static __always_inline int parse_icmp_error(struct pkt *p, struct icmphdr *icmp,
					    void *data_end, void *l4_end)
{
	struct iphdr *in = (void *)(icmp + 1);
	__u8 *l4;

	p->unsupported = CGNAT_DROP_ICMP_TYPE;
	if ((void *)(in + 1) > data_end || (void *)(in + 1) > l4_end)
		return CGNAT_CONTINUE;
	if (in->version != 4 || in->ihl < 5)
		return CGNAT_CONTINUE;
	if (in->frag_off & bpf_htons(IP_OFFMASK))
		return CGNAT_CONTINUE; /* no ports in a non-first fragment */
	l4 = (__u8 *)in + in->ihl * 4;
	if ((void *)(l4 + 8) > data_end || (void *)(l4 + 8) > l4_end)
		return CGNAT_CONTINUE;
	p->inner_proto = in->protocol;
	if (in->protocol == IPPROTO_UDP) {
		p->inner_sport = (__be16 *)l4;
		p->inner_dport = (__be16 *)(l4 + 2);
		p->inner_csum = *(__sum16 *)(l4 + 6) ? (__sum16 *)(l4 + 6) : 0;
	} else if (in->protocol == IPPROTO_TCP) {
		p->inner_sport = (__be16 *)l4;
		p->inner_dport = (__be16 *)(l4 + 2);
		if ((void *)(l4 + 18) <= data_end && (void *)(l4 + 18) <= l4_end)
			p->inner_csum = (__sum16 *)(l4 + 16);
	} else if (in->protocol == IPPROTO_ICMP && l4[0] == ICMP_ECHO) {
		/* an error about an echo request: its identifier is the port */
		p->inner_sport = (__be16 *)(l4 + 4);
		p->inner_dport = (__be16 *)(l4 + 4);
		p->inner_csum = (__sum16 *)(l4 + 2);
	} else {
		return CGNAT_CONTINUE;
	}
	p->inner = in;
	p->unsupported = 0;
	return CGNAT_CONTINUE;
}

static __always_inline int parse_packet(struct xdp_md *ctx, struct pkt *p)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct hdr_cursor nh = { .pos = data };
	struct iphdr *ip;
	void *l4_end;
	int proto;

	p->data_end = data_end;
	proto = parse_ethhdr(&nh, data_end, &p->eth);
	if (proto < 0)
		return CGNAT_DROP_MALFORMED;
	if (proto != bpf_htons(ETH_P_IP))
		return CGNAT_PASS_NOT_IPV4;

	proto = parse_iphdr(ctx, &nh, data_end, &p->ip);
	if (proto == -2)
		return CGNAT_DROP_IP_CSUM;
	if (proto < 0)
		return CGNAT_DROP_MALFORMED;
	ip = p->ip;
	p->proto = proto;
	/* A later fragment carries no L4 header: it follows the first one
	 * (frag.h). A first fragment is parsed like a whole datagram, except
	 * that its L4 length covers fragments still to come. */
	if (ip->frag_off & bpf_htons(IP_OFFMASK)) {
		p->frag = FRAG_LATER;
		p->unsupported = CGNAT_DROP_FRAGMENT;
		return CGNAT_CONTINUE;
	}
	if (ip->frag_off & bpf_htons(IP_MF))
		p->frag = FRAG_FIRST;
	l4_end = (void *)ip + bpf_ntohs(ip->tot_len);

	if (proto == IPPROTO_UDP) {
		struct udphdr *udp = nh.pos;

		if ((void *)(udp + 1) > data_end || (void *)(udp + 1) > l4_end)
			return CGNAT_DROP_MALFORMED;
		if (bpf_ntohs(udp->len) < sizeof(*udp) ||
		    (!p->frag && (void *)udp + bpf_ntohs(udp->len) > l4_end))
			return CGNAT_DROP_MALFORMED;
		p->sport = &udp->source;
		p->dport = &udp->dest;
		p->l4_csum = udp->check ? &udp->check : 0;
		p->pseudo = 1;
		return CGNAT_CONTINUE;
	}
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = nh.pos;

		if ((void *)(tcp + 1) > data_end || (void *)(tcp + 1) > l4_end)
			return CGNAT_DROP_MALFORMED;
		if (tcp->doff < 5 || (void *)tcp + tcp->doff * 4 > l4_end)
			return CGNAT_DROP_MALFORMED;
		p->sport = &tcp->source;
		p->dport = &tcp->dest;
		p->l4 = tcp;
		p->l4_csum = &tcp->check;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->pseudo = 1;
		return CGNAT_CONTINUE;
	}
	if (proto == IPPROTO_ICMP) {
		struct icmphdr *icmp = nh.pos;

		if ((void *)(icmp + 1) > data_end || (void *)(icmp + 1) > l4_end)
			return CGNAT_DROP_MALFORMED;
		p->icmp_type = icmp->type;
		p->l4_csum = &icmp->checksum;
		p->pseudo = 0;
		if (icmp_is_error(icmp->type))
			return parse_icmp_error(p, icmp, data_end, l4_end);
		/* Queries: echo only (RFC 5508 REQ-1); the direction is
		 * checked by the translator. */
		if (icmp->type != ICMP_ECHO && icmp->type != ICMP_ECHOREPLY) {
			p->unsupported = CGNAT_DROP_ICMP_TYPE;
			return CGNAT_CONTINUE;
		}
		/* The identifier is both "ports" of a query. */
		p->sport = &icmp->un.echo.id;
		p->dport = &icmp->un.echo.id;
		return CGNAT_CONTINUE;
	}
	p->unsupported = CGNAT_DROP_PROTO;
	return CGNAT_CONTINUE;
}

#endif /* CGNAT_PARSE_H */
