/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * cgnat.h - the ABI shared by the XDP program (bpf/) and the daemon (src/).
 *
 * Only map keys and values, enums and counter ids live here. Rust sees these
 * types through the libbpf-cargo skeleton (src/bpf.rs); nothing is mirrored
 * by hand. Every key has explicit padding that both sides zero: hash maps
 * compare keys bytewise.
 *
 * Clock: every timestamp is bpf_ktime_get_coarse_ns(), i.e. CLOCK_MONOTONIC
 * in nanoseconds; the daemon reads the same clock (clock_gettime
 * CLOCK_MONOTONIC) when it sweeps. Expiry is done by the daemon in batched
 * sweeps over these timestamps; the data path never deletes state.
 * The per-session tables store time in 32 bits (see CGNAT_TIME_SHIFT) so
 * that a session slot is 32 bytes and a binding entry 80.
 */
#ifndef CGNAT_H
#define CGNAT_H

#include <linux/types.h>
#include <linux/in.h> /* IPPROTO_* */

/*
 * Compact time of sessions and bindings: CLOCK_MONOTONIC nanoseconds
 * shifted right by CGNAT_TIME_SHIFT (units of 1.048576 ms), truncated to
 * 32 bits. It wraps every 52 days, so it is only ever compared by wrapping
 * subtraction (now - stamp): the daemon reads it as signed, right for any
 * age under 26 days (far above every timeout), and a stamp newer than its
 * own clock reading as age 0.
 */
enum cgnat_time {
	CGNAT_TIME_SHIFT = 20,
	/* plain traffic rewrites a session's last_seen at most this often
	 * (timeouts are seconds; skipping the store keeps a busy session's
	 * cache line shared), so the daemon adds this much to every timeout
	 * before it expires a session */
	CGNAT_REFRESH_MS = 1000,
};

/*
 * The protocols cgnat translates, as they appear in every proto field
 * (struct cgnat_endpoint.proto ...): the IANA numbers of linux/in.h,
 * named here so that they reach the daemon through BTF.
 */
enum cgnat_proto {
	CGNAT_PROTO_ICMP = IPPROTO_ICMP,
	CGNAT_PROTO_TCP = IPPROTO_TCP,
	CGNAT_PROTO_UDP = IPPROTO_UDP,
};

/*
 * An endpoint in one address realm: the key of both binding maps.
 * For ICMP query messages, port is the query identifier.
 */
struct cgnat_endpoint {
	__be32 addr;
	__be16 port;
	__u8 proto; /* enum cgnat_proto */
	__u8 _pad;
};

/* Binding flags (struct cgnat_binding.flags). */
enum cgnat_binding_flag {
	/* configured port forward ([[static]]): never expires, admitted by
	 * every filtering mode */
	CGNAT_BIND_STATIC = 2,
	/*
	 * Set by the daemon on an expired binding's reverse entry: the port
	 * stays reserved (the data path cannot allocate it) but matches no
	 * traffic until the quarantine ends (RFC 6888 REQ-8).
	 */
	CGNAT_BIND_QUARANTINE = 1,
	/*
	 * Set by the daemon on a binding it found without sessions at a
	 * sweep; if it still has none at the next sweep it is released. (The
	 * data path creates a binding a moment before its first session, so
	 * a binding is never released at the first sweep that sees it bare.)
	 * The daemon clears it when a session shows up.
	 */
	CGNAT_BIND_IDLE = 4,
	/*
	 * Set by the in-kernel sweep (bpf/sweep.h) on a binding a live
	 * session uses, and cleared by the same sweep's binding pass: the
	 * sweep's scratch mark, never seen by the data path.
	 */
	CGNAT_BIND_LIVE = 8,
	/*
	 * Set by the in-kernel sweep on a binding it decided to release but
	 * could not report (sweep_out was full); a CGNAT_SWEEP_RELEASE run
	 * releases it.
	 */
	CGNAT_BIND_PENDING = 16,
};

/*
 * A binding's two halves, both slots of the session table (struct
 * cgnat_session_slot, the binding in the first 8 bytes of the slot's
 * value). The inbound one (CGNAT_KIND_BIND_IN, key: external endpoint)
 * holds the internal endpoint; the outbound one (CGNAT_KIND_BIND_OUT, key:
 * internal endpoint) holds the external endpoint. Both are created by the
 * data path (the inbound half first, an insert that fails if the key is
 * there, so an external port is claimed atomically) and removed by the
 * sweep or the daemon (the outbound half first). 8 bytes.
 */
struct cgnat_binding {
	/* the other realm's address; in a quarantined inbound half (which
	 * matches no traffic) the quarantine's start in CGNAT_TIME_SHIFT
	 * units instead */
	__be32 addr;
	__be16 port;
	__u8 flags; /* enum cgnat_binding_flag */
	/* inbound half: the in-kernel sweep's count of this binding's sessions
	 * (saturating), from its session pass to its binding pass; 0
	 * otherwise. Outbound half: 0. */
	__u8 sweep_sessions;
};

