"""Generated monitoring against real Prometheus: promtool checks, a live scrape, and a drift alert firing."""

import json
import subprocess
import time

import httpx
import pytest
import yaml
from conftest import ADMIN, free_port, need

from slimlm.cli.main import main
from slimlm.report.decisions import record_decision


@pytest.mark.parametrize("durations", [[], ["--quality-for", "1h30m", "--latency-for", "0s"]])
def test_generated_rules_pass_promtool_check_and_unit_tests(run, tmp_path, capsys, durations):
    promtool = need("promtool")
    rules = tmp_path / "rules.yml"
    assert main(["monitor", "rules", str(run["dir"]), "--out", str(rules), "--json", *durations]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["alerts"]) >= {"SlimlmQualityDropBeyondTier", "SlimlmLatencyP99AboveSLO", "SlimlmErrorRateHigh",
                                  "SlimlmCostAboveForecast", "SlimlmCanaryStale"}
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", out["tests"]], capture_output=True, text=True, cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout + test.stderr


def test_grafana_dashboard_queries_only_metrics_the_server_exports(run, server, tmp_path, capsys):
    path = tmp_path / "dash.json"
    assert main(["monitor", "dashboard", str(run["dir"]), "--out", str(path)]) == 0
    dash = json.loads(path.read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert {"Cost per 1k requests (USD)", "CO2e per prediction (g)", "Quality drop vs teacher",
            "Request latency vs SLO", "Throughput"} <= titles
    exported = {line.split()[2] for line in server.get("/metrics").text.splitlines() if line.startswith("# TYPE")}
    exported |= {n + s for n in exported for s in ("_bucket", "_total", "_info")}
    import re

    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"slimlm_[a-z0-9_]+", t["expr"])}
    assert used and used <= exported, used - exported


def _query(prom, q):
    return httpx.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10).json()["data"]["result"]


def test_prometheus_scrapes_the_server_and_the_quality_alert_fires_on_a_bad_build(run, server, tmp_path):
    binary = need("prometheus")
    rules = tmp_path / "rules.yml"
    assert main(["monitor", "rules", str(run["dir"]), "--out", str(rules), "--quality-for", "2s", "--no-tests"]) == 0
    port = free_port()
    target = server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "slimlm", "static_configs": [{"targets": [target]}]}]}))
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    prom = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 60
        while not _query_ok(prom, 'slimlm_canary_quality_drop_ratio{job="slimlm"} >= -1'):
            assert proc.poll() is None and time.time() < end, "prometheus never scraped a canary value"
            time.sleep(0.5)
        assert _query(prom, 'up{job="slimlm"}')[0]["value"][1] == "1"
        assert not _firing(prom)  # the good variant is inside its tier

        bad = record_decision(run["dir"], variant=run["bad"], tier="medium", note="a bad build rolled out")["number"]
        r = server.post("/admin/decision", json={"decision": bad}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200, r.text
        end = time.time() + 60
        while not _firing(prom):
            assert time.time() < end, f"alert never fired; alerts: {_alerts(prom)}"
            time.sleep(0.5)
        alert = _firing(prom)[0]
        assert alert["labels"]["severity"] == "critical" and float(alert["value"]) > 0.03
        assert server.get("/healthz").json()["canary"]["drop"] > 0.03
    finally:
        server.post("/admin/decision", json={"decision": 1}, headers={"Authorization": f"Bearer {ADMIN}"})
        proc.terminate()
        proc.wait(30)


def _query_ok(prom, q):
    try:
        return bool(_query(prom, q))
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def _alerts(prom):
    return httpx.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


def _firing(prom):
    return [a for a in _alerts(prom) if a["labels"]["alertname"] == "SlimlmQualityDropBeyondTier"
            and a["state"] == "firing"]
