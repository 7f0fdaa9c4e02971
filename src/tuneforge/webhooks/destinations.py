"""Which URLs may receive webhooks, and where exactly a delivery connects.

A webhook URL is typed by a user but fetched by the server, so unchecked it would let any
member probe the operator's internal network (SSRF). Destinations that resolve to loopback,
private, link-local, unspecified, multicast, reserved or otherwise non-public addresses are
refused unless ``webhook_allow_private_destinations`` is set, when an endpoint is created or
changed and again at every delivery (DNS may have changed since). A delivery connects to the
very addresses it checked, with the URL's host in ``Host`` and TLS SNI, so a DNS answer that
changes between the check and the connection (rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

import httpx

from tuneforge.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
DEFAULT_PORTS = {"http": 80, "https": 443}


class RefusedDestination(InvalidInput):
    """A URL that may not receive webhooks, or a host that does not resolve."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="url")


def webhook_url(value: str) -> str:
    """An absolute http(s) URL with a well-formed host and port (a pydantic validator)."""
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if url.scheme not in DEFAULT_PORTS:
        raise ValueError("must start with http:// or https://")
    host = url.raw_host.decode("ascii", errors="replace")
    if not host or not (_is_ip(host) or HOSTNAME.match(host)):
        raise ValueError("must name a valid host")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise ValueError("has a port outside 1-65535")
    return value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def refused_kind(address: IPAddress) -> str | None:
    """What makes an address unfit for webhooks, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    kinds = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    )
    return next((kind for kind, matches in kinds if matches), None)


@dataclass(frozen=True)
class Destination:
    """A webhook URL with its host resolved (and checked) once: connect to ``addresses``."""

    url: httpx.URL
    addresses: tuple[str, ...]

    def url_for(self, address: str) -> httpx.URL:
        return self.url.copy_with(host=address)

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def server_name(self) -> str:
        """The name TLS must present a certificate for (SNI)."""
        return self.url.raw_host.decode("ascii")


def resolve(url: str, *, allow_private: bool) -> Destination:
    """Resolve the URL's host; refuse it when any address is not public (unless allowed)."""
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RefusedDestination(f"The host {host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            kind = refused_kind(ipaddress.ip_address(address))
            if kind is not None:
                raise RefusedDestination(
                    f"The host {host} resolves to {address}, a {kind} address; webhooks "
                    "go to public addresses only (the operator can allow private ones)"
                )
    return Destination(parsed, tuple(addresses))


def check_destination(url: str, *, allow_private: bool) -> None:
    """The check on create and update: nothing to resolve when private addresses are allowed."""
    if not allow_private:
        resolve(url, allow_private=False)
