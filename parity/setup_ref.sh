#!/usr/bin/env bash
# Create (or bring up to date) .venv-ref: LLaVA's own released code (llava-torch 1.2.2.post1, --no-deps) with
# transformers 4.37.2 on the CPU torch 2.13.0, for the reference side of the parity check. Idempotent: a stamp
# holding the hash of this script, requirements-ref.txt and constraints-ref.txt skips all work when nothing changed.
#
#   bash parity/setup_ref.sh            # -> .venv-ref/ at the repository root
#   VENV_REF=/path/to/venv PYTHON=python3.11 bash parity/setup_ref.sh
#
# Never touches the project's own .venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VENV="${VENV_REF:-$ROOT/.venv-ref}"
PYTHON="${PYTHON:-python3}"
REQ="$HERE/requirements-ref.txt"
CON="$HERE/constraints-ref.txt"
STAMP="$VENV/.parity-ref-installed"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

want="$(cat "${BASH_SOURCE[0]}" "$REQ" "$CON" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import llava" 2>/dev/null; then
    echo "$VENV is up to date"
    exit 0
fi

if ! "$VENV/bin/python" -c "import sys" 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; v = sys.version_info[:2]; v == (3, 11) or print(f"warning: Python {v[0]}.{v[1]}: the local torch 2.13.0 CPU wheel is for 3.11", file=sys.stderr)'

# 1. torch first: the local CPU build (every other version below is pinned by the constraints file).
"${PIP[@]}" install -c "$CON" torch==2.13.0
# 2. what LLaVA's code needs, every package pinned by constraints-ref.txt (torch==2.13.0 among them).
"${PIP[@]}" install -c "$CON" -r "$REQ"
# 3. LLaVA itself, without its metadata's pins (torch==2.0.1, transformers==4.36.2, gradio, bitsandbytes, ...).
"${PIP[@]}" install -c "$CON" --no-deps llava-torch==1.2.2.post1

# 4. check: exact versions, and LLaVA's modules import.
"$VENV/bin/python" - "$CON" <<'EOF'
import sys
from importlib.metadata import version
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, ver = line.split("==")
        pins[name.strip()] = ver.strip()
bad = [f"{n} {version(n)} (want {v})" for n, v in pins.items() if version(n).split("+")[0] != v]
if bad:
    sys.exit("version mismatch: " + ", ".join(bad))
import llava.model.language_model.llava_llama  # noqa: F401  (llava.model swallows import errors: import it directly)
import llava.model.builder, llava.mm_utils, llava.conversation, peft  # noqa: E401,F401
print("ok: " + ", ".join(f"{n}=={version(n)}" for n in ("llava-torch", "torch", "transformers", "tokenizers", "peft", "accelerate")))
EOF
echo "$want" > "$STAMP"
