/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * events.h - records for the daemon through the ring buffer "events"
 * (struct cgnat_event, enum cgnat_event_type). A full ring loses the
 * record, counted per type in event_lost; the data path never waits.
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

#endif /* CGNAT_EVENTS_H */
