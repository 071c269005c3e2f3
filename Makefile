# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup browser test demo ablation parity clean

setup: $(STAMP)
	@$(BIN)/python -c "from povid_eval.benches.chair import nltk_setup; raise SystemExit(nltk_setup.main())"

# Re-run the install only when the dependency list changes; torch is pinned by constraints.txt
# (a range that admits a newer torch pulls a multi-GB CUDA build on CPU machines).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.split('+')[0] == '2.13.0' else 'torch ' + v + ' installed, 2.13.0 expected')"
	@touch $(STAMP)

# The leaderboard test renders the html in headless Chromium: install it where it is missing and the
# machine allows it (root with apt-get); elsewhere that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium not installed: the leaderboard's browser test will be skipped"

test: setup browser
	$(BIN)/ruff check povid_eval tests parity
	$(BIN)/ruff format --check povid_eval tests parity
	$(BIN)/python -m pytest

# The whole pipeline on the embedded default: world (built on first use), base on every bench, POVID
# training, the tuned model on every bench, both on CHAIR with diffusion-noised images (the image-reliance
# diagnostic; `--bench pope --image-noise` adds POPE's), the base's stop-bias frontier, the comparison, the
# leaderboard.
demo: setup
	$(BIN)/povid-eval run --bench all --model base
	$(BIN)/povid-eval train --base base --out povid
	$(BIN)/povid-eval run --bench all --model povid
	$(BIN)/povid-eval run --bench chair --model base --image-noise
	$(BIN)/povid-eval run --bench chair --model povid --image-noise
	$(BIN)/povid-eval frontier --model base
	$(BIN)/povid-eval compare base povid
	$(BIN)/povid-eval leaderboard

# The POVID paper's ablation on the embedded default, at the demo's total steps: text-injected negatives only
# (--recipe dpo) and noisy-image negatives only (--recipe noise-only), each trained and run on every bench
# (after `make demo`, which trains and runs the two-term model); the leaderboard then lists all four.
ablation: setup
	$(BIN)/povid-eval train --base base --out povid-text --recipe dpo
	$(BIN)/povid-eval train --base base --out povid-noise --recipe noise-only
	$(BIN)/povid-eval run --bench all --model povid-text
	$(BIN)/povid-eval run --bench all --model povid-noise
	$(BIN)/povid-eval run --bench chair --model povid-text --image-noise
	$(BIN)/povid-eval run --bench chair --model povid-noise --image-noise
	$(BIN)/povid-eval leaderboard

# povid-eval against LLaVA's own released code (llava-torch 1.2.2.post1, transformers 4.37.2, in .venv-ref),
# both run on tiny random checkpoints written by LLaVA's and transformers' own code: every format, every bench
# prompt, ten image shapes; exits 1 on a difference not on parity/allow.toml. See parity/README.md.
parity: setup
	bash parity/setup_ref.sh
	$(BIN)/python parity/check.py

clean:
	rm -rf $(VENV) .venv-ref .pytest_cache build