/*
 * Session key, in the external realm: external endpoint of the binding plus
 * the remote endpoint. It is unique per flow because an external endpoint
 * belongs to exactly one binding. Inbound packets look it up as they arrive
 * (dst = ext, src = remote); outbound ones after their binding lookup.
 * ICMP query sessions use rem_port = 0.
 */
struct cgnat_session_key {
	__be32 ext_addr;
	__be32 rem_addr;
	__be16 ext_port;
	__be16 rem_port;
	__u8 proto;
	/* 0 in a key; in a slot of the session table, the slot's state
	 * (enum cgnat_slot_state) and its distance from the key's home
	 * slot (struct cgnat_session_seg) */
	__u8 slot_state;
	__u8 slot_dist;
	__u8 kind; /* enum cgnat_slot_kind */
};

/*
 * What a key of the session table names. A session (CGNAT_KIND_SESSION)
 * is keyed as above. A binding's halves are keyed by one endpoint in
 * ext_addr, ext_port and proto (rem_addr and rem_port 0): the outbound
 * half (CGNAT_KIND_BIND_OUT) by the internal endpoint, the inbound half
 * (CGNAT_KIND_BIND_IN) by the external one. A half's slot holds a struct
 * cgnat_binding in the first 8 bytes of its struct cgnat_session: the
 * outbound half the external endpoint (flags and sweep_sessions 0) and
 * then its session hint (struct cgnat_bind_out), the inbound half the
 * internal endpoint, or a quarantine, and then 0. Each kind has its own
 * region of segments and its own count.
 */
enum cgnat_slot_kind {
	CGNAT_KIND_SESSION = 0,
	CGNAT_KIND_BIND_OUT = 1,
	CGNAT_KIND_BIND_IN = 2,
	CGNAT_KIND__MAX = 3,
};

/*
 * Filtering behaviour for inbound packets that match a binding but no
 * session (RFC 4787 section 5, REQ-8; per protocol, RFC 7857 section 6).
 */
enum cgnat_filtering {
	CGNAT_FILTER_EIF = 0,  /* endpoint-independent: anyone (default) */
	CGNAT_FILTER_ADF = 1,  /* address-dependent: remotes the binding sent to */
	CGNAT_FILTER_APDF = 2, /* address-and-port-dependent: existing sessions */
};

/*
 * Key of filter_addr (address-dependent filtering only): one entry per
 * (binding, remote address) the subscriber has sent to.
 */
struct cgnat_filter_key {
	__be32 ext_addr;
	__be32 rem_addr;
	__be16 ext_port;
	__u8 proto;
	__u8 _pad;
};

/* TCP events seen on a session (struct cgnat_session.tcp), ORed in. */
enum cgnat_tcp_event {
	CGNAT_TCP_SYN_OUT = 1 << 0, /* SYN from the subscriber */
	CGNAT_TCP_SYN_IN = 1 << 1,  /* SYN (or SYN-ACK) from the remote */
	CGNAT_TCP_FIN_OUT = 1 << 2,
	CGNAT_TCP_FIN_IN = 1 << 3,
	CGNAT_TCP_RST = 1 << 4,
	/* session picked up mid-stream (no SYN seen): treated as established */
	CGNAT_TCP_LOOSE = 1 << 5,
};

/* Session flags (struct cgnat_session.flags). */
enum cgnat_session_flag {
	CGNAT_SESS_INBOUND = 1, /* created by an inbound packet (EIF) */
	CGNAT_SESS_HAIRPIN = 2, /* remote is one of our own external endpoints */
	/* set by the daemon on an idle session it will delete at its next
	 * sweep; any refreshing packet clears it (two-phase expiry, so a
	 * sweep never deletes a session a packet is refreshing) */
	CGNAT_SESS_DYING = 4,
	/* a hairpin session made while its target's side could not be (the
	 * target's filtering or limits refused it): its packets look that
	 * side up, and go through only once it exists */
	CGNAT_SESS_ONE_SIDED = 8,
};

/*
 * Derived TCP state, computed by the daemon from the event bits
 * (RFC 7857 section 2, RFC 6146 figure): the timeout follows the state.
 */
enum cgnat_tcp_state {
	CGNAT_TCP_INIT = 0,        /* SYN seen one way: transitory (opening) */
	CGNAT_TCP_ESTABLISHED = 1, /* SYN both ways, or loose pick-up */
	CGNAT_TCP_FIN_ONE = 2,     /* FIN one way: still established */
	CGNAT_TCP_CLOSING = 3,     /* FIN both ways: transitory (closing) */
	CGNAT_TCP_RESET = 4,       /* RST seen: transitory (RFC 7857 2.2) */
};

