/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * sessions.h - the session table (include/cgnat.h, struct
 * cgnat_session_seg): lookup, insert, update, delete and the reclaim of
 * tombstones, for the data path, the sweep and the daemon's operations.
 * It holds sessions and both halves of every binding (enum
 * cgnat_slot_kind): "session" below is a slot of any kind; each kind has
 * its own segments and its own count.
 *
 * Contract:
 * - session_lookup() takes no lock. It returns the live session of a key
 *   or NULL; a packet racing with the creation of its own session may miss
 *   it, and then finds it under the lock when it tries to create it.
 * - cgnat_session_put() and the deletes hold the segment's lock, so two
 *   writers never put the same key twice. A new slot's key and value are
 *   written before its state becomes CGNAT_SLOT_LIVE; a delete makes the
 *   state CGNAT_SLOT_DEAD first. x86 keeps stores in order, and readers
 *   test the state before they compare the key.
 * - A session pointer stays valid memory after a delete, like an element
 *   of a preallocated kernel hash map: a writer that raced with the
 *   delete writes into a dead or reused slot (a refresh lost, as it would
 *   be for an entry deleted a moment earlier).
 * - A tombstone becomes empty again (session_reclaim(), under the lock)
 *   only when no live key's probe sequence crosses it, so a lookup never
 *   stops short of a key it should find.
 */
#ifndef CGNAT_SESSIONS_H
#define CGNAT_SESSIONS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "cgnat.h"
#include "config.h"
#include "maps.h"

#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef E2BIG
#define E2BIG 7
#endif
#ifndef EBUSY
#define EBUSY 16
#endif
#ifndef EINVAL
#define EINVAL 22
#endif

#define PICK_NONE 0xffffu
#define PICK_FOUND 0x10000u
#define PICK_END 0x20000u
#define PICK_BUSY 0x40000u
#define PICK_SPILL 0x80000u
#define PICK_MISS 0x100000u

/* The keys of session_count by kind (index kind & 3), in .rodata: no
 * stack slot for them, and no branch on the kind (a verifier state less
 * for each kind). */
static const __u32 slot_count_key[4] = {
	CGNAT_KIND_SESSION, CGNAT_KIND_BIND_OUT, CGNAT_KIND_BIND_IN, CGNAT_KIND_SESSION,
};

/* A keyed mix of the key's fields: the segment from the high half, the
 * home slot from the low half. Remote ports and addresses are chosen by
 * outsiders; without the seed they cannot aim at one segment. */
static __always_inline __u64 session_hash(const struct cgnat_session_key *k)
{
	__u64 a = ((__u64)k->ext_addr << 32 | k->rem_addr) ^ SESSION_SEED;
	__u64 b = (__u64)k->kind << 40 | (__u64)k->ext_port << 24 |
		  (__u64)k->rem_port << 8 | k->proto;
	__u64 h = a * 0x9e3779b97f4a7c15ULL;

	h ^= (b ^ (SESSION_SEED >> 17)) * 0xc2b2ae3d27d4eb4fULL;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 32;
	return h;
}

/* The first segment of a kind's region (REGION_FIRST, set by the
 * daemon). */
static __always_inline __u32 region_start(__u8 kind)
{
	return REGION_FIRST[kind & 3];
}

/* The segment of a hash: its high half scaled to its kind's region (a
 * multiply and a shift, for any number of segments). */
static __always_inline __u32 session_seg_of(__u64 h, __u8 kind)
{
	return region_start(kind) + (__u32)(((h >> 32) * (__u64)REGION_SEGS[kind & 3]) >> 32);
}

/* How many slots of a kind the table may hold. */
static __always_inline __u64 slot_limit(__u8 kind)
{
	return SLOT_LIMIT[kind & 3];
}

#define SLOT_MASK (CGNAT_SEG_SLOTS - 1)
#define SEG_SHIFT 6 /* CGNAT_SEG_SLOTS == 1 << SEG_SHIFT */

/* Slot i of the probe sequence from home slot `home`. */
static __always_inline __u32 probe_slot(__u32 home, __u32 i)
{
	return (home + i) & SLOT_MASK;
}

/* The key's four 32-bit words (struct cgnat_session_key is 16 bytes,
 * 4-aligned). */
