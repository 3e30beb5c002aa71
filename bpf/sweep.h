/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * sweep.h - expiry inside the kernel: one walk of the sessions' region of
 * the session table, then of the inbound halves' region (segment by
 * segment, with bpf_loop), then of filter_addr (bpf_for_each_map_elem),
 * run by the daemon through
 * BPF_PROG_TEST_RUN on the SEC("syscall") program cgnat_sweep
 * (cgnat.bpf.c) with a struct cgnat_sweep as its context. It does what
 * src/expiry.rs does in user space, with the same rules (see there):
 *
 * 1. sessions: a session idle past its timeout is marked
 *    CGNAT_SESS_DYING, or deleted if it already was (and still is, under
 *    the segment's lock); a segment that lost sessions has its
 *    tombstones reclaimed (sessions.h); every other one
 *    marks its filter_addr entry seen and counts for its subscriber in
 *    sweep_subs, and one within its timeout marks its binding used (a
 *    binding whose sessions are all past their timeouts is released with
 *    the last of them). The mark is the port's bit in sweep_live, so the
 *    session pass looks no binding up. A hairpin session, which counts
 *    for its binding's subscriber, looks its binding up and marks it
 *    CGNAT_BIND_LIVE, counting on it (sweep_sessions, added to the
 *    subscriber by the binding pass) while it can; so does any session
 *    whose address has no slot in sweep_live;
 * 2. inbound halves: a quarantine that has run out frees its port; a binding
 *    that is static, used (its bit in sweep_live, or CGNAT_BIND_LIVE) or
 *    not yet marked CGNAT_BIND_IDLE is live
 *    (IDLE set on a bare one, cleared on a used one; counted per
 *    subscriber and per port block); any other is released: its outbound
 *    half is deleted (the segments that lost some have their tombstones
 *    reclaimed at the end of the pass), its port quarantined (RFC 6888
 *    REQ-8) or freed (its inbound half deleted; its segment's tombstones
 *    are reclaimed after its slots, as in the session pass),
 *    and a record goes to sweep_out for the NAT log. When sweep_out is
 *    full the binding is marked CGNAT_BIND_PENDING instead and a
 *    CGNAT_SWEEP_RELEASE run releases it;
 * 3. filter_addr: an entry older than the grace with no live session
 *    to its remote address is deleted.
 *
 * Only the daemon's sweeper runs it, one run at a time: the run's state
 * is the global sweep_run. Writes the data path may race with are single
 * stores to fields it only reads (binding flags) or a one-byte store of
 * session flags, which a refreshing packet clears again as in the user
 * space sweep; a quarantine rewrites the whole inbound half in place
 * with one 8-byte store (binding_write()), as the data path reads its
 * address and flags together with one 8-byte load (binding_read()).
 *
 * Every callback returns 0 (continue the walk).
 */
#ifndef CGNAT_SWEEP_H
#define CGNAT_SWEEP_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "cgnat.h"
#include "maps.h"
#include "sessions.h"

struct bpf_map;

/* The current run: its parameters, then its counters. */
static struct cgnat_sweep sweep_run;

static __always_inline __u32 sweep_now(void)
{
	return (__u32)(sweep_run.now_ns >> CGNAT_TIME_SHIFT);
}

/* Age of a compact stamp, 0 if it is newer than the sweep's clock. */
static __always_inline __u32 sweep_age(__u32 stamp)
{
	__s32 d = (__s32)(sweep_now() - stamp);

	return d > 0 ? (__u32)d : 0;
}

/* The timeout class of a TCP session (RFC 7857 section 2), as
 * expiry::tcp_state and expiry::session_timeout decide it. */
static __always_inline __u32 sweep_tcp_class(__u32 bits)
{
	int syn_both = (bits & CGNAT_TCP_SYN_OUT) && (bits & CGNAT_TCP_SYN_IN);
	int open = (bits & CGNAT_TCP_LOOSE) || syn_both;
	int fin_out = bits & CGNAT_TCP_FIN_OUT, fin_in = bits & CGNAT_TCP_FIN_IN;

	if (bits & CGNAT_TCP_RST)
		return CGNAT_SC_TCP_CLOSING;
	if (fin_out && fin_in)
		return CGNAT_SC_TCP_CLOSING;
	if (fin_out || fin_in)
		return open ? CGNAT_SC_TCP_EST : CGNAT_SC_TCP_CLOSING;
	return open ? CGNAT_SC_TCP_EST : CGNAT_SC_TCP_OPENING;
}

static __always_inline __u32 sweep_limit(const struct cgnat_session_key *k,
					 const struct cgnat_session *s)
{
	__u32 c = CGNAT_SC_OTHER, i;

	if (k->proto == IPPROTO_TCP)
		c = sweep_tcp_class(s->tcp);
	if (k->proto == IPPROTO_UDP) {
		__u16 port = bpf_ntohs(k->rem_port);

		for (i = 0; i < CGNAT_SWEEP_UDP_PORTS; i++) {
			if (i >= sweep_run.udp_ports)
				break;
			if (sweep_run.udp[i].port == port)
				return sweep_run.udp[i].limit;
		}
		c = CGNAT_SC_UDP;
	}
	if (c >= CGNAT_SC__MAX)
		return 0;
	return sweep_run.limit[c];
}

static __always_inline __u32 sweep_proto_idx(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return CGNAT_PI_TCP;
	if (proto == IPPROTO_UDP)
		return CGNAT_PI_UDP;
	return CGNAT_PI_ICMP;
}

/* Slots of sweep_subs a subscriber's search tries. */
#define SWEEP_SUB_PROBES 64

/* A search of sweep_subs: the subscriber, its first slot, the slot found. */
struct sweep_sub_search {
	__be32 addr;
	__u32 h;
	__u32 at;
	__u32 found;
};

/* Slot h + i of a search (bpf_loop callback, so that the verifier checks
 * one step, not each): the subscriber's, or an empty one it takes. */
static long sweep_sub_step(__u32 i, struct sweep_sub_search *q)
{
	__u32 n = SWEEP_SUBS_SLOTS, k = q->h + i;
	struct cgnat_sweep_sub *c;

	if (k >= n)
		k -= n;
	c = bpf_map_lookup_elem(&sweep_subs, &k);
	if (!c)
		return 1;
	if (c->addr != q->addr && c->addr)
		return 0;
	if (!c->addr)
		c->addr = q->addr;
	q->at = k;
	q->found = 1;
	return 1;
}

/* The subscriber's counters of this run, created at 0: its slot of
 * sweep_subs, found by linear probing from a multiplicative hash of its
 * address (one cache line where a hash map's lookup costs a bucket and an
 * element; the sweep runs alone, so no lock). NULL, and scratch_full
 * counted, when SWEEP_SUB_PROBES slots in a row belong to others. */
static __always_inline struct cgnat_sweep_sub *sweep_sub(__be32 addr)
{
	struct sweep_sub_search q = {
		.addr = addr,
		.h = (__u32)(((__u64)(addr * 0x9e3779b1u) * SWEEP_SUBS_SLOTS) >> 32),
	};

	bpf_loop(SWEEP_SUB_PROBES, sweep_sub_step, &q, 0);
	if (!q.found) {
		sweep_run.scratch_full++;
		return 0;
	}
	return bpf_map_lookup_elem(&sweep_subs, &q.at);
}

/* The port bits of external address a in sweep_live; NULL if it has no
 * slot. */
static __always_inline struct cgnat_port_bits *sweep_live_bits(__be32 a)
{
	__u32 h = bpf_ntohl(a), i, slot;

	for (i = 0; i < CGNAT_SWEEP_RANGES; i++) {
		if (i >= sweep_run.ranges)
			break;
		if (h - sweep_run.range[i].first < sweep_run.range[i].count) {
			slot = sweep_run.range[i].slot + (h - sweep_run.range[i].first);
			return bpf_map_lookup_elem(&sweep_live, &slot);
		}
	}
	return 0;
}

/* The word of m that holds the bit of external endpoint *ek, and the bit
 * in *mask; NULL for a protocol without bits. */
static __always_inline __u64 *sweep_port_word(struct cgnat_port_bits *m,
					      const struct cgnat_endpoint *ek,
					      __u64 *mask)
{
	__u32 port = bpf_ntohs(ek->port);
	__u32 w = (port >> 6) & (CGNAT_PORT_WORDS - 1);

	*mask = 1ULL << (port & 63);
	if (ek->proto == IPPROTO_TCP)
		return &m->w[CGNAT_PI_TCP * CGNAT_PORT_WORDS + w];
	if (ek->proto == IPPROTO_UDP)
		return &m->w[CGNAT_PI_UDP * CGNAT_PORT_WORDS + w];
	if (ek->proto == IPPROTO_ICMP)
		return &m->w[CGNAT_PI_ICMP * CGNAT_PORT_WORDS + w];
	return 0;
}

/* The word of sweep_live with the bit of external endpoint *ek, and the
 * bit in *mask; NULL if its address has no slot or its protocol no bits
 * (the session pass then marks the binding in its inbound half). */
static __always_inline __u64 *sweep_used_word(const struct cgnat_endpoint *ek,
					      __u64 *mask)
{
	struct cgnat_port_bits *m = sweep_live_bits(ek->addr);

	return m ? sweep_port_word(m, ek, mask) : 0;
}

/* Empties one sweep_live slot. */
static long sweep_zero_cb(struct bpf_map *map, const __u32 *key,
			  struct cgnat_port_bits *bits, void *ctx)
{
	__u32 k = *key, zero = 0;
	struct cgnat_port_bits *z = bpf_map_lookup_elem(&sweep_zero, &zero);

	if (z)
		bpf_map_update_elem(&sweep_live, &k, z, BPF_ANY);
	return 0;
}

/* Empties one slot of sweep_subs. */
static long sweep_subs_zero_cb(struct bpf_map *map, const __u32 *key,
			       struct cgnat_sweep_sub *c, void *ctx)
{
	if (c->addr)
		*c = (struct cgnat_sweep_sub){};
	return 0;
}

static long sweep_clear_cb(struct bpf_map *map, const void *key, void *val,
			   void *ctx)
{
	bpf_map_delete_elem(map, key);
	return 0;
}

/* A hairpin session k is gone: the other side of the flow (keyed by k's
 * remote endpoint, with k's external endpoint as its remote) no longer
 * has its mirror, so it becomes one-sided (include/cgnat.h). */
static __always_inline void sweep_mirror_gone(const struct cgnat_session_key *k)
{
	struct cgnat_session_key m = {
		.ext_addr = k->rem_addr, .ext_port = k->rem_port,
		.rem_addr = k->ext_addr, .rem_port = k->ext_port,
		.proto = k->proto,
	};
	struct cgnat_session *o = session_lookup(&m);

	if (o && !(o->flags & CGNAT_SESS_ONE_SIDED))
		o->flags |= CGNAT_SESS_ONE_SIDED;
}

/* The binding of external endpoint *ek; NULL if there is none or it is
 * quarantined. */
static __always_inline struct cgnat_binding *sweep_binding(const struct cgnat_endpoint *ek)
{
	struct cgnat_session_key k;
	struct cgnat_session_slot *s;
	struct cgnat_binding *b;

	bind_in_key(&k, ek->addr, ek->port, ek->proto);
	s = session_slot((__u32)cgnat_session_find(&k));
	if (!s)
		return 0;
	b = slot_binding(s);
	if (b->flags & CGNAT_BIND_QUARANTINE)
		return 0;
	return b;
}

/* One session more for subscriber `own` in sweep_subs (0: nobody's). */
static __always_inline void sweep_count_sub(__be32 own)
{
	struct cgnat_sweep_sub *c;

	if (!own)
		return;
	c = sweep_sub(own);
	if (c)
		c->sessions++;
}

/* A live session keeps the filter_addr entry of its binding and remote
 * address (address-dependent filtering). */
static __always_inline void sweep_filter_seen(const struct cgnat_session_key *k)
{
	if (sweep_run.flags & CGNAT_SWEEP_FILTER) {
		struct cgnat_filter_key fk = {
			.ext_addr = k->ext_addr, .rem_addr = k->rem_addr,
			.ext_port = k->ext_port, .proto = k->proto,
		};
		__u64 *created = bpf_map_lookup_elem(&filter_addr, &fk);

		/* bit 63 (a monotonic time never has it) marks "seen": the
		 * data path only tests the entry's presence */
		if (created && !(*created >> 63))
			*created |= 1ULL << 63;
	}
}

/* Deletes the slot s of segment si if it is still live and, for a
 * session, has the flags `need` (CGNAT_SESS_DYING: a packet may have
 * refreshed it since it was read). A binding's half has its flags where a
 * session has its own (include/cgnat.h); `need` is 0 for it. */
static __always_inline int sweep_kill(__u32 si, struct cgnat_session_slot *s,
				      __u8 need)
{
	struct cgnat_seg_lock *lk = bpf_map_lookup_elem(&session_locks, &si);
	int killed = 0;

	if (!lk)
		return 0;
	if (!seg_lock(lk, &si))
		return 0;
	if (s->key.slot_state == CGNAT_SLOT_LIVE && (s->s.flags & need) == need) {
		session_kill_locked(si, s);
		killed = 1;
	}
	seg_unlock(lk);
	return killed;
}

/* The session pass's work on one live session (slot `sl` of segment si);
 * returns 1 if it deleted it. */
static __always_inline int sweep_session(__u32 si, struct cgnat_session_slot *sl)
{
	struct cgnat_session *s = &sl->s;
	struct cgnat_session_key k = {
		.ext_addr = sl->key.ext_addr, .rem_addr = sl->key.rem_addr,
		.ext_port = sl->key.ext_port, .rem_port = sl->key.rem_port,
		.proto = sl->key.proto,
	};
	struct cgnat_endpoint ek = {
		.addr = k.ext_addr, .port = k.ext_port, .proto = k.proto,
	};
	struct cgnat_binding *b;
	__u64 mask, *w;
	__be32 own;

	/* the data path rewrites last_seen at most every CGNAT_REFRESH_MS:
	 * the limits include that slack */
	if (sweep_age(s->last_seen) > sweep_limit(&k, s)) {
		if (s->flags & CGNAT_SESS_DYING) {
			/* marked at the previous sweep and still idle */
			__u8 hairpin = s->flags & CGNAT_SESS_HAIRPIN;

			if (!sweep_kill(si, sl, CGNAT_SESS_DYING)) {
				/* refreshed since it was read: live, counted
				 * for its subscriber by the next sweep */
				sweep_run.sessions_live++;
				return 0;
			}
			sweep_run.sessions_expired++;
			if (hairpin)
				sweep_mirror_gone(&k);
			return 1;
		}
		/* two-phase expiry: a refreshing packet clears the mark */
		s->flags |= CGNAT_SESS_DYING;
		sweep_run.sessions_dying++;
		sweep_run.sessions_live++;
		/* past its timeout, it does not keep its binding in use (the
		 * binding goes with its last session): it only counts for its
		 * subscriber, which for a hairpin session is its binding's
		 * (include/cgnat.h) */
		own = s->int_addr;
		if (s->flags & CGNAT_SESS_HAIRPIN) {
			b = sweep_binding(&ek);
			own = b ? b->addr : 0;
		}
		sweep_count_sub(own);
		sweep_filter_seen(&k);
		return 0;
	}
	sweep_run.sessions_live++;
	w = (s->flags & CGNAT_SESS_HAIRPIN) ? 0 : sweep_used_word(&ek, &mask);
	if (w) {
		if (!(*w & mask))
			*w |= mask;
		sweep_count_sub(s->int_addr);
		sweep_filter_seen(&k);
		return 0;
	}
	b = sweep_binding(&ek);
	if (b && !(b->flags & CGNAT_BIND_LIVE))
		b->flags |= CGNAT_BIND_LIVE;
	/* the subscriber the session belongs to: a hairpin session's is
	 * its binding's (include/cgnat.h); without one it counts nowhere */
	own = s->int_addr;
	if (s->flags & CGNAT_SESS_HAIRPIN)
		own = b ? b->addr : 0;
	if (b && b->addr == own && b->sweep_sessions < 255)
		b->sweep_sessions++;
	else
		sweep_count_sub(own);
	sweep_filter_seen(&k);
	return 0;
}

/* Deletes a binding's outbound half; its segment's tombstones are
 * reclaimed once, at the end of the run (sweep_bind_reclaim_cb()), rather
 * than at each of its deletes. */
static __always_inline void sweep_unbind(const struct cgnat_session_key *ik)
{
	int si = session_unlink(ik);
	__u32 k = (__u32)si;
	struct cgnat_seg_lock *lk;

	if (si < 0)
		return;
	lk = bpf_map_lookup_elem(&session_locks, &k);
	if (lk && !lk->reclaim)
		lk->reclaim = 1;
}

/* Reclaims the tombstones of outbound halves' segment i if the run
 * deleted slots in it. */
static long sweep_bind_reclaim_cb(__u32 i, void *ctx)
{
	__u32 si = region_start(CGNAT_KIND_BIND_OUT) + i;
	struct cgnat_seg_lock *lk = bpf_map_lookup_elem(&session_locks, &si);

	if (!lk)
		return 1;
	if (lk->reclaim) {
		lk->reclaim = 0;
		session_reclaim(si);
	}
	return 0;
}

/* Releases binding ek -> b, the inbound half in slot sl of segment si:
 * the outbound half first, so no new session finds it, then the port
 * goes into quarantine (or is freed). Returns 1 if it deleted the inbound
 * half. */
static __always_inline int sweep_release(__u32 si, struct cgnat_session_slot *sl,
					 const struct cgnat_endpoint *ek,
					 struct cgnat_binding *b)
{
	struct cgnat_session_key ik;
	struct cgnat_binding q = {
		.addr = sweep_now(), .port = b->port,
		.flags = CGNAT_BIND_QUARANTINE,
	};
	struct cgnat_release *r;
	__u32 slot = sweep_run.out;

	r = slot < sweep_run.out_cap ? bpf_map_lookup_elem(&sweep_out, &slot) : 0;
	if (!r) {
		/* no room to report it: a release run does it */
		if (!(b->flags & CGNAT_BIND_PENDING))
			b->flags = (b->flags & ~CGNAT_BIND_LIVE) | CGNAT_BIND_PENDING;
		b->sweep_sessions = 0;
		sweep_run.pending++;
		return 0;
	}
	r->int_addr = b->addr;
	r->int_port = b->port;
	r->ext_addr = ek->addr;
	r->ext_port = ek->port;
	r->proto = ek->proto;
	sweep_run.out = slot + 1;
	bind_out_key(&ik, b->addr, b->port, ek->proto);
	sweep_unbind(&ik);
	sweep_run.bindings_released++;
	if (sweep_run.quarantine == 0) {
		/* (its segment locked past SEG_SPINS: the next sweep finds
		 * the half without its outbound one and releases it again) */
		if (!sweep_kill(si, sl, 0))
			return 0;
		sweep_run.ports_freed++;
		return 1;
	}
	/* in place, in one store (binding_write(), bpf/maps.h) */
	binding_write(b, q);
	sweep_run.ports_quarantined++;
	return 0;
}

/* The binding pass's work on the live inbound half in slot sl of segment
 * si; returns 1 if it deleted it. */
static __always_inline int sweep_binding_half(__u32 si, struct cgnat_session_slot *sl)
{
	struct cgnat_endpoint ek = {
		.addr = sl->key.ext_addr, .port = sl->key.ext_port,
		.proto = sl->key.proto,
	};
	struct cgnat_binding *b = slot_binding(sl);
	__u8 flags = b->flags, nf;
	int is_static, used, live;
	__u64 mask, *w;

	if (flags & CGNAT_BIND_QUARANTINE) {
		/* a quarantined entry holds its start in addr */
		if (sweep_run.mode == CGNAT_SWEEP_FULL &&
		    sweep_age(b->addr) >= sweep_run.quarantine &&
		    sweep_kill(si, sl, 0)) {
			sweep_run.ports_freed++;
			return 1;
		}
		return 0;
	}
	if (sweep_run.mode == CGNAT_SWEEP_RELEASE) {
		if (flags & CGNAT_BIND_PENDING)
			return sweep_release(si, sl, &ek, b);
		return 0;
	}
	is_static = flags & CGNAT_BIND_STATIC;
	w = sweep_used_word(&ek, &mask);
	used = (flags & CGNAT_BIND_LIVE) || (w && (*w & mask));
	live = is_static || used || !(flags & CGNAT_BIND_IDLE);
	if (b->sweep_sessions || (live && !is_static)) {
		/* its sessions counted in the session pass, its port */
		struct cgnat_sweep_sub *c = sweep_sub(b->addr);

		if (c) {
			__u32 i = sweep_proto_idx(ek.proto);

			c->sessions += b->sweep_sessions;
			if (live && !is_static && i < CGNAT_PI__MAX)
				c->ports[i]++;
		}
		if (b->sweep_sessions)
			b->sweep_sessions = 0;
	}
	if (live) {
		sweep_run.bindings_live++;
		if (!is_static) {
			if (sweep_run.flags & CGNAT_SWEEP_BLOCKS) {
				__u32 p = bpf_ntohs(ek.port), n;
				struct cgnat_block_key bk = { .ext_addr = ek.addr };
				__u32 one = 1, *u;

				if (p >= CGNAT_PORT_MIN && sweep_run.block_size) {
					n = (p - CGNAT_PORT_MIN) / sweep_run.block_size;
					bk.block = n;
					u = n < sweep_run.blocks_per_addr ?
						    bpf_map_lookup_elem(&sweep_blocks, &bk) : 0;
					if (u)
						(*u)++;
					else if (n < sweep_run.blocks_per_addr &&
						 bpf_map_update_elem(&sweep_blocks, &bk, &one,
								     BPF_NOEXIST))
						sweep_run.scratch_full++;
				}
			}
		}
		/* two-phase release: mark a bare binding, unmark a used one */
		nf = (used || is_static) ? flags & ~CGNAT_BIND_IDLE :
					   flags | CGNAT_BIND_IDLE;
		nf &= ~(CGNAT_BIND_LIVE | CGNAT_BIND_PENDING);
		if (nf != flags)
			b->flags = nf;
		return 0;
	}
	return sweep_release(si, sl, &ek, b);
}

/* The segment a per-slot callback of a pass works on, its region's kind
 * (CGNAT_KIND_SESSION for the session pass, CGNAT_KIND_BIND_IN for the
 * binding pass), and the slots of it left to visit. */
struct sweep_seg_ctx {
	struct cgnat_session_seg *seg;
	__u64 used; /* bit j: slot j was not empty when the pass came */
	__u32 si;
	__u32 dead; /* the segment has tombstones */
	__u8 kind;
};

/* The position of the lowest set bit of x (x != 0), without a branch: the
 * bit times a de Bruijn sequence leaves a distinct number in the top six
 * bits for each position. */
static const __u8 low_bit_pos[64] = {
	0,  1,  48, 2,  57, 49, 28, 3,  61, 58, 50, 42, 38, 29, 17, 4,
	62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
	63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
	46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9,  13, 8,  7,  6,
};

static __always_inline __u32 low_bit(__u64 x)
{
	return low_bit_pos[((x & -x) * 0x03f79d71b4cb0a89ULL) >> 58];
}

/* The slots of seg that are not empty, as a mask: one unrolled pass over
 * the states without a branch (a state is 0, 1 or 2, so st | st >> 1 has
 * its low bit set unless the slot is empty), so that the pass calls back
 * only for those, not for each of the 64. */
static __always_inline __u64 seg_used(struct cgnat_session_seg *seg)
{
	__u64 used = 0;
	__u32 j;

#pragma unroll
	for (j = 0; j < CGNAT_SEG_SLOTS; j++) {
		__u8 st = slot_state(&seg->slot[j]);

		used |= (__u64)((st | st >> 1) & 1) << j;
	}
	return used;
}

/* The next slot of c->used (bpf_loop callback; ends when none is left). */
static long sweep_slot_cb(__u32 i, struct sweep_seg_ctx *c)
{
	struct cgnat_session_slot *sl;
	__u32 j;

	if (!c->used)
		return 1;
	j = low_bit(c->used);
	c->used &= c->used - 1;
	sl = &c->seg->slot[j & SLOT_MASK];
	switch (slot_state(sl)) {
	case CGNAT_SLOT_LIVE:
		if (c->kind == CGNAT_KIND_SESSION)
			c->dead |= sweep_session(c->si, sl);
		else if (sl->key.kind == CGNAT_KIND_BIND_IN)
			c->dead |= sweep_binding_half(c->si, sl);
		break;
	case CGNAT_SLOT_DEAD:
		c->dead = 1;
		break;
	}
	return 0;
}

/* Segment i of the region of kind *kind: its live slots, then its
 * tombstones, if it has some. */
static long sweep_seg_cb(__u32 i, __u8 *kind)
{
	struct sweep_seg_ctx c = { .si = region_start(*kind) + i, .kind = *kind };

	c.seg = bpf_map_lookup_elem(&sessions, &c.si);
	if (!c.seg)
		return 0;
	c.used = seg_used(c.seg);
	if (c.used)
		bpf_loop(CGNAT_SEG_SLOTS, sweep_slot_cb, &c, 0);
	if (c.dead)
		session_reclaim(c.si);
	return 0;
}

/* One pass: every segment of the region of `kind`. */
static __always_inline void sweep_pass(__u8 kind)
{
	bpf_loop(REGION_SEGS[kind & 3], sweep_seg_cb, &kind, 0);
}

static long sweep_filter_cb(struct bpf_map *map,
			    const struct cgnat_filter_key *key, __u64 *created,
			    void *ctx)
{
	struct cgnat_filter_key k = *key;
	__u64 v = *created, t = v & ~(1ULL << 63);
	__u64 age = sweep_run.now_ns > t ? sweep_run.now_ns - t : 0;

	if (v >> 63) {
		*created = t;
		return 0;
	}
	if (age >= sweep_run.filter_grace_ns) {
		bpf_map_delete_elem(&filter_addr, &k);
		sweep_run.filters_deleted++;
	}
	return 0;
}

/* One run: the caller's parameters in, the counters out. */
static __always_inline int sweep(struct cgnat_sweep *ctx)
{
	sweep_run = *ctx;
	sweep_run.sessions_live = 0;
	sweep_run.sessions_dying = 0;
	sweep_run.sessions_expired = 0;
	sweep_run.bindings_live = 0;
	sweep_run.bindings_released = 0;
	sweep_run.ports_quarantined = 0;
	sweep_run.ports_freed = 0;
	sweep_run.filters_deleted = 0;
	sweep_run.out = 0;
	sweep_run.pending = 0;
	sweep_run.scratch_full = 0;
	sweep_run.session_pass_ns = 0;
	if (sweep_run.mode == CGNAT_SWEEP_FULL) {
		__u64 t0;

		bpf_for_each_map_elem(&sweep_subs, sweep_subs_zero_cb, 0, 0);
		bpf_for_each_map_elem(&sweep_live, sweep_zero_cb, 0, 0);
		if (sweep_run.flags & CGNAT_SWEEP_BLOCKS)
			bpf_for_each_map_elem(&sweep_blocks, sweep_clear_cb, 0, 0);
		t0 = bpf_ktime_get_ns();
		sweep_pass(CGNAT_KIND_SESSION);
		sweep_run.session_pass_ns = bpf_ktime_get_ns() - t0;
	}
	sweep_pass(CGNAT_KIND_BIND_IN);
	if (sweep_run.bindings_released)
		bpf_loop(REGION_SEGS[CGNAT_KIND_BIND_OUT], sweep_bind_reclaim_cb, 0, 0);
	if (sweep_run.mode == CGNAT_SWEEP_FULL &&
	    (sweep_run.flags & CGNAT_SWEEP_FILTER))
		bpf_for_each_map_elem(&filter_addr, sweep_filter_cb, 0, 0);
	*ctx = sweep_run;
	return 0;
}

#endif /* CGNAT_SWEEP_H */
