"""write_report on a realistic run directory: the HTML (plots, table, offline), decision.md, errors and the CLI."""

import json
import re
import time
from html.parser import HTMLParser

import pytest
from _fixture_run import make_run, run_info, variants

from slimlm.cli.main import main
from slimlm.errors import ConfigError, SlimlmError
from slimlm.report import RunDirError, write_report


class _Refs(HTMLParser):
    """Every src/href attribute and every tag name (script bodies are data, not tags)."""

    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_report_has_plots_table_and_is_offline(run_dir):
    res = write_report(run_dir)
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    # plots: plotly.js inlined once, a div per Pareto plot, the heat map and the curves
    assert "plotly.js v" in html and len(html) > 1_000_000
    assert html.count('class="plotly-graph-div"') == 4 + 1 + 1
    assert 'id="pareto-latency_p50_ms"' in html and 'id="sensitivity-0"' in html and 'id="curves"' in html
    # the comparison table, baseline first, with the derived hardware note
    assert '<table class="cmp">' in html and "hardware suitability" in html and "latency p50 (1x128)" in html
    table = html[html.index('<table class="cmp">'):]
    assert table.index("a0b1c2d3") < table.index("f1e2d3c4")
    assert "int8 GEMMs need AVX-512 VNNI/AMX" in html
    assert "Business translation" in html and "Methodology" in html and "AMD EPYC 9R14" in html
    # offline: nothing to fetch
    p = _Refs()
    p.feed(html)
    assert not [r for r in p.refs if re.match(r"\s*(https?:)?//", r)], "network reference in src/href"
    assert "link" not in p.tags and "img" not in p.tags and "iframe" not in p.tags
    assert "cdn" not in html.lower() and "@import" not in html and "url(http" not in html
    assert res["selected"] == "f1e2d3c4" and res["met"] is True
    assert res["frontier"] == ["a0b1c2d3", "5e21a9f0", "c41d77e2", "f1e2d3c4"]
    assert 0 < res["hypervolume"] < 1


def test_decision_when_met(run_dir):
    write_report(run_dir, tier="medium")
    md = (run_dir / "decision.md").read_text(encoding="utf-8")
    first = [line for line in md.splitlines()[1:] if line.strip()][0]
    assert first.startswith("**Deploy `f1e2d3c4`")
    assert str(run_dir / "cache" / "f1e2d3c4") in md  # the chosen path
    assert "fastest variant with perplexity drop ≤ 3%" in md
    assert "| perplexity (in domain) | 39.20 | 38.20 | +2.62% perplexity drop |" in md
    assert "perplexity (out of domain)" in md and "## What was traded" in md
    assert "## Roll back" in md and str(run_dir / "cache" / "a0b1c2d3") in md and "builtin:smollm2-135m" in md
    assert "saves USD" in md


def test_decision_when_nothing_meets_the_bar(run_dir):
    res = write_report(run_dir, tier="critical", max_latency_ms=50)
    md = (run_dir / "decision.md").read_text(encoding="utf-8")
    first = [line for line in md.splitlines()[1:] if line.strip()][0]
    assert first == "**No variant meets the bar.** Nothing is recommended for deployment under this rule."
    assert res["met"] is False and res["selected"] is None and res["closest"] == "c41d77e2"
    assert "Closest variant: `c41d77e2`" in md and "p50 latency ≤ 50 ms" in md
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "No variant meets the bar" in html and "closest" in html


def test_baseline_given_as_a_spec_is_not_a_path(tmp_path):
    vs = variants()
    vs[0]["path"] = "builtin:smollm2-135m"
    vs[1]["recovery"] = {"tokens": 0, "seconds": 0.0}  # what the pipeline writes for an untrained variant
    d = make_run(tmp_path / "r", vs=vs)
    write_report(d, max_drop="2%")
    md = (d / "decision.md").read_text(encoding="utf-8")
    assert md.startswith("# Decision") and "**Deploy `5e21a9f0`" in md
    assert "slimlm.models.load('builtin:smollm2-135m')" in md and str(d / "builtin:") not in md
    assert "Recovery cost" not in md


def test_arguments_override_run_json(tmp_path):
    d = make_run(tmp_path / "r", info=run_info(tier="high", max_drop=None))
    assert write_report(d)["selection"]["max_drop"] == 0.01  # from run.json
    assert write_report(d, max_drop="0.5%")["selection"]["max_drop"] == 0.005
    assert write_report(d, objective="size")["selected"] == "77c0de11"  # int8-weight: 190 MB, 0.26% drop
    with pytest.raises(ConfigError):
        write_report(d, tier="relaxed")


