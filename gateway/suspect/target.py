"""Where the suspect is, and the checks before the gateway sends it a single byte.

Pointing the gateway at a URL is a server-side request on an admin's behalf, so (SSRF):

- the scheme is ``https``; ``http`` only with ``allow_http`` (an explicit, documented choice for
  a suspect on a trusted network or a test);
- the host must resolve to public addresses only; loopback, private, link-local (cloud
  metadata), multicast, reserved and unspecified addresses are refused unless
  ``allow_private_network`` — an explicit admin power, recorded in the audit entry. The check is
  made on every address the name resolves to, before the run, and again at every connection
  (:class:`PublicOnlyResolver`): a name that re-resolves to a private address mid-run (DNS
  rebinding) reaches nothing;
- no credentials, query or fragment in the URL (the suspect's key travels in the
  ``Authorization`` header only, and is never stored, logged or reported).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


class TargetRefused(ValueError):
    """The base URL is not one the gateway will call; the message names the rule only."""


@dataclass(frozen=True)
class Target:
    """An OpenAI-compatible API (``base_url`` ends before ``/completions``, e.g. ``…/v1``).
    ``api_key`` is the suspect's key, sent as a bearer token and nothing else."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    endpoint: str = "completions"  # or "chat"
    allow_http: bool = False
    allow_private_network: bool = False


def check_url(base_url: str, *, allow_http: bool) -> tuple[str, int]:
    """``(host, port)`` of an acceptable base URL, or :class:`TargetRefused`."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_http):
        raise TargetRefused("the base URL must be https (http only when explicitly allowed)")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the base URL must not carry credentials")
    if parts.query or parts.fragment:
        raise TargetRefused("the base URL must not have a query or fragment")
    if not parts.hostname:
        raise TargetRefused("the base URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the base URL's port is not valid") from None
    return parts.hostname, port


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified or not ip.is_global)


async def check_target(target: Target) -> None:
    """Refuse a target the rules above exclude (resolving its host once)."""
    host, port = check_url(target.base_url, allow_http=target.allow_http)
    if target.allow_private_network:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise TargetRefused("the base URL's host does not resolve") from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(is_public(a) for a in addresses):
        raise TargetRefused("the base URL's host resolves to a non-public address "
                            "(allow_private_network is an explicit admin power)")


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses: every connection the sampler opens is
    checked again, so DNS rebinding after :func:`check_target` reaches no private address."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = [r for r in await self._inner.resolve(host, port, family)
                 if is_public(str(r["host"]))]
        if not found:
            raise OSError("the suspect's host resolves to no public address")
        return found

    async def close(self, *_: Any) -> None:
        await self._inner.close()
