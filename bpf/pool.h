/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * pool.h - subscribers, their external address and their ports.
 *
 * Paired pooling (RFC 4787 REQ-2, RFC 6888 REQ-2): a subscriber gets one
 * external address with its first binding and keeps it while it holds any;
 * every protocol uses it. A new subscriber goes to the less loaded of two
 * pool addresses, one hashed from its address and one random (pool_load;
 * "power of two choices" keeps the load within a few subscribers of even
 * without scanning the pool), or, in
 * deterministic mode, to the address its own address maps to. When its
 * address has no port left the flow fails with ICMP 3/1; it never spills
 * to another address (RFC 7857 section 4).
 *
 * Ports (ALLOC_MODE):
 * - dynamic: keep the source port if free, else random ports of the same
 *   class (RFC 4787 REQ-3a, RFC 6056 algorithm 1, bounded retries);
 * - port-block (RFC 6888 REQ-14): the subscriber holds up to MAX_BLOCKS
 *   blocks of BLOCK_SIZE ports; ports are random inside its blocks; a new
 *   block is claimed (and logged, once) when they are full. The daemon
 *   releases a block when no binding uses it;
 * - deterministic (RFC 7422): address and port range are a function of the
 *   subscriber's address alone; ports random inside the range; nothing
 *   to log.
 * An external port is claimed by inserting its binding's inbound half
 * (an insert that fails when the key is there, under its segment's lock),
 * so it is never given twice, whatever the mode.
 *
 * Limits (RFC 6888 REQ-4, REQ-5): LIMIT_PORTS bindings per protocol,
 * LIMIT_SESSIONS sessions, RATE_NEW new bindings per second (0: none).
 * The counters are incremented here and recounted by the daemon.
 *
 * Workers return CGNAT_CONTINUE or an enum cgnat_stat reason.
 */
#ifndef CGNAT_POOL_H
#define CGNAT_POOL_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "config.h"
#include "events.h"
#include "maps.h"
#include "parse.h"
#include "sessions.h"

/* Random ports tried after the source port itself; failing them all
 * counts as exhaustion. */
#define PORT_TRIES 32
/* Port-block: random ports tried per block, blocks claimed at most. */
#define BLOCK_PORT_TRIES 8
#define BLOCK_CLAIM_TRIES 16
#define BLOCK_PROBE_MAX 256

static __always_inline __u32 proto_idx(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return CGNAT_PI_TCP;
	if (proto == IPPROTO_UDP)
		return CGNAT_PI_UDP;
	return CGNAT_PI_ICMP;
}

static __always_inline struct cgnat_subscriber *subscriber_find(__be32 addr)
{
	return bpf_map_lookup_elem(&subscribers, &addr);
}

/* Deterministic mode: the external address (pool index) and first port of
 * a subscriber. Subscribers are numbered across the internal prefixes;
 * DET_HOSTS of them share an address, DET_PORTS ports each. */
static __always_inline int det_place(__be32 addr, struct cgnat_prefix_info *pi,
				     __u32 *idx, __u16 *lo)
{
	__u32 n;

	if (!DET_HOSTS)
		return -1;
	n = pi->offset + (bpf_ntohl(addr) - bpf_ntohl(pi->network));
	*idx = n / DET_HOSTS;
	*lo = CGNAT_PORT_MIN + (n % DET_HOSTS) * DET_PORTS;
	return *idx < POOL_LEN ? 0 : -1;
}

/* The less loaded of two addresses of the prefix's part of the pool: one
 * given by a hash of the subscriber's address, one random; on a tie the
 * hashed one, so a subscriber that comes back after its state expired
 * usually gets its old address again. */
static __always_inline __u32 pool_choose(__be32 sub, struct cgnat_prefix_info *pi)
{
	__u32 first = pi->pool_first, n = pi->pool_count;
	__u32 a, b;

	if (!n || first >= POOL_LEN || n > POOL_LEN - first) {
		first = 0;
		n = POOL_LEN;
	}
	a = first + (((__u64)(bpf_ntohl(sub) * 0x9E3779B1u) * n) >> 32);
	b = first + bpf_get_prandom_u32() % n;
	__u32 *la = bpf_map_lookup_elem(&pool_load, &a);
	__u32 *lb = bpf_map_lookup_elem(&pool_load, &b);

	if (la && lb && *lb < *la)
		return b;
	return a;
}

/* The subscriber that is about to get a new binding, created on its first
 * one; NULL with *rc set when this node may not allocate for it (a cluster
 * slice it does not own now: CGNAT_DROP_NOT_OWNER) or cannot. */
static __always_inline struct cgnat_subscriber *
subscriber_get(__be32 addr, __u64 now, int *rc)
{
	struct cgnat_subscriber *s, *init;
	struct cgnat_prefix_info *pi = internal_prefix(addr);
	__u32 k = 0, idx;
	__u16 lo = 0;
	__be32 *ext;
	__u32 *load;
	int err; /* int: see session_get() in nat.h */

	*rc = CGNAT_DROP_NOT_OWNER;
	if (!pi || !pi->active)
		return 0;
	s = subscriber_find(addr);
	if (s)
		return s;
	*rc = CGNAT_DROP_NO_POOL;
	if (!POOL_LEN)
		return 0;
	if (ALLOC_MODE == CGNAT_ALLOC_DET) {
		if (det_place(addr, pi, &idx, &lo))
			return 0;
	} else {
		idx = pool_choose(addr, pi);
	}
	ext = bpf_map_lookup_elem(&pool_addrs, &idx);
	/* built in a per-CPU scratch value: the stack is full */
	init = bpf_map_lookup_elem(&sub_scratch, &k);
	if (!ext || !init)
		return 0;
	__builtin_memset(init, 0, sizeof(*init));
	init->ext_addr = *ext;
	init->pool_idx = idx;
	init->det_lo = lo;
	init->rate_tokens = RATE_NEW;
	init->rate_stamp_ns = now;
	init->created_ns = now;
	init->last_alloc_ns = now;
	err = bpf_map_update_elem(&subscribers, &addr, init, BPF_NOEXIST);
	if (err == 0) {
		load = bpf_map_lookup_elem(&pool_load, &idx);
		if (load)
			__sync_fetch_and_add(load, 1);
	} else if (err != -EEXIST) {
		*rc = CGNAT_DROP_SUBS_FULL;
		return 0;
	}
	s = subscriber_find(addr);
	if (!s)
		*rc = CGNAT_DROP_SUBS_FULL;
	return s;
}

/* May the subscriber create one more binding of `proto` now? */
static __always_inline int subscriber_admit(struct cgnat_subscriber *s,
					    __u8 proto, __u64 now)
{
	__u32 i = proto_idx(proto);
	__u64 refill;

	if (LIMIT_PORTS && i < CGNAT_PI__MAX && s->ports[i] >= LIMIT_PORTS)
		return CGNAT_DROP_SUB_LIMIT;
	if (RATE_NEW) {
		refill = (now - s->rate_stamp_ns) * RATE_NEW / 1000000000ULL;
		if (refill) {
			s->rate_tokens = s->rate_tokens + refill > RATE_NEW ?
						 RATE_NEW : s->rate_tokens + refill;
			s->rate_stamp_ns = now;
		}
		if (!s->rate_tokens)
			return CGNAT_DROP_SUB_LIMIT;
		s->rate_tokens--;
	}
	return CGNAT_CONTINUE;
}

/* May subscriber *s have one more session? Counts it if so. */
static __always_inline int subscriber_count_session(struct cgnat_subscriber *s)
{
	if (LIMIT_SESSIONS && s->sessions >= LIMIT_SESSIONS)
		return CGNAT_DROP_SUB_LIMIT;
	__sync_fetch_and_add(&s->sessions, 1);
	return CGNAT_CONTINUE;
}

/* The same for the subscriber with address `addr`, if it has state. */
static __always_inline int subscriber_add_session(__be32 addr)
{
	struct cgnat_subscriber *s = subscriber_find(addr);

	if (!s)
		return CGNAT_CONTINUE; /* static mapping of a subscriber with no state */
	return subscriber_count_session(s);
}

/* NAT log record of a new binding (RFC 6888 section 4: no destination,
 * REQ-12), stamped with the packet's arrival. Port-block and deterministic
 * modes log blocks, or nothing. */
static __always_inline void log_binding(struct cgnat_endpoint *ik,
					struct cgnat_endpoint *ek, __u64 now)
{
	struct cgnat_event *ev;

	if (ALLOC_MODE != CGNAT_ALLOC_DYNAMIC)
		return;
	ev = event_new_at(CGNAT_EV_BINDING_CREATE, now);
	if (!ev)
		return;
	ev->proto = ik->proto;
	ev->addr = ik->addr;
	ev->port = ik->port;
	ev->ext_addr = ek->addr;
	ev->ext_port = ek->port;
	event_send_log(ev);
}

/* Dynamic mode: port candidate number `try` for internal port `orig`
 * (host order). Try 0 keeps the port (RFC 7857 section 9: randomise only
 * on collision); later tries are random within the same class: 0-1023
 * stays in 1-1023, 1024-65535 in 1024-65535 (RFC 4787 REQ-3a). ICMP
 * identifiers have no classes. */
static __always_inline __u16 port_candidate(__u16 orig, __u8 proto, __u32 try)
{
	__u32 r;

	if (try == 0)
		return orig;
	r = bpf_get_prandom_u32();
	if (proto == IPPROTO_ICMP)
		return (__u16)r;
	if (orig < 1024)
		r = 1 + r % 1023;
	else
		r = 1024 + r % 64512;
	if (PRESERVE_PARITY)
		r = (r & ~1u) | (orig & 1);
	return r ? r : 2; /* parity may have made it 0; keep port 0 unused */
}

/* Claims external port `port` (host order) for the search in
 * probe_scratch: puts the inbound half c->ek (its port set) -> c->rev from
 * c->slot. 0 when claimed, 1 when taken (or its segment stayed locked:
 * another port is as good), -1 when the table is full. A global function
 * with the put inline, so the verifier checks a claim once rather than in
 * every search's callback, and the callback's call is the last of its
 * three stack frames. */
__noinline int cgnat_claim(__u32 port)
{
	struct cgnat_probe *c = bpf_map_lookup_elem(&probe_scratch, &scratch_key);
	int r;

	if (!c)
		return -1;
	c->ek.port = bpf_htons((__u16)port);
	bind_in_key(&c->slot.key, c->ek.addr, c->ek.port, c->ek.proto);
	__builtin_memset(&c->slot.s, 0, sizeof(c->slot.s));
	binding_write(slot_binding(&c->slot), c->rev);
	r = session_put(&c->slot, CGNAT_SOP_INSERT, 0);
	if (r >= 0)
		return (r & CGNAT_SLOT_OLD) ? 1 : 0;
	return r == -EBUSY ? 1 : -1;
}

/* One try of a random port search (bpf_loop callback, so the verifier
 * checks one try, not each): try c->first + i for source port c->start
 * (dynamic), or a random port of the subscriber's range from c->base
 * (deterministic). Its state lives in the per-CPU probe_scratch map, not
 * on the (full) stack. */
static long claim_try(__u32 i, void *data)
{
	__u32 k = 0;
	struct cgnat_probe *c = bpf_map_lookup_elem(&probe_scratch, &k);
	__u16 port;
	int r;

	if (!c)
		return 1;
	if (ALLOC_MODE == CGNAT_ALLOC_DYNAMIC)
		port = port_candidate(c->start, c->ek.proto, c->first + i);
	else
		port = c->base + bpf_get_prandom_u32() % DET_PORTS;
	r = cgnat_claim(port);
	if (r <= 0) {
		c->result = r;
		return 1;
	}
	return 0;
}

/* The tries of one block: BLOCK_PORT_TRIES random ports, then up to
 * BLOCK_PROBE_MAX in a row from a random start (all of a small block). */
static __always_inline __u32 block_tries(void)
{
	return BLOCK_PORT_TRIES + (BLOCK_SIZE < BLOCK_PROBE_MAX ? BLOCK_SIZE : BLOCK_PROBE_MAX);
}

/* One slot of the search for the subscriber's next block (bpf_loop
 * callback, so the verifier checks one slot whatever MAX_BLOCKS is): the
 * slot after c->sbk.slot; a block not marked full there becomes
 * c->bk.block, with its tries to make (c->tries 0), and ends the search;
 * the first empty slot is noted in c->free_slot. The keys live in the
 * scratch, not on the stack. */
static long next_block_cb(__u32 i, void *data)
{
	struct cgnat_probe *c = bpf_map_lookup_elem(&probe_scratch, &scratch_key);
	struct cgnat_block *held;
	__u32 slot, *no;

	if (!c)
		return 1;
	slot = c->sbk.slot + 1;
	if (slot >= MAX_BLOCKS)
		return 1;
	c->sbk.slot = slot;
	no = bpf_map_lookup_elem(&sub_blocks, &c->sbk);
	if (!no) {
		if (c->free_slot == CGNAT_MAX_BLOCKS_CAP)
			c->free_slot = slot;
		return 0;
	}
	c->bk.block = *no;
	held = bpf_map_lookup_elem(&blocks, &c->bk);
	if (!held || held->full)
		return 0;
	c->tries = 0;
	c->start = bpf_get_prandom_u32() % BLOCK_SIZE;
	return 1;
}

/* Moves the search on to the subscriber's next block with ports left to
 * try (next_block_cb()); 0 when there is none. */
static __always_inline int next_block(struct cgnat_probe *c)
{
	c->tries = (__u32)-1;
	bpf_loop(MAX_BLOCKS, next_block_cb, 0, 0);
	return c->tries == 0;
}

/* One try of the port-block search (bpf_loop callback, so the verifier
 * checks one try whatever MAX_BLOCKS is): a port of block c->bk.block,
 * random for its first BLOCK_PORT_TRIES tries, then in a row from
 * c->start. A block whose tries all failed is marked full, skipped until
 * the daemon sees a free port in it again, and the search goes on in the
 * subscriber's next block. */
static long block_try(__u32 i, void *data)
{
	struct cgnat_probe *c = bpf_map_lookup_elem(&probe_scratch, &scratch_key);
	struct cgnat_block *held;
	__u32 t, port;
	int r;

	if (!c)
		return 1;
	t = c->tries++;
	if (t < BLOCK_PORT_TRIES)
		port = bpf_get_prandom_u32() % BLOCK_SIZE;
	else
		port = (c->start + t - BLOCK_PORT_TRIES) % BLOCK_SIZE;
	r = cgnat_claim(CGNAT_PORT_MIN + c->bk.block * BLOCK_SIZE + port);
	if (r <= 0) {
		c->result = r;
		return 1;
	}
	if (c->tries < block_tries())
		return 0;
	held = bpf_map_lookup_elem(&blocks, &c->bk);
	if (held)
		held->full = 1;
	return next_block(c) ? 0 : 1;
}

/* Port-block mode: claim a port in one of the subscriber's blocks, taking
 * a new block when they are full. A block whose search failed is marked
 * full and skipped until the daemon sees a free port in it again, so a
 * subscriber at its limit costs little. */
static __always_inline int claim_pba(struct cgnat_endpoint *ek,
				     struct cgnat_binding *rev, __u64 now)
{
	struct cgnat_probe *c = bpf_map_lookup_elem(&probe_scratch, &scratch_key);
	struct cgnat_event *ev;
	__u32 t;

	if (!c)
		return CGNAT_DROP_TABLE_FULL;
	c->ek = *ek;
	c->rev = *rev;
	c->result = 1;
	c->sbk.sub = rev->addr;
	c->sbk.slot = (__u32)-1;
	c->bk.ext_addr = ek->addr;
	c->free_slot = CGNAT_MAX_BLOCKS_CAP;
	if (next_block(c))
		bpf_loop(MAX_BLOCKS * block_tries(), block_try, 0, 0);
	if (c->result <= 0)
		goto done;
	if (c->free_slot == CGNAT_MAX_BLOCKS_CAP)
		return CGNAT_DROP_SUB_LIMIT; /* all its blocks are full */

	/* a new block on its address, claimed atomically */
	c->blk.owner = rev->addr;
	c->blk.slot = c->free_slot;
	c->blk.created_ns = now;
	c->blk.full = 0;
	c->blk._pad = 0;
	for (t = 0; t < BLOCK_CLAIM_TRIES; t++) {
		c->bk.block = bpf_get_prandom_u32() % BLOCKS_PER_ADDR;
		if (bpf_map_update_elem(&blocks, &c->bk, &c->blk, BPF_NOEXIST) == 0)
			break;
	}
	if (t == BLOCK_CLAIM_TRIES)
		return CGNAT_DROP_PORTS_EXHAUSTED;
	c->sbk.slot = c->free_slot;
	if (bpf_map_update_elem(&sub_blocks, &c->sbk, &c->bk.block, BPF_NOEXIST)) {
		/* another CPU filled the slot meanwhile: give the block back */
		bpf_map_delete_elem(&blocks, &c->bk);
		return CGNAT_DROP_PORTS_EXHAUSTED;
	}
	ev = event_new(CGNAT_EV_BLOCK_ALLOC);
	if (ev) {
		ev->addr = rev->addr;
		ev->ext_addr = ek->addr;
		ev->port = bpf_htons(CGNAT_PORT_MIN + c->bk.block * BLOCK_SIZE);
		ev->ext_port = bpf_htons(CGNAT_PORT_MIN + c->bk.block * BLOCK_SIZE + BLOCK_SIZE - 1);
		event_send(ev);
	}
	/* its tries only: no slot after it is searched */
	c->sbk.slot = MAX_BLOCKS;
	c->tries = 0;
	c->start = bpf_get_prandom_u32() % BLOCK_SIZE;
	bpf_loop(block_tries(), block_try, 0, 0);
	if (c->result > 0)
		return CGNAT_DROP_PORTS_EXHAUSTED;
done:
	ek->port = c->ek.port;
	return c->result ? CGNAT_DROP_TABLE_FULL : CGNAT_CONTINUE;
}

/* Claim an external port for internal endpoint *ik of subscriber *s; ek
 * holds the external endpoint on success. */
static __always_inline int claim_port(struct cgnat_endpoint *ik,
				      struct cgnat_subscriber *s,
				      struct cgnat_endpoint *ek,
				      struct cgnat_binding *rev, __u64 now)
{
	struct cgnat_probe *c;
	__u32 i = 0, k = 0;

	if (ALLOC_MODE == CGNAT_ALLOC_PBA)
		return claim_pba(ek, rev, now);
	if (ALLOC_MODE == CGNAT_ALLOC_DYNAMIC) {
		/* Try 0, the source port itself, is often taken (by the
		 * other subscribers of the address). A lookup tells so as
		 * surely as a failed insert, without taking the segment's
		 * lock; when the port is free, the insert then finds the
		 * segment in the cache. Either way the same tries follow. */
		ek->port = ik->port;
		if (cgnat_binding_in(ek->addr, ek->port, ek->proto))
			i = 1;
	}
	c = bpf_map_lookup_elem(&probe_scratch, &k);
	if (!c)
		return CGNAT_DROP_TABLE_FULL;
	c->ek = *ek;
	c->rev = *rev;
	c->base = s->det_lo;
	c->start = bpf_ntohs(ik->port);
	c->first = i;
	c->result = 1;
	bpf_loop(PORT_TRIES - i, claim_try, 0, 0);
	ek->port = c->ek.port;
	if (c->result <= 0)
		return c->result ? CGNAT_DROP_TABLE_FULL : CGNAT_CONTINUE;
	return CGNAT_DROP_PORTS_EXHAUSTED;
}

/* Create the binding of internal endpoint *ik for subscriber *s; on
 * success *out holds the external endpoint. */
static __always_inline int binding_create(struct cgnat_endpoint *ik,
					  struct cgnat_subscriber *s, __u64 now,
					  struct cgnat_binding *out)
{
	struct cgnat_endpoint ek = { .addr = s->ext_addr, .proto = ik->proto };
	struct cgnat_binding rev = { .addr = ik->addr, .port = ik->port };
	struct cgnat_session_slot *n, *w;
	__u32 pi = proto_idx(ik->proto), k = 0;
	struct cgnat_probe *c;
	int r;
	int rc;

	rc = subscriber_admit(s, ik->proto, now);
	if (rc != CGNAT_CONTINUE)
		return rc;
	rc = claim_port(ik, s, &ek, &rev, now);
	if (rc != CGNAT_CONTINUE)
		return rc;

	/* the outbound half, built in per-CPU scratch: the stack is full */
	c = bpf_map_lookup_elem(&probe_scratch, &k);
	if (!c) {
		cgnat_binding_unclaim(ek.addr, ek.port, ek.proto);
		return CGNAT_DROP_TABLE_FULL;
	}
	n = &c->slot;
	bind_out_key(&n->key, ik->addr, ik->port, ik->proto);
	__builtin_memset(&n->s, 0, sizeof(n->s));
	binding_write(slot_binding(n),
		      (struct cgnat_binding){ .addr = ek.addr, .port = ek.port });
	r = cgnat_session_put(n, CGNAT_SOP_INSERT);
	if (r >= 0 && !(r & CGNAT_SLOT_OLD)) {
		*out = binding_read(slot_binding(n));
		if (pi < CGNAT_PI__MAX)
			__sync_fetch_and_add(&s->ports[pi], 1);
		s->last_alloc_ns = now;
		log_binding(ik, &ek, now);
		return CGNAT_CONTINUE;
	}
	cgnat_binding_unclaim(ek.addr, ek.port, ek.proto);
	if (r < 0)
		return session_put_failed(r);
	/* another CPU created this binding meanwhile: use it */
	w = session_slot((__u32)r & ~CGNAT_SLOT_OLD);
	if (!w)
		return CGNAT_DROP_TABLE_FULL;
	*out = binding_read(slot_binding(w));
	return CGNAT_CONTINUE;
}

#endif /* CGNAT_POOL_H */