typedef __u32 __attribute__((may_alias)) key_word;

/* The bits of the key's last word that name it: proto (byte 12) and kind
 * (byte 15), not the slot's state and distance; the same mask in either
 * byte order. */
#define KEY_WORD3_MASK 0xff0000ffu
_Static_assert(__builtin_offsetof(struct cgnat_session_key, proto) == 12 &&
		       __builtin_offsetof(struct cgnat_session_key, kind) == 15,
	       "KEY_WORD3_MASK");

/* Whether keys a and b are the same (slot state and distance aside),
 * without a branch per field: fewer paths for the verifier, and for the
 * CPU. */
static __always_inline int session_key_eq(const struct cgnat_session_key *a,
					  const struct cgnat_session_key *b)
{
	const key_word *x = (const key_word *)a, *y = (const key_word *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) |
		((x[3] ^ y[3]) & KEY_WORD3_MASK)) == 0;
}

/* The state of a slot, read once (another CPU may be changing it). */
static __always_inline __u8 slot_state(const struct cgnat_session_slot *s)
{
	return *(volatile const __u8 *)&s->key.slot_state;
}

/* The segment after si in kind's region (wrapping): where keys of si
 * that found it full of live slots spill (cgnat_session_put()). */
static __always_inline __u32 seg_next(__u32 si, __u8 kind)
{
	__u32 first = region_start(kind);

	return si + 1 < first + REGION_SEGS[kind & 3] ? si + 1 : first;
}

/*
 * Where the live session *k is (segment * CGNAT_SEG_SLOTS + slot), or
 * -1. Takes no lock. Probes the key's segment from its home slot and,
 * only if that segment has no empty slot (a key may have spilled), the
 * next segment from the same slot. A global function: the verifier
 * checks it once.
 */
__noinline int cgnat_session_find(const struct cgnat_session_key *k)
{
	struct cgnat_session_seg *seg;
	__u32 si, home, g, i, j;
	__u64 h;

	if (!k)
		return -1;
	h = session_hash(k);
	si = session_seg_of(h, k->kind);
	home = (__u32)h & SLOT_MASK;
	for (g = 0; g < 2; g++) {
		seg = bpf_map_lookup_elem(&sessions, &si);
		if (!seg)
			return -1;
		for (i = 0; i < CGNAT_SEG_SLOTS; i++) {
			struct cgnat_session_slot *s;
			__u8 st;

			j = probe_slot(home, i);
			s = &seg->slot[j];
			st = slot_state(s);
			if (st == CGNAT_SLOT_EMPTY)
				return -1;
			if (st == CGNAT_SLOT_LIVE && session_key_eq(&s->key, k))
				return (int)(si << SEG_SHIFT | j);
		}
		si = seg_next(si, k->kind);
	}
	return -1;
}

/* The slot `at` names (a cgnat_session_find() or cgnat_session_put()
 * result without CGNAT_SLOT_OLD), or NULL for a negative one: -1 and the
 * errors name no segment (the table has fewer than 1 << 24), so the map
 * lookup's NULL test is the only branch the verifier follows. */
static __always_inline struct cgnat_session_slot *session_slot(__u32 at)
{
	__u32 si = at >> SEG_SHIFT;
	struct cgnat_session_seg *seg = bpf_map_lookup_elem(&sessions, &si);

	if (!seg)
		return 0;
	barrier_var(seg);
	return &seg->slot[at & SLOT_MASK];
}

/* The live session *k, or NULL. */
static __always_inline struct cgnat_session *session_lookup(const struct cgnat_session_key *k)
{
	struct cgnat_session_slot *s = session_slot((__u32)cgnat_session_find(k));

	return s ? &s->s : 0;
}

_Static_assert(sizeof(struct cgnat_bind_out) == sizeof(struct cgnat_session),
	       "an outbound half's value is its slot's struct cgnat_session");

/* The tag of a session's remote endpoint in its binding's hint (the
 * binding fixes the rest of the key). */
static __always_inline __u32 hint_tag(const struct cgnat_session_key *k)
{
	return k->rem_addr ^ (__u32)k->rem_port << 16;
}

static __always_inline __u64 *session_hint(struct cgnat_session_slot *bo)
{
	return &((struct cgnat_bind_out *)&bo->s)->session_hint;
}

