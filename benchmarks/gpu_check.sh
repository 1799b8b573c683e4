#!/usr/bin/env bash
# The CUDA path on one GPU, in one run, ending in one summary table (and its exit status:
# non-zero when any step failed). Steps, each with its time limit:
#   install       the package into this check's own environment (scripts/setup_env.sh, which
#                 keeps a working torch and otherwise installs the CUDA build the driver takes)
#   tests         the CUDA tests (tests/test_cuda.py: ensemble = separate runs, deterministic
#                 repeats, GPU follows CPU, digit jobs and every family's measures against the
#                 CPU's) and the device tests
#   digits        a 2-digit addition job in minibatches, on the device
#   bench         bench_ensemble.py at p = 113, K = 1, 8, 64, 256 (dry run: 1, 8)
#   sweep         a transfer sweep (a+b -> a-b at p = 23: grokked, memorized, random x 2 seeds)
#                 on the ensemble launcher with two worker processes; all 6 jobs must
#                 complete (sweep_jobs); then its analysis
#   determinism   the same p = 113 job with train.deterministic on and off: what it costs
#   bench_decoder Power et al.'s 2-layer decoder in minibatches: groktransfer's fast and full
#                 paths against a plain PyTorch loop (benchmarks/bench_decoder.py, issue 32)
# Results go to ${GPU_CHECK_OUT:-gpu_check_out}/ (logs, bench_ensemble.json, summary.md),
# never into benchmarks/results/, which holds the CPU's.
#
#   bash benchmarks/gpu_check.sh              # on a GPU machine
#   bash benchmarks/gpu_check.sh --dry-run    # every step on the CPU (train.device=cpu): the
#                                             # plumbing, and each step's time against its limit
# Without a GPU (nvidia-smi absent or listing none) it says "no GPU" in one line and exits 0.
# With a GPU that torch cannot use (a driver too old for the build, a CPU build) it fails in
# one line. GPU_CHECK_PYTHON=/path/to/python uses that environment instead of installing
# one (it must import groktransfer); GPU_CHECK_VENV sets where the environment is made
# (default .venv-gpu-check, created with --system-site-packages so a torch installed on the
# machine is seen and kept).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${GPU_CHECK_OUT:-$repo/gpu_check_out}"
dry=0
[ "${1:-}" = "--dry-run" ] || [ -n "${GPU_CHECK_DRY_RUN:-}" ] && dry=1

fail() { echo "gpu_check: FAILED: $*"; exit 1; }

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
fi
if [ "$dry" = 0 ] && [ "$gpus" = 0 ]; then
  echo "gpu_check: no GPU: $(command -v nvidia-smi >/dev/null 2>&1 && echo 'nvidia-smi lists none' \
    || echo 'no NVIDIA driver (nvidia-smi not found)'); nothing to check (--dry-run runs the steps on the CPU)"
  exit 0
fi
mkdir -p "$out"
declare -A result
step() {  # step NAME LIMIT_S CMD...: run, log to $out/NAME.log, record exit status and wall seconds
  local name=$1 limit=$2; shift 2
  local t0 rc
  t0=$(date +%s%N)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  local took=$(( ($(date +%s%N) - t0) / 1000000000 ))
  [ "$rc" = 124 ] && rc="124 (over its ${limit} s)"
  result[$name]="rc=$rc, ${took} s of ${limit} s"
  echo "[$name] ${result[$name]} (log: $out/$name.log)"
}

# ---- the environment: installed here, or given and checked
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  py="$GPU_CHECK_PYTHON"
  result[install]="given: $py"
else
  venv="${GPU_CHECK_VENV:-$repo/.venv-gpu-check}"
  step install 900 env GROKTRANSFER_VENV="$venv" GROKTRANSFER_EXTRAS=test \
    GROKTRANSFER_VENV_ARGS="${GROKTRANSFER_VENV_ARGS:---system-site-packages}" bash scripts/setup_env.sh
  [ "${result[install]%%,*}" = "rc=0" ] || fail "installing into $venv: $(grep '^\[setup\]' "$out/install.log" | tail -n 1) (log: $out/install.log)"
  py="$venv/bin/python"
fi
"$py" -c "import groktransfer, hydra, torch" 2>/dev/null || fail "$py cannot import groktransfer (install it, or unset GPU_CHECK_PYTHON)"
torch_line="$("$py" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")')"

if [ "$dry" = 1 ]; then
  device=cpu
  machine="DRY RUN on the CPU ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $(getconf _NPROCESSORS_ONLN) cores; $torch_line)"
else
  "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || fail \
    "nvidia-smi lists $gpus GPU(s) but torch cannot use them: $("$py" -c \
    'from groktransfer.training.device import cuda_unavailable_reason as r; print(r())' 2>&1 | tail -n 1)"
  device=cuda
  machine="$("$py" -c 'import torch; p = torch.cuda.get_device_properties(0)
