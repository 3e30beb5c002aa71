/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * addr.h - address classification (the prefix tries): which addresses are
 * subscribers, which are ours, which destinations are exempt.
 */
#ifndef CGNAT_ADDR_H
#define CGNAT_ADDR_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "config.h"
#include "maps.h"

static __always_inline int lpm_has(void *trie, __be32 addr)
{
	struct cgnat_lpm_key k = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(trie, &k) != 0;
}

/* Is addr in a subscriber prefix (internal_prefixes)? Its first octet's
 * bit first (struct cgnat_first_octets): no trie lookup for almost every
 * address of the internet. */
static __always_inline int is_internal(__be32 addr)
{
	__u32 zero = 0, o = bpf_ntohl(addr) >> 24;
	struct cgnat_first_octets *f = bpf_map_lookup_elem(&internal_octets, &zero);

	if (f && !((f->bits[(o >> 6) & 3] >> (o & 63)) & 1))
		return 0;
	return lpm_has(&internal_prefixes, addr);
}

/* The internal_prefixes entry covering addr, or NULL. */
static __always_inline struct cgnat_prefix_info *internal_prefix(__be32 addr)
{
	struct cgnat_lpm_key k = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&internal_prefixes, &k);
}

/* Is (addr, port) a NAT-exempt destination (RFC 6888 REQ-6)? */
static __always_inline int exempt(__be32 addr, __be16 port)
{
	struct cgnat_lpm_port_key pk = { .prefixlen = 48, .port = port };

	if (!HAS_EXEMPT)
		return 0;
	if (lpm_has(&exempt_any, addr))
		return 1;
	__builtin_memcpy(pk.addr, &addr, 4);
	return bpf_map_lookup_elem(&exempt_port, &pk) != 0;
}

#endif /* CGNAT_ADDR_H */
