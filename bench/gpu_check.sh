#!/usr/bin/env bash
# Everything that needs a GPU, in one command (issue #18), for whoever first has one; about 8 minutes at
# most on one GPU. Run it where fastppo is installed with its CUDA kernels (FASTPPO_CUDA=ON pip install
# -e '.[test]', or the fastppo[cuda13] wheel):
#
#     bash bench/gpu_check.sh [OUTDIR]          # default bench/gpu_results
#
# 1. the test files with CUDA tests (every file that mentions CUDA), in which they (and the two-GPU ones,
#    with two GPUs) no longer skip; the whole suite is CI's job;
# 2. bench/gpu_bench.py: env steps/s of the built-in envs at 4,096 and 65,536 envs, PPO on CartPole with
#    4,096 envs (steps/s, seconds to solve), GAE and the fused loss against their torch references;
# 3. OUTDIR/summary.json: the tests' counts, what skipped and why, and the benchmarks' figures, for
#    bench/RESULTS.md. The exit status is non-zero if a test failed or a stage did not finish.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/gpu_results}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >> "$OUT/nvidia-smi.txt"
python -c "import fastppo, json; print(json.dumps({k: [v.available, v.detail] for k, v in fastppo.backends().items()}))" \
    > "$OUT/backends.json"
cat "$OUT/backends.json"

echo "== tests (at most 270 s)"
timeout 270 python -m pytest -q -p no:cacheprovider -rs $(grep -li cuda tests/test_*.py) > "$OUT/pytest.txt" 2>&1
tests_rc=$?
tail -3 "$OUT/pytest.txt"

echo "== benchmarks (at most 200 s)"
timeout 200 python bench/gpu_bench.py --out "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
bench_rc=$?
tail -5 "$OUT/bench.txt"

python - "$OUT" "$tests_rc" "$bench_rc" <<'PY'
import json, os, re, sys
out, tests_rc, bench_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = open(os.path.join(out, "pytest.txt")).read()
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|xfailed|errors?)", log.splitlines()[-1] if log else "")}
summary = {"tests_exit_status": tests_rc, "tests": counts,
           "skipped": re.findall(r"^SKIPPED \[\d+\] (.*)$", log, re.M),
           "bench_exit_status": bench_rc}
bench = os.path.join(out, "bench.json")
summary["bench"] = json.load(open(bench)) if os.path.exists(bench) else None
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps({k: summary[k] for k in ("tests_exit_status", "tests", "bench_exit_status")}))
PY
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
