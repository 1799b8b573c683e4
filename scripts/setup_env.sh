#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install groktransfer into it,
# with the torch this machine needs. Sourced by scripts/quickstart.sh and scripts/run_tests.sh;
# safe to run again: it reinstalls only when pyproject.toml, constraints.txt, the extras or
# the machine's GPU driver changed.
#
# Which torch (GROKTRANSFER_TORCH=auto, the default; or keep | cpu | cuXYZ | default):
#   keep     a torch already in the environment that imports, is new enough (pyproject.toml)
#            and, on a machine with an NVIDIA GPU, can use it (a cluster's own build, or one
#            installed by hand before this script ran) is kept; auto keeps it too
#   cuXYZ    an NVIDIA driver is there (nvidia-smi lists a GPU): auto takes the newest CUDA
#            build of constraints.txt's torch that the driver supports, and refuses in one
#            line when the driver is older than all of them
#   cpu      no NVIDIA GPU: a CPU build. PyPI's Linux torch is a CUDA build of several GB, so
#            on Linux the CPU build comes from PyTorch's CPU index, unless pip resolves a CPU
#            build anyway (a local +cpu wheel); on macOS PyPI's is the CPU/MPS build
#   default  whatever pip resolves from constraints.txt, unchecked
# After installing it checks that torch can use the GPU the machine has, and refuses if not.
# GROKTRANSFER_SETUP_PLAN=1 only says, in one line, which torch this machine would get.
# A SLURM login node usually has no GPU: set GROKTRANSFER_TORCH=cuXYZ there, or run this on a
# GPU node. GROKTRANSFER_VENV_ARGS is passed to `python -m venv` (e.g. --system-site-packages
# to see a torch installed outside the environment).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GROKTRANSFER_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
# Extras to install: CI adds TransformerLens with GROKTRANSFER_EXTRAS=test,tl,docs (3.x) and, in a
# second environment, test,tl4 (4.x) (.ci/run).
extras="${GROKTRANSFER_EXTRAS:-test}"
torch_choice="${GROKTRANSFER_TORCH:-auto}"
torch_pin="$(sed -n 's/^torch==\([^ #]*\).*/\1/p' "$repo/constraints.txt")"
# The CUDA builds of constraints.txt's torch, newest first, each with the CUDA version its
# driver must support (PyTorch's install matrix for that version; keep in step with the pin).
# The first is the build PyPI's own Linux wheel is.
cuda_builds="cu130:13.0 cu128:12.8 cu126:12.6"
torch_index="${GROKTRANSFER_TORCH_INDEX:-https://download.pytorch.org/whl}"

_setup_refuse() { echo "[setup] $*" >&2; }

gpu_count=0
driver_cuda=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_count="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
  driver_cuda="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1 || true)"
fi

if [ ! -x "$venv/bin/python" ] && [ -z "${GROKTRANSFER_SETUP_PLAN:-}" ]; then
  echo "[setup] creating virtual environment $venv"
  # shellcheck disable=SC2086
  "$python" -m venv ${GROKTRANSFER_VENV_ARGS:-} "$venv"
fi
stamp="$venv/.groktransfer-install-stamp"
want="$( (cat "$repo/pyproject.toml" "$repo/constraints.txt"; echo "$extras $torch_choice $gpu_count $driver_cuda") \
  | sha256sum | cut -d' ' -f1)"

# 0 when the environment's torch imports, is new enough and can use the NVIDIA GPU if there is one.
_setup_torch_works() {
  "$venv/bin/python" - "$gpu_count" >/dev/null 2>&1 <<'PY'
import sys, torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 9) and (int(sys.argv[1]) == 0 or torch.cuda.is_available()) else 1)
PY
}

# The newest CUDA build the driver supports (cuXYZ), or nothing.
_setup_cuda_build() {
  local entry build need
  for entry in $cuda_builds; do
    build="${entry%%:*}" need="${entry#*:}"
    if [ -n "$driver_cuda" ] && [ "$(printf '%s\n%s\n' "$need" "$driver_cuda" | sort -V | head -n 1)" = "$need" ]; then
      echo "$build"
      return 0
    fi
  done
  return 1
}

