"""Answers are not stored by HTTP caches unless their route says they may be.

Most answers are one person's (tokens, a profile, a history, an analysis): without a word from us
the app's HTTP cache (OkHttp's, NSURLCache) keeps them on the phone's disk, and RFC 6749 §5.1
requires `no-store` on token answers. A route serving public data sets its own Cache-Control
(recycling's categories, auth's JWKS, waste's event stream), which is kept.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CACHE_CONTROL = b"cache-control"
NO_STORE = (CACHE_CONTROL, b"no-store")


class NoStoreByDefaultMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_no_store_by_default(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if not any(name.lower() == CACHE_CONTROL for name, _ in headers):
                    message["headers"] = [*headers, NO_STORE]
            await send(message)

        await self.app(scope, receive, send_no_store_by_default)
