#!/usr/bin/env bash
# The whole fit at ATLAS scale (10^7 events, 100 nuisance parameters, float32) on a GPU machine:
# `python -m bench fit --full --device gpu`, JSON figures on stdout (one line each) and in $OUT when set.
#
# Two steps, both from the repository root:
#   1. here (with network):        bash bench/gpu_fit.sh --fetch-wheels
#      downloads the wheels the GPU machine may lack (iminuit; cp312, manylinux) into .whl/ (git-ignored
#      through .git/info/exclude).
#   2. on the GPU machine:          bash bench/gpu_fit.sh          (carry .whl)
#      makes a venv on top of the machine's python3 (which holds jax with CUDA, numpy, h5py), installs
#      the wheels from .whl/ into it offline when a package is missing, writes the likelihood files once
#      (~8.4 GB under $SBI_BENCH_DATA, default /tmp/sbi-bench; ~1-2 minutes), then fits twice in fresh
#      processes (cold and warm compilation cache). About 3-4 minutes in all; `timeout` stops it at
#      $GPU_FIT_TIMEOUT seconds (default 330), and every figure is printed as soon as it is measured.
# Options: --quick (10^6 events), --streamed (also the 1 GiB memory-budget row: streams 7.5 GB per pass).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" 'iminuit==2.33.0'
  ls -l "$WHEELS"
  exit 0
fi

PLATFORM=${GPU_FIT_PLATFORM:-gpu}  # cpu: a smoke test of this script on a machine without a GPU
args=(run --device "$PLATFORM")
streamed=--no-streamed
for a in "$@"; do
  case "$a" in
    --quick) args+=(--quick) ;;
    --streamed) streamed="" ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
[[ -n "$streamed" ]] && args+=("$streamed")

VENV=${GPU_FIT_VENV:-/tmp/sbi-gpu-venv}
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv --system-site-packages "$VENV"
missing=$("$VENV/bin/python" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("iminuit", "h5py", "numpy", "jax") if importlib.util.find_spec(m) is None))
EOF
)
if [[ -n "$missing" ]]; then
  echo "installing from $WHEELS: $missing" >&2
  "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --find-links "$WHEELS" $missing
fi
"$VENV/bin/python" -c "import jax; print('devices:', jax.devices('$PLATFORM'), 'jax', jax.__version__)" >&2

export SBI_BENCH_DATA=${SBI_BENCH_DATA:-/tmp/sbi-bench}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log=$(mktemp)
set +e
timeout "${GPU_FIT_TIMEOUT:-330}" "$VENV/bin/python" -m bench.fit_scale "${args[@]}" 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
if [[ -n "${OUT:-}" ]]; then
  grep '^{' "$log" > "$OUT/gpu_fit.jsonl" || true
  cp "$log" "$OUT/gpu_fit.log"
fi
exit "$code"