/* The hint of outbound half bo names slot `at`, the session *k. */
static __always_inline void session_hint_set(struct cgnat_session_slot *bo, __u32 at,
					     const struct cgnat_session_key *k)
{
	*(volatile __u64 *)session_hint(bo) = (__u64)hint_tag(k) << 32 | (at + 1);
}

/* The live session *k of the binding whose outbound half is slot bo,
 * through the half's hint (struct cgnat_bind_out) when the hint names it,
 * else looked up (and the hint set if it was 0). NULL if there is none. */
static __always_inline struct cgnat_session *session_lookup_hinted(struct cgnat_session_slot *bo,
								    const struct cgnat_session_key *k)
{
	__u64 hint = *(volatile __u64 *)session_hint(bo);
	struct cgnat_session_slot *h;
	__u32 at;

	if ((__u32)(hint >> 32) == hint_tag(k)) {
		h = session_slot((__u32)hint - 1);
		if (h && slot_state(h) == CGNAT_SLOT_LIVE && session_key_eq(&h->key, k))
			return &h->s;
	}
	at = (__u32)cgnat_session_find(k);
	h = session_slot(at);
	if (!h)
		return 0;
	if (!(__u32)hint)
		session_hint_set(bo, at, k);
	return &h->s;
}

/* *k becomes the key of the outbound half of internal endpoint (addr,
 * port, proto): CGNAT_KIND_BIND_OUT, the endpoint in the external fields,
 * remote 0 (include/cgnat.h). */
static __always_inline void bind_out_key(struct cgnat_session_key *k, __be32 addr,
					 __be16 port, __u8 proto)
{
	*k = (struct cgnat_session_key){
		.ext_addr = addr, .ext_port = port, .proto = proto,
		.kind = CGNAT_KIND_BIND_OUT,
	};
}

/* The binding an outbound half's slot holds: the first 8 bytes of its
 * value (include/cgnat.h), read and written whole with binding_read() and
 * binding_write() (maps.h). */
static __always_inline struct cgnat_binding *slot_binding(struct cgnat_session_slot *s)
{
	return (struct cgnat_binding *)&s->s;
}

/* The half of a binding keyed by *k as one word (union
 * cgnat_binding_word); 0 if there is none. */
static __always_inline __u64 binding_word(const struct cgnat_session_key *k)
{
	struct cgnat_session_slot *s = session_slot((__u32)cgnat_session_find(k));
	union cgnat_binding_word w;

	if (!s)
		return 0;
	w.b = binding_read(slot_binding(s));
	return w.raw;
}

/* The outbound half keyed by *k as one word; 0 if there is none (a
 * binding's external address is never 0). A global function, so the
 * verifier checks it once and its callers get a plain value. */
__noinline __u64 cgnat_binding_out(const struct cgnat_session_key *k)
{
	return binding_word(k);
}

/* The same into *out: 1 if there is one. */
static __always_inline int binding_out(const struct cgnat_session_key *k,
				       struct cgnat_binding *out)
{
	union cgnat_binding_word w = { .raw = cgnat_binding_out(k) };

	*out = w.b;
	return w.raw != 0;
}

/* *k becomes the key of the inbound half of external endpoint (addr,
 * port, proto): CGNAT_KIND_BIND_IN, the endpoint in the external fields,
 * remote 0 (include/cgnat.h). */
static __always_inline void bind_in_key(struct cgnat_session_key *k, __be32 addr,
					__be16 port, __u8 proto)
{
	*k = (struct cgnat_session_key){
		.ext_addr = addr, .ext_port = port, .proto = proto,
		.kind = CGNAT_KIND_BIND_IN,
	};
}

/* The inbound half of external endpoint (addr, port, proto) as one word,
 * 0 if there is none (a live half holds a subscriber's address, a
 * quarantined one CGNAT_BIND_QUARANTINE). A global function taking
 * scalars: its key is on its own stack, not its callers'. */
__noinline __u64 cgnat_binding_in(__be32 addr, __be16 port, __u8 proto)
{
	struct cgnat_session_key k;

	bind_in_key(&k, addr, port, proto);
	return binding_word(&k);
}

/* The live binding whose external endpoint is (addr, port, proto), into
 * *out: 1 if there is one (a quarantined half matches no traffic). */
