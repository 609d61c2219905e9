# The README's commands. Each creates .venv if absent and installs dlpipe into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install only when the package metadata changes.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# DVC stages call `dlpipe`; run them with the venv first on PATH.
RUN    := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: install demo test test-all lint bench clean

install: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## demo: run the sample pipeline offline with `dvc repro`, summarise its metrics, and say where the report is
demo: install
	$(RUN) $(BIN)/dvc repro
	$(RUN) $(BIN)/dlpipe metrics
	@echo "Report (open it in a browser): $$($(RUN) $(BIN)/dlpipe report --where)"

## test: the default test suite (what CI runs)
test: install
	$(RUN) $(BIN)/python -m pytest -n 2 --dist loadfile

## test-all: also the long checks marked `slow`
test-all: install
	$(RUN) $(BIN)/python -m pytest -n 2 --dist loadfile -m ''

## lint: ruff (rules in pyproject.toml) over the package, tests and benchmarks
lint: install
	$(BIN)/ruff check dlpipe tests bench

## bench: benchmarks (minutes; results in bench/results/ and docs/BENCHMARKS.md)
bench: install
	$(RUN) $(BIN)/python bench/bench_ingest.py
	$(RUN) $(BIN)/python bench/bench_spectrogram.py --repeats 5
	$(RUN) $(BIN)/python bench/bench_embed.py
	$(RUN) $(BIN)/python bench/bench_search.py
	$(RUN) $(BIN)/python bench/bench_cluster.py
	$(RUN) $(BIN)/python bench/bench_heatmap.py
	$(RUN) $(BIN)/python bench/bench_word2vec.py
	$(RUN) $(BIN)/python bench/bench_scale.py
	$(RUN) $(BIN)/python bench/bench_peers.py

clean:
	rm -rf data dvc.lock .pytest_cache
