"""`slimlm monitor rules|dashboard RUN_DIR`: Prometheus alerting rules (with promtool tests) or a Grafana dashboard."""

from __future__ import annotations

from pathlib import Path

import typer

from slimlm.cli._out import emit_json, out
from slimlm.errors import ConfigError


def monitor_command(
    what: str = typer.Argument(..., metavar="WHAT", help="rules (Prometheus alerting rules) or dashboard (Grafana JSON)."),
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="Run directory being served."),
    out_file: Path | None = typer.Option(None, "--out", help="Write here (default: RUN_DIR/monitor/...)."),
    job: str = typer.Option("slimlm", "--job", help="Prometheus job label of the slimlm scrape targets."),
    decision: int | None = typer.Option(None, "--decision", help="Describe this decision (default: the latest)."),
    quality_for: str = typer.Option("5m", "--quality-for", help="rules: how long the drop must last (e.g. 5m, 30s, 1h30m)."),
    latency_for: str = typer.Option("10m", "--latency-for", help="rules: the same for latency, cost and errors."),
    cost_margin: float = typer.Option(0.25, "--cost-margin", min=0.0, help="rules: cost alert above forecast × (1 + margin)."),
    tests: bool = typer.Option(True, "--tests/--no-tests", help="rules: also write promtool unit tests beside them."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file (and its -test.yml), or a "
                               "RUN_DIR/monitor file changed since slimlm wrote it."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Write Prometheus alerting rules or a Grafana dashboard for the run's decision."""
    import json

    import yaml

    from slimlm._io import rewrite_unedited, write_text_atomic
    from slimlm.monitor import alert_rules, grafana_dashboard, rule_tests
    from slimlm.monitor.rules import duration_seconds

    for dur, opt in ((quality_for, "--quality-for"), (latency_for, "--latency-for")):
        duration_seconds(dur, opt)  # a Prometheus duration: 30s, 5m, 1h30m
    if out_file is not None:  # the default paths under RUN_DIR/monitor: `rewrite_unedited` below
        from slimlm._io import check_out

        out_file = check_out(out_file, force=force, kind="file")  # written where it was checked ('~' expanded)
        if what == "rules" and tests:
            check_out(out_file.with_name(out_file.stem + "-test.yml"), force=force, kind="file")
    if what not in ("rules", "dashboard"):
        raise ConfigError(f"monitor {what!r} is unknown; use `slimlm monitor rules RUN_DIR` or "
                          "`slimlm monitor dashboard RUN_DIR`.")
    texts = {}
    if what == "rules":
        path = out_file or Path(run_dir) / "monitor" / "slimlm-rules.yml"
        rules = alert_rules(run_dir, job=job, quality_for=quality_for, latency_for=latency_for,
                            cost_margin=cost_margin, decision=decision)
        texts["rules"] = (path, yaml.safe_dump(rules, sort_keys=False, width=200))
        if tests:
            tpath = path.with_name(path.stem + "-test.yml")
            texts["tests"] = (tpath, yaml.safe_dump(rule_tests(rules, path.name, job=job, quality_for=quality_for,
                                                               latency_for=latency_for, cost_margin=cost_margin),
                                                    sort_keys=False, width=200))
        alerts = [r["alert"] for r in rules["groups"][0]["rules"]]
    else:
        path = out_file or Path(run_dir) / "monitor" / "grafana-dashboard.json"
        texts["dashboard"] = (path, json.dumps(grafana_dashboard(run_dir, job=job, decision=decision), indent=2) + "\n")
        alerts = []
    if out_file is None:
        rewrite_unedited(dict(texts.values()), force=force, strict=True,
                         fix="pass --force to replace it, or --out to write elsewhere")
    else:  # the user's own path, checked by `check_out` above
        for p, text in texts.values():
            write_text_atomic(p, text)
    written = {k: str(p) for k, (p, _) in texts.items()}
    if as_json:
        emit_json(written | ({"alerts": alerts} if alerts else {}))
        return
    for k, p in written.items():
        out.print(f"{k}: {p}", highlight=False)
    if "tests" in written:
        out.print(f"check them with: promtool check rules {written['rules']} && promtool test rules {written['tests']}",
                  highlight=False)
