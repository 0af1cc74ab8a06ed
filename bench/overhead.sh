#!/usr/bin/env bash
# Recorder overhead: flamegraph-perf's recorder vs `perf record`, same flags.
#
#   bench/overhead.sh [--rounds R] [--iterations N] [--rates "99 999 9999"]
#
# A fixed CPU-bound workload (bench/fixedwork.c: deep frame-pointer stacks,
# one process per CPU) runs alone, then while `perf record -a -g -F RATE`
# runs, then while `flamegraph-perf -a -g -F RATE -o FILE` runs (rounds
# interleaved). Each recorder runs `-- sleep` for the workload's duration
# plus a margin, so its CPU time is its own. Printed per rate (medians):
# the recorder's CPU seconds (ours: while recording, and in total including
# symbolization and rendering), samples, lost samples, the workload's wall
# time and its slowdown against the run alone.
#
# Needs root, perf, gcc, GNU time. Output format is stable.
set -euo pipefail

rounds=3
iterations=20000000
rates="99 999 9999"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --iterations) iterations="$2"; shift 2 ;;
        --rates) rates="$2"; shift 2 ;;
        *) echo "usage: $0 [--rounds R] [--iterations N] [--rates \"99 999 9999\"]" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="$here/out/overhead"
mkdir -p "$out"
for tool in perf gcc /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
(cd "$root" && cargo build --release -q)
ours="$root/target/release/flamegraph-perf"
cpus=$(nproc)
gcc -O1 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -fno-inline -o "$out/fixedwork" "$here/fixedwork.c"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# workload wall seconds
run_workload() {
    /usr/bin/time -f "%e" -o "$out/work.time" "$out/fixedwork" "$iterations" "$cpus"
    cat "$out/work.time"
}

# Baseline once to size the recordings.
base=$(run_workload)
span=$(awk -v b="$base" 'BEGIN {printf "%d", b * 1.6 + 3}')

# run_with TOOL RATE -> prints "workload_s recorder_cpu_s total_cpu_s samples lost"
run_with() {
    local tool="$1" rate="$2" data="$out/$1-$2.data"
    rm -f "$data"
    if [ "$tool" = perf ]; then
        /usr/bin/time -f "%U %S" -o "$out/rec.time" \
            perf record -q -a -g -F "$rate" -o "$data" -- sleep "$span" 2>/dev/null &
    else
        /usr/bin/time -f "%U %S" -o "$out/rec.time" \
            "$ours" -a -g -F "$rate" -o "$data" -- sleep "$span" >/dev/null 2>"$out/ours.stderr" &
    fi
    local recorder=$!
    sleep 1
    local work
    work=$(run_workload)
    wait "$recorder"
    local total_cpu recorder_cpu summary samples lost
    total_cpu=$(awk '{printf "%.2f", $1 + $2}' "$out/rec.time")
    if [ "$tool" = perf ]; then
        recorder_cpu="$total_cpu"
    else
        recorder_cpu=$(sed -n 's/.*recorder CPU \([0-9.]*\) s.*/\1/p' "$out/ours.stderr")
    fi
    # Samples and lost samples of either file, read the same way.
    summary=$("$ours" -i "$data" --folded --keep-idle 2>&1 >/dev/null | grep 'samples of' | head -1)
    samples=$(echo "$summary" | sed -n 's/.*: \([0-9]*\) samples of.*/\1/p')
    lost=$(echo "$summary" | sed -n 's/.*lost \([0-9]*\) events and \([0-9]*\) samples.*/\2/p')
    lost=${lost:-0}
    echo "$work $recorder_cpu $total_cpu $samples $lost"
}

echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host: $(uname -r), $cpus CPUs; perf: $(perf --version | cut -d' ' -f3)"
echo "workload: fixedwork $iterations iterations x $cpus processes, alone ${base}s; recorders run -a -g for ${span}s"
echo "rounds: $rounds (interleaved), medians"
echo
printf '%6s %-16s %12s %10s %9s %7s %10s %9s\n' rate recorder "rec CPU s" "total CPU" samples lost "workload s" slowdown
for rate in $rates; do
    rm -f "$out"/*.row
    for _ in $(seq "$rounds"); do
        run_workload >>"$out/alone.row"
        run_with perf "$rate" >>"$out/perf.row"
        run_with ours "$rate" >>"$out/ours.row"
    done
    alone=$(median <"$out/alone.row")
    for tool in perf ours; do
        col() { awk -v c="$1" '{print $c}' "$out/$tool.row" | median; }
        work=$(col 1)
        name=$([ "$tool" = perf ] && echo "perf record" || echo "flamegraph-perf")
        printf '%6s %-16s %12s %10s %9s %7s %10s %8s%%\n' "$rate" "$name" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" "$work" \
            "$(awk -v w="$work" -v a="$alone" 'BEGIN {printf "%+.1f", 100 * (w - a) / a}')"
    done
done