# 0 when pip, left alone, would install a CPU build of the pinned torch (macOS, or a local +cpu wheel).
_setup_default_is_cpu() {
  [ "$(uname -s)" = Darwin ] && return 0
  local report rc=1
  report="$(mktemp)"
  if "$venv/bin/python" -m pip install --dry-run --quiet --ignore-installed --no-deps --report "$report" \
      -c "$repo/constraints.txt" torch >/dev/null 2>&1; then
    "$venv/bin/python" -c 'import json, sys; v = json.load(open(sys.argv[1]))["install"][0]["metadata"]["version"]
sys.exit(0 if "+cpu" in v else 1)' "$report" && rc=0
  fi
  rm -f "$report"
  return $rc
}

# Settles torch_choice (auto -> keep | cpu | cuXYZ), or refuses in one line.
_setup_choose() {
  if [ "$torch_choice" = auto ]; then
    if [ -x "$venv/bin/python" ] && _setup_torch_works; then
      torch_choice=keep
    elif [ "$gpu_count" -gt 0 ]; then
      if ! torch_choice="$(_setup_cuda_build)"; then
        _setup_refuse "the NVIDIA driver supports CUDA ${driver_cuda:-(unknown)}, older than every CUDA build of torch" \
          "$torch_pin (build:CUDA needed: ${cuda_builds// /, }): update the driver, or set GROKTRANSFER_TORCH=cpu"
        return 1
      fi
    else
      torch_choice=cpu
    fi
  fi
  case "$torch_choice" in
    keep | cpu | cu[0-9]* | default) ;;
    *)
      _setup_refuse "GROKTRANSFER_TORCH=$torch_choice: choose auto, keep, cpu, cuXYZ (${cuda_builds// /, }) or default"
      return 1;;
  esac
}

_setup_install() {
  local constraints="$repo/constraints.txt" kept
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  case "$torch_choice" in
    keep)
      _setup_torch_works || { _setup_refuse "GROKTRANSFER_TORCH=keep: no working torch >= 2.9 in $venv"; return 1; }
      kept="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
      constraints="$(mktemp)"
      sed "s/^torch==.*/torch==$kept/" "$repo/constraints.txt" > "$constraints"
      echo "[setup] keeping the installed torch $kept";;
    cpu)
      if _setup_default_is_cpu; then
        echo "[setup] torch $torch_pin, CPU build"
      else
        echo "[setup] torch $torch_pin, CPU build from PyTorch's CPU index (PyPI's Linux wheel is a CUDA build)"
        "$venv/bin/python" -m pip install --quiet "torch==$torch_pin" --index-url "$torch_index/cpu"
      fi;;
    cu[0-9]*)
      echo "[setup] torch $torch_pin, CUDA build $torch_choice (driver: CUDA ${driver_cuda:-unknown}, $gpu_count GPU(s))"
      if [ "$torch_choice" != "${cuda_builds%%:*}" ]; then  # the first build is PyPI's own wheel
        "$venv/bin/python" -m pip install --quiet "torch==$torch_pin" --index-url "$torch_index/$torch_choice"
      fi;;
    default)
      echo "[setup] torch $torch_pin as pip resolves it (GROKTRANSFER_TORCH=default)";;
  esac
  echo "[setup] installing groktransfer[$extras] and its dependencies into $venv"
  "$venv/bin/python" -m pip install --quiet -c "$constraints" -e "$repo[$extras]"
  if [ "$gpu_count" -gt 0 ] && [ "$torch_choice" != cpu ] && ! _setup_torch_works; then
    _setup_refuse "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' \
      2>/dev/null || echo '(does not import)') cannot use this machine's GPU (driver: CUDA ${driver_cuda:-unknown}):" \
      "see docs/how-to/gpus.md, or set GROKTRANSFER_TORCH=cpu"
    return 1
  fi
}

if [ -n "${GROKTRANSFER_SETUP_PLAN:-}" ]; then  # say which torch this machine gets, change nothing
  if _setup_choose; then
    echo "[setup] plan: torch $torch_pin: $torch_choice (NVIDIA GPUs: $gpu_count, driver CUDA: ${driver_cuda:-none})"
  else
    return 1 2>/dev/null || exit 1
  fi
elif [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! { _setup_choose && _setup_install; }; then
    return 1 2>/dev/null || exit 1  # sourced: back to the caller, which stops (set -e); run: exit
  fi
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export PYTHON_BIN="$venv/bin/python"
