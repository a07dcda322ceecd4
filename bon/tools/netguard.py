"""Which URLs a model-driven fetch may reach: http(s) to public internet addresses only.

An agent chooses the URLs it visits, and a web page can choose them for it (a link, a redirect), so
without a guard a trajectory could read the cloud metadata service (169.254.169.254), a database
admin page on 10.x, or a dev server on localhost. `check_url` refuses, before anything is sent:

- schemes other than http and https (file:, ftp:, data:, gopher: ...);
- host names that mean this machine (`localhost`, `*.localhost`, `localhost.localdomain`);
- hosts any of whose resolved addresses is not a public unicast address: private, loopback,
  link-local, multicast, reserved, unspecified, shared (100.64/10), documentation ranges, for IPv4
  and IPv6, including IPv4 embedded in IPv6 (IPv4-mapped `::ffff:a.b.c.d`, 6to4, Teredo, NAT64).
  Resolution uses the event loop's getaddrinfo, so odd spellings (`2130706433`, `0x7f.1`) are
  judged by the address they really reach.

`allow_private=True` lifts every address rule (not the scheme rule), for trusted setups and tests;
`allow_networks` lifts them for listed networks only (an intranet mirror, say).

Residual risk, DNS rebinding: a name can resolve to a public address when checked and to a private
one when connected. `check_url` returns the addresses it checked, and the caller (visit_page) pins the
connection to them: it connects to the checked IP and sends the name only as the Host header and
TLS server name, so the name is never resolved again. The pin is impossible through an explicit
proxy (the proxy resolves the name itself); there the check still runs, but rebinding is not covered.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not private, not public either

BAD_URL = "bad_url"  # not a URL we can fetch at all (scheme, no host)
BLOCKED_URL = "blocked_url"  # a URL we refuse to reach (a local name or a non-public address)
NETWORK_ERROR = "network_error"  # the host name does not resolve


class Refused(Exception):
    """The URL may not be fetched; `kind` is the tool result's error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """A checked URL: its host (as written, no brackets), port, and the addresses it may be reached at."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[str, ...]
    literal: bool  # the host was written as an IP address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address ("a loopback address" ...), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            problem = address_problem(inner)
            if problem:
                return f"{problem} (embedded in the IPv6 address {ip})"
        if ip.scope_id:
            return "a scoped (link-local) address"
    checks = (("an unspecified", ip.is_unspecified), ("a loopback", ip.is_loopback),
              ("a link-local", ip.is_link_local), ("a multicast", ip.is_multicast),
              ("a private", ip.is_private), ("a reserved", ip.is_reserved),
              ("a shared (carrier-grade NAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED))
    for label, hit in checks:
        if hit:
            return f"{label} address"
    if not ip.is_global:
        return "not a public address"
    return None


def parse_networks(values: Iterable[str], option: str) -> tuple[IPNetwork, ...]:
    """Networks from strings like "10.1.0.0/16" or "192.0.2.7"; ValueError names the bad entry."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{option}: {value!r} is not an IP address or network (e.g. 10.1.0.0/16)") from None
    return tuple(out)


def _allowed(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _is_local_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name in LOCAL_NAMES or name.endswith(".localhost")


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """`url` as an httpx.URL with an http(s) scheme and a host, or `Refused(bad_url)`."""
    text = str(url).strip()
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise Refused(BAD_URL, f"not a valid URL: {text[:200]!r} ({exc})") from None
    scheme = parsed.scheme.lower()
    if not scheme:
        hint = f"; did you mean https://{text}?" if "." in text.split("/")[0] and " " not in text else ""
        raise Refused(BAD_URL, f"{text[:200]!r} has no scheme: give a full http:// or https:// URL{hint}")
    if scheme not in ALLOWED_SCHEMES:
        raise Refused(BAD_URL, f"{scheme}: URLs cannot be visited; only http and https are supported")
    if not parsed.raw_host:
        raise Refused(BAD_URL, f"{text[:200]!r} has no host name")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise Refused(BAD_URL, f"{text[:200]!r} has an invalid port {parsed.port}")
    return parsed


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order (IP literals resolve to themselves)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


async def check_url(url: str | httpx.URL, *, allow_private: bool = False,
                    allow_networks: tuple[IPNetwork, ...] = ()) -> Target:
    """Parse, resolve and vet `url`; raise `Refused` with a message for the model if it may not be fetched."""
    parsed = parse_url(url)
    host = parsed.raw_host.decode("ascii")  # IPv6 literals without brackets; names lower-cased, IDNA-encoded
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if not allow_private and literal is None and _is_local_name(host):
        raise Refused(BLOCKED_URL, f"refused to visit {parsed}: {host!r} names this machine; "
                                   "only public internet addresses can be visited")
    try:
        addresses = [str(literal)] if literal is not None else await resolve(host, port)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise Refused(NETWORK_ERROR, f"could not resolve the host {host!r} ({exc})") from None
    if not addresses:
        raise Refused(NETWORK_ERROR, f"the host {host!r} has no IPv4 or IPv6 address")
    if not allow_private:
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if _allowed(ip, allow_networks):
                continue
            problem = address_problem(ip)
            if problem:
                where = f"{host!r} is" if literal is not None else f"{host!r} resolves to {text}, which is"
                raise Refused(BLOCKED_URL, f"refused to visit {parsed}: {where} {problem}; "
                                           "only public internet addresses can be visited")
    return Target(url=parsed, host=host, port=port, addresses=tuple(addresses), literal=literal is not None)