static __always_inline int binding_in(__be32 addr, __be16 port, __u8 proto,
				      struct cgnat_binding *out)
{
	union cgnat_binding_word w = { .raw = cgnat_binding_in(addr, port, proto) };

	*out = w.b;
	return w.raw != 0 && !(w.b.flags & CGNAT_BIND_QUARANTINE);
}

/*
 * A segment's writers' lock: its version in session_locks, odd while a
 * writer holds it, so that the sweep can also tell that a segment it read
 * without the lock stayed the same (session_reclaim()). Made of atomics
 * rather than bpf_spin_lock, which Linux 6.1 refuses in the sweep (a
 * sleepable program). A writer on another CPU holds it for one probe of
 * the segment, so a writer that finds it held tries again and only then
 * gives up (-EBUSY): a holder that was interrupted or preempted (the sweep
 * is preemptible) may not let go before the writer's packet is done.
 * cgnat_session_put(), the sweep and the daemon's deletes try SEG_SPINS
 * times in a bpf_loop; the port search's claims and the data path's
 * deletes, a frame deeper, SEG_TRIES times in a loop of their own (a
 * bpf_loop callback there would be a stack frame more than Linux 6.1
 * allows), and a claim that gives up tries another port.
 */
#define SEG_TRIES 512
#define SEG_SPINS 4096

static __always_inline int seg_try_lock(struct cgnat_seg_lock *lk)
{
	__u32 v = *(volatile __u32 *)&lk->version;

	return !(v & 1) && __sync_val_compare_and_swap(&lk->version, v, v + 1) == v;
}

static __always_inline int seg_lock_inline(struct cgnat_seg_lock *lk)
{
	__u32 i;

	for (i = 0; i < SEG_TRIES; i++) {
		if (seg_try_lock(lk))
			return 1;
	}
	return 0;
}

/* Takes lock lk of segment *si, waiting SEG_SPINS tries in a bpf_loop.
 * The callback's context is the segment's key, on the caller's stack
 * already (a context of its own would add to the callers' stack), and it
 * looks the lock up by it; SEG_GOT in *si while it tells that it took the
 * lock, *si as it was after. */
#define SEG_GOT (1u << 31)

static long seg_spin_cb(__u32 i, __u32 *si)
{
	struct cgnat_seg_lock *lk = bpf_map_lookup_elem(&session_locks, si);

	if (!lk)
		return 1;
	if (!seg_try_lock(lk))
		return 0;
	*si |= SEG_GOT;
	return 1;
}

static __always_inline int seg_lock(struct cgnat_seg_lock *lk, __u32 *si)
{
	if (seg_try_lock(lk))
		return 1;
	bpf_loop(SEG_SPINS, seg_spin_cb, si, 0);
	if (!(*si & SEG_GOT))
		return 0;
	*si &= ~SEG_GOT;
	return 1;
}

static __always_inline void seg_unlock(struct cgnat_seg_lock *lk)
{
	__sync_fetch_and_add(&lk->version, 1);
}

/* The count of a kind's slots, one more or less; returns the count before.
 * Looked up again each time, so that no pointer to it lives across a call
 * (on the callers' stack). */
static __always_inline __u64 session_count_add(__u8 kind, __s64 d)
{
	__u64 *count = bpf_map_lookup_elem(&session_count, &slot_count_key[kind & 3]);

	return count ? __sync_fetch_and_add(count, d) : slot_limit(kind);
}

/* One segment's part of a put, under its lock: the slot of key *k from
 * home slot `home` on (| PICK_FOUND), else the first free slot (PICK_NONE
 * if there is none), | PICK_END if the probe met an empty slot (then the
 * key has not spilled into the next segment). */
static __always_inline __u32 seg_pick(struct cgnat_session_seg *seg, __u32 home,
				      const struct cgnat_session_key *k)
{
	__u32 i, j, pick = PICK_NONE;

	for (i = 0; i < CGNAT_SEG_SLOTS; i++) {
		struct cgnat_session_slot *s;
		__u8 st;

		j = probe_slot(home, i);
		s = &seg->slot[j];
		st = s->key.slot_state;
		if (st == CGNAT_SLOT_LIVE) {
			if (session_key_eq(&s->key, k))
				return j | PICK_FOUND;
			continue;
		}
		if (pick == PICK_NONE)
			pick = j;
		if (st == CGNAT_SLOT_EMPTY)
			return pick | PICK_END;
	}
	return pick;
}

