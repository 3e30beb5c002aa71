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

/* Replace a 32-bit field covered by *sum. */
static __always_inline void csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__u32 s = (__u16)~*sum;

	s += (~from & 0xffff) + (~from >> 16);
	s += (to & 0xffff) + (to >> 16);
	*sum = (__sum16)~csum_fold32(s);
}

/* Replace a 16-bit field covered by *sum. */
static __always_inline void csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~from;
	s += to;
	*sum = (__sum16)~csum_fold32(s);
}

#endif /* CGNAT_CSUM_H */