/*
 * A session's value: 16 bytes, half of a slot of the session table
 * (struct cgnat_session_slot), so a configured session costs 64 bytes.
 *
 * int_addr:int_port is the internal endpoint the session translates to:
 * for a remote on the internet, the subscriber that owns the external
 * endpoint (inbound packets go there); for a hairpin session, the
 * subscriber behind the remote endpoint (the owner's packets go there),
 * so a hairpinned packet needs its own session only. The two sessions of
 * a hairpinned flow (each side's external endpoint as the other's
 * remote) live and die together (bpf/sweep.h), so that endpoint stays the
 * target's while either exists (CGNAT_SESS_ONE_SIDED: while the other side
 * is not there yet). The owner of a hairpin session is the
 * binding of its external endpoint.
 */
struct cgnat_session {
	__be32 int_addr;
	__be16 int_port;
	__u8 flags; /* enum cgnat_session_flag */
	__u8 _pad0;
	__u32 tcp;       /* enum cgnat_tcp_event bits (ORed atomically) */
	__u32 last_seen; /* CGNAT_TIME_SHIFT units */
};

/*
 * The session table (array "sessions", bpf/sessions.h): segments of
 * CGNAT_SEG_SLOTS slots of 32 bytes (2 KiB). A session lives in the
 * segment its key hashes to (keyed by SESSION_SEED, rodata), in the first
 * free slot from its home slot on (linear probing that wraps within the
 * segment), so that a lookup reads one or two cache lines; a key whose
 * segment is all live slots goes to the next segment of its kind's
 * region, from the same home slot (a lookup then reads both). The table has
 * CGNAT_SLOTS_PER_SESSION slots per configured session (a load factor of
 * at most 1/2, which keeps probes short), and never holds more than the
 * configured number of sessions (session_count): a full table refuses, it
 * never evicts (RFC 6888 REQ-11). Bindings' outbound halves
 * (CGNAT_KIND_BIND_OUT) and then their inbound halves
 * (CGNAT_KIND_BIND_IN) live in regions of their own after the sessions',
 * CGNAT_SLOTS_PER_BINDING slots per configured binding each, with their
 * own counts (a quarantined port counts as a binding).
 *
 * Writers (inserts, updates of whole values, deletes) hold the segment's
 * lock (session_locks); readers take none. A slot's state is written last
 * when it becomes live and first when it dies. A deleted slot becomes a
 * tombstone (CGNAT_SLOT_DEAD), which inserts reuse and which the sweep
 * empties once no key's probe sequence crosses it. A slot is named by its
 * segment and place: segment * CGNAT_SEG_SLOTS + slot.
 */
enum cgnat_session_table {
	CGNAT_SEG_SLOTS = 64,
	CGNAT_SLOTS_PER_SESSION = 2,
	CGNAT_SLOTS_PER_BINDING = 2,
	/* set in cgnat_session_put()'s result when the key was already
	 * there (and left unchanged, CGNAT_SOP_INSERT) */
	CGNAT_SLOT_OLD = 1 << 30,
	/* set in a slot's slot_dist (below it, the distance) when its key
	 * spilled there from the segment before */
	CGNAT_SLOT_SPILLED = 1 << 6,
};

enum cgnat_slot_state {
	CGNAT_SLOT_EMPTY = 0, /* never used since the last reclaim: ends a probe */
	CGNAT_SLOT_LIVE = 1,
	CGNAT_SLOT_DEAD = 2, /* deleted: a probe goes on past it */
};

struct cgnat_session_slot {
	struct cgnat_session_key key;
	struct cgnat_session s;
};

/*
 * The value of an outbound half's slot (its struct cgnat_session read as
 * this). session_hint names a slot that held a session of the binding, so
 * that an established outbound packet finds its session without a second
 * hash lookup: the slot + 1 (0: none) in the low 32 bits, a tag of the
 * session's remote endpoint in the high 32 (the slot is read only when the
 * packet's remote has that tag). The data path sets it when it creates a
 * session of an existing binding, and when it finds one while the hint is
 * 0; it is read and written whole, without the segment's lock, and is only
 * a hint: the slot's state and key are checked before it is used. The
 * daemon writes 0 with the binding.
 */
struct cgnat_bind_out {
	struct cgnat_binding b;
	__u64 session_hint;
};

struct cgnat_session_seg {
	struct cgnat_session_slot slot[CGNAT_SEG_SLOTS];
};

/*
 * What the daemon asks of the session table: the SEC("syscall") program
 * session_ops runs a struct cgnat_session_ops (its context) with the same
 * code the data path uses, one op after the other. An op works on the slot
 * of its key's kind (enum cgnat_slot_kind; -EINVAL beyond it).
 */
