"""Who may use a server: credentials from the command line, a file or the environment; no
server reachable from other machines without them; failed logins slowed down per client.

The login itself is gradio's (its page, its cookie; `gradio_client.Client(url, auth=(user,
password))`); every page, upload, file and API route needs it. Only /healthz and /metrics answer
without one (they hold counts, never a prompt or an image).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from pathlib import Path

ENV = "UNCLIP_SERVE_AUTH"  # "user:password[,user:password ...]": keeps the password out of `ps`
LOOPBACK = ("127.0.0.1", "localhost", "::1")
HOW = (f"give credentials with --auth USER:PASSWORD, --auth-file FILE (a USER:PASSWORD per line) or the "
       f"{ENV} environment variable, or pass --no-auth if anyone who can reach the port may use this machine")


def parse(item: str, where: str) -> tuple[str, str]:
    user, sep, password = item.strip().partition(":")
    if not sep or not user.strip() or not password:
        raise ValueError(f"{where}: expected USER:PASSWORD, got {'an empty entry' if not item.strip() else 'no password' if sep else 'no colon'}")
    return user.strip(), password


def credentials(auth: list[str] | None = None, auth_file: str | Path | None = None,
                environ: dict | None = None) -> list[tuple[str, str]]:
    """Every (user, password) given: --auth items, then the file's lines, then the environment's."""
    out = [parse(a, "--auth") for a in auth or []]
    if auth_file is not None:
        path = Path(auth_file)
        if not path.is_file():
            raise FileNotFoundError(f"--auth-file {path} not found")
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines:
            raise ValueError(f"--auth-file {path} has no USER:PASSWORD line")
        out += [parse(ln, f"--auth-file {path}") for ln in lines]
    value = (os.environ if environ is None else environ).get(ENV, "")
    out += [parse(x, ENV) for x in value.split(",") if x.strip()]
    users = [u for u, _ in out]
    if len(set(users)) < len(users):
        raise ValueError(f"user {next(u for u in users if users.count(u) > 1)!r} is given twice")
    return out


def check_exposure(host: str, creds: list, no_auth: bool) -> str:
    """Refuse a server reachable from other machines without credentials (unless `no_auth`);
    the line to print about who can reach it."""
    if creds and no_auth:
        raise ValueError("--no-auth and credentials contradict each other: give one")
    if host in LOOPBACK:
        return "this machine only" + (f"; login required ({_users(creds)})" if creds else "")
    if not creds and not no_auth:
        raise ValueError(f"--host {host} makes the server reachable from other machines, so it needs a login: {HOW}")
    if no_auth:
        return "reachable from other machines WITHOUT a login (--no-auth)"
    return f"reachable from other machines; login required ({_users(creds)})"


def _users(creds: list) -> str:
    return f"{len(creds)} user{'s' if len(creds) != 1 else ''}"


class LoginLimiter:
    """At most `attempts` failed logins per client in `window` seconds; after that, its logins are
    refused (HTTP 429) until the oldest failure leaves the window. Clients by address (behind a
    proxy on this machine, the address it forwards)."""

    def __init__(self, attempts: int = 5, window: float = 60.0, clock=time.monotonic):
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: dict[str, deque] = defaultdict(deque)

    def wait_for(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        failures, now = self._failures[client], self.clock()
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if not failures:
            self._failures.pop(client, None)
            return 0.0
        return self.window - (now - failures[0]) if len(failures) >= self.attempts else 0.0

    def failed(self, client: str) -> None:
        self._failures[client].append(self.clock())

    def middleware(self, on_failure=lambda: None):
        """A FastAPI http middleware that applies the limit to gradio's POST /login."""
        from fastapi.responses import JSONResponse

        async def limit(request, call_next):
            if request.method != "POST" or request.url.path.rstrip("/") != "/login":
                return await call_next(request)
            client = request.client.host if request.client else "unknown"
            wait = self.wait_for(client)
            if wait > 0:
                on_failure()
                return JSONResponse({"detail": f"too many failed logins; try again in {wait:.0f} s"},
                                    status_code=429, headers={"Retry-After": str(int(wait) + 1)})
            response = await call_next(request)
            if response.status_code >= 400:
                self.failed(client)
                on_failure()
            return response

        return limit
