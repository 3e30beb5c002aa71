/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * config.h - the program's configuration: read-only globals (.rodata)
 * that the daemon sets before load (src/bpf.rs), so that the verifier
 * sees them as constants and prunes what a configuration does not use.
 * The values here are defaults for a load without the daemon.
 *
 * They are defined, not declared, here: the data path is one translation
 * unit (cgnat.bpf.c), and the include guard keeps one definition.
 */
#ifndef CGNAT_CONFIG_H
#define CGNAT_CONFIG_H

#include <linux/types.h>
#include "cgnat.h"

/* ifindex handed to bpf_fib_lookup (0: the ingress interface). */
const volatile __u32 FIB_IFINDEX = 0;
/* Number of valid entries in pool_addrs. */
const volatile __u32 POOL_LEN = 0;
/* Inbound packets refresh sessions (RFC 4787 REQ-6a: MAY; off by
 * default, so outsiders cannot keep a mapping alive). */
const volatile __u8 INBOUND_REFRESH = 0;
/* Filtering per protocol (enum cgnat_filtering); endpoint-independent by
 * default (RFC 4787 REQ-8, RFC 6888 REQ-7). */
const volatile __u8 FILTER_UDP = CGNAT_FILTER_EIF;
const volatile __u8 FILTER_TCP = CGNAT_FILTER_EIF;
const volatile __u8 FILTER_ICMP = CGNAT_FILTER_EIF;
/* Keep the parity of the source port in random allocations (RFC 4787
 * REQ-4; RFC 7857 section 8 allows turning it off, as by default here). */
const volatile __u8 PRESERVE_PARITY = 0;
/* Generated ICMP errors per second and CPU (RFC 1812 4.3.2.8 rate
 * limit; also the burst). 0: never generate. */
const volatile __u32 ICMP_RATE = 100;
/* Port allocation (enum cgnat_alloc_mode) and its geometry. */
const volatile __u8 ALLOC_MODE = CGNAT_ALLOC_DYNAMIC;
const volatile __u32 BLOCK_SIZE = 256;       /* port-block: ports per block */
const volatile __u32 MAX_BLOCKS = 4;         /* port-block: per subscriber */
const volatile __u32 BLOCKS_PER_ADDR = 252;  /* (65536 - CGNAT_PORT_MIN) / BLOCK_SIZE */
const volatile __u32 DET_HOSTS = 0;          /* deterministic: per address */
const volatile __u32 DET_PORTS = 0;          /* deterministic: per subscriber */
/* Per-subscriber limits (RFC 6888 REQ-4, REQ-5; 0: none): bindings per
 * protocol, sessions, new bindings per second. */
const volatile __u32 LIMIT_PORTS = 0;
const volatile __u32 LIMIT_SESSIONS = 0;
const volatile __u32 RATE_NEW = 0;
/* nat.exempt has entries. */
const volatile __u8 HAS_EXEMPT = 0;
/* Key of the IP ID hash (frag.h); random, set by the daemon. */
const volatile __u32 ID_SECRET = 0;
/* The session table (bpf/sessions.h), per slot kind (enum
 * cgnat_slot_kind, index kind & 3, the fourth a copy of the sessions'):
 * the first segment of its region (the sessions', then the outbound
 * halves', then the inbound halves'), its segments, the slots it may
 * hold; and the key of its hash (random, set by the daemon, and kept with
 * the pinned table). Read at an index the verifier does not know, so that
 * code working on a key of any kind is checked once, not once per kind. */
const volatile __u32 REGION_FIRST[4] = { 0, 1, 2, 0 };
const volatile __u32 REGION_SEGS[4] = { 1, 1, 1, 1 };
const volatile __u64 SLOT_LIMIT[4] = { 32, 32, 32, 32 };
const volatile __u64 SESSION_SEED = 0;
/* The slots of the sweep's table of subscribers (sweep_subs). */
const volatile __u32 SWEEP_SUBS_SLOTS = 1;
/* Clamp the MSS option of TCP SYNs to at most this (0: off). */
const volatile __u16 MSS_CLAMP = 0;
/* Route cache entries are trusted this long (0: no cache); see
 * struct cgnat_route. Bounds staleness even if the daemon misses a change. */
const volatile __u64 ROUTE_CACHE_NS = 1000000000ULL;
/* Frames that leave by the interface they came in on are redirected to it
 * through the devmap instead of XDP_TX (tx.h; for veth). */
const volatile __u8 TX_REDIRECT = 0;

#endif /* CGNAT_CONFIG_H */
