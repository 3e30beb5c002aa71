/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * mss.h - TCP MSS clamping (rodata MSS_CLAMP, 0 = off).
 *
 * Behind PPPoE or tunnels the path MTU is smaller than the subscribers'
 * links, and ICMP-based path-MTU discovery is often filtered somewhere.
 * Lowering the MSS option of SYNs in both directions keeps TCP segments
 * small enough. Only lowers, never raises; the TCP checksum is updated
 * incrementally (a 16-bit field at an odd offset enters the one's
 * complement sum byte-swapped).
 */
#ifndef CGNAT_MSS_H
#define CGNAT_MSS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "config.h"
#include "csum.h"
#include "parse.h"

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCP_OPTS_WALK 6

static __always_inline void mss_clamp(struct pkt *p)
{
	struct tcphdr *tcp = p->l4;
	void *data_end = p->data_end;
	__u8 *opt, *end;
	__be16 *mss, want;
	__u32 i;

	if (!MSS_CLAMP || p->proto != IPPROTO_TCP || !(p->tcp_flags & TCP_FLAG_SYN) || !tcp)
		return;
	if ((void *)(tcp + 1) > data_end)
		return;
	opt = (__u8 *)(tcp + 1);
	end = (__u8 *)tcp + tcp->doff * 4;
	/* MSS is sent first in practice; walk at most TCP_OPTS_WALK options
	 * before it (a longer walk costs the verifier more than it finds) */
	for (i = 0; i < TCP_OPTS_WALK; i++) {
		if (opt + 4 > end || (void *)(opt + 4) > data_end)
			return;
		if (opt[0] == TCPOPT_EOL)
			return;
		if (opt[0] == TCPOPT_NOP) {
			opt++;
			continue;
		}
		if (opt[0] == TCPOPT_MSS)
			break;
		if (opt[1] < 2)
			return;
		opt += opt[1] & 0x3f;
	}
	if (i == TCP_OPTS_WALK || opt[0] != TCPOPT_MSS || opt[1] != 4)
		return;
	mss = (__be16 *)(opt + 2);
	if (bpf_ntohs(*mss) <= MSS_CLAMP)
		return;
	want = bpf_htons(MSS_CLAMP);
	if (((long)(opt + 2) - (long)tcp) & 1)
		csum_replace2(p->l4_csum, (__u16)__builtin_bswap16(*mss),
			      (__u16)__builtin_bswap16(want));
	else
		csum_replace2(p->l4_csum, *mss, want);
	*mss = want;
}

#endif /* CGNAT_MSS_H */
