"""The edges of `argus serve` (argusrec.serve): what stands between hostile clients and the
snapshot.

- Short echoes: an error message quotes at most a few hundred characters of what it was sent
  (:func:`shown`, :func:`clip`), and a validation error (422) at most 20 issues, each cut short
  and JSON-safe (:func:`validation_error`).
- :class:`BodyLimit`: ASGI middleware answering 413 to a request body over the limit, by its
  Content-Length or by counting a streamed body as it is read.
- :class:`RuntimePool`: the bounded worker pool of the runtime path with an admission limit
  (503 + Retry-After beyond it), so heavy histories cannot starve the ANN path on the loop.
- The optional bearer token of /v1/admin/* and /metrics (:func:`token_check`,
  :func:`serve_token`), and the refusal to listen beyond loopback without one
  (:func:`check_exposure`).
"""

import asyncio
import hmac
import ipaddress
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from fastapi import HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from argusrec.errors import DataError

TOKEN_ENV = "ARGUS_SERVE_TOKEN"
ECHO = 200  # characters of a client's value an error message may quote


# -- short echoes -----------------------------------------------------------------------------
def clip(text: str, limit: int = ECHO) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was; a lone surrogate (valid
    in JSON's \\u escapes, not in UTF-8) is written as its escape, or the answer would fail."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text):,} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: Any, limit: int = ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters: how an error message quotes a value."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit, inside a container
        text = f"<a {type(value).__name__}>"
    return clip(text, limit)


def shown_list(values: list, most: int = 20) -> str:
    """The first ``most`` values, each :func:`shown`, and how many more there are."""
    text = "[" + ", ".join(shown(x) for x in values[:most]) + "]"
    return text + (f" and {len(values) - most:,} more" if len(values) > most else "")


def _jsonable(value: Any, limit: int = ECHO) -> Any:
    """Small JSON scalars as themselves, anything else as :func:`shown` text (a non-finite
    float would not even serialise: the 422 would become a 500)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() <= 128:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, BaseException):
        return clip(str(value), limit)
    return shown(value, limit)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 in FastAPI's usual shape (a list of issues), with at most 20 issues, each echo of
    the input cut short."""
    errors = exc.errors()
    issues = [{"type": str(e.get("type", "invalid")),
               "loc": [x if isinstance(x, int) else clip(str(x), 100) for x in e.get("loc", ())],
               "msg": clip(str(e.get("msg", "")), 1000),
               "input": _jsonable(e.get("input")),
               **({"ctx": {str(k): _jsonable(v) for k, v in e["ctx"].items()}}
                  if e.get("ctx") else {})} for e in errors[:20]]
    if len(errors) > 20:
        issues.append({"type": "too_many_errors", "loc": ["body"],
                       "msg": f"and {len(errors) - 20:,} more problems"})
    return JSONResponse({"detail": issues}, 422)


# -- the request-body limit -------------------------------------------------------------------
class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit:,} bytes, this service's "
                              "limit (argus serve --max-body-bytes)",
                         headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413. A declared Content-Length
    is checked before anything is read; a body streamed without one is counted chunk by chunk
    as the app reads it, and reading stops at the limit."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = BodyTooLarge(self.max_bytes)
            response = JSONResponse({"detail": error.detail}, 413, headers=error.headers)
            return await response(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # an HTTPException, so that FastAPI's body parsing passes it on to the
                    # exception handler, which answers the 413
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


# -- the runtime pool -------------------------------------------------------------------------
class RuntimePool:
    """The runtime path's worker threads and its admission limit.

    At most ``workers`` histories encode at once and ``queue`` more wait; a request beyond that
    is refused at once (503 with Retry-After) and ``on_busy`` is called. The event loop, where
    the ANN path (GET recommendations, POST score) runs, only awaits a future, so a burst of
    maximum-size histories takes ``workers`` threads' share of the CPU and GIL, not every
    request thread's.
    """

    def __init__(self, workers: int, queue: int, on_busy: Callable[[], None]) -> None:
        self.workers, self.queue, self.on_busy = workers, queue, on_busy
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="argus-runtime")
        self.lock = threading.Lock()
        self.admitted = 0  # encoding or waiting; released when the job ends, not the request

    def _release(self, _: Future) -> None:
        with self.lock:
            self.admitted -= 1

    async def run(self, fn: Callable, *args) -> Any:
        """``fn(*args)`` in a worker, or 503 when the workers and the queue are full."""
        with self.lock:
            full = self.admitted >= self.workers + self.queue
            if not full:
                self.admitted += 1
        if full:
            self.on_busy()
            raise HTTPException(503, f"the runtime path is busy ({self.workers} encoding, "
                                     f"{self.queue} waiting): retry after a second, or start "
                                     "the service with more --runtime-workers",
                                headers={"Retry-After": "1"})
        job = self.executor.submit(fn, *args)
        job.add_done_callback(self._release)
        return await asyncio.wrap_future(job)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


# -- the token --------------------------------------------------------------------------------
def token_check(token: str) -> Callable:
    """A dependency refusing (401) a request without ``Authorization: Bearer <token>``."""
    expected = token.encode()
    scheme = HTTPBearer(auto_error=False, description="the token of `argus serve "
                        f"--token-file` (or ${TOKEN_ENV})")

    def check(credentials: HTTPAuthorizationCredentials | None = Security(scheme)) -> None:
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(),
                                                          expected):
            raise HTTPException(401, "this endpoint needs the header 'Authorization: Bearer "
                                     "<token>' with the service's token",
                                headers={"WWW-Authenticate": "Bearer"})
    return check


def serve_token(token_file: str | Path | None = None) -> str | None:
    """The service's bearer token: the contents of ``token_file`` (surrounding whitespace
    dropped), else $ARGUS_SERVE_TOKEN, else None."""
    if token_file is None:
        return os.environ.get(TOKEN_ENV, "").strip() or None
    path = Path(token_file)
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the token file: {e}", path=path,
                        fix="give a readable text file holding the token") from None
    if not token:
        raise DataError("the token file is empty", path=path,
                        fix="write the token into it, e.g. `openssl rand -hex 32 > FILE`")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # another host name: it may resolve to anything
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def check_exposure(host: str, token: str | None) -> None:
    """A DataError when ``host`` is not loopback and there is no token: /v1/admin/reload and
    /metrics would be open to anyone who can reach the port."""
    if token is None and not is_loopback(host):
        raise DataError(f"refusing to listen on {host} without a token: /v1/admin/reload and "
                        "/metrics would be open to anyone who can reach it",
                        fix=f"pass --token-file FILE (or set {TOKEN_ENV}), or listen on "
                        "127.0.0.1 behind a proxy")
