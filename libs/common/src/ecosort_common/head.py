"""HEAD wherever GET is: GET's status and headers, without the body (RFC 9110 §9.3.2).

Routing alone does not give that: Starlette's `Route` takes HEAD on a GET route but FastAPI's
`APIRoute` answers it 405, and most responses send their body on HEAD anyway. So every HEAD runs
as a GET here, in one place, whatever route serves it; where GET is refused, so is HEAD, with
GET's 404 or 405 (Allow and all). A route declared for HEAD alone would never be reached.

HEAD must be safe (RFC 9110 §9.2.1), and so must the GET it runs as. The few GET routes that
act (they spend a one-time sign-in state, or make one) depend on `refuse_head` instead.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecosort_common.errors import Problem

# Marks the GET a HEAD runs as, for `refuse_head`.
RUN_FOR_HEAD = "ecosort.run_for_head"


class HeadMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = anyio.Event()
        request_read = False

        async def receive_until_answered() -> Message:
            # A HEAD has no content to read. Once it is answered the client has left, as far as
            # the app knows: a stream that never ends (SSE) stops at its disconnect listener.
            nonlocal request_read
            if not request_read:
                request_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send_headers_only(message: Message) -> None:
            # Answered as soon as the headers are: a stream's first bytes may be long in coming.
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                answered.set()
            elif message.get("more_body"):
                # A body that goes on after the answer: under ASGI spec 2.4 a stream stops only
                # when `send` fails, which a dropped body never does.
                app_scope.cancel()

        with anyio.CancelScope() as app_scope:
            # A copy: the access log and metrics outside still see the HEAD.
            await self.app(
                {**scope, "method": "GET", RUN_FOR_HEAD: True},
                receive_until_answered,
                send_headers_only,
            )


def refuse_head(request: Request) -> None:
    """A route dependency for a GET that acts: its HEAD gets a 405, as on a route without GET.
    Otherwise a link checker's or a prefetcher's HEAD would spend what the user's GET needs."""
    if request.scope.get(RUN_FOR_HEAD):
        raise Problem(
            405, "This address acts on GET, so HEAD is not answered.", headers={"Allow": "GET"}
        )
