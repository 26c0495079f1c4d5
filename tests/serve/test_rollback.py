"""Switching decisions on a live server: under load nothing is dropped; SIGHUP serves the latest decision."""

import json
import signal
import threading
import time

import httpx
from conftest import ADMIN

from slimlm.report.decisions import record_decision


def _switch(server, n):
    r = server.post("/admin/decision", json={"decision": n}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == n


def test_rollback_under_load_drops_no_request(server, run):
    baseline = record_decision(run["dir"], variant=run["base"], tier="medium", note="rollback drill")["number"]
    results, errors, stop = [], [], threading.Event()

    def client(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                try:
                    if i % 2:
                        r = c.post("/v1/completions", json={"prompt": f"client {i}", "max_tokens": 8, "stream": True})
                        events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
                        ok = r.status_code == 200 and events[-1] == "[DONE]"
                        model = json.loads(events[0])["model"] if ok else None
                        detail = events[-1] if events else r.text[-300:]
                    else:
                        r = c.post("/v1/completions", json={"prompt": f"client {i}", "max_tokens": 8})
                        ok, model = r.status_code == 200, r.json().get("model")
                        detail = r.text[-300:]
                    results.append((ok, model, r.status_code, detail))
                except httpx.HTTPError as exc:  # a dropped connection is exactly what must not happen
                    errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    _switch(server, baseline)  # to the uncompressed baseline ...
    time.sleep(1.5)
    _switch(server, 1)  # ... and back
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert results and all(ok for ok, *_ in results), [r for r in results if not r[0]][:3]
    served = {m for _, m, *_ in results}
    assert {run["good"], run["base"]} <= served  # both models answered, none failed in between
    health = server.get("/healthz").json()
    assert health["decision"] == 1 and health["last_switch"]["via"] == "admin"


def test_sighup_switches_to_the_latest_decision(server, run):
    latest = record_decision(run["dir"], variant=run["good"], tier="high", note="sighup drill")["number"]
    server.proc.send_signal(signal.SIGHUP)
    server.wait_decision(latest)
    metrics = server.get("/metrics").text
    assert f"slimlm_decision_number {float(latest)}" in metrics
    assert "slimlm_quality_drop_bound_ratio 0.01" in metrics  # the new decision's tier
    assert server.post("/v1/completions", json={"prompt": "after", "max_tokens": 2}).status_code == 200
    _switch(server, 1)


def test_a_switch_to_a_missing_decision_is_refused_and_nothing_changes(server):
    r = server.post("/admin/decision", json={"decision": 99}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 409 and "decision 99 is not recorded" in r.json()["error"]["message"]
    assert server.get("/healthz").json()["decision"] == 1
