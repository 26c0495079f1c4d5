"""Serving benchmark: the teacher and the selected variant served by `slimlm serve`, with 1, 4 and 16 clients.

    .venv/bin/python bench/serve.py            # SmolLM2-135M: int8-dynamic (SmoothQuant 0.5) vs the fp32 teacher
    .venv/bin/python bench/serve.py --quick    # tiny:llama, to check the script in a minute
    .venv/bin/python bench/serve.py --from-run demo-run   # the operating point make demo chose vs its teacher

It builds a run directory (``compress`` with one int8 recipe, profiled: that profile gives the interleaved
prefill speedup and the forecast), records a decision by the rule (medium tier) and one pinned to the
baseline, then starts two real ``slimlm serve`` processes on loopback (canary and shadow off, one torch
thread, one request at a time each) and drives them in turn (interleaved: teacher, variant, teacher, ...)
with 1, 4 and 16 closed-loop streaming clients. Per level: requests/s, p50/p99 latency and time to first
token seen by the clients, and cost per 1k requests from the measured throughput (a machine kept busy at
``--price-per-hour``) beside the decision's forecast for the same request size. Every level also sends the
malformed requests of the test suite and checks each gets a 4xx.

Targets (issue 13): the variant's requests/s at 16 clients >= its prefill speedup x the teacher's, with the
speedup measured two ways: by prefill-only requests to the same two servers, interleaved, in the same minutes
(the served speedup), and by the compress-time profile (which ran at another time, under other load);
p99 <= 2 x p50 at 16 clients; every malformed request answered 4xx. Writes bench/results/serve.json and .md
with the machine and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BAD = [b"{not json", b'{"prompt": 3}', b'{"prompt": "x", "max_tokens": "ten"}', b'{"max_tokens": 5}', b"[1, 2]",
       b'{"prompt": "x", "max_tokens": 100000}', b'{"prompt": "' + b"x" * 300_000 + b'"}']


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_run(a, run_dir: Path) -> dict:
    from slimlm.recipes import recipe_from_dict
    from slimlm.recipes.pipeline import RunOptions, compress
    from slimlm.report.business import Inputs
    from slimlm.report.decisions import record_decision

    stage = {"quantize": {"scheme": "int8-dynamic", "smoothquant": 0.5}, "calibration": {"samples": 16, "seq_len": 256}}
    recipe = recipe_from_dict({"name": "int8-sq", "stages": [stage]})
    opts = RunOptions(data=a.data, ood_data=None, eval_tokens=a.eval_tokens, seq_len=a.seq_len,
                      shapes=((1, a.prompt_tokens),), decode_tokens=32, repeats=a.repeats, threads=1,
                      profile=True, teacher_agreement=False)
    if a.from_run:  # an existing, profiled compress run (e.g. make demo's): its variants and profile as they are
        _log(f"using the compress run {run_dir} as it is")
    else:
        _log(f"compress {a.model} -> {run_dir} (cached on rerun)")
        compress(a.model, [recipe], run_dir, opts)
    inputs = Inputs(price_per_hour=a.price_per_hour, prefill_tokens=a.prompt_tokens, decode_tokens=a.max_tokens)
    chosen = record_decision(run_dir, max_drop=a.max_drop, inputs=inputs, note="bench/serve.py: the rule's choice")
    base_id = chosen["baseline"]["id"]
    if chosen["selected"] in (None, base_id):  # measure the compressed variant anyway, and say so
        other = next(v["id"] for v in (json.loads(x) for x in (run_dir / "variants.jsonl").read_text().splitlines()
                                       if x.strip()) if not v.get("is_baseline") and v.get("path"))
        _log(f"the rule kept the baseline ({chosen['reason']}); pinning {other} to measure it")
        chosen = record_decision(run_dir, variant=other, max_drop=a.max_drop, inputs=inputs,
                                 note="bench/serve.py: pinned (the rule kept the baseline)")
    teacher = record_decision(run_dir, variant=base_id, max_drop=a.max_drop, inputs=inputs,
                              note="bench/serve.py: the teacher")
    return {"variant": chosen, "teacher": teacher}


def start(run_dir: Path, decision: int, a) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _port()
    cmd = [sys.executable, "-m", "slimlm.cli.main", "serve", str(run_dir), "--decision", str(decision), "--port",
           str(port), "--canary-interval", "0", "--shadow-ratio", "0", "--threads", "1", "--concurrency", "1",
           "--max-queue", "64", "--max-tokens-cap", str(max(a.max_tokens, 16))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    url = f"http://127.0.0.1:{port}"
    end = time.time() + 600
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"slimlm serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.time() > end:
            proc.kill()
            raise SystemExit("slimlm serve did not start in 10 minutes")
        time.sleep(0.5)


async def drive(url: str, clients: int, n_requests: int, prompt: str, max_tokens: int) -> dict:
    """Closed-loop clients: each sends a streaming completion, waits for [DONE], sends the next."""
    import httpx

    lat, ttft, failed = [], [], 0
    todo = list(range(n_requests))

    async def client(c: httpx.AsyncClient):
        nonlocal failed
        while todo:
            todo.pop()
            t0 = time.perf_counter()
            first = None
            ok = False
            async with c.stream("POST", "/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens,
                                                                 "temperature": 0, "stream": True}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and first is None:
                        first = time.perf_counter() - t0
                    if line == "data: [DONE]":
                        ok = r.status_code == 200
            if ok:
                lat.append(time.perf_counter() - t0)
                ttft.append(first)
            else:
                failed += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    wall = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
    tq = statistics.quantiles(ttft, n=100, method="inclusive") if len(ttft) > 1 else [ttft[0]] * 99
    return {"clients": clients, "requests": len(lat), "failed": failed, "seconds": wall, "rps": len(lat) / wall,
            "p50_s": statistics.median(lat), "p99_s": q[98], "ttft_p50_s": statistics.median(ttft), "ttft_p99_s": tq[98]}


def prefill_probe(servers: dict, prompt: str, n: int) -> dict:
    """Prefill-only requests (max_tokens=1, no stream), interleaved teacher/variant: each server's median latency.

    Measured in the same processes and minutes as the load levels, so the speedup the serving target compares
    against is taken under the same conditions (the compress-time profile is shown beside it)."""
    import httpx

    lat: dict[str, list[float]] = {name: [] for name in servers}
    for i in range(n):
        for name in (list(servers) if i % 2 == 0 else list(servers)[::-1]):
            t0 = time.perf_counter()
            r = httpx.post(servers[name][1] + "/v1/completions", json={"prompt": prompt, "max_tokens": 1,
                                                                      "temperature": 0}, timeout=600)
            r.raise_for_status()
            lat[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in lat.items()}


def malformed(url: str) -> list[int]:
    import httpx

    return [httpx.post(url + "/v1/completions", content=b, headers={"content-type": "application/json"},
                       timeout=60).status_code for b in BAD]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:smollm2-135m")
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--quick", action="store_true", help="tiny:llama on a small text: checks the script")
    p.add_argument("--run-dir", default=None, help="run directory to build or reuse (default: a cache dir)")
    p.add_argument("--from-run", default=None,
                   help="serve the teacher and the selected variant of this existing compress run (e.g. demo-run) "
                        "instead of building an int8 run; int8-dynamic crawls on a CPU without VNNI/AMX")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--levels", default="1,4,16")
    p.add_argument("--requests", type=int, default=3, help="requests per client per level (at least 8 per level)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds (teacher, variant) per level; the table gives each level's median")
    p.add_argument("--probe", type=int, default=12, help="prefill-only requests per server for the served speedup")
    p.add_argument("--max-drop", default="3%")
    p.add_argument("--price-per-hour", type=float, default=0.10)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "results" / "serve"))
    p.add_argument("--note", default="", help="a sentence for the results file (what else was running)")
    p.add_argument("--render", default=None, help="only rewrite the .md from this results .json")
    a = p.parse_args()
    if a.render:
        res = json.loads(Path(a.render).read_text())
        res["table"] = {k: {int(c): r for c, r in v.items()} for k, v in res["table"].items()}
        Path(a.render).with_suffix(".md").write_text(render(res))
        return
    if a.quick:
        txt = Path(tempfile.gettempdir()) / "slimlm-bench-serve.txt"
        txt.write_text("Shall I compare thee to a summer's day? Thou art more lovely and more temperate.\n" * 200)
        a.model, a.data, a.eval_tokens, a.seq_len, a.repeats = "tiny:llama", str(txt), 512, 64, 3
        a.max_drop = "50%"
    from slimlm._io import cache_dir
    from slimlm.profile import machine_info

    run_dir = (Path(a.from_run) if a.from_run else Path(a.run_dir) if a.run_dir
               else cache_dir("bench-serve", a.model.replace(":", "_").replace("/", "_")))
    if a.from_run:
        a.model = json.loads((run_dir / "run.json").read_text())["model"]
    load_before = os.getloadavg()
    t_start = time.time()
    decisions = build_run(a, run_dir)
    var, tea = decisions["variant"], decisions["teacher"]
    if not var["met"] or var["variant"]["is_baseline"]:
        _log(f"note: the rule kept {var['selected']} ({var['reason']})")
    vm = var["variant"]["metrics"]
    speedup = (vm.get("ratios") or {}).get(f"prefill_speedup_1x{a.prompt_tokens}")
    if speedup is None:
        bt, vt = tea["variant"]["metrics"].get("latency_p50_ms"), vm.get("latency_p50_ms")
        speedup = bt / vt if bt and vt else None
    prompt = ("Now is the winter of our discontent made glorious summer by this sun of York; " * 40)
    servers = {}
    try:
        for name, rec in (("teacher", tea), ("variant", var)):
            _log(f"starting {name} server (decision {rec['number']}: {rec['selected']})")
            servers[name] = start(run_dir, rec["number"], a)
        from slimlm.models import load

        tok = load(var["variant"]["path"]).tokenizer
        ids = tok(prompt, add_special_tokens=False)["input_ids"][: a.prompt_tokens]
        prompt = tok.decode(ids)
        levels = [int(x) for x in a.levels.split(",")]
        rows: dict[str, list[dict]] = {"teacher": [], "variant": []}
        bad_codes: dict[str, list[int]] = {"teacher": [], "variant": []}
        for _, url in servers.values():  # warm-up
            asyncio.run(drive(url, 1, 2, prompt, a.max_tokens))
        _log(f"prefill probe: {a.probe} requests of max_tokens=1 per server, interleaved")
        probe = prefill_probe(servers, prompt, a.probe)
        for c in levels:
            n = max(8, a.requests * c)
            for rnd in range(a.rounds):
                for name in (("teacher", "variant") if rnd % 2 == 0 else ("variant", "teacher")):
                    _log(f"{name}: {c} clients, {n} requests (round {rnd + 1})")
                    r = asyncio.run(drive(servers[name][1], c, n, prompt, a.max_tokens))
                    r["round"] = rnd
                    rows[name].append(r)
                    bad_codes[name] += malformed(servers[name][1])
        live = {}
        import httpx

        for name, (_, url) in servers.items():
            text = httpx.get(url + "/metrics", timeout=30).text
            live[name] = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
                          if ln.startswith(("slimlm_cost_usd_per_1k_requests ", "slimlm_service_seconds_per_request ",
                                            "slimlm_cost_forecast_usd_per_1k_requests "))}
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    load_after = os.getloadavg()

    def agg(name, c):
        rs = [r for r in rows[name] if r["clients"] == c]
        return {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_s", "p99_s", "ttft_p50_s", "ttft_p99_s")} | {
            "requests": sum(r["requests"] for r in rs), "failed": sum(r["failed"] for r in rs)}

    table = {name: {c: agg(name, c) for c in levels} for name in rows}
    top = max(levels)
    for name, rec in (("teacher", tea), ("variant", var)):
        for c in levels:
            row = table[name][c]
            row["usd_per_1k_measured"] = 1000 / row["rps"] / 3600 * a.price_per_hour
            row["usd_per_1k_forecast"] = (rec.get("forecast") or {}).get("usd_per_1k_requests")
    tv, tt = table["variant"][top], table["teacher"][top]
    served = probe["teacher"] / probe["variant"]
    targets = {
        f"variant req/s at {top} clients >= served prefill speedup x teacher's": (
            tv["rps"], served * tt["rps"], tv["rps"] >= served * tt["rps"]),
        f"variant req/s at {top} clients >= profiled prefill speedup x teacher's": (
            tv["rps"], (speedup or float("nan")) * tt["rps"], tv["rps"] >= (speedup or float("inf")) * tt["rps"]),
        f"variant p99 <= 2 x p50 at {top} clients": (tv["p99_s"], 2 * tv["p50_s"], tv["p99_s"] <= 2 * tv["p50_s"]),
        "every malformed request answered 4xx": (
            sum(400 <= x < 500 for v in bad_codes.values() for x in v), sum(len(v) for v in bad_codes.values()),
            all(400 <= x < 500 for v in bad_codes.values() for x in v)),
    }
    failed = sum(r["failed"] for v in rows.values() for r in v)
    res = {"model": a.model, "data": a.data, "quick": a.quick, "run_dir": str(run_dir), "note": a.note,
           "pinned": var["pinned"],
           "decision": {"variant": var["selected"], "variant_recipe": var["variant"]["recipe"], "met": var["met"],
                        "rule": var["rule"], "quality_drop": vm.get("quality_drop"), "teacher": tea["selected"]},
           "prefill_speedup_profiled": speedup, "prefill_probe_s": probe, "prefill_speedup_served": served,
           "prompt_tokens": len(ids), "max_tokens": a.max_tokens,
           "levels": levels, "rounds": a.rounds, "table": table, "raw": rows, "failed_requests": failed,
           "malformed_status": bad_codes, "live_metrics": live, "price_per_hour": a.price_per_hour,
           "targets": {k: {"value": v[0], "bound": v[1], "met": v[2]} for k, v in targets.items()},
           "machine": machine_info(), "loadavg_before": load_before, "loadavg_after": load_after,
           "seconds": time.time() - t_start, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = render(res)
    out.with_suffix(".md").write_text(md)
    print(md)


def render(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Serving benchmark ({res['date']})", "",
             f"`python bench/serve.py{' --quick' if res['quick'] else ''}`: {res['model']} on {res['data']}; teacher "
             f"`{res['decision']['teacher']}` vs the decision's variant `{res['decision']['variant']}` "
             f"({res['decision']['variant_recipe']}, quality drop {100 * (res['decision']['quality_drop'] or 0):+.2f}%; "
             f"rule: {res['decision']['rule']}, met: {res['decision']['met']}).",
             f"Each served by its own `slimlm serve` process (1 torch thread, one request at a time, canary and shadow "
             f"off); closed-loop streaming clients, prompt {res['prompt_tokens']} tokens, {res['max_tokens']} generated "
             f"(greedy); levels run interleaved teacher/variant, {res['rounds']} round(s).",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}. Load average before "
             f"{', '.join(f'{x:.2f}' for x in res['loadavg_before'])}, after "
             f"{', '.join(f'{x:.2f}' for x in res['loadavg_after'])} (other jobs share this CPU: absolute figures are "
             "noisy, ratios less so).", ""]
    if res.get("pinned"):
        lines += ["The rule kept the baseline in this run, so the compressed variant was pinned "
                  "(`slimlm decide --variant`) to measure it.", ""]
    if res.get("note"):
        lines += [res["note"], ""]
    cores = m.get("cores") or 1
    if max(res["loadavg_before"][0], res["loadavg_after"][0]) > cores:
        lines += [f"**The CPU was oversubscribed during this run** (load average up to "
                  f"{max(res['loadavg_before'][0], res['loadavg_after'][0]):.1f} on {cores} cores, from other jobs on "
                  "this shared machine): these figures are not a clean measurement of either server; rerun "
                  "`python bench/serve.py` on an idle machine before quoting them.", ""]
    lines += [
             "| server | clients | requests | req/s | p50 s | p99 s | TTFT p50 s | TTFT p99 s | USD/1k measured | USD/1k forecast |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("teacher", "variant"):
        for c, r in res["table"][name].items():
            fc = r["usd_per_1k_forecast"]
            fc_text = f"{fc:.5f}" if fc is not None else "–"
            lines.append(f"| {name} | {c} | {r['requests']} | {r['rps']:.2f} | {r['p50_s']:.3f} | {r['p99_s']:.3f} | "
                         f"{r['ttft_p50_s']:.3f} | {r['ttft_p99_s']:.3f} | {r['usd_per_1k_measured']:.5f} | {fc_text} |")
    sp = res["prefill_speedup_profiled"]
    lines += ["", f"Profiled prefill speedup (interleaved, `compress`): {sp:.2f}x." if sp else "–"]
    if res.get("prefill_speedup_served"):
        pr = res["prefill_probe_s"]
        lines += ["", f"Served prefill speedup (prefill-only requests, interleaved, same servers and minutes as the "
                  f"levels): {res['prefill_speedup_served']:.2f}x (median {1000 * pr['teacher']:.0f} ms teacher, "
                  f"{1000 * pr['variant']:.0f} ms variant)."]
    lines += ["",
              "| target | value | bound | met |", "|---|---:|---:|---|"]
    for k, t in res["targets"].items():
        lines.append(f"| {k} | {t['value']:.3g} | {t['bound']:.3g} | {'met' if t['met'] else 'MISSED'} |")
    lines += ["", f"Failed (non-200 or dropped) load requests: {res['failed_requests']}. Measured cost per 1k requests is "
              "1000 / (req/s) / 3600 x USD per machine-hour (the machine kept busy by the clients); the forecast is the "
              "decision's, from the profiled prefill and decode speed for the same request size.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
