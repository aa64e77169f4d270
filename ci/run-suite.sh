#!/usr/bin/env bash
# Runs the netmend scenario suite, then a bounded random exploration of the
# same scenarios on sim, and leaves JUnit and JSON reports and a timeline
# per scenario (timeline/ID.svg) in target/netmend/ (explore: explore.json,
# shrunk violations in explore/).
# Copy it into your project's CI; exit code 1 means a scenario failed or a
# random schedule broke an invariant, 2 a bad scenario file.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/netmend
mkdir -p "$out"
status=0
cargo run --release -p netmend-harness -- run scenarios/ --junit "$out/junit.xml" --json "$out/report.json" \
    --timeline "$out/timeline" || status=$?
# A fixed seed: the same 3,000 schedules every run (about a minute on 2
# cores); a violation is shrunk and saved as a scenario file to rerun.
cargo run --release -p netmend-harness -- explore scenarios/ --schedules 3000 --seed 1 \
    --json "$out/explore.json" --save "$out/explore" || status=$((status > 0 ? status : $?))
exit "$status"
