/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * tx.h - sending a frame back out of the interface it came in on.
 *
 * XDP_TX is the fastest way on a real NIC. On a veth it is not reliable:
 * the kernel (veth_xdp_flush, as of 6.18) wakes the peer's NAPI after
 * XDP_TX only if the peer runs an XDP program, so with GRO alone on the
 * peer the frames wait until traffic in the other direction happens to
 * wake it. A redirect to the same device through the devmap
 * (ndo_xdp_xmit) always wakes the peer. TX_REDIRECT (rodata, set by the
 * daemon from interfaces.send_back) picks the redirect.
 */
#ifndef CGNAT_TX_H
#define CGNAT_TX_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "config.h"
#include "maps.h"
#include "parse.h"

/* XDP_REDIRECT to `ifindex` through the devmap: sets p->action and
 * returns CGNAT_CONTINUE, or CGNAT_DROP_NO_TX_PORT if the interface is not
 * in the devmap. */
static __always_inline int redirect_to(struct pkt *p, __u32 ifindex)
{
	if (bpf_redirect_map(&tx_ports, ifindex, 0) != XDP_REDIRECT)
		return CGNAT_DROP_NO_TX_PORT;
	p->action = XDP_REDIRECT;
	return CGNAT_CONTINUE;
}

/* Send back out of p->ifindex, as redirect_to() does. */
static __always_inline int send_back(struct pkt *p)
{
	if (TX_REDIRECT)
		return redirect_to(p, p->ifindex);
	p->action = XDP_TX;
	return CGNAT_CONTINUE;
}

#endif /* CGNAT_TX_H */
