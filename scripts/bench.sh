#!/usr/bin/env bash
# Performance benchmarks (issue 6; the results and how to read them: README.md, "Performance").
#   scripts/bench.sh                 planner (criterion) + every scale scenario (~5 min on 2 cores)
#   scripts/bench.sh --only steady --users 1000,10000     a subset; flags go to benches/scale.rs
#   SKIP_PLAN=1 scripts/bench.sh     skip the criterion planner benchmark
# The scale benchmark runs the release binary as a child process against the simulators on
# 127.0.0.1 and prints a Markdown table. Nothing here runs under `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${SKIP_PLAN:-}" ]]; then
    echo "== planner on 100k users (criterion)"
    cargo bench --bench plan
fi

echo "== scale: the real binary against the simulators"
cargo bench --bench scale -- "$@"