/*
 * Puts session n->key = n->s, as `kind` says (CGNAT_SOP_INSERT, _UPSERT or
 * _UPDATE), under the lock of the key's segment. Returns the slot (as
 * cgnat_session_find()), plus CGNAT_SLOT_OLD when the key was there
 * (CGNAT_SOP_INSERT then leaves its value as it was); -ENOENT when
 * CGNAT_SOP_UPDATE finds no session; -E2BIG when a new key finds the
 * table at its kind's limit (SLOT_LIMIT), or its segment and the next
 * both full; -EBUSY when a lock it needs stays held. A new session takes
 * its place in the count before the lock, and gives it back if it was not
 * added after all.
 *
 * A key whose segment is all live slots goes to the next segment of its
 * region (seg_next()), from the same home slot, under that segment's lock
 * as well; its segment counts it (spilled), and keeps its tombstones while
 * it has any (session_reclaim()), so that cgnat_session_find() goes on to
 * the next segment. Every writer of a key holds its own segment's lock,
 * so two puts never add the same key twice.
 *
 * With `spin`, waits for a lock in a bpf_loop (seg_lock()), else tries
 * SEG_TRIES times inline.
 *
 * Its stack adds to its callers' (512 bytes in all, counted in 32-byte
 * steps by Linux 6.1): the segment, home slot and kind travel packed in
 * `at`, and the choice in `pick` (the slot, PICK_FOUND when the key is
 * there).
 */
