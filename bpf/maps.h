/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * maps.h - every map of the data path, one purpose each.
 *
 * max_entries given here are placeholders: the daemon sizes every map from
 * the config (bpf_map__set_max_entries) before load. Hash maps are
 * preallocated (no BPF_F_NO_PREALLOC) unless a mode uses them only: memory
 * is reserved up front, latency stays flat, and a full map refuses inserts (-E2BIG) instead of evicting,
 * as RFC 6888 REQ-11(d) requires. State never lives in an LRU map (LRU
 * would evict it); only caches evict (neigh, an LRU map; routes, an array
 * whose slots new answers replace).
 */
#ifndef CGNAT_MAPS_H
#define CGNAT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "cgnat.h"

/* What a map update returns for a key that exists under BPF_NOEXIST. */
#ifndef EEXIST
#define EEXIST 17
#endif

/* What the daemon pinned (struct cgnat_meta); not used by the programs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_meta);
} meta SEC(".maps");

/* Subscriber prefixes (config nat.internal_prefixes). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 64);
	__type(key, struct cgnat_lpm_key);
	__type(value, struct cgnat_prefix_info);
} internal_prefixes SEC(".maps");

/* The first octets of internal_prefixes (struct cgnat_first_octets). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_first_octets);
} internal_octets SEC(".maps");

/* NAT exemptions (config nat.exempt, RFC 6888 REQ-6): destinations
 * forwarded untranslated, by prefix ... */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 64);
	__type(key, struct cgnat_lpm_key);
	__type(value, __u8);
} exempt_any SEC(".maps");

/* ... and by port and prefix. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 64);
	__type(key, struct cgnat_lpm_port_key);
	__type(value, __u8);
} exempt_port SEC(".maps");

/* Subscribers: paired external address, counters, limits state. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __be32);
	__type(value, struct cgnat_subscriber);
} subscribers SEC(".maps");

/* Subscribers per pool address (index as pool_addrs): the load that new
 * subscribers are balanced on. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} pool_load SEC(".maps");

/* Port blocks in use (port-block allocation). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* used in some modes only */
	__uint(max_entries, 1);
	__type(key, struct cgnat_block_key);
	__type(value, struct cgnat_block);
} blocks SEC(".maps");

/* Scratch to build a new subscriber (pool.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_subscriber);
} sub_scratch SEC(".maps");

/* Scratch of the sequential port search (pool.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_probe);
} probe_scratch SEC(".maps");

/* The key of the one-entry scratch maps, in .rodata: a lookup with it
 * takes no stack slot (for functions deep in a chain of calls). */
static const __u32 scratch_key = 0;

/* Each subscriber's blocks, by slot. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* used in some modes only */
	__uint(max_entries, 1);
	__type(key, struct cgnat_sub_block_key);
	__type(value, __u32);
} sub_blocks SEC(".maps");

/* External pool prefixes (config nat.external_pool); value unused. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 64);
	__type(key, struct cgnat_lpm_key);
	__type(value, __u8);
} pool_prefixes SEC(".maps");

/* Every external address of the pool, index 0..POOL_LEN-1. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __be32);
} pool_addrs SEC(".maps");

/* A binding's half (include/cgnat.h) as one 8-byte word. The sweep
 * quarantines an inbound half in place (bpf/sweep.h) with
 * binding_write(), rewriting its address and flags together, and the data
 * path reads halves with binding_read():
 * a reader sees the binding or the quarantine, never the address of one
 * with the flags of the other. */
union cgnat_binding_word {
	__u64 raw;
	struct cgnat_binding b;
};

_Static_assert(sizeof(struct cgnat_binding) == sizeof(__u64),
	       "a binding is read and quarantined with one 8-byte access");

static __always_inline struct cgnat_binding binding_read(const struct cgnat_binding *b)
{
	union cgnat_binding_word v;

	v.raw = *(const volatile __u64 *)b;
	return v.b;
}

static __always_inline void binding_write(struct cgnat_binding *b, struct cgnat_binding v)
{
	union cgnat_binding_word w = { .b = v };

	*(volatile __u64 *)b = w.raw;
}

/* Sessions, keyed in the external realm (struct cgnat_session_key), and
 * both halves of every binding: the session table of include/cgnat.h, one
 * element per segment (bpf/sessions.h reads and writes it). Mappable: user
 * space reads it through memory (src/bpf/sessions.rs). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_session_seg);
} sessions SEC(".maps");

/* The lock of each segment of sessions: its version, odd while a writer
 * holds it (sessions.h); whether the running sweep deleted slots in it
 * and reclaims its tombstones at the end of its run (sweep.h); and how
 * many live keys of the segment spilled into the next one
 * (cgnat_session_put()). */
