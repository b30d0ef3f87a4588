#!/usr/bin/env bash
# The one prepared script for the lent GPU (issue 20), run there in the repo's root by the device tool:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".benchdata"])
# after `bash benchmarks/gpu_prepare.sh` here. It installs the carried wheels and rmkit, runs the tests
# marked cuda, then benchmarks/bench_gpu.py; logs and the benchmark's JSON go to $OUT. Each step has a
# timeout so the whole script ends within about 8.5 minutes; BENCH_ARGS adds options to the benchmark.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
started=$SECONDS

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, rmkit; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'rmkit', rmkit.__file__)" | tee -a "$OUT/gpu.txt"

# the CUDA tests all live in test_gpu_path.py: collecting every module would need all test dependencies there
echo "== CUDA tests ($((SECONDS - started)) s)"
timeout 150 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_gpu_path.py 2>&1 | tee "$OUT/cuda_tests.log"
echo "cuda tests exit status ${PIPESTATUS[0]}"

echo "== bench_gpu.py ($((SECONDS - started)) s)"
timeout --kill-after=10 $((500 - (SECONDS - started))) python3 benchmarks/bench_gpu.py --data-dir .benchdata \
    --out "$OUT/bench_gpu.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.log"
echo "bench_gpu.py exit status ${PIPESTATUS[0]}; whole script $((SECONDS - started)) s"