static __always_inline int session_put(const struct cgnat_session_slot *n, __u32 kind,
				       int spin)
{
	struct cgnat_session_seg *seg;
	struct cgnat_session_slot *s;
	struct cgnat_seg_lock *lk;
	/* the lookup key, and `at` beside it in the same stack word
	 * (volatile: read back from there, not spilled again) */
	__u32 key;
	volatile __u32 at;
	__u32 j, pick = PICK_NONE;
	__u64 h;

	if (!n)
		return -ENOENT;
	if (kind != CGNAT_SOP_UPDATE &&
	    session_count_add(n->key.kind, 1) >= slot_limit(n->key.kind)) {
		session_count_add(n->key.kind, -1);
		/* full: a present key is still found (and updated) */
		kind = kind == CGNAT_SOP_UPSERT ? CGNAT_SOP_UPDATE : CGNAT_SOP_GET;
	}
	h = session_hash(&n->key);
	key = session_seg_of(h, n->key.kind);
	at = (key << SEG_SHIFT | ((__u32)h & SLOT_MASK)) << 2 | (kind & 3);
	seg = bpf_map_lookup_elem(&sessions, &key);
	lk = bpf_map_lookup_elem(&session_locks, &key);
	if (!seg || !lk)
		goto out;
	if (!(spin ? seg_lock(lk, &key) : seg_lock_inline(lk))) {
		pick = PICK_BUSY;
		goto out;
	}
	pick = seg_pick(seg, (at >> 2) & SLOT_MASK, &n->key);
	if (!(pick & (PICK_FOUND | PICK_END)) && (lk->spilled || pick == PICK_NONE)) {
		/* no empty slot here: the key may have spilled, or must */
		key = seg_next(at >> (SEG_SHIFT + 2), n->key.kind);
		if (key != at >> (SEG_SHIFT + 2)) {
			seg = bpf_map_lookup_elem(&sessions, &key);
			lk = bpf_map_lookup_elem(&session_locks, &key);
			if (!seg || !lk ||
			    !(spin ? seg_lock(lk, &key) : seg_lock_inline(lk))) {
				pick = PICK_BUSY | PICK_SPILL;
				goto unlock_home;
			}
			j = seg_pick(seg, (at >> 2) & SLOT_MASK, &n->key);
			if ((j & PICK_FOUND) || (pick == PICK_NONE && j != PICK_NONE)) {
				pick = j | PICK_SPILL;
			} else {
				/* not there, and room at home: back to it */
				seg_unlock(lk);
				key = at >> (SEG_SHIFT + 2);
				seg = bpf_map_lookup_elem(&sessions, &key);
				lk = bpf_map_lookup_elem(&session_locks, &key);
				if (!seg || !lk) {
					/* found above: cannot fail */
					pick = PICK_BUSY;
					goto out;
				}
			}
		}
	}
	kind = at & 3;
	j = pick & SLOT_MASK;
	if (pick == PICK_NONE || (!(pick & PICK_FOUND) && (kind == CGNAT_SOP_UPDATE ||
							   kind == CGNAT_SOP_GET))) {
		pick |= PICK_MISS;
		goto unlock;
	}
	s = &seg->slot[j];
	j |= key << SEG_SHIFT;
	if (pick & PICK_FOUND) {
		if (kind == CGNAT_SOP_UPSERT || kind == CGNAT_SOP_UPDATE)
			s->s = n->s;
		goto unlock;
	}
	s->key.ext_addr = n->key.ext_addr;
	s->key.rem_addr = n->key.rem_addr;
	s->key.ext_port = n->key.ext_port;
	s->key.rem_port = n->key.rem_port;
	s->key.proto = n->key.proto;
	s->key.kind = n->key.kind;
	s->key.slot_dist = ((j - (at >> 2)) & SLOT_MASK) |
			   ((pick & PICK_SPILL) ? CGNAT_SLOT_SPILLED : 0);
	s->s = n->s;
	/* the state last: a reader that sees it live sees the key */
	asm volatile("" ::: "memory");
	*(volatile __u8 *)&s->key.slot_state = CGNAT_SLOT_LIVE;
unlock:
	seg_unlock(lk);
unlock_home:
	if (pick & PICK_SPILL) {
		/* the key's own segment, still locked: it counts a key that
		 * spilled (a later delete may count it off first, for a
		 * moment below zero; it only keeps tombstones longer) */
		key = at >> (SEG_SHIFT + 2);
		lk = bpf_map_lookup_elem(&session_locks, &key);
		if (lk) {
			if (!(pick & (PICK_FOUND | PICK_MISS | PICK_BUSY)))
				__sync_fetch_and_add(&lk->spilled, 1);
			seg_unlock(lk);
		}
	}
	if (!(pick & (PICK_MISS | PICK_BUSY))) {
		kind = at & 3;
		if ((pick & PICK_FOUND) && (kind == CGNAT_SOP_INSERT || kind == CGNAT_SOP_UPSERT))
			session_count_add(n->key.kind, -1);
		return (int)((pick & PICK_FOUND) ? j | CGNAT_SLOT_OLD : j);
	}
	if (pick & PICK_BUSY)
		pick = PICK_BUSY;
	else
		pick &= ~(PICK_MISS | PICK_SPILL);
out:
	/* not added: the place taken in the count goes back */
	kind = at & 3;
	if (kind == CGNAT_SOP_INSERT || kind == CGNAT_SOP_UPSERT)
		session_count_add(n->key.kind, -1);
	if (pick == PICK_BUSY)
		return -EBUSY;
	/* (an upsert that found the table full gets -ENOENT here:
	 * session_op_cb() tells) */
	return pick == PICK_NONE || kind == CGNAT_SOP_GET ? -E2BIG : -ENOENT;
}

__noinline int cgnat_session_put(const struct cgnat_session_slot *n, __u32 kind)
{
	return session_put(n, kind, 1);
}

/* The verdict of a failed cgnat_session_put(): its segment stayed locked,
 * or there is no room. */
static __always_inline int session_put_failed(int err)
{
	return err == -EBUSY ? CGNAT_DROP_TABLE_BUSY : CGNAT_DROP_TABLE_FULL;
}

/* A key that had spilled into segment si is gone: the segment before it
 * in its kind's region, the key's own, counts one spilled key less. A
 * global function taking scalars: its stack is not its callers'. */
__noinline int cgnat_spill_gone(__u32 si, __u8 kind)
{
	struct cgnat_seg_lock *lk;

	si = si == region_start(kind) ? si + REGION_SEGS[kind & 3] - 1 : si - 1;
	lk = bpf_map_lookup_elem(&session_locks, &si);
	if (lk)
		__sync_fetch_and_sub(&lk->spilled, 1);
	return 0;
}

