"""Serving defects a practitioner would meet (found by an audit): a mistyped admin body, a canary whose data
path was relative to where `compress` ran, client input that became a 500, and the start-up line."""

import json
import subprocess
import sys

import pytest
from conftest import ADMIN
from fastapi.testclient import TestClient

from slimlm.errors import DataError
from slimlm.serve import ServeSettings, build_app


def _app(run_dir, **kw):
    return build_app(run_dir, ServeSettings(**({"canary_interval_s": 0, "shadow_ratio": 0, "admin_token": ADMIN} | kw)))


def test_a_mistyped_or_empty_admin_body_switches_nothing(run):
    from slimlm.report.decisions import record_decision

    first = record_decision(run["dir"], variant=run["base"], tier="medium", note="to switch from")["number"]
    record_decision(run["dir"], tier="medium", note="the latest")
    app, state = build_app(run["dir"], ServeSettings(canary_interval_s=0, shadow_ratio=0, admin_token=ADMIN),
                           decision=first)
    auth = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    with TestClient(app) as c:
        for body, code in ((b"{bad", "invalid_json"), (b"{}", "invalid_request"), (b"", "invalid_json"),
                           (b'{"decision": "1"}', "invalid_request")):
            r = c.post("/admin/decision", content=body, headers=auth)
            assert r.status_code == 400, (body, r.text)
            err = r.json()["error"]
            assert err["code"] == code and "\n" not in err["message"] and '{"decision": N}' in err["message"], err
            assert c.get("/healthz").json()["decision"] == first  # still served
        assert "field 'decision'" in c.post("/admin/decision", content=b'{"decision": "1"}', headers=auth).text
        r = c.post("/admin/decision", json={"decision": None}, headers=auth)  # the latest, said explicitly
        assert r.status_code == 200 and r.json()["decision"] > first


@pytest.mark.parametrize("body, field", [
    ({"prompt": "hi", "max_tokens": 2, "seed": 99999999999999999999}, "seed"),  # was a 500 from manual_seed
    ({"prompt": "\ud800", "max_tokens": 2}, "prompt"),                          # a lone surrogate: a 500 in encode
    ({"messages": [{"role": "user", "content": "\udfff"}], "max_tokens": 2}, "messages.0.content"),
    ({"prompt": "hi", "max_tokens": 2, "logprobs": True}, "logprobs"),
])
def test_client_input_is_a_400_never_a_500(run, body, field):
    app, _ = _app(run["dir"])
    route = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    with TestClient(app) as c:
        r = c.post(route, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == field


def test_null_optional_fields_take_their_defaults_as_openai_clients_send_them(run):
    app, _ = _app(run["dir"])
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "temperature": None, "top_p": None,
                                            "stream": None, "n": None, "logprobs": False, "seed": 1})
        assert r.status_code == 200, r.text
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                                 "logprobs": False, "temperature": None})
        assert r.status_code == 200, r.text


def test_a_body_sent_without_a_json_content_type_says_so(run):
    app, _ = _app(run["dir"])
    with TestClient(app) as c:
        r = c.post("/v1/completions", content=b'{"prompt": "hi", "max_tokens": 2}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # what curl -d sends
        assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]["message"]


