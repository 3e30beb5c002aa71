/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * mac.h - the first check of every frame: was it sent to this interface's
 * own link-layer address (struct cgnat_if_mac)? A router forwards only
 * what was sent to it (RFC 1812 5.3.4); anything else is handed to the
 * kernel untouched.
 */
#ifndef CGNAT_MAC_H
#define CGNAT_MAC_H

#include "maps.h"
#include "parse.h"

/* Is the frame's destination the MAC in slot `slot` of if_macs (or is that
 * slot unset)? */
static __always_inline int mac_matches(struct pkt *p, __u32 slot)
{
	struct cgnat_if_mac *m = bpf_map_lookup_elem(&if_macs, &slot);
	__u8 *d = p->eth->h_dest;

	if (!m || !m->set)
		return 1;
	return *(__u32 *)d == *(__u32 *)m->addr &&
	       *(__u16 *)(d + 4) == *(__u16 *)(m->addr + 4);
}

/* Was the frame sent to this interface's own MAC (struct cgnat_if_mac)?
 * One-armed, the interface is both (the slots hold the same address). */
static __always_inline int addressed_to_us(struct pkt *p, __u32 side)
{
	if (side == CGNAT_SIDE_BOTH)
		return mac_matches(p, 0) || mac_matches(p, 1);
	return mac_matches(p, side == CGNAT_SIDE_EXTERNAL);
}

#endif /* CGNAT_MAC_H */
