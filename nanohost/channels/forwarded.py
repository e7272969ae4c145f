"""Who is really on the other end of a web request when the host runs behind a reverse proxy.

Forwarded headers (``X-Forwarded-For``, ``X-Forwarded-Proto``, ``Forwarded``) are believed only
when the direct peer is one of ``NANOHOST_TRUSTED_PROXIES``; from anyone else they are ignored,
since anyone can send them. Behind a trusted proxy:

- the client is the right-most address in ``X-Forwarded-For`` (or ``Forwarded: for=``) that is
  not itself a trusted proxy: each proxy appends the address it saw, so everything left of the
  first untrusted hop may be made up by the client;
- the request came over HTTPS when the nearest proxy says so (the last ``X-Forwarded-Proto``
  value, or the last ``Forwarded`` element's ``proto``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from aiohttp import web

Network = IPv4Network | IPv6Network


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:567``, ``[2001:db8::1]:567``,
    ``2001:db8::1``); an IPv4-mapped IPv6 address as its IPv4 form; None when it is none."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def trusts(address: str | None, proxies: Sequence[Network]) -> bool:
    """Whether ``address`` is one of the trusted proxies."""
    ip = _ip(address or "")
    return ip is not None and any(ip in network for network in proxies)


def _hops(request: web.Request) -> list[str]:
    """The addresses the proxies recorded, nearest client first, as sent."""
    forwarded_for = request.headers.getall("X-Forwarded-For", [])
    if forwarded_for:
        return [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    return [str(element["for"]) for element in request.forwarded if element.get("for")]


def client_address(request: web.Request, proxies: Sequence[Network]) -> str | None:
    """The client's address: the peer's own, unless the peer is a trusted proxy (see the module)."""
    peer = request.remote
    if not trusts(peer, proxies):
        return peer
    nearest = peer
    for hop in reversed(_hops(request)):
        ip = _ip(hop)
        if ip is None:  # a proxy wrote something unreadable: go no further than the last good hop
            return nearest
        if not any(ip in network for network in proxies):
            return str(ip)
        nearest = str(ip)
    return nearest


def came_over_https(request: web.Request, proxies: Sequence[Network]) -> bool:
    """Whether the browser used HTTPS: directly, or as a trusted proxy in front of the host says."""
    if request.secure:
        return True
    if not trusts(request.remote, proxies):
        return False
    protos = request.headers.getall("X-Forwarded-Proto", [])
    if protos:
        return ",".join(protos).split(",")[-1].strip().lower() == "https"
    elements = request.forwarded
    return bool(elements) and str(elements[-1].get("proto", "")).lower() == "https"
