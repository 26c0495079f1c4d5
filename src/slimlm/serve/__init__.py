"""Serve a run's chosen variant and watch it: OpenAI-compatible routes, Prometheus metrics, drift, rollback.

``slimlm serve RUN_DIR`` loads the variant of the run's latest decision (``decisions/NNNN.json``, see
`slimlm.report.decisions`) and serves it with FastAPI on uvicorn, on loopback unless told otherwise.
``/metrics`` publishes traffic and the operating point (tier bound, recorded and live quality drop, SLOs,
live cost and CO2e against the forecast); a canary and shadow scoring measure drift in the background
(`slimlm.serve.drift`); SIGHUP or ``POST /admin/decision`` switches decisions without dropping a request.

FastAPI, uvicorn and prometheus-client are the ``serve`` extra and are imported only here.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from slimlm.errors import ConfigError
from slimlm.serve.settings import ServeSettings

__all__ = ["ServeSettings", "build_app", "is_loopback", "serve"]


def _require() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"serving needs the serve extra ({exc.name} is missing); install it with "
                          "pip install 'slimlm[serve]'.") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(path: str | Path, settings: ServeSettings | None = None, *, decision: int | None = None,
              trust_remote_code: bool = False):
    """Load the model of ``path`` (run or variant directory) and return ``(app, state)``.

    Example:
        >>> app, state = build_app("runs/quick", ServeSettings(canary_interval_s=0))
    """
    _require()
    from slimlm.serve.app import create_app
    from slimlm.serve.state import ServerState

    state = ServerState(path, settings, decision=decision, trust_remote_code=trust_remote_code)
    return create_app(state), state


def serve(path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          decision: int | None = None, allow_remote: bool = False, trust_remote_code: bool = False,
          log_level: str = "warning", on_ready=None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM finish the requests in flight first).

    Args:
        path: a run directory (serves its latest decision, or ``decision``) or a saved variant directory.
        host: interface to bind; anything but loopback needs ``allow_remote``.
        port: TCP port.
        settings: `ServeSettings`.
        decision: decision number to serve instead of the latest.
        allow_remote: permit a non-loopback ``host`` (the routes have no authentication).
        trust_remote_code: passed to model loading.
        log_level: uvicorn's log level.
        on_ready: called with the state and the port bound (``port`` 0 picks a free one) once the model is
            loaded and the socket is bound, before requests are taken.

    Raises:
        ConfigError: a non-loopback host without ``allow_remote``, a port that cannot be bound (in use), or
            the serve extra missing.
    """
    if not is_loopback(host) and not allow_remote:
        raise ConfigError(f"--host {host} would accept connections from other machines and the API has no "
                          "authentication; pass --allow-remote to do it on purpose, or keep 127.0.0.1.")
    _require()
    import uvicorn

    sock = _bind(host, port)  # before the model loads: a port in use is said at once, and "ready" is true
    try:
        app, state = build_app(path, settings, decision=decision, trust_remote_code=trust_remote_code)
        if on_ready is not None:
            on_ready(state, sock.getsockname()[1])
        # keep-alive longer than uvicorn's 5 s, so pooled client connections outlive requests that queue for
        # seconds behind the model (the resets once blamed on it came from an error path; see serve.app)
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=30, timeout_keep_alive=75,
                                access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _bind(host: str, port: int):
    """A listening TCP socket on ``host:port``, or `ConfigError` naming the port (in use, not permitted)."""
    import socket

    # as uvicorn binds: IPv6 for an address with ':', else IPv4 (so "localhost" is 127.0.0.1, never ::1 alone)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port (0 "
                          "picks a free one) or stop what is using it.") from None
    return sock
