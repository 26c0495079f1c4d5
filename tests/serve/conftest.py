import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'slimlm[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'slimlm[serve]')")

from _run import build_run  # noqa: E402

ADMIN = "test-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """The tiny run directory with decision 1 (the rule's choice, the good int8 variant)."""
    from slimlm.report.decisions import record_decision

    r = build_run(tmp_path_factory.mktemp("serve") / "run")
    record_decision(r["dir"], tier="medium", note="initial")
    return r


class Server:
    def __init__(self, proc, url, log):
        self.proc, self.url, self.log = proc, url, log

    def get(self, path, **kw):
        import httpx

        return httpx.get(self.url + path, timeout=30, **kw)

    def post(self, path, **kw):
        import httpx

        return httpx.post(self.url + path, timeout=60, **kw)

    def wait_decision(self, n, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if self.get("/healthz").json()["decision"] == n:
                return
            time.sleep(0.2)
        raise AssertionError(f"server did not switch to decision {n}: {self.get('/healthz').json()}")


@pytest.fixture(scope="session")
def server(run, tmp_path_factory):
    """A real `slimlm serve` process on loopback: canary every second, every request shadow-scored."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "slimlm.cli.main", "serve", str(run["dir"]), "--port", str(port),
           "--canary-interval", "1", "--canary-tokens", "128", "--shadow-ratio", "1", "--admin-token", ADMIN,
           "--max-tokens-cap", "64", "--max-body-bytes", "65536", "--threads", "1", "--concurrency", "2"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    srv = Server(proc, f"http://127.0.0.1:{port}", log)
    import httpx

    end = time.time() + 120
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"slimlm serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(srv.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > end:
            proc.kill()
            raise AssertionError(f"slimlm serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    yield srv
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package; `make test-deps` installs it)")
    return path
