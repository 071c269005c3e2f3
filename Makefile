# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo clean

setup: $(STAMP)
	@$(BIN)/python -m povid_eval.nltk_setup

# Re-run the install only when the dependency list changes; torch is pinned by constraints.txt
# (a range that admits a newer torch pulls a multi-GB CUDA build on CPU machines).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.split('+')[0] == '2.13.0' else 'torch ' + v + ' installed, 2.13.0 expected')"
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/povid-eval run --bench all --model base

clean:
	rm -rf $(VENV) .pytest_cache
