/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * addr.h - address classification (the prefix tries) and the paired pool:
 * which addresses are subscribers, which are ours, and which external
 * address a subscriber uses.
 */
#ifndef CGNAT_ADDR_H
#define CGNAT_ADDR_H

#include "maps.h"
#include <bpf/bpf_endian.h>

static __always_inline int lpm_has(void *trie, __be32 addr)
{
	struct cgnat_lpm_key k = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(trie, &k) != 0;
}

/*
 * Paired pooling (RFC 4787 REQ-2, RFC 6888 REQ-2): the external address of
 * a subscriber is a function of its address alone, so all its flows of
 * every protocol share one external address.
 */
static __always_inline int pool_pick(__be32 int_addr, __be32 *ext)
{
	__u32 h = bpf_ntohl(int_addr) * 0x9E3779B1u;
	__u32 idx = ((__u64)h * POOL_LEN) >> 32;
	__be32 *a = bpf_map_lookup_elem(&pool_addrs, &idx);

	if (!a)
		return -1;
	*ext = *a;
	return 0;
}

#endif /* CGNAT_ADDR_H */
