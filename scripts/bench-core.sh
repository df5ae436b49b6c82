#!/usr/bin/env bash
# Runs the core's criterion benchmarks and prints every case as a ratio to the allowed
# preflight measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--table-only" ] || cargo bench --manifest-path benches/Cargo.toml --target-dir target --bench decision -- "$@"
python3 - <<'PY'
import json, pathlib
root = pathlib.Path("target/criterion")
rows = {}
# criterion stores "group/case" as the directory "group_case".
for est in root.glob("*/new/estimates.json"):
    name = est.parts[-3].replace("_", "/", 1)
    rows[name] = json.loads(est.read_text())["median"]["point_estimate"]
base = rows.get("preflight/allowed")
print(f"\n{'case':40} {'median':>12} {'vs allowed':>11}")
for name, ns in sorted(rows.items()):
    ratio = f"{ns / base:10.2f}x" if base else ""
    print(f"{name:40} {ns:10.1f}ns {ratio}")
PY
