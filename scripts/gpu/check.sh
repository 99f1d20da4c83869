#!/usr/bin/env bash
# `make gpu-check`: run from the repository root on a machine with an NVIDIA
# GPU, its driver and a Python with PyTorch 2.11 (the libtorch `maniflow-train`
# was built for), from the binaries of `make gpu-bundle` (nothing is built
# here). Prints:
#   1. GPU vs CPU camera preprocessing (max abs error, goal <= 1e-5) and the
#      time per observation of each;
#   2. one upstream-image training step on the GPU against the same step on
#      the CPU, bf16 autocast against f32, and training steps/s on the GPU next
#      to PyTorch eager on the same GPU in the same run;
#   3. when ONNX Runtime's CUDA provider is there (.gpu-bundle/ortcuda.xz.part-*
#      or $GPU_STASH): an upstream-size package (exported here from one GPU
#      training step) on the GPU against the CPU, `maniflow bench` at N = 1, 2
#      on the GPU, and PyTorch eager inference at N = 1, 2 on the same GPU.
# GPU_SECTIONS (default 123) picks sections. Exit status: non-zero when a
# check fails. Budget: about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
B=${GPU_BUNDLE:-.gpu-bundle}
STASH=${GPU_STASH:-/root/gpu-stash}
W=${GPU_WORK:-/tmp/maniflow-gpu}
PY=${MANIFLOW_PYTHON:-python3}
fail=0
section() { echo; echo "=== $* ($(date +%T))"; }

SECTIONS=${GPU_SECTIONS:-123}
core=$(ls "$B/core.tar.xz" "$STASH/core.tar.xz" 2>/dev/null | head -1)
[ -n "$core" ] || { echo "gpu-check: $B/core.tar.xz missing: run make gpu-bundle on the build machine and carry it"; exit 2; }
rm -rf "$W" && mkdir -p "$W"
tar -C "$W" -xJf "$core"
# The provider's parts may arrive in several calls: each call stashes what it
# carried in $STASH (outside the tree), and the parts join once all are there.
parts=$(ls "$B"/ortcuda.xz.part-* "$STASH"/ortcuda.xz.part-* 2>/dev/null | awk -F/ '!seen[$NF]++ {print}' | sort -t- -k2)
if [ -n "$parts" ]; then
    # shellcheck disable=SC2086
    if cat $parts | xz -d > "$W/lib/provider.tmp"; then
        mv "$W/lib/provider.tmp" "$W/lib/libonnxruntime_providers_cuda.so"
    else
        rm -f "$W/lib/provider.tmp"
        echo "gpu-check: ONNX Runtime CUDA provider incomplete (have: $(echo $parts | xargs -n1 basename | tr '\n' ' '))"
    fi
fi

TORCH_LIB=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
SP=$($PY -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
NV=$(ls -d "$SP"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$TORCH_LIB:$NV${LD_LIBRARY_PATH:-}"
[ -f "$SP/nvidia/cu13/lib/libnvrtc.so.13" ] && export MANIFLOW_NVRTC="$SP/nvidia/cu13/lib/libnvrtc.so.13"
export ORT_DYLIB_PATH="$W/lib/libonnxruntime.so.1.31.1"
export MANIFLOW_PYTHON=$PY MANIFLOW_ROOT=$ROOT
MF=$W/bin/maniflow MT=$W/bin/maniflow-train

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c 'import torch; print("python", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
$MT info

if [[ $SECTIONS == *1* ]]; then
section "1. preprocessing on the GPU vs the CPU"
timeout 120 $MF gpu-check --device 0 --iters 200 || fail=1
fi

if [[ $SECTIONS == *2* ]]; then
section "2. training: one upstream-image step GPU vs CPU, bf16 vs f32, steps/s vs PyTorch eager"
timeout 240 $MT gpu-check --config upstream-image --batch 8 --steps 20 || fail=1
fi

if [[ $SECTIONS == *3* ]]; then
section "3. ONNX Runtime CUDA provider"
if [ ! -f "$W/lib/libonnxruntime_providers_cuda.so" ]; then
    echo "not carried: the provider is 271 MB (52 MB trimmed to sm_$((${GPU_SM:-90})) and compressed); see README, GPU"
else
    timeout 60 $MT synth-dataset --out "$W/ds" --episodes 3 --frames 40 >/dev/null &&
    timeout 120 $MT train --config upstream-image --dataset "$W/ds" --out "$W/run" --steps 1 --device cuda:0 --quiet >/dev/null &&
    timeout 180 $MT export "$W/run" --out "$W/pkg" --name upstream-image-random || fail=1
    if [ -f "$W/pkg/policy.toml" ]; then
        timeout 120 $MF gpu-check --device 0 --iters 20 --policy "$W/pkg" --chunks 100 || fail=1
        for n in 1 2; do
            timeout 60 $MF bench "$W/pkg" --device cuda:0 --steps $n --iters 200 --warmup 20 || fail=1
            timeout 60 $PY trainer/tests/reference/maniflow_ref.py infer-bench --config "$W/run/config.toml" --steps $n --iters 200 --device cuda || fail=1
        done
    fi
fi
fi
section "done: $([ $fail = 0 ] && echo PASS || echo FAIL)"
exit $fail