enum cgnat_session_op_kind {
	CGNAT_SOP_GET = 0,    /* s := the session; -ENOENT if absent */
	CGNAT_SOP_INSERT = 1, /* add; -EEXIST if present (left unchanged) */
	CGNAT_SOP_UPSERT = 2, /* add or replace the value */
	CGNAT_SOP_UPDATE = 3, /* replace the value; -ENOENT if absent */
	CGNAT_SOP_DELETE = 4, /* -ENOENT if absent */
	/* ops per run (the program copies them whole: under 1 KiB) */
	CGNAT_SESSION_OPS = 24,
};

struct cgnat_session_op {
	struct cgnat_session_key key;
	struct cgnat_session s;
	__u32 kind;   /* enum cgnat_session_op_kind */
	__s32 result; /* out: 0 or -errno (-E2BIG: the table is full) */
};

struct cgnat_session_ops {
	__u32 count; /* ops used */
	__u32 _pad;
	struct cgnat_session_op op[CGNAT_SESSION_OPS];
};


/*
 * Per-CPU counters, one slot per id (PERCPU_ARRAY "stats"). Every packet the
 * program sees is counted exactly once under its verdict reason; the
 * reasons are grouped by the XDP action they lead to. CGNAT_STAT__MAX must
 * stay last.
 */
enum cgnat_stat {
	/* translated and forwarded by XDP_REDIRECT or XDP_TX */
	CGNAT_FWD_OUT = 0,      /* subscriber -> internet */
	CGNAT_FWD_IN,           /* internet -> subscriber */
	CGNAT_FWD_HAIRPIN,      /* subscriber -> subscriber via its mapping */
	CGNAT_FWD_EXEMPT,       /* forwarded untranslated (nat.exempt) */
	/* answered with an ICMP error built in XDP (XDP_TX), original dropped */
	CGNAT_ICMP_TIME_EXCEEDED, /* 11/0: TTL would reach zero */
	CGNAT_ICMP_FRAG_NEEDED,   /* 3/4: DF set, larger than the egress MTU */
	CGNAT_ICMP_HOST_UNREACH,  /* 3/1: no mapping can be created, or the
				   * next hop did not resolve */
	/* handed to the kernel untouched */
	CGNAT_PASS_NOT_IPV4,    /* ARP, IPv6, LLDP ... */
	CGNAT_PASS_LOCAL,       /* for the router itself */
	CGNAT_PASS_NOT_NAT,     /* neither from a subscriber nor to the pool */
	CGNAT_PASS_NOT_FOR_US,  /* link-layer destination not this interface */
	/* dropped */
	CGNAT_DROP_MALFORMED,   /* truncated frame, bad IHL or lengths */
	CGNAT_DROP_IP_CSUM,     /* IPv4 header checksum wrong (RFC 1812 5.2.2) */
	CGNAT_DROP_FRAGMENT,    /* later fragment that cannot follow a first one */
	CGNAT_FRAG_HELD,        /* later fragment held until its first arrives */
	CGNAT_NEIGH_HELD,       /* held in neigh_hold while its next hop resolves */
	CGNAT_DROP_SPOOFED,     /* internal side, source not a subscriber */
	CGNAT_DROP_TO_INTERNAL, /* external side, destination a subscriber */
	CGNAT_DROP_PROTO,       /* protocol cgnat does not translate */
	CGNAT_DROP_ICMP_TYPE,   /* ICMP type not translated */
	CGNAT_DROP_ICMP_CSUM,   /* ICMP error with a bad ICMP or embedded IP checksum */
	CGNAT_DROP_NO_BINDING,  /* inbound to the pool with no mapping */
	CGNAT_DROP_FILTERED,    /* inbound refused by the filtering mode */
	CGNAT_DROP_TCP_NO_SESSION, /* TCP segment that may not open a session */
	CGNAT_DROP_PORTS_EXHAUSTED, /* no free external port */
	CGNAT_DROP_TABLE_FULL,  /* binding or session map full */
	CGNAT_DROP_TABLE_BUSY,  /* the session's segment stayed locked by a
				 * writer interrupted on this CPU (dropped
				 * silently: the sender retries) */
	CGNAT_DROP_SUB_LIMIT,   /* subscriber at its port, session or rate limit */
	CGNAT_DROP_SUBS_FULL,   /* subscriber table full */
	CGNAT_DROP_TTL,         /* TTL would reach zero (no ICMP sent) */
	CGNAT_DROP_FRAG_NEEDED, /* larger than the egress MTU (no ICMP sent) */
	CGNAT_DROP_NO_ROUTE,    /* FIB: unreachable, blackhole, prohibit */
	CGNAT_DROP_NO_NEIGH,    /* next hop unresolved, its hold queue full */
	CGNAT_DROP_NEIGH_FAILED, /* next hop failed to resolve (no ICMP sent) */
	CGNAT_DROP_FIB_OTHER,   /* FIB: any other failure */
	CGNAT_DROP_NO_TX_PORT,  /* egress interface not in the devmap */
	CGNAT_DROP_NO_POOL,     /* no external address configured */
	CGNAT_DROP_NOT_OWNER,   /* new mapping for a cluster slice this node
				 * does not allocate for now (dropped silently:
				 * the sender retries once the slice moves) */
	CGNAT_DROP_POOL_SOURCE, /* external side, source one of our external
				 * endpoints (hairpinned traffic never leaves) */
	CGNAT_STAT__MAX,
};

