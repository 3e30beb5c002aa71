/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * clock.h - the compact time of sessions, bindings and routes: a
 * CLOCK_MONOTONIC time (bpf_ktime_get_coarse_ns) in CGNAT_TIME_SHIFT units,
 * 32 bits, compared only by wrapping subtraction (include/cgnat.h).
 */
#ifndef CGNAT_CLOCK_H
#define CGNAT_CLOCK_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "cgnat.h"

static __always_inline __u32 cgnat_time(__u64 ns)
{
	return (__u32)(ns >> CGNAT_TIME_SHIFT);
}

#endif /* CGNAT_CLOCK_H */
