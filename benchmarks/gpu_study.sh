#!/usr/bin/env bash
# The full-size study on one H100/H200, in two device calls of <= 9 minutes each:
#
#   here (CPU):  python benchmarks/study.py --params params-gpu-study.yaml --part prepare
#                ../shared/tools/device-wheels.sh monai==1.6.1
#   call 1:      run(command="bash benchmarks/gpu_study.sh --part team", timeout_s=560,
#                    carry=[".whl", "studies/polyp-endotect-gpu/data"])
#   call 2:      run(command="bash benchmarks/gpu_study.sh --part students", timeout_s=560)
#                (issued at once: the warm machine keeps studies/ between the calls)
#
# Team: wide-unet, bf16 autocast (TrainConfig amp=auto); students: UNet (unet-small), 5 folds ×
# 2 seeds × {none, teacher, plc, gt_smooth} + the ablation on fold 0, `jobs` students trained
# concurrently on the one GPU (spawned worker processes). The report and the timings go to
# $OUT (default reports/). `--dry-run` runs the same two parts with the params' dry_run section
# (tiny synthetic sizes, CPU, 2 concurrent students); tests/benchmarks/test_study.py runs it.
# STUDY_DIR overrides the work folder (default studies/<name>).
set -euo pipefail
cd "$(dirname "$0")/.."
dry=() part=all params=${PARAMS:-params-gpu-study.yaml}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=(--dry-run) ;;
    --part) part=$2; shift ;;
    --params) params=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--part all|team|students] [--params FILE]" >&2; exit 2 ;;
  esac
  shift
done
if [ -d .whl ] && ! python3 -c "import zarr, monai" 2>/dev/null; then  # the bare device machine
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
out=${OUT:-reports}
mkdir -p "$out"
name=$(python3 -c "import sys, yaml; p = yaml.safe_load(open(sys.argv[1])); \
d = p.get('dry_run', {}) if sys.argv[2] else {}; print(d.get('name', p['name']))" \
  "$params" "${dry[*]:-}")
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
work=${STUDY_DIR:-studies/$name}
start=$(date +%s)
parts=("$part"); [ "$part" = all ] && parts=(team students)
for p in "${parts[@]}"; do
  python3 benchmarks/study.py --params "$params" "${dry[@]}" --part "$p" --workdir "$work" \
    --report "$out/$name.md"
done
cp "$work/timings.jsonl" "$out/$name-timings.jsonl"
echo "gpu_study: ${parts[*]} in $(( $(date +%s) - start )) s; report $out/$name.md"