def test_the_canary_reads_the_runs_data_from_any_working_directory(tmp_path, monkeypatch):
    """`compress --data golden.txt` records the path it read; a server started elsewhere used the relative
    one, and its canary failed on every round while the quality alert could never fire."""
    from _run import TEXT

    from slimlm.recipes import recipe_from_dict
    from slimlm.recipes.pipeline import RunOptions, compress

    work = tmp_path / "work"
    work.mkdir()
    (work / "golden.txt").write_text(TEXT)
    monkeypatch.chdir(work)
    recipe = recipe_from_dict({"name": "int8", "stages": [{"quantize": {"scheme": "int8-dynamic"}}]})
    compress("tiny:llama?layers=1", [recipe], "run", RunOptions(data="golden.txt", ood_data=None, eval_tokens=128,
                                                                 seq_len=32, profile=False))
    assert json.loads((work / "run" / "run.json").read_text())["data_path"] == str(work / "golden.txt")
    monkeypatch.chdir(tmp_path)
    _, state = build_app(work / "run", ServeSettings(canary_interval_s=60, canary_tokens=64, shadow_ratio=0))
    assert state.canary_note is None
    assert state.canary.run_once()["data"] == str(work / "golden.txt")

    info = json.loads((work / "run" / "run.json").read_text())
    del info["data_path"]  # a run from before that record: served from elsewhere, the start-up says why
    (work / "run" / "run.json").write_text(json.dumps(info))
    _, state = build_app(work / "run", ServeSettings(canary_interval_s=60, canary_tokens=64, shadow_ratio=0))
    assert "golden.txt" in state.canary_note and "--canary-data" in state.canary_note
    with pytest.raises(DataError, match="nowhere.txt"):  # a mistyped --canary-data is refused at start
        build_app(work / "run", ServeSettings(canary_interval_s=60, canary_data=str(tmp_path / "nowhere.txt")))


def _serve(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "slimlm.cli.main", "serve", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_port_in_use_is_one_error_line_before_anything_says_ready(run):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _serve([str(run["dir"]), "--port", str(port), "--json", "--canary-interval", "0"])
    assert r.returncode == 2 and r.stdout == ""  # no "ready" JSON for a server that never listened
    assert r.stderr.startswith("error:") and f"127.0.0.1:{port}" in r.stderr and r.stderr.count("\n") == 1


def test_bad_threads_are_refused(run):
    r = _serve([str(run["dir"]), "--threads", "-1"])
    assert r.returncode == 2 and r.stderr.startswith("error: --threads must be at least 1")


def test_port_0_reports_the_port_it_bound(run):
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "slimlm.cli.main", "serve", str(run["dir"]), "--port", "0",
                             "--json", "--canary-interval", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        text = ""
        while True:  # the JSON is printed once the socket is bound and the model loaded
            line = proc.stdout.readline()
            assert line, "serve exited before it said ready"
            text += line
            if line.startswith("}"):
                break
        url = json.loads(text)["url"]
        assert not url.endswith(":0")
        assert httpx.get(url + "/healthz", timeout=30).json()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("what", ["rules", "dashboard"])
def test_a_job_name_that_would_break_the_promql_is_refused(run, tmp_path, capsys, what):
    from slimlm.cli.main import main

    out = tmp_path / "f.yml"
    assert main(["monitor", what, str(run["dir"]), "--job", 'a"b', "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --job") and err.count("\n") == 1 and not out.exists()
    assert main(["monitor", what, str(run["dir"]), "--job", "slimlm-prod:eu/1", "--out", str(out)]) == 0


def test_decide_takes_a_bound_above_100_percent_and_report_reads_it_back(run, tmp_path, capsys):
    """A drop bound of 200% (perplexity tripled) is a percentage the user wrote: decide used to re-read its own
    2.0 as an ambiguous bare number and fail."""
    import shutil

    from slimlm.cli.main import main

    copy = tmp_path / "run"
    shutil.copytree(run["dir"], copy)
    assert main(["decide", str(copy), "--max-drop", "200%", "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["max_drop"] == 2.0
    assert main(["report", str(copy), "--json"]) == 0, capsys.readouterr().err
    assert main(["decide", str(copy), "--max-drop", "2"]) == 2  # a bare 2 is still ambiguous: 2% or 200%?
    assert "ambiguous" in capsys.readouterr().err


def test_decide_list_refuses_rule_options_it_would_ignore(run, capsys):
    from slimlm.cli.main import main

    assert main(["decide", str(run["dir"]), "--list", "--tier", "high"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --list") and "--tier" in err and err.count("\n") == 1
    assert main(["decide", str(run["dir"]), "--list", "--json"]) == 0
