/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * stash.h - copying a whole frame out of the packet, for the frames the
 * daemon re-runs later (frag_stash: later fragments before their first;
 * neigh_hold: packets waiting for their next hop).
 */
#ifndef CGNAT_STASH_H
#define CGNAT_STASH_H

#include "maps.h"
#include "parse.h"

/*
 * The frame, its ingress interface and arrival time in the per-CPU
 * stash_scratch value (ready to be inserted in a stash map), or 0 when it
 * cannot be kept (longer than CGNAT_STASH_BYTES).
 *
 * The verifier needs 1 <= len <= CGNAT_STASH_BYTES on the whole 64-bit
 * register (a 32-bit check lost the upper bound once the compiler spilled
 * it, after an unrelated change to process()), and 6.1 learns the lower
 * bound only from a signed compare: two checks, kept apart so the compiler
 * cannot fold them into one range test.
 */
static __always_inline struct cgnat_stash *stash_frame(struct xdp_md *ctx,
							struct pkt *p)
{
	__u64 len = ctx->data_end - ctx->data;
	struct cgnat_stash *st;
	__u32 zero = 0;

	barrier_var(len);
	if (len > CGNAT_STASH_BYTES)
		return 0;
	barrier_var(len);
	if ((__s64)len < 1)
		return 0;
	st = bpf_map_lookup_elem(&stash_scratch, &zero);
	if (!st)
		return 0;
	st->len = len;
	st->ifindex = p->ifindex;
	st->created_ns = p->now;
	if (bpf_xdp_load_bytes(ctx, 0, st->data, len))
		return 0;
	return st;
}

#endif /* CGNAT_STASH_H */
