PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-deps test-slow bench lint clean llamacpp-native

$(STAMP): pyproject.toml constraints.txt requirements/embedded.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev,energy,search,report,serve,export]'
	$(PIP) install --no-deps -r requirements/embedded.txt
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded defaults: SmolLM2-135M through two recipes side by side, prune -> distill -> int8
# (quick) and int8 dynamic quantization alone (int8-only); measure every variant (4,096 evaluation tokens per
# corpus, the benchmarks' budget), pick the operating point, and write demo-run/report.html and
# demo-run/decision.md (rerun to resume).
demo: $(STAMP)
	$(BIN)/slimlm compress builtin:smollm2-135m --recipe quick --recipe int8-only --data shakespeare --eval-tokens 4096 --shapes 1x128 --out demo-run

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

# Optional: llama.cpp compiled for this CPU (GGML_NATIVE: AVX-512 kernels where the CPU has them; the xllamacpp
# wheel stops at AVX2), from the llama.cpp source that llama-cpp-python $(LLAMACPP_SDIST) vendors, whose C API is
# the one slimlm declares. Needs cmake and a C++ compiler; about 2 minutes on 2 cores. Use it with
# SLIMLM_LLAMACPP_LIB=$(LLAMA_NATIVE)/bin/libllama.so, or bench/runtimes.py --llamacpp-lib.
LLAMACPP_SDIST := 0.3.36
LLAMA_NATIVE := build/llamacpp-native
llamacpp-native: $(LLAMA_NATIVE)/bin/libllama.so

$(LLAMA_NATIVE)/bin/libllama.so: $(STAMP)
	rm -rf $(LLAMA_NATIVE) && mkdir -p $(LLAMA_NATIVE)/src
	$(BIN)/pip download -q --disable-pip-version-check --no-deps --no-binary :all: llama-cpp-python==$(LLAMACPP_SDIST) -d $(LLAMA_NATIVE)
	tar xzf $(LLAMA_NATIVE)/llama_cpp_python-$(LLAMACPP_SDIST).tar.gz -C $(LLAMA_NATIVE)/src --strip-components=3 llama_cpp_python-$(LLAMACPP_SDIST)/vendor/llama.cpp
	cmake -S $(LLAMA_NATIVE)/src -B $(LLAMA_NATIVE) -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF \
		-DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >/dev/null
	cmake --build $(LLAMA_NATIVE) --target llama -j $$(nproc)
	SLIMLM_LLAMACPP_LIB=$(LLAMA_NATIVE)/bin/libllama.so $(BIN)/python -c "from slimlm.export import llamacpp as L; print(L.describe()); print(L.system_info())"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
