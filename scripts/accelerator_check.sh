#!/usr/bin/env bash
# The prepared accelerator check (issue 17): on a fresh clone on a machine with a GPU or TPU,
#
#   scripts/accelerator_check.sh [OUT.json]        (default accelerator_check.json)
#
# installs the package (the right extra only when JAX for this accelerator is missing), then runs,
# each part in a process of its own under a hard timeout: the environment, the parity tests that
# matter on an accelerator, cuDNN / splash attention against XLA, the real-size random-weight
# benchmark of SAO 1.0 (DiT call and edit step, float32 and bfloat16, each attention; a 100-step
# 47 s edit extrapolated), SAO Small's 11 s edit and Stable Audio 3 Small's 30 s edit. Each part merges its result into OUT.json as it
# ends; a table is printed at the end. Runs on a CPU too (the accelerator parts reported absent).
#
# Environment:
#   PYTHON                 the interpreter (default: python3)
#   MUSICKV_WHEELS         a folder of wheels to install from, offline (pip --no-index --find-links)
#   MUSICKV_SKIP_INSTALL=1 use the environment as it is
#   MUSICKV_PART_TIMEOUT   seconds each part may run (default 150; parity 180)
#   MUSICKV_CHECK_CHEAP=1  tiny sizes, no parity tests: checks the JSON's shape (the CPU test)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${1:-accelerator_check.json}"
PART_TIMEOUT="${MUSICKV_PART_TIMEOUT:-150}"
started=$(date +%s)

say() { echo "[accelerator_check $(( $(date +%s) - started )) s] $*"; }

# ----------------------------------------------------------------------------- install
if [ "${MUSICKV_SKIP_INSTALL:-0}" != "1" ]; then
  extra=""
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" 2>/dev/null || extra="cuda"
  elif [ -e /dev/accel0 ] || [ -e /dev/vfio/0 ] || [ -n "${TPU_NAME:-}" ]; then
    "$PY" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'tpu' else 1)" 2>/dev/null || extra="tpu"
  fi
  pip_from=()
  [ -n "${MUSICKV_WHEELS:-}" ] && pip_from=(--no-index --find-links "$MUSICKV_WHEELS")
  if [ -n "$extra" ]; then
    say "installing the package with the [$extra] extra (JAX for this accelerator is missing)"
    "$PY" -m pip install -q "${pip_from[@]}" -e ".[$extra]" || say "installing .[$extra] failed; going on with what is installed"
  else
    # JAX (and whatever else is there) stays as installed: only the package itself, no dependencies
    say "installing the package without dependencies (JAX as installed)"
    "$PY" -m pip install -q "${pip_from[@]}" --no-deps -e . || say "pip install --no-deps -e . failed; using PYTHONPATH"
  fi
  for optional in pytest soundfile; do
    "$PY" -c "import $optional" 2>/dev/null || "$PY" -m pip install -q "${pip_from[@]}" "$optional" >/dev/null 2>&1 \
      || say "$optional is not installed and could not be (offline?): tests needing it skip or fail, as recorded"
  done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# ----------------------------------------------------------------------------- the parts
rm -f "$OUT"
run_part() {  # run_part NAME SECONDS
  local name="$1" limit="$2" rc
  say "part $name (at most $limit s)"
  timeout --kill-after=10 "$limit" "$PY" -m musickv_jax.readiness.accelerator_check --part "$name" --json_out "$OUT"
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    "$PY" -m musickv_jax.readiness.accelerator_check --failed "$name:timed out after $limit s" --json_out "$OUT"
  elif [ $rc -ne 0 ]; then
    "$PY" -m musickv_jax.readiness.accelerator_check --failed "$name:exited with status $rc (see the log above)" \
      --json_out "$OUT"
  fi
}

run_part environment 60
run_part parity "${MUSICKV_PARITY_TIMEOUT:-180}"
run_part attention "$PART_TIMEOUT"
run_part bench "$PART_TIMEOUT"
run_part small_edit "$PART_TIMEOUT"
run_part sa3_edit "$PART_TIMEOUT"

"$PY" -m musickv_jax.readiness.accelerator_check --part table --json_out "$OUT"
say "wrote $OUT"