def test_missing_metrics_and_no_sensitivity(tmp_path):
    vs = variants()[:3] + [{"id": "bare", "metrics": None}, {"id": "nulls", "metrics": {"quality_drop": None}}]
    d = make_run(tmp_path / "r", vs=vs, with_sensitivity=False)
    (d / "run.json").unlink()
    res = write_report(d)
    html = (d / "report.html").read_text(encoding="utf-8")
    assert "sensitivity-0" not in html and "run.json is missing" in html
    assert "bare" in html and res["selected"] == "5e21a9f0"


def test_unknown_sensitivity_format_is_skipped(tmp_path):
    d = make_run(tmp_path / "r")
    (d / "sensitivity.json").write_text(json.dumps({"layers": [0.1, 0.2]}))
    write_report(d)
    html = (d / "report.html").read_text(encoding="utf-8")
    assert "sensitivity-0" not in html and "heat map skipped" in html


def test_run_dir_errors(tmp_path):
    with pytest.raises(RunDirError, match="no variants.jsonl"):
        write_report(tmp_path)
    (tmp_path / "variants.jsonl").write_text('{"id": "a"}\n{not json\n')
    with pytest.raises(SlimlmError, match="line 2"):
        write_report(tmp_path)


def run(capsys, *args):
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_json_and_table(capsys, run_dir):
    code, out, _ = run(capsys, "report", str(run_dir), "--json", "--traffic", "1000000", "--max-drop", "1%")
    assert code == 0
    data = json.loads(out)
    assert {"report", "decision", "selected", "met", "frontier", "hypervolume"} <= data.keys()
    assert data["selected"] == "a0b1c2d3" and data["met"] is True  # within 1% nothing beats the baseline's 92 ms
    code, out, _ = run(capsys, "report", str(run_dir))
    assert code == 0 and "f1e2d3c4" in out and "report.html" in out


