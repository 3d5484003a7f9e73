# The README's two commands: `make run` (main job on embedded defaults, offline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SYSPY ?= python3
ARGS ?=

.PHONY: install run test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(SYSPY) -m venv $(VENV)
	# torch first, pinned: an unpinned torch (or a package that wants a newer one) pulls a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q -c constraints-cpu.txt torch torchvision
	$(PY) -m pip install -q -c constraints-cpu.txt -e ".[pretrained,dev,app,onnx]"
	# attack=autoattack: torchattacks without its dependencies (its requests~=2.25 pin would break wandb's)
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m xai_bench.cli demo $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(ARGS)

# Style and architecture: ruff, and the import-linter layer contract (library ← tasks ← entry points).
lint: install
	$(VENV)/bin/ruff check xai_bench tests benchmarks examples docs *.py
	$(VENV)/bin/lint-imports

bench: install
	$(PY) benchmarks/run.py $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
