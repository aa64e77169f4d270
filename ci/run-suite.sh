#!/usr/bin/env bash
# Runs the netmend scenario suite and leaves JUnit and JSON reports in
# target/netmend/. Copy it into your project's CI; exit code 1 means a
# scenario failed, 2 a bad scenario file.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/netmend
mkdir -p "$out"
cargo run --release -p netmend-harness -- run scenarios/ --junit "$out/junit.xml" --json "$out/report.json"
