"""Whether a URL's host is on the public internet.

Services hand URLs that users send (reference images, chat images) to
providers that fetch them; such a URL must never name this cluster, the
cloud's metadata service or anything else private, in any spelling.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_local_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def literal_address(host: str) -> IPAddress | None:
    """The address a host that is an IP literal names, in any spelling a
    resolver accepts (`127.1`, `0x7f.0.0.1` and `2130706433` included)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_public_address(address: IPAddress) -> bool:
    """Whether an address is on the public internet. IPv6 forms that carry an
    IPv4 address (mapped, 6to4) are judged by that address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def names_a_private_host(host: str) -> bool:
    """Whether a host, as written, names this machine or a private address
    (a name that resolves to one needs resolving to tell)."""
    if is_local_name(host):
        return True
    address = literal_address(host.strip("[]"))
    return address is not None and not is_public_address(address)
