"""The delivery process's HTTP client: httpx, connecting only to addresses the destination
policy checked (services/tenant_events/url_policy.py).

httpx resolves a URL's host itself when it opens a connection, which would be a second DNS
answer, unchecked. Here the connection pool's network backend looks the host up in `Pins`
(filled by `Pins.resolve`, the checked answer, kept a short while) and connects to those
addresses; the URL keeps its host name, so the Host header, SNI and the certificate check all
use the name. A host that was not resolved through `Pins` is never connected to.
"""

from __future__ import annotations

import functools
import ssl
import time
import typing

import httpcore
import httpx

from services.destination import Destination
from services.tenant_events import url_policy

# A checked answer is used for this long before the host is resolved (and checked) again.
PIN_TTL_S = 30.0


class Pins:
    """Checked DNS answers by (host, port)."""

    def __init__(self, *, allowed: str, ttl_s: float = PIN_TTL_S) -> None:
        self.allowed = allowed
        self.ttl_s = ttl_s
        self._pins: dict[tuple[str, int], tuple[float, Destination]] = {}

    async def resolve(self, url: str) -> None:
        """Check `url` (scheme, addresses) unless a fresh answer is kept; raises the policy's
        errors (WebhookUrlNotAllowed, ProviderTemporaryError)."""
        _, host, port = url_policy.split(url)
        key = (host.lower().rstrip("."), port)
        kept = self._pins.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return
        dest = await url_policy.check(url, allowed=self.allowed)
        if len(self._pins) > 10_000:
            self._pins.clear()
        self._pins[key] = (time.monotonic() + self.ttl_s, dest)

    def addresses(self, host: str, port: int) -> tuple[str, ...]:
        kept = self._pins.get((host.lower().rstrip("."), port))
        return kept[1].addresses if kept is not None else ()


class PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, pins: Pins) -> None:
        self.pins = pins
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self.pins.addresses(host, port)
        if not addresses:
            raise httpcore.ConnectError("the host was not checked")
        last: Exception = httpcore.ConnectError("no address")
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every endpoint's pool: loading the CA store costs about a
    megabyte and milliseconds of CPU each time, and there is a pool per endpoint."""
    return ssl.create_default_context()


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose backend is PinnedBackend. httpx does not take a
    network backend, so the pool it made is replaced by one made the same way with it."""

    def __init__(self, pins: Pins, *, max_connections: int) -> None:
        context = tls_context()
        super().__init__(verify=context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=PinnedBackend(pins),
        )


def client(pins: Pins, *, max_connections: int) -> httpx.AsyncClient:
    """The client of one delivery process: no redirects, no proxies from the environment."""
    return httpx.AsyncClient(
        transport=PinnedTransport(pins, max_connections=max_connections),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(None),  # the caller bounds each whole request
        headers={"user-agent": "postroom-webhooks/1", "content-type": "application/json"},
    )