/* One per-CPU counter slot: packets and bytes. */
struct cgnat_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * The first octets of the subscriber prefixes (nat.internal_prefixes), as
 * bits (octet o is bit o % 64 of bits[o / 64]): a superset that the data
 * path tests before it looks an address up in internal_prefixes, so that
 * an address of the internet is told apart without a trie lookup. The
 * daemon sets the bits of new prefixes before it adds them to the trie,
 * and clears those of removed ones after it has taken them out.
 */
struct cgnat_first_octets {
	__u64 bits[4];
};

/*
 * Fragment state (map "frags"): how the first fragment of a datagram was
 * translated, so the later ones (which carry no ports) follow it. Keyed by
 * the fragment's header as it arrived.
 */
struct cgnat_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 _pad;
};

struct cgnat_frag {
	__be32 saddr; /* after translation */
	__be32 daddr;
	__be16 id;
	__u8 _pad[2];
	__u32 reason; /* enum cgnat_stat the datagram is counted under */
	__u64 created_ns;
};

/* Token bucket of the ICMP error generator (one per CPU). */
struct cgnat_bucket {
	__u64 stamp_ns;
	__u64 tokens;
};

/* Ring-buffer event types (struct cgnat_event.type). */
enum cgnat_event_type {
	/* next hop has no neighbour entry: the daemon asks the kernel to
	 * resolve it (RTM_NEWNEIGH with NTF_USE); ifindex, addr */
	CGNAT_EV_NEIGH_MISS = 1,
	/* a binding was created (NAT log, RFC 6888 section 4): proto,
	 * addr/port (internal), ext_addr/ext_port */
	CGNAT_EV_BINDING_CREATE = 2,
	/* port-block allocation: a block was given to a subscriber (addr);
	 * ext_addr, ports port..ext_port */
	CGNAT_EV_BLOCK_ALLOC = 4,
	/* a new mapping was refused (subscriber limit, pool or table
	 * exhausted): addr/port, proto, reason; at most ~100/s per CPU */
	CGNAT_EV_REFUSED = 5,
	/* the first fragment of a datagram whose later fragments are held
	 * in frag_stash arrived: the daemon re-runs them through the
	 * program (frag: the key) */
	CGNAT_EV_FRAG_READY = 3,
};

/* Ring-buffer record from the data path to the daemon. */
struct cgnat_event {
	__u32 type; /* enum cgnat_event_type */
	__u32 ifindex;
	__be32 addr;
	__be32 ext_addr;
	__be16 port;
	__be16 ext_port;
	__u8 proto;
	__u8 _pad[3];
	__u64 ts_ns;
	struct cgnat_frag_key frag;
	__u32 reason; /* CGNAT_EV_REFUSED: enum cgnat_stat */
};

/*
 * Neighbour hold queue (map "neigh_hold"): frames whose next hop has no
 * neighbour entry yet, kept as they arrived (nothing rewritten, no state
 * created) while the kernel resolves it, like the kernel's own unres_qlen
 * queue. The daemon re-runs them through the program when the neighbour
 * becomes valid, and when resolution fails (the program then answers them
 * with ICMP host unreachable, RFC 1812 4.3.3.1). At most
 * CGNAT_HOLD_PER_HOP frames per next hop and CGNAT_HOLD_TOTAL in all.
 */
enum cgnat_hold_limit {
	CGNAT_HOLD_PER_HOP = 16,
	CGNAT_HOLD_TOTAL = 1024,
	/* a next hop whose resolution failed is answered at once, without
	 * holding, for this long (then resolution is tried again) */
	CGNAT_NEIGH_FAILED_MS = 3000,
	/* a held frame older than this is given up as failed */
	CGNAT_HOLD_MAX_MS = 5000,
};

struct cgnat_hold_key {
	__be32 nexthop;
	__u32 slot; /* 0 .. CGNAT_HOLD_PER_HOP - 1 */
};

/* Resolution state of a next hop (map "neigh", LRU): when the daemon was
 * last asked to resolve it, when the kernel last failed to (both
 * bpf_ktime_get_coarse_ns; 0: never), and how many frames were queued since
 * the daemon last emptied its queue. */
struct cgnat_neigh {
	__u64 reported_ns;
	__u64 failed_ns;
	__u32 held;
	__u32 _pad;
};

