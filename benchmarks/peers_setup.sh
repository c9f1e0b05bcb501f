#!/usr/bin/env bash
# Setup of the peers suite (benchmarks/peers.py; `make peers-setup`):
#   bash benchmarks/peers_setup.sh [VENV]        # VENV: the project venv, default .venv
#
# 1. openvino and nncf into the project venv, pinned, with every package already installed held
#    at its version (a constraints file from `pip freeze`): they resolve beside the project's pins
#    (torch 2.13.0, transformers 4.57.6, onnxruntime, numpy 2) by adding packages only; if a later
#    release ever needs to change one of them, pip refuses and nothing changes. optimum-onnx comes
#    with the project's `test` extra (`make setup`).
# 2. DeepSparse 1.8.0 in its own venv (build/deepsparse-venv, or $DEEPSPARSE_VENV): it pins numpy
#    1.26 and onnx 1.14, which the project venv cannot share; with the project venv's onnxruntime
#    version, so both processes time the same onnxruntime dense. When it cannot be installed, pip's
#    output stays in <venv>.install.log and the suite records the reason instead of its rows.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$root/.venv}
py=$venv/bin/python
OPENVINO=${OPENVINO:-openvino==2026.4.1}
NNCF=${NNCF:-nncf==3.4.0}
DEEPSPARSE=${DEEPSPARSE:-deepsparse==1.8.0}
[ -x "$py" ] || { echo "error: $py not found: run make setup first" >&2; exit 2; }

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$py" -m pip freeze --exclude-editable | grep -v -e '^-e ' -e ' @ ' > "$constraints"
echo "== $OPENVINO $NNCF into $venv (every installed package held: $(wc -l < "$constraints") constraints)"
"$py" -m pip install -q -c "$constraints" "$OPENVINO" "$NNCF"
"$py" -c "import optimum.onnxruntime" 2>/dev/null \
  || echo "note: optimum-onnx is missing from $venv (the project's test extra): its rows will be skipped"

ds=${DEEPSPARSE_VENV:-$root/build/deepsparse-venv}
ort=$("$py" -c "import onnxruntime; print(onnxruntime.__version__)")
base=$("$py" -c "import sys; print(sys._base_executable)")
if [ ! -x "$ds/bin/python" ] || ! "$ds/bin/python" -c "import deepsparse" 2>/dev/null; then
  echo "== $DEEPSPARSE + onnxruntime==$ort into $ds (its own venv)"
  rm -rf "$ds"
  "$base" -m venv "$ds"
  if "$ds/bin/python" -m pip install -q "$DEEPSPARSE" "onnxruntime==$ort" > "$ds.install.log" 2>&1; then
    rm -f "$ds.install.log"
  else
    echo "note: $DEEPSPARSE could not be installed (see $ds.install.log): the suite records why" >&2
    rm -rf "$ds"
  fi
fi
echo "peers setup done: $("$py" -c "import openvino, nncf; print('openvino', openvino.__version__.split('-')[0], 'nncf', nncf.__version__)")"