def test_cli_errors_are_one_line(capsys, tmp_path, run_dir):
    code, out, err = run(capsys, "report", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in err and "Traceback" not in err
    code, out, err = run(capsys, "report", str(run_dir), "--max-drop", "3")
    assert code == 2 and "ambiguous" in err


def test_several_sensitivity_tables(tmp_path):
    rows = [{"layer": i, "ratio": r, "value": 30 + i * r, "ratio_to_baseline": 1 + i * r / 30} for i in range(4) for r in (0.25, 0.5)]
    tables = [{"kind": "ffn", "metric": "perplexity", "ratios": [0.25, 0.5], "rows": rows},
              {"kind": "layers", "metric": "perplexity", "ratios": [1.0],
               "rows": [{"layer": i, "ratio": 1.0, "value": 40.0, "ratio_to_baseline": 1.3} for i in range(4)]}]
    d = make_run(tmp_path / "r")
    (d / "sensitivity.json").write_text(json.dumps(tables))
    write_report(d)
    html = (d / "report.html").read_text(encoding="utf-8")
    assert 'id="sensitivity-0"' in html and 'id="sensitivity-1"' in html and "ffn pruned alone" in html


def test_classifier_run_speaks_of_accuracy(tmp_path):
    vs = [{"id": "b", "is_baseline": True, "label": "baseline",
           "metrics": {"accuracy": 0.90, "quality_drop": 0.0, "latency_p50_ms": 10.0, "disk_mb": 90.0}},
          {"id": "q", "label": "int8-dynamic", "stages": [{"kind": "quantize", "config": {"scheme": "int8-dynamic"}}],
           "metrics": {"accuracy": 0.89, "quality_drop": 1 - 0.89 / 0.90, "latency_p50_ms": 6.0, "disk_mb": 25.0}}]
    d = make_run(tmp_path / "r", vs=vs, info={"model": "builtin:minilm-l6", "data": "shakespeare-genre"},
                 with_sensitivity=False)
    res = write_report(d, tier="high")  # 1.1% drop: just outside 1%, so keep the baseline
    assert res["selected"] == "b" and "accuracy drop ≤ 1%" in res["rule"]
    md = (d / "decision.md").read_text(encoding="utf-8")
    assert "**Keep the baseline.**" in md and "Nothing to roll back" in md and "## Evidence" not in md
    res = write_report(d, tier="medium")
    assert res["selected"] == "q"
    html = (d / "report.html").read_text(encoding="utf-8")
    assert "accuracy drop (%)" in html and "prefill only" in html


def test_latencies_from_different_profiles_are_put_on_the_baselines_timing(tmp_path):
    from slimlm.report.run import load_run
    from slimlm.runs import RunDir, Variant

    base = Variant.from_dict({"id": "b", "is_baseline": True, "metrics": {
        "quality_drop": 0.0, "latency_p50_ms": 250.0, "latency_ms": {"1x128": {"p50": 250.0, "p99": 260.0}},
        "ratios": {"prefill_speedup_1x128": 1.0}}})
    # profiled earlier, when the machine was twice as slow: 460 ms absolute, but 1.8x faster than the baseline then
    old = Variant.from_dict({"id": "q", "metrics": {
        "quality_drop": 0.01, "latency_p50_ms": 460.0, "latency_ms": {"1x128": {"p50": 460.0, "p99": 506.0}},
        "ratios": {"prefill_speedup_1x128": 1.8}}})
    RunDir(tmp_path).write_variants([base, old])  # aligned once, when written
    run = load_run(tmp_path)
    q = next(v for v in run.variants if v.id == "q")
    assert abs(q.metrics.latency_p50_ms - 250.0 / 1.8) < 1e-9
    assert q.metrics.latency_ms["1x128"].measured_p50 == 460.0
    assert abs(q.metrics.latency_p99_ms - 506.0 * (250.0 / 1.8) / 460.0) < 1e-9  # the spread is its own
    assert any("restated" in n for n in run.notes)


def test_ood_guard_is_shown_and_names_the_variant_it_kept_out(tmp_path, capsys):
    vs = variants()
    vs[7]["metrics"]["ood_perplexity"] = 60.0  # the medium-tier winner (f1e2d3c4) now ruins general text
    vs[7]["metrics"]["ood_quality_drop"] = 60.0 / 22.5 - 1
    d = make_run(tmp_path / "r", vs=vs)
    res = write_report(d)  # default guard (run.json recorded none: runs before the guard existed)
    assert res["selected"] != "f1e2d3c4" and res["excluded_by_guard"] == "f1e2d3c4"
    assert res["selection"]["max_ood_drop"] == 0.10 and "out-of-domain perplexity drop ≤ 10%" in res["rule"]
    md = (d / "decision.md").read_text(encoding="utf-8")
    html = (d / "report.html").read_text(encoding="utf-8")
    for text in (md, html):
        assert "Out-of-domain guard: out-of-domain perplexity drop ≤ 10%" in text
        assert "kept out prune ffn=0.25 → distill 400 steps → int8-dynamic (f1e2d3c4)" in text and "+167%" in text
    # run.json's saved guard is used; an argument overrides it; none turns it off
    d2 = make_run(tmp_path / "r2", vs=vs, info=run_info(max_ood_drop=None))
    assert write_report(d2)["selected"] == "f1e2d3c4" and "off" in write_report(d2)["guard"]
    assert write_report(d2, max_ood_drop="200%")["selected"] == "f1e2d3c4"
    assert write_report(d2, max_ood_drop="20%")["excluded_by_guard"] == "f1e2d3c4"
    assert main(["report", str(d2), "--max-ood-drop", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["excluded_by_guard"] == "f1e2d3c4"
    assert main(["report", str(d2), "--max-ood-drop", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-ood-drop 'lots' is not a number" in err


def test_several_out_of_domain_corpora_get_a_row_each_and_the_worst_decides(tmp_path):
    vs = variants()
    for v in vs:  # pydoc as recorded; movie reviews twice pydoc's drop, except the medium-tier winner's: +40%
        m = v["metrics"]
        reviews = 0.40 if v["id"] == "f1e2d3c4" else 2 * m["ood_quality_drop"]
        m["ood"] = {"pydoc": {"perplexity": m["ood_perplexity"], "quality_drop": m["ood_quality_drop"]},
                    "rotten-tomatoes": {"perplexity": 140.0 * (1 + reviews), "quality_drop": reviews}}
        m["ood_quality_drop"] = max(m["ood_quality_drop"], reviews)
    d = make_run(tmp_path / "r", vs=vs, info={**run_info(), "ood_data": "pydoc,rotten-tomatoes"})
    res = write_report(d)
    assert res["excluded_by_guard"] == "f1e2d3c4" and res["selected"] != "f1e2d3c4"
    assert "≤ 10% on each of pydoc, rotten-tomatoes" in res["rule"]
    md = (d / "decision.md").read_text(encoding="utf-8")
    html = (d / "report.html").read_text(encoding="utf-8")
    assert "+40% on rotten-tomatoes" in md and "+40% on rotten-tomatoes" in html
    assert "| perplexity (out of domain: pydoc) |" in md and "| perplexity (out of domain: rotten-tomatoes) |" in md
    assert "OOD perplexity (pydoc)" in html and "OOD perplexity (rotten-tomatoes)" in html
    assert "OOD drop (worst)" in html
    assert res["selected"] == "5e21a9f0"  # int8-dynamic: +2.89% on pydoc, +5.78% on the reviews
    assert "| perplexity (out of domain: rotten-tomatoes) | 148.1 | 140.0 | +5.78% perplexity drop |" in md
    assert "out of domain: +5.78% (the worst of 2 corpora, on rotten-tomatoes)" in md


def test_decide_takes_the_out_of_domain_guard_too(tmp_path, capsys):
    vs = variants()
    vs[7]["metrics"]["ood_perplexity"] = 60.0  # the medium-tier winner (f1e2d3c4) ruins general text
    vs[7]["metrics"]["ood_quality_drop"] = 60.0 / 22.5 - 1
    d = make_run(tmp_path / "r", vs=vs)
    assert main(["decide", str(d), "--tier", "medium", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selected"] != "f1e2d3c4"  # the default guard keeps it out
    assert main(["decide", str(d), "--tier", "medium", "--max-ood-drop", "200%", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["selected"] == "f1e2d3c4" and rec["number"] == 2 and "≤ 200%" in rec["rule"]
    assert main(["decide", str(d), "--max-ood-drop", "lots"]) == 2


@pytest.mark.parametrize("int8_matmul, instructions, warned", [
    ("fp32", ["avx512_vnni"], True),  # the CPU can, but the start-of-run measurement chose the fallback
    ("int8", ["avx512_vnni"], False),
    ("fp32", [], False),  # no int8 instructions: the existing no-VNNI warning says it, not this one
])
def test_int8_dynamic_timed_on_the_fp32_fallback_despite_vnni_is_a_warning(tmp_path, int8_matmul, instructions,
                                                                            warned):
    from slimlm.report.run import load_run, run_warnings

    info = run_info()
    info["machine"].update(int8_matmul=int8_matmul,
                           int8_gemm={"fast": bool(instructions), "isa": "x86", "instructions": instructions})
    warnings = run_warnings(load_run(make_run(tmp_path / "run", info=info)))
    hit = [w for w in warnings if "summed in fp32" in w]
    assert bool(hit) is warned
    if warned:
        assert "avx512_vnni" in hit[0] and "SLIMLM_INT8_MATMUL=int" in hit[0]
    assert any("no VNNI/AMX" in w for w in warnings) is (not instructions)




def _write_report_slowly(run_dir, written):
    """`write_report` for another traffic, pausing between writing the files and recording their checksums."""
    import slimlm._io as io
    import slimlm.report as report

    record = io.record_written

    def slow_record(paths):
        written.set()
        time.sleep(1.5)
        record(paths)

    io.record_written = slow_record  # this child process's copy of the module
    report.write_report(run_dir, traffic_per_day=123_456)


def test_a_second_writer_waits_for_the_first_to_record(run_dir):
    """Search workers sharing a run each rewrite its report. One must not read the file another has just
    written but not yet recorded, and refuse it as a user's edit (a real three-worker search did)."""
    import multiprocessing as mp

    from slimlm._io import check_unedited

    write_report(run_dir)  # a first report, recorded
    ctx = mp.get_context("fork")
    written = ctx.Event()
    first = ctx.Process(target=_write_report_slowly, args=(run_dir, written))
    first.start()
    try:
        assert written.wait(60)  # the other writer has replaced the files and not yet recorded them
        write_report(run_dir)  # waits for it, then finds its own record
    finally:
        first.join(60)
    assert first.exitcode == 0
    check_unedited([run_dir / "report.html", run_dir / "decision.md"])  # the record matches the files
