"""Server settings: limits, drift checks and the admin switch, with their defaults in one place."""

from __future__ import annotations

from dataclasses import dataclass

from slimlm.errors import ConfigError


@dataclass
class ServeSettings:
    """How the server runs.

    Attributes:
        max_tokens_cap: largest ``max_tokens`` a request may ask for (400 above it).
        default_max_tokens: ``max_tokens`` when a request does not say.
        max_body_bytes: largest request body (413 above it).
        max_batch: most texts in one ``/v1/classify`` request.
        concurrency: requests computed at once (each on its own worker thread); the rest wait in line.
        max_queue: requests waiting or running before new ones get 503.
        canary_interval_s: seconds between canary evaluations (0: no canary).
        canary_data: data spec of the golden sample (None: the run's eval data).
        canary_tokens: token budget of one canary evaluation (LMs); examples for classifiers.
        canary_seq_len: window length (None: the run's, capped at 256).
        shadow_ratio: share of live requests the teacher scores in the background (0: off).
        teacher: teacher spec overriding the run's baseline (needed for a bare variant directory).
        admin_token: bearer token enabling ``POST /admin/decision`` (None: the endpoint is off).
        slo_p99_ms: p99 request-latency SLO (None: the decision's ``max_latency_ms``, else 4x the forecast
            service time of one request).
        threads: torch threads (None: leave torch's default).
        cost_window: completed requests the live cost is averaged over.
    """

    max_tokens_cap: int = 256
    default_max_tokens: int = 16
    max_body_bytes: int = 1 << 20
    max_batch: int = 64
    concurrency: int = 1
    max_queue: int = 64
    canary_interval_s: float = 60.0
    canary_data: str | None = None
    canary_tokens: int = 2048
    canary_seq_len: int | None = None
    shadow_ratio: float = 0.05
    teacher: str | None = None
    admin_token: str | None = None
    slo_p99_ms: float | None = None
    threads: int | None = None
    cost_window: int = 256

    def __post_init__(self) -> None:
        checks = [(self.max_tokens_cap >= 1, "--max-tokens-cap must be at least 1"),
                  (1 <= self.default_max_tokens, "the default max_tokens must be at least 1"),
                  (self.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024"),
                  (self.concurrency >= 1, "--concurrency must be at least 1"),
                  (self.max_queue >= self.concurrency, "--max-queue must be at least --concurrency"),
                  (self.canary_interval_s >= 0, "--canary-interval must be 0 (off) or positive"),
                  (self.canary_tokens >= 16, "--canary-tokens must be at least 16"),
                  (0.0 <= self.shadow_ratio <= 1.0, "--shadow-ratio must be between 0 and 1"),
                  (self.admin_token is None or len(self.admin_token) >= 16,
                   "--admin-token must be at least 16 characters (use a random string)"),
                  (self.slo_p99_ms is None or self.slo_p99_ms > 0, "--slo-p99-ms must be positive"),
                  (self.threads is None or self.threads >= 1, "--threads must be at least 1 (leave it out for "
                   "torch's default)")]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg + ".")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens_cap)