/* Slot s of segment si, whose lock the caller holds, becomes a
 * tombstone. */
static __always_inline void session_kill_locked(__u32 si, struct cgnat_session_slot *s)
{
	__u8 kind = s->key.kind, spilled = s->key.slot_dist & CGNAT_SLOT_SPILLED;

	*(volatile __u8 *)&s->key.slot_state = CGNAT_SLOT_DEAD;
	if (spilled)
		cgnat_spill_gone(si, kind);
	session_count_add(kind, -1);
}

/*
 * Which tombstones of a segment no live key's probe sequence crosses, as
 * a mask of slots, computed without the lock by one step per slot (a
 * bpf_loop callback, so the verifier checks one step). Walking back from
 * an empty slot e, t counts the steps; a live slot t steps back whose home
 * is d further back covers the slots up to t + d steps back; a tombstone
 * beyond every such reach is crossed by nobody. No probe crosses an empty
 * slot, so one round from it tells. A segment without one (all live slots
 * and tombstones, as one that had keys spilled) is walked twice round from
 * slot 0, and only the second round tells: every live slot that can reach
 * a slot of it (at most SLOT_MASK steps before) has been seen.
 */
struct reclaim_walk {
	struct cgnat_session_seg *seg;
	__u64 mask;
	__u32 e;
	__u32 reach;
	__u32 from; /* the first step that tells */
};

static long reclaim_find_empty(__u32 i, struct reclaim_walk *w)
{
	if (w->seg->slot[i & SLOT_MASK].key.slot_state != CGNAT_SLOT_EMPTY)
		return 0;
	w->e = i;
	return 1;
}

static long reclaim_step(__u32 t, struct reclaim_walk *w)
{
	__u32 j = probe_slot(w->e + CGNAT_SEG_SLOTS, -t);
	struct cgnat_session_slot *s;
	__u8 st, d;

	if (t == 0)
		return 0;
	s = &w->seg->slot[j];
	st = slot_state(s);
	d = s->key.slot_dist & SLOT_MASK;
	if (st == CGNAT_SLOT_LIVE && t + d > w->reach)
		w->reach = t + d;
	if (st == CGNAT_SLOT_DEAD && t > w->reach && t >= w->from)
		w->mask |= 1ULL << j;
	return 0;
}

/* Empties what reclaim_step() found, unless the segment changed since its
 * version was read. Runs in the sweep and the daemon's deletes only. */
static __always_inline void session_reclaim(__u32 si)
{
	struct reclaim_walk w = { .e = CGNAT_SEG_SLOTS, .from = 1 };
	struct cgnat_seg_lock *lk = bpf_map_lookup_elem(&session_locks, &si);
	__u32 version, j;

	w.seg = bpf_map_lookup_elem(&sessions, &si);
	if (!w.seg || !lk)
		return;
	version = *(volatile __u32 *)&lk->version;
	if (version & 1)
		return;
	asm volatile("" ::: "memory");
	/* keys spilled from here: its probes must not end early */
	if (*(volatile __u32 *)&lk->spilled)
		return;
	bpf_loop(CGNAT_SEG_SLOTS, reclaim_find_empty, &w, 0);
	if (w.e >= CGNAT_SEG_SLOTS) {
		w.e = 0;
		w.from = CGNAT_SEG_SLOTS;
	}
	bpf_loop(CGNAT_SEG_SLOTS + w.from, reclaim_step, &w, 0);
	if (!w.mask)
		return;
	/* the lock, only if nobody wrote since the walk began */
	if (__sync_val_compare_and_swap(&lk->version, version, version + 1) != version)
		return;
	for (j = 0; j < CGNAT_SEG_SLOTS; j++) {
		if ((w.mask >> j) & 1)
			w.seg->slot[j].key.slot_state = CGNAT_SLOT_EMPTY;
	}
	seg_unlock(lk);
}

/* Deletes session *k, leaving a tombstone. Returns its segment, or
 * -ENOENT if it is not there, -EBUSY if the segment stayed locked. With
 * `spin`, waits for the lock in a bpf_loop (the sweep, the daemon); the
 * data path tries SEG_TRIES times inline, as cgnat_session_put() does. */
