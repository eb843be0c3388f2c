"""Whether a URL's host is on the public internet.

Services hand URLs that users send (reference images, chat images) to
providers that fetch them; such a URL must never name this cluster, the
cloud's metadata service or anything else private, in any spelling.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A host name's addresses, as text; [] or OSError when it has none.
Resolver = Callable[[str], Awaitable[list[str]]]
RESOLVE_TIMEOUT_SECONDS = 5.0


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


async def resolves_publicly(host: str, resolve: Resolver | None = None) -> bool | None:
    """Whether every address a host name resolves to is public; None when it
    resolves to nothing (or not within RESOLVE_TIMEOUT_SECONDS). A name can
    point anywhere, so a URL that passed `names_a_private_host` is checked
    again here before a provider is told to fetch it."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            addresses = await (resolve or resolve_with_system)(host)
    except (OSError, TimeoutError):
        addresses = []
    if not addresses:
        return None
    return all(_is_public_text(address) for address in addresses)


async def resolve_with_system(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for *_, sockaddr in found]


def _is_public_text(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return is_public_address(parsed)
