"""Which addresses a webhook may reach (CONTRACT §7, SSRF guard), as a pure check.

A callback must resolve only to public unicast addresses: loopback, private (RFC 1918),
link-local, CGNAT (100.64.0.0/10), unique-local (fc00::/7), unspecified, multicast and
reserved ranges are refused, and an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged
by the IPv4 address it maps. ``gateway/websub/guard.py`` resolves the name and connects
to the very address checked here, so a second DNS answer cannot point elsewhere.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be a webhook target, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            reason = refusal(mapped)
            return None if reason is None else f"IPv4-mapped {reason}"
        if address in _NAT64:
            reason = refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return None if reason is None else f"NAT64 {reason}"
        if address in _ULA:
            return "unique-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"
    return None


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address (brackets and IPv6 zone ids removed), else None."""
    candidate = text.strip("[]").partition("%")[0]
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None
