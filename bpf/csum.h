/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * csum.h - incremental Internet checksum updates (RFC 1624, eqn. 3:
 * HC' = ~(~HC + ~m + m')).
 *
 * All values are taken as they lie in the packet (network byte order); the
 * one's complement sum is byte-order independent, so no swapping is needed.
 */
#ifndef CGNAT_CSUM_H
#define CGNAT_CSUM_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* UDP: a transmitted checksum of 0 means "none"; a computed 0 is sent as
 * 0xffff (RFC 768). */
#define CSUM_MANGLED_0 ((__sum16)0xffff)

static __always_inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* The same for a 64-bit sum of 32-bit words. */
static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return csum_fold32((__u32)s);
}

/* The change to a sum when a 32-bit field goes from `from` to `to`
 * (~m + m' of eqn. 3, unfolded); changes add up. */
static __always_inline __u32 csum_delta4(__be32 from, __be32 to)
{
	return (~from & 0xffff) + (~from >> 16) + (to & 0xffff) + (to >> 16);
}

static __always_inline __u32 csum_delta2(__be16 from, __be16 to)
{
	return (__u16)~from + (__u32)to;
}

/* Apply a sum of changes (csum_delta4/2) to the checksum *sum. */
static __always_inline void csum_apply(__sum16 *sum, __u32 delta)
{
	*sum = (__sum16)~csum_fold32((__u16)~*sum + delta);
}

/* Replace a 32-bit field covered by *sum. */
static __always_inline void csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	csum_apply(sum, csum_delta4(from, to));
}

/* Replace a 16-bit field covered by *sum. */
static __always_inline void csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	csum_apply(sum, csum_delta2(from, to));
}

#endif /* CGNAT_CSUM_H */