/* Largest frame held in frag_stash and neigh_hold. */
enum { CGNAT_STASH_BYTES = 1600 };

/* Key of frag_stash: the datagram and the fragment's offset field. */
struct cgnat_stash_key {
	struct cgnat_frag_key frag;
	__be16 frag_off;
	__u16 _pad;
};

/* A frame held in frag_stash (a later fragment until its first fragment
 * arrives) or in neigh_hold. */
struct cgnat_stash {
	__u32 len;
	__u32 ifindex; /* where it was received */
	__u64 created_ns;
	__u8 data[CGNAT_STASH_BYTES];
};

/* Events the data path could not deliver (ring buffer full), by type:
 * slot = enum cgnat_event_type, every one of which is below
 * CGNAT_EVENT_SLOTS. PERCPU_ARRAY "event_lost". */
enum cgnat_event_lost { CGNAT_EVENT_SLOTS = 8 };

/* Key of the LPM tries (internal prefixes, pool prefixes, exemptions). */
struct cgnat_lpm_key {
	__u32 prefixlen;
	__be32 addr;
};

/* Value of the internal_prefixes trie: the prefix and the number of
 * internal addresses before it (deterministic mode numbers subscribers
 * across all internal prefixes, in config order). */
struct cgnat_prefix_info {
	__be32 network;
	__u32 offset;
	/* dynamic and port-block modes: the prefix's subscribers get pool
	 * addresses pool_first .. pool_first + pool_count - 1 (the whole pool
	 * on a single node; its cluster slice's part on a cluster node) */
	__u32 pool_first;
	__u32 pool_count;
	/* 0: this node does not allocate for these subscribers now (a cluster
	 * slice whose owner is alive): no new subscriber, no new binding.
	 * Existing bindings and sessions (synced from the owner) still
	 * translate. 1 on a single node. */
	__u32 active;
	__u32 _pad;
};

/* Key of the exempt_port trie: destination port, then address; prefixlen
 * counts from the port (16 + address prefix length). */
struct cgnat_lpm_port_key {
	__u32 prefixlen;
	__be16 port;
	__u8 addr[4];
	__u8 _pad[2];
};

/* How external ports are given to subscribers (rodata ALLOC_MODE). */
enum cgnat_alloc_mode {
	CGNAT_ALLOC_DYNAMIC = 0, /* one port at a time, anywhere */
	CGNAT_ALLOC_PBA = 1,     /* blocks of BLOCK_SIZE ports (RFC 6888 REQ-14) */
	CGNAT_ALLOC_DET = 2,     /* deterministic (RFC 7422) */
};

/*
 * External ports of port-block and deterministic allocation: blocks and
 * ranges start at CGNAT_PORT_MIN (the system ports 0-1023 are never
 * handed out in them, RFC 7422 section 3), and a subscriber holds at most
 * CGNAT_MAX_BLOCKS_CAP blocks (the bound of pool.max_blocks).
 */
enum cgnat_ports {
	CGNAT_PORT_MIN = 1024,
	CGNAT_MAX_BLOCKS_CAP = 32,
};

/* Index of a protocol in per-protocol arrays. */
enum cgnat_proto_idx {
	CGNAT_PI_TCP = 0,
	CGNAT_PI_UDP = 1,
	CGNAT_PI_ICMP = 2,
	CGNAT_PI__MAX = 3,
};

/*
 * A subscriber (map "subscribers", key: its internal address): its paired
 * external address (RFC 6888 REQ-2) and what it holds. The data path
 * creates it with the first binding and increments the counters; the
 * daemon recounts them from the tables at every sweep and deletes the
 * subscriber once it holds nothing.
 */
struct cgnat_subscriber {
	__be32 ext_addr;
	__u32 pool_idx;
	__u32 ports[CGNAT_PI__MAX]; /* bindings held, per protocol */
	__u32 sessions;
	__u16 det_lo;	/* deterministic: first port of its range */
	__u16 _pad0;
	__u32 rate_tokens; /* new-mapping token bucket */
	__u64 rate_stamp_ns;
	__u64 created_ns;
	__u64 last_alloc_ns; /* last binding created */
};

/* Port-block allocation: a block of one external address. */
struct cgnat_block_key {
	__be32 ext_addr;
	__u32 block; /* ports CGNAT_PORT_MIN + block * BLOCK_SIZE ... */
};

struct cgnat_block {
	__be32 owner; /* subscriber */
	__u32 slot;   /* its index in the owner's sub_blocks */
	__u64 created_ns;
	/* set by the data path when a search found no free port; cleared
	 * by the daemon once the block has a free port again */
	__u32 full;
	__u32 _pad;
};

/* The blocks of a subscriber: (subscriber, slot) -> block number. */
struct cgnat_sub_block_key {
	__be32 sub;
	__u32 slot;
};

