"""`slimlm serve`: serve a run's chosen variant (or a variant directory) with metrics, drift checks and rollback."""

from __future__ import annotations

import typer

from slimlm.cli._out import err


def serve_command(
    path: str = typer.Argument(..., metavar="PATH", help="Run directory (serves its latest decision) or a saved variant directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback unless --allow-remote)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    decision: int | None = typer.Option(None, "--decision", help="Serve this decision number instead of the latest."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host (no auth on the API)."),
    max_tokens_cap: int = typer.Option(256, "--max-tokens-cap", help="Largest max_tokens a request may ask for."),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Largest request body (bytes)."),
    concurrency: int = typer.Option(1, "--concurrency", help="Requests computed at once (worker threads)."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting or running before 503."),
    canary_interval: float = typer.Option(60.0, "--canary-interval", help="Seconds between canary runs (0: off)."),
    canary_data: str | None = typer.Option(None, "--canary-data", help="Golden sample data spec (default: the run's eval data)."),
    canary_tokens: int = typer.Option(2048, "--canary-tokens", help="Token budget of one canary run."),
    shadow_ratio: float = typer.Option(0.05, "--shadow-ratio", help="Share of requests the teacher scores (0: off)."),
    teacher: str | None = typer.Option(None, "--teacher", help="Teacher spec (default: the run's baseline)."),
    admin_token: str | None = typer.Option(None, "--admin-token", envvar="SLIMLM_ADMIN_TOKEN",
                                           help="Enable POST /admin/decision with this bearer token."),
    slo_p99_ms: float | None = typer.Option(None, "--slo-p99-ms", help="p99 request latency SLO (ms) for /metrics."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run code shipped with the model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (url, variant, decision) when ready, then serve."),
) -> None:
    """Serve PATH over HTTP: OpenAI-compatible routes, /metrics, /dashboard; SIGHUP switches to the latest decision."""
    from slimlm.cli._out import emit_json
    from slimlm.serve import ServeSettings, serve

    settings = ServeSettings(max_tokens_cap=max_tokens_cap, max_body_bytes=max_body_bytes, concurrency=concurrency,
                             max_queue=max_queue, canary_interval_s=canary_interval, canary_data=canary_data,
                             canary_tokens=canary_tokens, shadow_ratio=shadow_ratio, teacher=teacher,
                             admin_token=admin_token, slo_p99_ms=slo_p99_ms, threads=threads)

    def ready(state, bound_port: int) -> None:
        s = state.current
        shown = f"[{host}]" if ":" in host else host
        info = {"url": f"http://{shown}:{bound_port}", "variant": s.engine.name, "decision": s.number, "task": s.engine.task,
                "admin": admin_token is not None, "canary_interval_s": canary_interval if state.canary.enabled() else 0,
                "shadow_ratio": shadow_ratio if state.shadow.enabled() else 0}
        if state.canary_note:
            info["canary_error"] = state.canary_note
            err.print(f"warning: {state.canary_note}", highlight=False)
        if as_json:
            emit_json(info)
        else:
            which = "no decision: a variant directory" if info["decision"] is None else f"decision {info['decision']}"
            err.print(f"serving {info['variant']} ({which}, {info['task']}) on {info['url']}  "
                      f"— /v1/models /metrics /dashboard; Ctrl-C stops", highlight=False)

    serve(path, host=host, port=port, settings=settings, decision=decision, allow_remote=allow_remote,
          trust_remote_code=trust_remote_code, on_ready=ready)
