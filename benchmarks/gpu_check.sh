#!/usr/bin/env bash
# The CUDA path on one GPU, in one run (target: <= 8 minutes), ending in one summary table:
#   1. the CUDA equality tests (tests/test_cuda.py: ensemble = separate runs, deterministic
#      repeats, GPU follows CPU) and the device tests;
#   2. bench_ensemble.py --device cuda for K = 1, 8, 64, 256;
#   3. the add_to_subtract_p113 sweep (grokked, memorized, random x seeds 0-2) with
#      hydra/launcher=ensemble train.device=cuda, and its analysis;
#   4. the cost of train.deterministic (the same 3,000-epoch p = 113 job with it on and off);
#   5. bench_decoder.py --device cuda: Power et al.'s decoder in minibatches, the fast and the full
#      path against a plain PyTorch loop (issue 32).
# Without a GPU it says so and exits 0 (tests/test_gpu_check.py checks that).
#   bash benchmarks/gpu_check.sh            # writes into ${GPU_CHECK_OUT:-gpu_check_out}/
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="${PYTHON_BIN:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
out="${GPU_CHECK_OUT:-$repo/gpu_check_out}"

if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no GPU: torch.cuda.is_available() is False here ($("$py" -c 'import torch; print("torch", torch.__version__, "CUDA build", torch.version.cuda)' 2>/dev/null || echo 'torch not importable')); nothing to check"
  exit 0
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
gpu="$("$py" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")')"
echo "gpu_check on $gpu -> $out"
declare -A result
step() {  # step NAME TIMEOUT_S CMD...: run, log to $out/NAME.log, record rc and wall seconds
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  result[$name]="rc=$rc $(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
  echo "[$name] ${result[$name]} (log: $out/$name.log)"
}

step tests 120 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_device.py
step bench_ensemble 150 "$py" benchmarks/bench_ensemble.py --device cuda --ks 1 8 64 256 --epochs 100
sweep="$out/sweep"
step sweep 180 "$py" scripts/train.py -m experiment=add_to_subtract_p113 transfer=grokked,memorized,random seed=0,1,2 \
  hydra/launcher=ensemble train.device=cuda logger=none train.progress_bar=false paths.root="$out/root" hydra.sweep.dir="$sweep"
step analysis 90 "$py" scripts/analyze.py sweep_dir="$sweep" analysis.out_dir="$out/analysis"
for det in true false; do
  step "deterministic_$det" 60 "$py" scripts/train.py experiment=nanda_p113 train.device=cuda train.deterministic=$det \
    train.max_epochs=3000 train.patience=0 train.keep_checkpoints=false logger=none train.progress_bar=false \
    paths.root="$out/det_$det" hydra.run.dir="$out/det_$det/run"
done

# --- 5. Power et al.'s decoder in minibatches: fast path, full path and a plain loop (issue 32) ---
step bench_decoder 150 "$py" benchmarks/bench_decoder.py --device cuda --epochs 10 --rounds 3

echo
echo "## gpu_check summary ($gpu)"
echo
echo "| step | result |"
echo "|---|---|"
for name in tests bench_ensemble sweep analysis deterministic_true deterministic_false bench_decoder; do
  echo "| $name | ${result[$name]:-not run} |"
done
echo
echo "tests: $(tail -n 1 "$out/tests.log")"
echo
echo "bench_ensemble (s/epoch per member, speed-up per member against one separate job):"
sed -n '/^run /,$p' "$out/bench_ensemble.log"
echo
echo "sweep: $(grep -c 'epochs to test acc' "$out/sweep.log" 2>/dev/null || echo 0) jobs reported; headline:"
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
echo
echo "bench_decoder (wall s/epoch, x the plain loop):"
sed -n '/^loop /,/^each round/p' "$out/bench_decoder.log"