/* Scratch state of a port search (per-CPU map probe_scratch, bpf/pool.h). */
struct cgnat_probe {
	struct cgnat_endpoint ek;
	struct cgnat_binding rev;
	__u32 base;   /* first port of the range searched */
	__u32 start;  /* where a sequential probe starts; the source port */
	__s32 result; /* 0 claimed, 1 none found, -1 table full, -2 busy */
	__u32 first;  /* the number of the search's first try */
	/* the half of a new binding being put: the inbound one while a
	 * port is claimed, then the outbound one (bpf/pool.h) */
	struct cgnat_session_slot slot;
	/* port-block mode: the subscriber's slot and block being searched
	 * (the keys of their lookups), the tries made in that block, the
	 * first empty slot seen (CGNAT_MAX_BLOCKS_CAP: none), a new block */
	struct cgnat_sub_block_key sbk;
	struct cgnat_block_key bk;
	__u32 tries;
	__u32 free_slot;
	struct cgnat_block blk;
};

/*
 * What a daemon pinned (map "meta", written and read by the daemon only):
 * a restarted daemon adopts the pinned tables only if they were made by
 * the same ABI (include/cgnat.h, bpf/maps.h) with the same sizes.
 */
struct cgnat_meta {
	__u64 abi;
	__u32 internal_ifindex;
	__u32 external_ifindex;
	__u32 max_sessions;
	__u32 max_bindings;
	__u32 max_subscribers;
	__u32 max_fragments;
	/* the key of the session table's hash (SESSION_SEED) */
	__u64 session_seed;
};

/*
 * Route cache (array "routes", bpf/route.h): what bpf_fib_lookup answered
 * for a destination, so that packets of established flows skip the FIB
 * (it is the largest single cost of a forwarded packet). Direct-mapped:
 * a destination and TOS have one slot (CGNAT_ROUTE_SLOTS, by a hash), and
 * a new answer replaces whatever the slot held, so a lookup is one array
 * access with no hash-map walk. An entry is used only while it is younger
 * than ROUTE_CACHE_NS (rodata) and was made under the current
 * route_gen.gen, which the daemon bumps on every route, address, link,
 * rule or neighbour change it hears of over rtnetlink; the daemon turns
 * the cache off (route_gen.enabled = 0) while the kernel has policy
 * routing rules beyond the three default ones, since a lookup then depends
 * on more than the destination. Only successful lookups are cached.
 *
 * seq is odd while a CPU writes the entry (taken by compare-and-swap; a
 * writer that finds it taken leaves the slot alone); a reader takes the
 * entry's answer only if seq was even and unchanged across its reads.
 */
enum cgnat_route_cache {
	CGNAT_ROUTE_SLOTS = 65536,
};

struct cgnat_route {
	__u32 seq;
	__be32 daddr;
	__u8 tos;      /* routes may depend on it; the input device cannot
			* (only a policy rule could make it, and rules stop the cache) */
	__u8 _pad;
	__u16 mtu;     /* path MTU the FIB reported (0xffff: no limit seen) */
	__u32 ifindex; /* egress */
	__u32 stamp;   /* when looked up, CGNAT_TIME_SHIFT units */
	__u32 gen;     /* route_gen.gen of the lookup */
	__u8 smac[6];
	__u8 dmac[6];
};

/* Per-CPU scratch of a route cache lookup (map "route_scratch"): keeps the
 * new entry of a miss, and a hit's MTU, off the stack, which the calling
 * worker has nearly used up (512 bytes for the whole call chain). */
struct cgnat_route_scratch {
	struct cgnat_route route;
	/* the lookup's own inputs, asked again for the path MTU */
	__u32 in_ifindex;
	__be32 saddr;
	__u16 len;
	__u8 _pad[6];
};

/* The one slot of the array "route_gen", written by the daemon only. */
struct cgnat_route_gen {
	__u32 gen;
	__u32 enabled; /* 0: every packet asks the FIB */
};

/*
 * Value of the array "if_macs": slot 0 the internal (or one-armed)
 * interface's MAC, slot 1 the external one's, written by the daemon (at
 * load and when it changes). A frame whose destination MAC is another one
 * (link-layer broadcast or multicast, or another host's address seen in
 * promiscuous mode) is not translated but handed to the kernel: a router
 * forwards only what was sent to it (RFC 1812 5.3.4). set = 0: no check.
 */
struct cgnat_if_mac {
	__u8 addr[6];
	__u8 set;
	__u8 _pad;
};

/* Which interface a program instance serves (rodata and entry points). */
enum cgnat_side {
	CGNAT_SIDE_INTERNAL = 1,
	CGNAT_SIDE_EXTERNAL = 2,
	CGNAT_SIDE_BOTH = 3, /* one-armed: classify by address alone */
};

