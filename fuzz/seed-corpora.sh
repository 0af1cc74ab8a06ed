#!/usr/bin/env bash
# Seeds the fuzz corpora with the fixtures (run from anywhere).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/perf_data corpus/perf_map corpus/kallsyms corpus/folded
for case in ../fixtures/*/; do
    name=$(basename "$case")
    [ -f "$case/perf.data" ] && cp "$case/perf.data" "corpus/perf_data/$name.data"
    [ -f "$case/kallsyms" ] && cp "$case/kallsyms" "corpus/kallsyms/$name"
    [ -f "$case/expected.folded" ] && cp "$case/expected.folded" "corpus/folded/$name"
done
for data in ../fixtures/damaged/*.data; do cp "$data" "corpus/perf_data/damaged-$(basename "$data")"; done
cp ../fixtures/jit/symfs/tmp/*.map corpus/perf_map/
printf '0x00007f0398ec7a40 0x0000000000000150 long Busy.fib(int)\r\n7f0398ec7b90 40 Interpreter\n' > corpus/perf_map/jdk
