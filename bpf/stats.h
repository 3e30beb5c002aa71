/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * stats.h - verdict counters and the reason -> XDP action mapping.
 *
 * Every packet ends with exactly one enum cgnat_stat reason; count() adds it
 * to the per-CPU slot of that reason (no atomics needed), and
 * reason_action() turns it into the XDP action: CGNAT_FWD_* reasons carry
 * the forwarding action chosen by forward(), CGNAT_PASS_* pass to the
 * kernel, everything else drops.
 */
#ifndef CGNAT_STATS_H
#define CGNAT_STATS_H

#include "maps.h"

static __always_inline void count(__u32 reason, __u64 bytes)
{
	struct cgnat_counter *c = bpf_map_lookup_elem(&stats, &reason);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline __u32 reason_action(__u32 reason, __u32 fwd_action)
{
	if (reason < CGNAT_PASS_NOT_IPV4)
		return fwd_action;
	if (reason < CGNAT_DROP_MALFORMED)
		return XDP_PASS;
	return XDP_DROP;
}

#endif /* CGNAT_STATS_H */