/*
 * The in-kernel sweep (bpf/sweep.h, SEC("syscall") program cgnat_sweep):
 * the daemon runs it with BPF_PROG_TEST_RUN, struct cgnat_sweep as the
 * context. Times are compact (CGNAT_TIME_SHIFT units) unless named _ns.
 */
enum cgnat_sweep_limits {
	/* UDP ports with their own timeout the kernel sweep handles; with
	 * more, the daemon sweeps in user space */
	CGNAT_SWEEP_UDP_PORTS = 16,
	/* runs of pool addresses with sweep_live slots; the bindings of any
	 * other address are marked in their inbound halves */
	CGNAT_SWEEP_RANGES = 8,
};

/* Timeout classes of struct cgnat_sweep.limit. */
enum cgnat_sweep_class {
	CGNAT_SC_TCP_EST = 0,	  /* established and fin_one */
	CGNAT_SC_TCP_OPENING = 1, /* init */
	CGNAT_SC_TCP_CLOSING = 2, /* closing and reset */
	CGNAT_SC_UDP = 3,
	CGNAT_SC_OTHER = 4, /* ICMP (and any other protocol) */
	CGNAT_SC__MAX = 5,
};

enum cgnat_sweep_mode {
	/* sessions, then bindings, then filter_addr */
	CGNAT_SWEEP_FULL = 0,
	/* only the bindings marked CGNAT_BIND_PENDING */
	CGNAT_SWEEP_RELEASE = 1,
};

enum cgnat_sweep_flags {
	CGNAT_SWEEP_FILTER = 1, /* filter_addr is in use: sweep it */
	CGNAT_SWEEP_BLOCKS = 2, /* port blocks: count bindings per block */
};

/* External addresses first .. first + count - 1 (host order) have the
 * sweep_live slots slot .. slot + count - 1. */
struct cgnat_sweep_range {
	__u32 first;
	__u32 count;
	__u32 slot;
	__u32 _pad;
};

struct cgnat_sweep_udp {
	__u16 port; /* remote port, host order */
	__u16 _pad;
	__u32 limit;
};

struct cgnat_sweep {
	/* in */
	__u64 now_ns;
	__u64 filter_grace_ns;
	/* a session idle more than limit[class] units has expired */
	__u32 limit[CGNAT_SC__MAX];
	/* a quarantine at least this many units old ends */
	__u32 quarantine;
	__u32 mode;  /* enum cgnat_sweep_mode */
	__u32 flags; /* enum cgnat_sweep_flags */
	__u32 block_size;
	__u32 blocks_per_addr;
	__u32 out_cap; /* records sweep_out can take */
	__u32 udp_ports; /* entries of udp used */
	struct cgnat_sweep_udp udp[CGNAT_SWEEP_UDP_PORTS];
	__u32 ranges; /* entries of range used */
	__u32 _pad_in;
	struct cgnat_sweep_range range[CGNAT_SWEEP_RANGES];
	/* out */
	__u64 sessions_live;
	__u64 sessions_dying;
	__u64 sessions_expired;
	__u64 bindings_live;
	__u64 bindings_released;
	__u64 ports_quarantined;
	__u64 ports_freed;
	__u64 filters_deleted;
	__u32 out;	   /* records written to sweep_out */
	__u32 pending;	   /* releases left for a CGNAT_SWEEP_RELEASE run */
	__u32 scratch_full; /* sweep_subs or sweep_blocks refused an entry */
	__u32 _pad;
	/* nanoseconds the session pass took (bpf_ktime_get_ns); the
	 * bindings and filter_addr follow it */
	__u64 session_pass_ns;
};

/*
 * Value of sweep_live (index: a slot given to an external address by a
 * struct cgnat_sweep_range): one bit per port of each protocol, set by a
 * sweep for every binding a session within its timeout uses, so that the
 * session pass need not look the binding up. Port p (host order) of
 * protocol index pi (CGNAT_PI_*) is bit p % 64 of
 * w[pi * CGNAT_PORT_WORDS + p / 64].
 */
enum { CGNAT_PORT_WORDS = 65536 / 64 };

struct cgnat_port_bits {
	__u64 w[CGNAT_PI__MAX * CGNAT_PORT_WORDS];
};

/* A slot of sweep_subs, the sweep's table of subscribers (an array used
 * as an open-addressing table, bpf/sweep.h): a subscriber's internal
 * address (0: the slot is empty) and what the sweep counted for it. */
struct cgnat_sweep_sub {
	__be32 addr;
	__u32 sessions;
	__u32 ports[CGNAT_PI__MAX];
};

/* A released binding, for the NAT log (array sweep_out). */
struct cgnat_release {
	__be32 int_addr;
	__be32 ext_addr;
	__be16 int_port;
	__be16 ext_port;
	__u8 proto;
	__u8 _pad[3];
};

#endif /* CGNAT_H */
