"""The real client address behind trusted reverse proxies, from X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from app.settings import IPNetwork, get_settings


def _trusted(host: str, proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in proxies)


def resolve_client(peer: str, forwarded_for: str | None, proxies: Sequence[IPNetwork]) -> str:
    """The address to treat as the client.

    Only a peer inside `proxies` is believed; its X-Forwarded-For is read from the right and
    the first hop that is not itself a trusted proxy is the client: everything left of it was
    written by the client and may be invented. With no trusted proxy the peer is the client.
    """
    if not proxies or not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                # A proxy that writes garbage is misconfigured: fall back to that proxy.
                return peer
    return hops[0] if hops else peer


class TrustedProxyMiddleware:
    """Rewrites the ASGI `client` (and scheme) for requests that come through a trusted proxy,
    so throttling, logs and loopback checks see the person, not the proxy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            proxies = get_settings().trusted_proxies
            client = scope.get("client")
            if proxies and client:
                headers = {k: v for k, v in scope.get("headers", []) if k in _HEADERS}
                forwarded = headers.get(b"x-forwarded-for")
                peer = str(client[0])
                host = resolve_client(
                    peer, forwarded.decode("latin-1") if forwarded else None, proxies
                )
                if host != peer:
                    scope = dict(scope, client=(host, 0))
                    proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip()
                    if proto in ("http", "https"):
                        scope["scheme"] = (
                            proto
                            if scope["type"] == "http"
                            else ("wss" if proto == "https" else "ws")
                        )
        await self.app(scope, receive, send)


_HEADERS = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})