print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s), torch {torch.__version__}, CUDA {torch.version.cuda}")')"
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
echo "gpu_check on $machine -> $out"
job=(logger=none train.progress_bar=false train.device="$device")

step tests 300 "$py" -m pytest -q -p no:cacheprovider -n 0 tests/test_cuda.py tests/test_device.py
step digits 150 "$py" scripts/train.py task=digit_add model=attn_only_2l task.n_digits=2 task.frac_train=0.3 \
  train.batch_size=256 train.max_epochs=100 train.checkpoint_every=50 train.patience=0 "${job[@]}" \
  paths.root="$out/digits" hydra.run.dir="$out/digits/run"
if [ "$dry" = 1 ]; then ks=(1 8); else ks=(1 8 64 256); fi
step bench 240 "$py" benchmarks/bench_ensemble.py --device "$device" --ks "${ks[@]}" --epochs 30 --out "$out/bench_ensemble.json"
sweep="$out/sweep"
step sweep 360 "$py" scripts/train.py -m debug=smoke task=subtract transfer.source.source_seed=0 \
  transfer=grokked,memorized,random seed=0,1 hydra/launcher=ensemble hydra.launcher.n_jobs=2 "${job[@]}" \
  paths.root="$out/root" hydra.sweep.dir="$sweep"
step sweep_jobs 60 "$py" - "$sweep" <<'PY'
import sys
from pathlib import Path
from groktransfer.runs.rundir import read_status_file
runs = {p.parent.name: read_status_file(p) for p in sorted(Path(sys.argv[1]).glob("*/status.json"))}
done = [name for name, st in runs.items() if st is not None and st.status == "completed"]
print(f"{len(done)} of 6 jobs completed: {', '.join(done)}")
for name, st in runs.items():
    if name not in done:
        print(f"{name}: {st.status if st else 'no status'}: {st.reason if st else ''}")
sys.exit(0 if len(done) == 6 else 1)
PY
step analysis 150 "$py" scripts/analyze.py sweep_dir="$sweep" analysis.out_dir="$out/analysis"
for det in true false; do
  step "deterministic_$det" 180 "$py" scripts/train.py experiment=nanda_p113 train.deterministic=$det \
    train.max_epochs=300 train.patience=0 train.keep_checkpoints=false "${job[@]}" \
    paths.root="$out/det_$det" hydra.run.dir="$out/det_$det/run"
done
# Power et al.'s decoder in minibatches: the fast and the full path against a plain loop
if [ "$dry" = 1 ]; then dec=(--epochs 2 --rounds 1); else dec=(--epochs 10 --rounds 3); fi
step bench_decoder 240 "$py" benchmarks/bench_decoder.py --device "$device" "${dec[@]}"

{
  echo "## gpu_check summary ($machine)"
  echo
  echo "| step | result |"
  echo "|---|---|"
  for name in install tests digits bench sweep sweep_jobs analysis deterministic_true deterministic_false bench_decoder; do
    echo "| $name | ${result[$name]:-not run} |"
  done
  echo
  echo "tests: $(tail -n 1 "$out/tests.log")"
  echo
  echo "digits: $(grep -h 'epochs to test acc' "$out/digits.log" | tail -n 1)"
  echo
  echo "bench_ensemble (s/epoch per member, speed-up per member against one separate job):"
  sed -n '/^run /,$p' "$out/bench.log"
  echo
  echo "bench_decoder (wall s/epoch, x the plain loop):"
  sed -n '/^loop /,/^each round/p' "$out/bench_decoder.log"
  echo
  echo "sweep: $(head -n 1 "$out/sweep_jobs.log"); $(grep -h 'ensembles on' "$out/sweep.log" | head -n 1)"
  grep -i -E "speed-up|sooner|faster" "$out/analysis.log" | head -n 6
  echo
  "$py" - "$out" <<'PY'
import sys
from pathlib import Path
from groktransfer.runs.rundir import read_status_file
out = Path(sys.argv[1])
spe = {}
for det in ("true", "false"):
    st = read_status_file(out / f"det_{det}" / "run" / "status.json")
    if st is None or st.seconds_per_epoch is None:
        print(f"train.deterministic={det}: no finished run (see {out}/deterministic_{det}.log)")
        continue
    spe[det] = st.seconds_per_epoch
    print(f"train.deterministic={det}: {st.epoch} epochs, {st.seconds_per_epoch * 1e3:.2f} ms/epoch, "
          f"train {st.train_seconds:.1f} s, test acc {st.last_eval.get('test_acc')}")
if len(spe) == 2:
    print(f"cost of train.deterministic: {spe['true'] / spe['false']:.2f}x the s/epoch without it")
PY
} | tee "$out/summary.md"

failed=()
for name in "${!result[@]}"; do
  case "${result[$name]}" in rc=0,* | given:*) ;; *) failed+=("$name");; esac
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu_check: FAILED steps: ${failed[*]} (logs in $out)"
  exit 1
fi
echo "gpu_check: all steps passed ($out/summary.md)"
