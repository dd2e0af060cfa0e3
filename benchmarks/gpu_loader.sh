#!/usr/bin/env bash
# The student data path on one GPU (issue 19, part 4), prepared for one device call:
#
#   here (CPU):  ../shared/tools/device-wheels.sh      # zarr/dask wheels into .whl/
#   device:      run(command="bash benchmarks/gpu_loader.sh", timeout_s=540, carry=[".whl"])
#
# Prints bench_loader's tables with the training device on the GPU (pinned host memory,
# non-blocking copies, int8 codes decoded on the device): the loader alone, and one epoch of
# stored-label KD vs a plain epoch vs a plain epoch whose images are already held in GPU
# memory (no loader), for unet-small and unet at 224². Writes them to $OUT (or reports/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ! python3 -c "import zarr" 2>/dev/null; then  # the bare device machine
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
out=${OUT:-reports}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu_loader.txt"
for student in unet-small unet; do
  python3 benchmarks/bench_loader.py --device cuda --student "$student" --size 224 --count 640 \
    --batch-size 32 --workers 2,4 --steps 16 --repeats 3 --skip rss --small-size 0 \
    | tee -a "$out/gpu_loader.txt"
done
