"""The FastAPI app: OpenAI-compatible routes, classification, health, metrics, the dashboard and the switch.

Model work runs on ``settings.concurrency`` worker threads (torch releases the GIL), never on the event loop,
so ``/metrics``, ``/healthz`` and the dashboard answer while the model is busy. Every refusal is a 4xx with
an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``; ``code`` is also the ``kind``
label of ``slimlm_request_errors_total``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from slimlm.errors import SlimlmError
from slimlm.serve.engine import Generation, RequestError
from slimlm.serve.schemas import ChatRequest, ClassifyRequest, CompletionRequest, SwitchRequest
from slimlm.serve.state import Served, ServerState

_log = logging.getLogger("slimlm.serve")
_ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/models", "/healthz", "/metrics",
           "/dashboard", "/v1/operating_point", "/admin/decision")


def _error(status: int, kind: str, message: str, param: str | None = None) -> JSONResponse:
    etype = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": etype, "param": param, "code": kind}}, status)


class _Guard:
    """ASGI middleware: request size limit, and the per-route request counter and latency histogram.

    The body is read here (up to the limit) and replayed to the app, so an oversized body is refused with a
    413 before any parsing, whether or not the client sent Content-Length. Latency is observed when the last
    byte is sent, so streamed responses count their whole duration.

    An unexpected exception becomes a 500 here and goes no further. Left to Starlette's error middleware,
    it would be re-raised after the 500 was sent, and uvicorn closes a connection whose app raised: the
    client, keeping the connection alive, may already have sent its next request on it, which then fails
    with "connection reset by peer". Only a response cut off mid-stream still closes the connection.
    """

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        m, limit = self.state.metrics, self.state.settings.max_body_bytes
        route = scope["path"] if scope["path"] in _ROUTES else "other"
        start, status, sent = time.perf_counter(), [500], {"start": False, "end": False}
        scope.setdefault("state", {})["arrived"] = start  # request.state.arrived: TTFT counts from here

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0], sent["start"] = message["status"], True
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                sent["end"] = True
                m.requests.labels(route=route, code=str(status[0])).inc()
                if route.startswith("/v1/"):
                    m.request_seconds.labels(route=route).observe(time.perf_counter() - start)

        async def run(rcv):
            try:
                await self.app(scope, rcv, send_wrapped)
            except Exception as exc:
                if sent["start"] and not sent["end"]:
                    raise  # a response cut off mid-way: closing the connection is how the client learns it
                _log.error("internal error on %s %s", scope["method"], scope["path"], exc_info=exc)
                if not sent["start"]:
                    m.errors.labels(kind="internal").inc()
                    await _error(500, "internal", f"internal error: {type(exc).__name__}: {exc}")(scope, rcv,
                                                                                                 send_wrapped)

        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = dict(scope["headers"]).get(b"content-length")
            too_big = length is not None and length.isdigit() and int(length) > limit
            body, more = b"", not too_big
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
                if len(body) > limit:
                    too_big = True
                    break
            if too_big:
                m.errors.labels(kind="body_too_large").inc()
                resp = _error(413, "body_too_large", f"the request body is over the limit of {limit} bytes; send a "
                              "smaller request (the server's --max-body-bytes).")
                return await resp(scope, receive, send_wrapped)
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await run(replay)
        return await run(receive)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "function-before"}


def _validation_message(exc: RequestValidationError) -> tuple[str, str, str | None]:
    errs = exc.errors()
    first = errs[0] if errs else {}
    if first.get("type") == "json_invalid":
        return "invalid_json", f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')}).", None
    def where(e) -> list[str]:  # drop pydantic's union-member tags ("str", "list[str]") from the location
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        while loc and (loc[-1] in _TYPE_TAGS or "[" in loc[-1]):
            loc.pop()
        return loc

    loc = where(first)
    field = ".".join(loc) or "body"
    if first.get("type") == "missing":
        return "invalid_request", f"field '{field}' is required.", field
    if first.get("type") in ("model_attributes_type", "dict_type") and not loc:
        return "invalid_request", "the request body must be a JSON object.", None
    same = [e for e in errs if where(e) == loc]
    if len(same) > 1:  # a union: say what each alternative wanted
        wants = sorted({str(e.get("msg", "")).replace("Input should be ", "") for e in same})
        msg = "must be " + " or ".join(wants)
        errs = [e for e in errs if where(e) != loc] + [first]
    else:
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" ({len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return "invalid_request", f"field '{field}': {msg}{more}.", field


def create_app(state: ServerState) -> FastAPI:
    """The app for ``state`` (run it with uvicorn; `slimlm.serve.serve` does)."""

    @asynccontextmanager
    async def lifespan(app):
        state.start()
        loop = asyncio.get_running_loop()
        try:  # SIGHUP: switch to the run directory's latest decision (main thread only)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_hup()))
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        yield
        try:
            loop.remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        state.stop()

    app = FastAPI(title="slimlm serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Guard, state=state)
    m, st = state.metrics, state.settings
    app.state.last_switch = None

    async def _switch(number: int | None, how: str) -> dict:
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(None, state.switch, number)
        except SlimlmError as exc:
            app.state.last_switch = {"ok": False, "error": str(exc), "via": how, "at": time.time()}
            raise
        app.state.last_switch = {"ok": True, "decision": new.number, "variant": new.target.variant_id, "via": how,
                                 "at": time.time()}
        return app.state.last_switch

    async def _hup() -> None:
        try:
            await _switch(None, "sighup")
        except SlimlmError:  # recorded in last_switch (shown by /healthz) and slimlm_decision_switches_total
            pass

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        kind, msg, param = _validation_message(exc)
        ctype = request.headers.get("content-type", "")
        if param is None and kind == "invalid_request" and "json" not in ctype:  # curl -d sends a form type
            msg = (f"the request body must be a JSON object sent as 'Content-Type: application/json' (this one came "
                   f"as {ctype or 'no content type'!r}; with curl add -H 'Content-Type: application/json').")
        m.errors.labels(kind=kind).inc()
        return _error(400, kind, msg, param)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError):
        m.errors.labels(kind=exc.kind).inc()
        return _error(exc.status, exc.kind, str(exc), exc.param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        m.errors.labels(kind=kind).inc()
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            detail = f"no route {request.url.path}; see GET /v1/models, POST /v1/completions, /v1/chat/completions."
        return _error(exc.status_code, kind, detail)

    async def _work(fn):
        """Run ``fn(started_at)`` on a worker thread; 503 when the line is full."""
        if not state.admit():
            raise RequestError("overloaded", f"the server has {st.max_queue} requests waiting or running; retry "
                               "later.", status=503)
        queued = time.perf_counter()

        def timed():
            started = time.perf_counter()
            m.queue_seconds.observe(started - queued)
            return fn(started)

        try:
            return await asyncio.get_running_loop().run_in_executor(state.executor, timed)
        finally:
            state.release()

    def _max_tokens(req) -> int:
        n = req.max_tokens if req.max_tokens is not None else st.default_max_tokens
        if n > st.max_tokens_cap:
            raise RequestError("max_tokens_over_cap", f"max_tokens {n} is over this server's cap of "
                               f"{st.max_tokens_cap}; ask for at most {st.max_tokens_cap}.", param="max_tokens")
        return n

    def _need(served: Served, task: str, route: str) -> None:
        if served.engine.task != task:
            what = "a causal language model" if task == "causal-lm" else "a classifier"
            raise RequestError("wrong_task", f"{route} needs {what}; this server serves a {served.engine.task} model "
                               f"({'use /v1/classify' if task == 'causal-lm' else 'use /v1/completions'}).",
                               status=400)

    def _finish(served: Served, route: str, arrived: float, started: float, gen: Generation, ids: list[int]) -> None:
        m.prompt_tokens.inc(gen.prompt_tokens)
        m.generated_tokens.inc(len(gen.tokens))
        m.observe_busy(gen.busy_s)
        if gen.ttft_s is not None:
            m.ttft_seconds.labels(route=route).observe(started - arrived + gen.ttft_s)
        state.shadow.offer(served, [*ids, *gen.tokens][: served.engine.max_positions])

    async def _complete(request: Request, req, ids: list[int], served: Served, route: str, chat: bool):
        arrived = request.state.arrived
        max_tokens = _max_tokens(req)
        served.engine.check_length(len(ids), max_tokens)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        fingerprint = f"decision-{served.number}" if served.number is not None else "variant"
        kw = dict(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=req.stop or (), seed=req.seed)

        def gen_fn(on_text=None, cancelled=lambda: False):
            def run(started):
                g = served.engine.generate(ids, on_text=on_text, cancelled=cancelled, **kw)
                _finish(served, route, arrived, started, g, ids)
                return g
            return run

        def usage(g: Generation) -> dict:
            return {"prompt_tokens": g.prompt_tokens, "completion_tokens": len(g.tokens),
                    "total_tokens": g.prompt_tokens + len(g.tokens)}

        def chunk(piece: str | None, finish: str | None) -> str:
            if chat:
                delta = {"content": piece} if piece is not None else {}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
                obj = "text_completion"
            return "data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": served.engine.name,
                                          "system_fingerprint": fingerprint, "choices": [choice]}) + "\n\n"

        if not req.stream:
            g = await _work(gen_fn())
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": g.text},
                          "finish_reason": g.finish_reason}
            else:
                choice = {"index": 0, "text": g.text, "logprobs": None, "finish_reason": g.finish_reason}
            return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                    "model": served.engine.name, "system_fingerprint": fingerprint, "choices": [choice],
                    "usage": usage(g)}

        if state.pending >= st.max_queue:  # refuse before the 200 and the stream start
            raise RequestError("overloaded", f"the server has {st.max_queue} requests waiting or running; retry "
                               "later.", status=503)
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        gone = {"flag": False}

        def on_text(piece: str) -> None:
            loop.call_soon_threadsafe(q.put_nowait, piece)

        async def events():
            task = asyncio.ensure_future(_work(gen_fn(on_text, lambda: gone["flag"])))
            task.add_done_callback(lambda _: q.put_nowait(None))
            try:
                if chat:
                    yield chunk(None, None).replace('"delta": {}', '"delta": {"role": "assistant"}')
                while True:
                    piece = await q.get()
                    if piece is None:
                        break
                    yield chunk(piece, None)
                try:
                    g = task.result()
                except RequestError as exc:
                    m.errors.labels(kind=exc.kind).inc()
                    yield "data: " + json.dumps({"error": {"message": str(exc), "code": exc.kind}}) + "\n\n"
                    return
                except Exception as exc:  # noqa: BLE001 - reported in-band: the 200 has been sent
                    m.errors.labels(kind="internal").inc()
                    yield "data: " + json.dumps({"error": {"message": f"internal error: {exc}", "code": "internal"}}) + "\n\n"
                    return
                yield chunk(None, g.finish_reason)
                yield "data: [DONE]\n\n"
            finally:
                gone["flag"] = True  # client left early: stop generating

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest):
        served = state.current
        _need(served, "causal-lm", "/v1/completions")
        ids = served.engine.encode(req.prompt)
        return await _complete(request, req, ids, served, "/v1/completions", chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest):
        served = state.current
        _need(served, "causal-lm", "/v1/chat/completions")
        ids = served.engine.chat_ids([msg.model_dump() for msg in req.messages])
        return await _complete(request, req, ids, served, "/v1/chat/completions", chat=True)

    @app.post("/v1/classify")
    async def classify(request: Request, req: ClassifyRequest):
        served = state.current
        _need(served, "classification", "/v1/classify")
        if len(req.input) > st.max_batch:
            raise RequestError("invalid_request", f"input has {len(req.input)} texts, over the limit of {st.max_batch} "
                               "per request; split it.", param="input")
        arrived = request.state.arrived

        def run(started):
            results, tokens, secs = served.engine.classify(req.input)
            m.prompt_tokens.inc(tokens)
            m.observe_busy(secs)
            m.ttft_seconds.labels(route="/v1/classify").observe(time.perf_counter() - arrived)
            tok = served.engine.model.tokenizer
            state.shadow.offer(served, dict(tok(req.input[0], return_tensors="pt")))
            return results, tokens

        results, tokens = await _work(run)
        return {"object": "list", "model": served.engine.name, "data": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.get("/v1/models")
    async def models():
        s = state.current
        return {"object": "list", "data": [{"id": s.engine.name, "object": "model", "created": int(s.loaded_at),
                                            "owned_by": "slimlm", "task": s.engine.task, "decision": s.number,
                                            "context_length": s.engine.max_positions}]}

    @app.get("/healthz")
    async def healthz():
        s = state.current
        return {"status": "ok", "variant": s.engine.name, "decision": s.number, "task": s.engine.task,
                "in_flight": state.pending, "canary": state.canary.last, "shadow_scored": state.shadow.scored,
                "last_switch": app.state.last_switch}

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(m.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/operating_point")
    async def operating_point():
        s = state.current
        return {"decision": s.target.decision, "variants": s.target.variants, "info": s.target.info(),
                "canary": state.canary.last}

    @app.get("/dashboard")
    async def dashboard():
        from slimlm.serve.dashboard import render_dashboard

        return HTMLResponse(render_dashboard(state.current.target))

    @app.post("/admin/decision")
    async def admin_decision(request: Request):
        token = st.admin_token
        if token is None:  # off unless started with a token: looks like any unknown route
            raise StarletteHTTPException(404)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            m.errors.labels(kind="unauthorized").inc()
            return _error(401, "unauthorized", "missing or wrong admin token; send 'Authorization: Bearer TOKEN'.")
        how = 'send {"decision": N}, or {"decision": null} for the latest'
        try:
            body: Any = await request.json()
        except ValueError as exc:  # a mistyped body never switches: it used to mean "the latest"
            m.errors.labels(kind="invalid_json").inc()
            return _error(400, "invalid_json", f"the request body is not valid JSON ({str(exc).split(':')[0]}); {how}.")
        try:
            req = SwitchRequest.model_validate(body)
        except ValidationError as exc:
            kind, msg, param = _validation_message(RequestValidationError(exc.errors()))
            m.errors.labels(kind=kind).inc()
            return _error(400, kind, f"{msg.removesuffix('.')}; {how}.", param)
        try:
            return await _switch(req.decision, "admin")
        except SlimlmError as exc:
            m.errors.labels(kind="switch_failed").inc()
            return _error(409, "switch_failed", str(exc))

    return app
