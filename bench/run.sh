#!/usr/bin/env bash
# Read-path benchmark: flamegraph-perf -i vs the perf script pipelines, on
# recordings made here and now.
#
#   bench/run.sh [--seconds N] [--freq HZ] [--rounds R] [--keep]
#
# 1. Builds bench/workload.c (deep, varied frame-pointer stacks in several
#    processes plus kernel-heavy system calls) and flamegraph-perf (release).
# 2. Records it system-wide: perf record -F HZ -a -g -- workload N  (large),
#    and a ~2k-sample per-process recording at 999 Hz (small).
# 3. For each recording, runs R interleaved rounds of
#      ours:    flamegraph-perf -i perf.data > ours.svg
#      inferno: perf script -i perf.data | inferno-collapse-perf --all | inferno-flamegraph
#      perl:    perf script | stackcollapse-perf.pl --all | flamegraph.pl   (only if on PATH)
#    and prints median wall time, peak RSS (largest process of the
#    pipeline) and the ratio; then ours with 1 and 2 rayon threads.
#
# Needs root (perf record -a), perf, gcc, GNU time, inferno (cargo install inferno).
# Output format is stable: one "key: value" header block, then a table.
set -euo pipefail

seconds=25
freq=4999
rounds=3
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --freq) freq="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--seconds N] [--freq HZ] [--rounds R] [--keep]" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="$here/out"
mkdir -p "$out"
export PATH="$HOME/.cargo/bin:$PATH"
for tool in perf gcc inferno-collapse-perf inferno-flamegraph /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

(cd "$root" && cargo build --release -q)
ours_bin="$root/target/release/flamegraph-perf"
gcc -O1 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -fno-inline \
    -o "$out/workload" "$here/workload.c"

large="$out/large.data"
small="$out/small.data"
if [ "$keep" = 1 ] && [ -s "$large" ] && [ -s "$small" ]; then
    echo "reusing $large and $small" >&2
else
    echo "recording $seconds s at $freq Hz system-wide..." >&2
    perf record -N -q -F "$freq" -a -g -o "$large" -- "$out/workload" "$seconds" 6 2>/dev/null
    perf record -N -q -F 999 -g -o "$small" -- "$out/workload" 1 2 2>/dev/null
fi

samples_of() { "$ours_bin" -i "$1" --folded --keep-idle 2>&1 >/dev/null | sed -n 's/.*: \([0-9]*\) samples of.*/\1/p' | head -1; }

# time_cmd NAME CMD... -> appends "seconds rss_kib" to $out/NAME.times
time_cmd() {
    local name="$1"; shift
    /usr/bin/time -f "%e %M" -o "$out/time.tmp" "$@" >/dev/null 2>"$out/$name.stderr" || {
        echo "$name failed:" >&2; cat "$out/$name.stderr" >&2; exit 1; }
    cat "$out/time.tmp" >>"$out/$name.times"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$1" '{print $c}' "$2"; }

perl_available=0
if command -v stackcollapse-perf.pl >/dev/null && command -v flamegraph.pl >/dev/null; then
    perl_available=1
fi

bench_file() {
    local label="$1" data="$2"
    rm -f "$out"/{ours,inferno,perl,ours1,ours2}.times
    for _ in $(seq "$rounds"); do
        time_cmd ours sh -c "'$ours_bin' -q -i '$data' > '$out/ours.svg'"
        time_cmd inferno sh -c "perf script -i '$data' 2>/dev/null | inferno-collapse-perf --all | inferno-flamegraph > '$out/inferno.svg'"
        if [ "$perl_available" = 1 ]; then
            time_cmd perl sh -c "perf script -i '$data' 2>/dev/null | stackcollapse-perf.pl --all | flamegraph.pl > '$out/perl.svg'"
        fi
    done
    for _ in $(seq "$rounds"); do
        RAYON_NUM_THREADS=1 time_cmd ours1 sh -c "'$ours_bin' -q -i '$data' > /dev/null"
        RAYON_NUM_THREADS=2 time_cmd ours2 sh -c "'$ours_bin' -q -i '$data' > /dev/null"
    done
    local t_ours t_inf r_ours r_inf t1 t2
    t_ours=$(col 1 "$out/ours.times" | median); r_ours=$(col 2 "$out/ours.times" | median)
    t_inf=$(col 1 "$out/inferno.times" | median); r_inf=$(col 2 "$out/inferno.times" | median)
    t1=$(col 1 "$out/ours1.times" | median); t2=$(col 1 "$out/ours2.times" | median)
    printf '%-6s %9s %10s %8s | %-30s %8s %10s | %7s | %6s %6s %7s\n' \
        "$label" "$(samples_of "$data")" "$(du -m "$data" | cut -f1)MB" "${t_ours}s" \
        "perf script|inferno (median)" "${t_inf}s" "$((r_inf / 1024))MiB" \
        "$(awk -v a="$t_inf" -v b="$t_ours" 'BEGIN{printf "%.1fx", a/(b>0?b:0.01)}')" \
        "${t1}s" "${t2}s" "$(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.2fx", a/(b>0?b:0.01)}')"
    echo "       ours peak RSS: $((r_ours / 1024))MiB"
    if [ "$perl_available" = 1 ]; then
        echo "       perl pipeline median: $(col 1 "$out/perl.times" | median)s"
    fi
}

echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host: $(uname -r), $(nproc) CPUs; perf: $(perf --version | cut -d' ' -f3)"
echo "rounds: $rounds (interleaved), times are medians of wall seconds"
echo "perl pipeline: $([ "$perl_available" = 1 ] && echo yes || echo 'not on PATH, skipped')"
echo
printf '%-6s %9s %10s %8s | %-30s %8s %10s | %7s | %6s %6s %7s\n' \
    file samples size ours other other "other RSS" speedup "1 thr" "2 thr" scaling
bench_file large "$large"
bench_file small "$small"
