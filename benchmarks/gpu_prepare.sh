#!/usr/bin/env bash
# Run HERE (a machine with a network), in the repo's root, before `bash benchmarks/gpu_check.sh` on the lent
# GPU: copies the shared data into .benchdata/ and downloads into .whl/ the wheels the GPU image lacks
# (trl, datasets and their pure needs dill and multiprocess; the serve extras starlette, uvicorn and httptools
# for tests that import them). Versions come from constraints.txt. Both folders are git-ignored through
# .git/info/exclude and travel with the device tool's carry: [".whl", ".benchdata"].
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for path in /.whl/ /.benchdata/; do
    grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"
done

rm -rf .benchdata && mkdir .benchdata
cp ../shared/data/*.json .benchdata/

pin() { grep -i "^$1==" constraints.txt | head -1; }
mkdir -p .whl
for name in trl datasets dill multiprocess starlette uvicorn httptools; do
    spec="$(pin "$name")"
    [ -n "$spec" ] || { echo "no pin for $name in constraints.txt" >&2; exit 1; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$spec"
done
for whl in .whl/*.whl; do  # what each needs, to check against the GPU image's packages (KINDS.md)
    echo "$(basename "$whl"): $(unzip -p "$whl" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' \
        | sed 's/^Requires-Dist: //' | tr '\n' ',' | sed 's/,$//')"
done
du -sh .whl .benchdata