static __always_inline int session_unlink_locked_by(const struct cgnat_session_key *k,
						    int spin)
{
	struct cgnat_session_slot *s;
	struct cgnat_session_seg *seg;
	struct cgnat_seg_lock *lk;
	__u32 si, j;
	int at = cgnat_session_find(k), r = -ENOENT;

	if (at < 0)
		return -ENOENT;
	si = (__u32)at >> SEG_SHIFT;
	j = (__u32)at & SLOT_MASK;
	seg = bpf_map_lookup_elem(&sessions, &si);
	lk = bpf_map_lookup_elem(&session_locks, &si);
	if (!seg || !lk)
		return -ENOENT;
	s = &seg->slot[j];
	if (!(spin ? seg_lock(lk, &si) : seg_lock_inline(lk)))
		return -EBUSY;
	/* found without the lock: still the same session? */
	if (s->key.slot_state == CGNAT_SLOT_LIVE && session_key_eq(&s->key, k)) {
		session_kill_locked(si, s);
		r = 0;
	}
	seg_unlock(lk);
	return r == 0 ? (int)si : r;
}

static __always_inline int session_unlink(const struct cgnat_session_key *k)
{
	return session_unlink_locked_by(k, 1);
}

/* Removes the inbound half of external endpoint (addr, port, proto) that
 * the data path claimed for a binding it could not complete; its tombstone
 * is reclaimed by the sweep. 0, or -ENOENT, -EBUSY. A global function
 * taking scalars, so its key is not on its callers' stack. */
__noinline int cgnat_binding_unclaim(__be32 addr, __be16 port, __u8 proto)
{
	struct cgnat_session_key k;
	int r;

	bind_in_key(&k, addr, port, proto);
	r = session_unlink_locked_by(&k, 0);
	return r < 0 ? r : 0;
}

/* Deletes session *k and reclaims its segment's tombstones (the daemon's
 * deletes; the sweep deletes sessions by slot). Returns 0, or -ENOENT if
 * it is not there. */
static __always_inline int session_delete(const struct cgnat_session_key *k)
{
	int si = session_unlink(k);

	if (si < 0)
		return si;
	session_reclaim((__u32)si);
	return 0;
}

/* The daemon's operations (struct cgnat_session_ops), one run at a time
 * (the daemon serializes them): the context is copied in, worked on and
 * copied back. */
static struct cgnat_session_ops session_ops_run;

static long session_op_cb(__u32 i, void *ctx)
{
	struct cgnat_session_op *op;
	struct cgnat_session *s;
	int r;

	if (i >= CGNAT_SESSION_OPS)
		return 1;
	op = &session_ops_run.op[i];
	op->key.slot_state = 0;
	op->key.slot_dist = 0;
	if (op->key.kind >= CGNAT_KIND__MAX) {
		op->result = -EINVAL;
		return 0;
	}
	switch (op->kind) {
	case CGNAT_SOP_GET:
		s = session_lookup(&op->key);
		if (s)
			op->s = *s;
		op->result = s ? 0 : -ENOENT;
		break;
	case CGNAT_SOP_INSERT:
		r = cgnat_session_put((struct cgnat_session_slot *)op, CGNAT_SOP_INSERT);
		op->result = r < 0 ? r : (r & CGNAT_SLOT_OLD) ? -EEXIST : 0;
		break;
	case CGNAT_SOP_UPSERT:
	case CGNAT_SOP_UPDATE:
		r = cgnat_session_put((struct cgnat_session_slot *)op, op->kind);
		if (r == -ENOENT && op->kind == CGNAT_SOP_UPSERT)
			r = -E2BIG; /* a new key, and the table is full */
		op->result = r < 0 ? r : 0;
		break;
	case CGNAT_SOP_DELETE:
		op->result = session_delete(&op->key);
		break;
	default:
		op->result = -ENOENT;
	}
	return 0;
}

static __always_inline int session_ops_do(struct cgnat_session_ops *ctx)
{
	session_ops_run = *ctx;
	bpf_loop(session_ops_run.count < CGNAT_SESSION_OPS ? session_ops_run.count
							  : CGNAT_SESSION_OPS,
		 session_op_cb, 0, 0);
	*ctx = session_ops_run;
	return 0;
}

#endif /* CGNAT_SESSIONS_H */