struct cgnat_seg_lock {
	__u32 version;
	__u32 reclaim;
	__u32 spilled;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_seg_lock);
} session_locks SEC(".maps");

/* The number of slots of each kind (enum cgnat_slot_kind) in sessions:
 * at most SLOT_LIMIT[kind] (rodata). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CGNAT_KIND__MAX);
	__type(key, __u32);
	__type(value, __u64);
} session_count SEC(".maps");

/* Fragment state: later fragments follow the first one's translation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct cgnat_frag_key);
	__type(value, struct cgnat_frag);
} frags SEC(".maps");

/* Address-dependent filtering: (binding, remote address) pairs the
 * subscriber has sent to -> creation time. Sized 1 unless a protocol uses
 * CGNAT_FILTER_ADF. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* used in some modes only */
	__uint(max_entries, 1);
	__type(key, struct cgnat_filter_key);
	__type(value, __u64);
} filter_addr SEC(".maps");

/* Egress interfaces for XDP_REDIRECT, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

/* IPv4 address of each NAT interface (ifindex -> address): the source of
 * the ICMP errors cgnat generates on that interface. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __be32);
} if_addrs SEC(".maps");

/* MAC of each NAT interface, by side (include/cgnat.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct cgnat_if_mac);
} if_macs SEC(".maps");

/* Rate limit of refusal events, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_bucket);
} event_bucket SEC(".maps");

/* Rate limit of generated ICMP errors, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_bucket);
} icmp_bucket SEC(".maps");

/* Verdict counters, one slot per enum cgnat_stat. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CGNAT_STAT__MAX);
	__type(key, __u32);
	__type(value, struct cgnat_counter);
} stats SEC(".maps");

/* Events for the daemon (enum cgnat_event_type). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Ring-buffer records lost (buffer full), per enum cgnat_event_type. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CGNAT_EVENT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} event_lost SEC(".maps");

/* Later fragments that came before their first fragment (inbound and
 * hairpin), held for the daemon to re-run once it has arrived. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct cgnat_stash_key);
	__type(value, struct cgnat_stash);
} frag_stash SEC(".maps");

/* Scratch space to build a frag_stash value (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_stash);
} stash_scratch SEC(".maps");

/* Datagrams with held fragments: set when one is held, consumed when
 * the first fragment arrives. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct cgnat_frag_key);
	__type(value, __u64);
} frag_pending SEC(".maps");

/* Next hops without a neighbour entry (struct cgnat_neigh): when they
 * were reported, failed, and how many frames wait for them. LRU: an entry
 * only throttles reports and counts a queue the daemon empties anyway. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, struct cgnat_neigh);
} neigh SEC(".maps");

/* Frames waiting for their next hop to resolve (include/cgnat.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CGNAT_HOLD_TOTAL);
	__type(key, struct cgnat_hold_key);
	__type(value, struct cgnat_stash);
} neigh_hold SEC(".maps");

/* Route cache (include/cgnat.h): direct-mapped, since it is a cache, not
 * state. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CGNAT_ROUTE_SLOTS);
	__type(key, __u32);
	__type(value, struct cgnat_route);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_route_gen);
} route_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_route_scratch);
} route_scratch SEC(".maps");

/* The FIB query and answer of the packet being handled (route.h): per CPU,
 * off the data path's full stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_fib_lookup);
} fib_scratch SEC(".maps");

/*
 * The in-kernel sweep's scratch and output (bpf/sweep.h); the data path
 * never touches them.
 */
/* Per subscriber: sessions and bindings the sweep counted, in slots found
 * by the subscriber's address (sweep.h, sweep_sub()); SWEEP_SUBS_SLOTS of
 * them, twice the subscribers it may count. Mappable: the daemon reads
 * it through memory after each run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_sweep_sub);
} sweep_subs SEC(".maps");

/* Per port block: bindings the sweep counted (port-block mode). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* used in some modes only */
	__uint(max_entries, 1);
	__type(key, struct cgnat_block_key);
	__type(value, __u32);
} sweep_blocks SEC(".maps");

/* Per external address (its slot, struct cgnat_sweep_range): the ports
 * a live session uses. Scratch of one run, emptied at its start; an
 * address without a slot has its bindings marked CGNAT_BIND_LIVE
 * instead. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_port_bits);
} sweep_live SEC(".maps");

/* All zero, never written: what sweep_live is emptied with. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgnat_port_bits);
} sweep_zero SEC(".maps");

/* Bindings a sweep released, in order; cgnat_sweep.out says how many.
 * Mappable: the daemon reads them through memory. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct cgnat_release);
} sweep_out SEC(".maps");

#endif /* CGNAT_MAPS_H */
