#!/usr/bin/env bash
# `make gpu-bundle`, on the build machine (no GPU needed): everything the GPU
# check needs that is not in the source tree, small enough to travel (the
# device tool moves at most 64 MiB per call, the tree included):
#
#   .gpu-bundle/core.tar.xz        bin/maniflow, bin/maniflow-train (the dev
#                                  builds `make test` uses, stripped) and the
#                                  ONNX Runtime 1.31.1 core library from the
#                                  onnxruntime-gpu wheel (its CUDA provider
#                                  needs the core library of the same build)
#   .gpu-bundle/ortcuda.xz.part-* ONNX Runtime's CUDA provider (271 MB) with
#                                  the device code of every GPU architecture
#                                  but GPU_SM zeroed (scripts/gpu/trim_fatbin.py),
#                                  xz-compressed, split in PART_MB pieces
#
# Then (README, "GPU"): carry core.tar.xz with the first provider part in one
# call, the second part in the next, and run `make gpu-check` there.
set -euo pipefail
cd "$(dirname "$0")/../.."
GPU_SM=${GPU_SM:-90}
PART_MB=${PART_MB:-27}
OUT=.gpu-bundle
WHL_DIR=.cache/onnxruntime-gpu
mkdir -p "$OUT" "$WHL_DIR"
rm -rf "$OUT/stage" "$OUT"/ortcuda.* "$OUT/core.tar.xz"
mkdir -p "$OUT/stage/bin" "$OUT/stage/lib"

echo "gpu-bundle: building the binaries (dev profile, as make test)"
cargo build --bins
objcopy --strip-all target/debug/maniflow "$OUT/stage/bin/maniflow"
objcopy --strip-all target/debug/maniflow-train "$OUT/stage/bin/maniflow-train"

whl=$(ls "$WHL_DIR"/onnxruntime_gpu-1.31.1-*.whl 2>/dev/null | head -1 || true)
if [ -z "$whl" ]; then
    echo "gpu-bundle: downloading onnxruntime-gpu==1.31.1 (256 MB, cached in $WHL_DIR)"
    .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1 -d "$WHL_DIR"
    whl=$(ls "$WHL_DIR"/onnxruntime_gpu-1.31.1-*.whl | head -1)
fi
unzip -o -q -j "$whl" 'onnxruntime/capi/libonnxruntime.so.1.31.1' \
    'onnxruntime/capi/libonnxruntime_providers_shared.so' -d "$OUT/stage/lib"
unzip -o -q -j "$whl" 'onnxruntime/capi/libonnxruntime_providers_cuda.so' -d "$OUT"
.venv/bin/python scripts/gpu/trim_fatbin.py "$OUT/libonnxruntime_providers_cuda.so" \
    "$OUT/providers_cuda.trimmed.so" --keep "$GPU_SM"
rm "$OUT/libonnxruntime_providers_cuda.so"

echo "gpu-bundle: compressing (xz -9: zstd is not on every GPU machine; a few minutes on 2 cores)"
tar -C "$OUT/stage" -cf - bin lib | xz -9 -T2 > "$OUT/core.tar.xz"
xz -9 -T2 -c "$OUT/providers_cuda.trimmed.so" > "$OUT/ortcuda.xz"
split -b "${PART_MB}M" -d -a 1 "$OUT/ortcuda.xz" "$OUT/ortcuda.xz.part-"
rm -rf "$OUT/stage" "$OUT/providers_cuda.trimmed.so" "$OUT/ortcuda.xz"
ls -l "$OUT"
tree_mb=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "gpu-bundle: source tree $((tree_mb / 1048576)) MiB; each call may carry up to 64 MiB with it"
