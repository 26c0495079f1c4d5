"""An internal error is answered with a 500 and the client's keep-alive connection stays usable."""

import socket
import threading
import time

import httpx

from slimlm.serve import ServeSettings, build_app


def test_an_internal_error_answers_500_and_keeps_the_connection(run):
    """Uvicorn closes the connection of an app that raises, even after the 500 went out; a client reusing it
    for its next request then sees "connection reset by peer". The server must answer and keep it open."""
    import uvicorn

    app, state = build_app(run["dir"], ServeSettings(canary_interval_s=0, shadow_ratio=0, threads=1))
    engine, calls = state.current.engine, []
    real = engine.generate

    def generate(*a, **kw):  # the first request fails inside the model, as a bug there would
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return real(*a, **kw)

    engine.generate = generate
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical",
                                           timeout_keep_alive=75))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        end = time.time() + 60
        while not server.started and time.time() < end:
            time.sleep(0.05)
        connects = []

        def trace(event, info):
            if event == "connection.connect_tcp.complete":
                connects.append(event)

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            body = {"prompt": "hello", "max_tokens": 2}
            first = c.post("/v1/completions", json=body, extensions={"trace": trace})
            assert first.status_code == 500 and first.json()["error"]["code"] == "internal"
            assert "injected failure" in first.json()["error"]["message"]
            time.sleep(0.5)  # a server that closes the connection has done it by now
            second = c.post("/v1/completions", json=body, extensions={"trace": trace})
            assert second.status_code == 200, second.text
        assert len(connects) == 1, "the server closed the connection after the 500"
        assert 'slimlm_request_errors_total{kind="internal"} 1.0' in state.metrics.render().decode()
    finally:
        server.should_exit = True
        thread.join(30)
