"""The egress policy of fetching job types: which host a job may reach (its source's, if it has
one) and which addresses (public ones, unless the source allows private). Pure but for name
resolution, which is injectable, so the policy is testable without a network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}


class Source(Protocol):
    """What the policy reads of a job's source (worker.sdk.SourceInfo has it)."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def allow_private(self) -> bool: ...


class Resolver(Protocol):
    """socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, canonname, sockaddr)]."""

    def __call__(self, host: str, port: int, family: int = 0, kind: int = 0, /) -> Sequence[tuple[Any, ...]]: ...


class Refused(Exception):
    """The policy refuses a fetch; `reason` says why in a few words (no URL, no credentials)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Address:
    """One checked address: what a connection is opened to (never the name again)."""

    ip: IPAddress
    family: int
    sockaddr: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL may be fetched from: the name (for Host, SNI and the certificate check) and
    the checked addresses it resolved to, in the resolver's order."""

    scheme: str
    host: str
    port: int
    addresses: tuple[Address, ...]


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


#: Named non-public ranges, most specific name first. `is_global` (checked last) covers the
#: rest; these are explicit because `is_global` misses some (multicast, 192.0.0.0/24, site-local)
#: depending on the Python version, and because a name makes the refusal readable.
_NAMED_RANGES: tuple[tuple[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...] = (
    ("the cloud metadata address", _nets("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")),
    ("an unspecified address", _nets("0.0.0.0/8", "::/128")),
    ("a loopback address", _nets("127.0.0.0/8", "::1/128")),
    ("a link-local address", _nets("169.254.0.0/16", "fe80::/10")),
    ("a private address", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("a carrier-grade NAT address", _nets("100.64.0.0/10")),
    ("a multicast address", _nets("224.0.0.0/4", "ff00::/8")),
    ("a broadcast address", _nets("255.255.255.255/32")),
    (
        "a documentation address",
        _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
    ),
    ("a benchmarking address", _nets("198.18.0.0/15", "2001:2::/48")),
    ("a site-local address", _nets("fec0::/10")),
    ("an IPv4-compatible address", _nets("::/96")),
    ("a local-use NAT64 address", _nets("64:ff9b:1::/48")),
    (
        "a reserved address",
        _nets("192.0.0.0/24", "192.88.99.0/24", "240.0.0.0/4", "100::/64", "2001::/23"),
    ),
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_problem(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address ("a loopback address", "an IPv4-mapped form of
    10.0.0.1, a private address"), or None when it is one. IPv6 forms that embed an IPv4 address
    (IPv4-mapped, 6to4, NAT64) are judged by the IPv4 address they lead to."""
    if isinstance(ip, ipaddress.IPv6Address):
        for form, embedded in (
            ("an IPv4-mapped", ip.ipv4_mapped),
            ("a 6to4", ip.sixtofour),
            ("a NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None),
        ):
            if embedded is not None:
                problem = address_problem(embedded)
                return None if problem is None else f"{form} form of {embedded}, {problem}"
    for name, networks in _NAMED_RANGES:
        if any(ip in net for net in networks):
            return name
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return "not a public address"
    return None


def parse_source_host(host: str) -> tuple[str, int | None]:
    """("name", port or None) of a source's `host` or `host:port`, the name lowercased."""
    name, port = host, None
    if host.startswith("["):  # [v6] or [v6]:port, should a source ever be registered so
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    elif host.count(":") == 1:
        head, _, tail = host.partition(":")
        if tail.isdigit():
            name, port = head, int(tail)
    return name.lower(), port


def host_problem(host: str, port: int, source: Source | None, origin: str | None = None) -> str | None:
    """Why a job of `source` may not reach host:port (another host, another port), or None.
    A job without a source may reach any host at first (its addresses are still checked),
    and then, following redirects, only that `origin` host again."""
    if source is None:
        if origin is not None and host.lower() != origin.lower():
            return f"host {host} is not {origin} (a job without a source follows redirects on the same host only)"
        return None
    allowed, allowed_port = parse_source_host(source.host)
    if host.lower() != allowed:
        return f"host {host} is not the host of source {source.name} ({source.host})"
    if allowed_port is not None and port != allowed_port:
        return f"port {port} is not the port of source {source.name} ({source.host})"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host spelled as a number names, as the OS reads it: dotted quads, but
    also 2130706433, 0x7f.1 and 0177.0.0.1 (inet_aton forms), and IPv6 literals."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or any(ch not in "0123456789abcdefx." for ch in host.lower()):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def resolve(host: str, port: int, resolver: Resolver = socket.getaddrinfo) -> tuple[Address, ...]:
    """Every address `host` names, each once, in the resolver's order: a numeric host without
    asking the resolver. Raises OSError (socket.gaierror) when the name does not resolve."""
    literal = literal_address(host)
    if literal is not None:
        if isinstance(literal, ipaddress.IPv4Address):
            return (Address(literal, socket.AF_INET, (str(literal), port)),)
        scope = int(literal.scope_id) if literal.scope_id and literal.scope_id.isdigit() else 0
        return (Address(literal, socket.AF_INET6, (str(literal), port, 0, scope)),)
    found: list[Address] = []
    for family, _kind, _proto, _canon, sockaddr in resolver(host, port, 0, socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if all(a.ip != ip for a in found):
            found.append(Address(ip, int(family), tuple(sockaddr)))
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves to no IPv4 or IPv6 address")
    return tuple(found)


def check_addresses(host: str, addresses: Sequence[Address], source: Source | None) -> None:
    """Refuse when any address of `host` is not public, unless the source allows private ones:
    a name that resolves to one private address among public ones is refused too, since
    nothing says which of them a later connection would get."""
    if source is not None and source.allow_private:
        return
    for address in addresses:
        problem = address_problem(address.ip)
        if problem is None:
            continue
        what = host if _is_plain_literal(host) else f"{host} resolves to {address.ip}, which"
        hint = (
            f"add source {source.name} with --allow-private to allow it"
            if source is not None
            else "only jobs of a source added with --allow-private may fetch it"
        )
        raise Refused(f"{what} is {problem} ({hint})")


def _is_plain_literal(host: str) -> bool:
    """Whether `host` is an address in the usual spelling (10.0.0.5, ::1), not a name or 0x7f.1."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def plan(
    url: str, source: Source | None, resolver: Resolver = socket.getaddrinfo, *, origin: str | None = None
) -> Target:
    """Check `url` against the policy and resolve its host once: the Target to connect to.
    `origin`: the host of the first URL, when `url` is where a redirect leads.

    Raises Refused (another scheme, host or port than allowed, a non-public address), ValueError
    for a URL that does not parse, OSError when the name does not resolve.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise Refused(f"scheme {scheme or '(none)'} is not http or https")
    host = parts.hostname
    if not host:
        raise Refused("the URL has no host")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise Refused(f"host {host!r} is not a valid host name") from exc
    port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    problem = host_problem(host, port, source, origin)
    if problem is not None:
        raise Refused(problem)
    addresses = resolve(host, port, resolver)
    check_addresses(host, addresses, source)
    return Target(scheme, host, port, addresses)
