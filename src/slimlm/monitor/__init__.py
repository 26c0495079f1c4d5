"""Monitoring artefacts generated from a run's decision: Prometheus alerting rules and a Grafana dashboard.

Both read only the run directory (`slimlm.report.decisions`), so they can be generated on a machine that
does not serve the model, and both refer to the metrics ``slimlm serve`` exports (`slimlm.serve.metrics`).
"""

from slimlm.monitor.grafana import grafana_dashboard
from slimlm.monitor.rules import alert_rules, rule_tests

__all__ = ["alert_rules", "grafana_dashboard", "rule_tests"]
