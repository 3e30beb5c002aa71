#!/usr/bin/python3
"""Packet crafting for tests/e2e_icmp.rs, with scapy.

Usage: /usr/bin/python3 craft.py CODE

CODE is Python run with scapy's names imported and these helpers:

  emit(label, pkt)   print "<label> <hex of the IP packet>" (an Ether layer,
                     if any, is stripped: the Rust side sends IP packets
                     through a raw IP socket)
  unhex(s)           bytes from hex
  inet_csum(b)       the Internet checksum of b

Nothing is sent from here: the test sends the printed packets itself, in
the order and from the namespace it needs, and captures what arrives.
"""
import sys

from scapy.all import *  # noqa: F401,F403  (the CODE uses scapy's names)
from scapy.layers.inet import IP


def unhex(s):
    return bytes.fromhex(s)


def emit(label, pkt):
    if not isinstance(pkt, (bytes, bytearray)):
        if pkt.haslayer(IP):
            pkt = pkt[IP]
        pkt = bytes(pkt)
    print(label, bytes(pkt).hex(), flush=True)


def inet_csum(b):
    """The Internet checksum (RFC 1071) of b."""
    b = bytes(b)
    if len(b) % 2:
        b += b"\0"
    s = sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


if __name__ == "__main__":
    exec(sys.argv[1])
