/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * events.h - records for the daemon through the ring buffer "events"
 * (struct cgnat_event, enum cgnat_event_type). A full ring loses the
 * record, counted per type in event_lost; the data path never waits.
 *
 * Waking the daemon costs the submitting CPU an interrupt to itself
 * (irq_work; about 10 us in a VM, where that interrupt exits to the
 * hypervisor), which the kernel sends for every record that finds the
 * ring empty: for every new binding while the daemon keeps up. NAT log
 * records therefore do not wake it (event_send_log): the daemon reads the
 * ring at least every 50 ms anyway (src/daemon.rs), and is woken once per
 * EVENT_BATCH_BYTES of unread records, long before the ring is full. The
 * other records, which the daemon acts on, always wake it (event_send),
 * also when unwoken log records are queued before them.
 */
#ifndef CGNAT_EVENTS_H
#define CGNAT_EVENTS_H

#include "maps.h"

/* Reserve a zeroed ring-buffer record of `type` stamped `now`
 * (bpf_ktime_get_coarse_ns()), or count it lost. */
static __always_inline struct cgnat_event *event_new_at(__u32 type, __u64 now)
{
	struct cgnat_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	__u64 *lost;

	if (!ev) {
		lost = bpf_map_lookup_elem(&event_lost, &type);
		if (lost)
			(*lost)++;
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->ts_ns = now;
	return ev;
}

/* The same, stamped now. */
static __always_inline struct cgnat_event *event_new(__u32 type)
{
	return event_new_at(type, bpf_ktime_get_coarse_ns());
}

/* Unread bytes that wake the daemon (an eighth of the ring), and the
 * size of one record in the ring (8-byte header, 8-byte aligned). */
#define EVENT_BATCH_BYTES (32 * 1024)
#define EVENT_REC_BYTES ((sizeof(struct cgnat_event) + 8 + 7) / 8 * 8)

/* Submit a record the daemon acts on (neighbour misses, fragments,
 * refusals, port blocks): wake it. */
static __always_inline void event_send(struct cgnat_event *ev)
{
	bpf_ringbuf_submit(ev, BPF_RB_FORCE_WAKEUP);
}

/* Submit a NAT log record: wake the daemon only with the record that
 * brings the unread records to a multiple of EVENT_BATCH_BYTES. (Should
 * another CPU reserve its record in between, that multiple passes
 * unnoticed: the next one, or the daemon's own turn, comes soon.) */
static __always_inline void event_send_log(struct cgnat_event *ev)
{
	__u64 unread = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(ev, unread >= EVENT_BATCH_BYTES &&
					       unread % EVENT_BATCH_BYTES < EVENT_REC_BYTES ?
				       BPF_RB_FORCE_WAKEUP :
				       BPF_RB_NO_WAKEUP);
}

#endif /* CGNAT_EVENTS_H */
