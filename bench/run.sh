#!/usr/bin/env bash
# Read-path benchmark: flamegraph-perf -i against the perf script pipelines,
# on recordings made here and now.
#
#   bench/run.sh [--seconds N] [--freq HZ] [--rounds R] [--keep] [--large FILE] [--no-browser]
#
# 1. Builds bench/workload.c (six processes with deep, varied frame-pointer
#    stacks plus kernel-heavy system calls) and flamegraph-perf (release).
# 2. Records it system-wide, perf record -F HZ -a -g -- workload N 6 (large:
#    N=110 at 4999 Hz gives about 1.1M samples on 2 CPUs), and a ~2k-sample
#    per-process recording at 999 Hz (small). --keep reuses earlier ones;
#    --large FILE benchmarks FILE instead of recording the large one.
# 3. For each recording, R interleaved rounds of
#      ours:        flamegraph-perf -i perf.data > ours.svg
#      inferno:     perf script -i perf.data | inferno-collapse-perf --all | inferno-flamegraph
#      perf script: perf script -i perf.data > /dev/null      (its RSS is the memory bound)
#      perl:        perf script | stackcollapse-perf.pl --all | flamegraph.pl  (if on PATH)
#    then R rounds of ours with -j 1 and with all CPUs (thread scaling), and
#    R rounds of ours without the per-boot kernel symbol cache (the first run
#    after a boot), and R rounds with --pprof (the export's extra time).
#    Prints medians of wall time, peak RSS (the largest
#    process of a pipeline), the ratio and the targets.
# 4. Unless --no-browser: the load time of both large SVGs in headless
#    Chromium (needs /usr/bin/chromium and node; installs playwright-core
#    into tests/browser/node_modules with npm ci on first use).
#
# Needs root (perf record -a), perf, gcc, GNU time, inferno (cargo install inferno).
# The output format is stable: "key: value" lines, then one table row per
# recording, then "target:" lines.
set -euo pipefail

seconds=110
freq=4999
rounds=5
keep=0
large_file=""
browser=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --freq) freq="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --large) large_file="$2"; shift 2 ;;
        --no-browser) browser=0; shift ;;
        *) echo "usage: $0 [--seconds N] [--freq HZ] [--rounds R] [--keep] [--large FILE] [--no-browser]" >&2; exit 2 ;;
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

large="${large_file:-$out/large.data}"
small="$out/small.data"
if [ -z "$large_file" ] && { [ "$keep" = 0 ] || [ ! -s "$large" ]; }; then
    echo "recording $seconds s at $freq Hz system-wide..." >&2
    perf record -N -q -F "$freq" -a -g -o "$large" -- "$out/workload" "$seconds" 6 2>/dev/null
fi
if [ "$keep" = 0 ] || [ ! -s "$small" ]; then
    perf record -N -q -F 999 -g -o "$small" -- "$out/workload" 1 2 2>/dev/null
fi

samples_of() { "$ours_bin" -i "$1" --folded --keep-idle 2>&1 >/dev/null | sed -n 's/.*: \([0-9]*\) samples of.*/\1/p' | head -1; }

# time_cmd NAME CMD... -> appends "seconds max_rss_kib" to $out/NAME.times
time_cmd() {
    local name="$1"; shift
    /usr/bin/time -f "%e %M" -o "$out/time.tmp" "$@" >/dev/null 2>"$out/$name.stderr" || {
        echo "$name failed:" >&2; cat "$out/$name.stderr" >&2; exit 1; }
    cat "$out/time.tmp" >>"$out/$name.times"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$1" '{print $c}' "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", a/(b>0?b:0.01)}'; }

perl_available=0
if command -v stackcollapse-perf.pl >/dev/null && command -v flamegraph.pl >/dev/null; then
    perl_available=1
fi

# Warm the page cache and the per-boot kernel symbol cache, as a user's
# second run would have them.
"$ours_bin" -q -i "$small" >/dev/null

targets=()
bench_file() {
    local label="$1" data="$2"
    rm -f "$out"/{ours,inferno,script,perl,ours1,oursn,ourscold,ourspprof}.times
    for _ in $(seq "$rounds"); do
        time_cmd ours sh -c "'$ours_bin' -q -i '$data' > '$out/$label.ours.svg'"
        time_cmd inferno sh -c "perf script -i '$data' 2>/dev/null | inferno-collapse-perf --all | inferno-flamegraph > '$out/$label.inferno.svg'"
        time_cmd script sh -c "perf script -i '$data' 2>/dev/null > /dev/null"
        if [ "$perl_available" = 1 ]; then
            time_cmd perl sh -c "perf script -i '$data' 2>/dev/null | stackcollapse-perf.pl --all | flamegraph.pl > '$out/$label.perl.svg'"
        fi
    done
    for _ in $(seq "$rounds"); do
        time_cmd ours1 sh -c "'$ours_bin' -q -j 1 -i '$data' > /dev/null"
        time_cmd oursn sh -c "'$ours_bin' -q -i '$data' > /dev/null"
        time_cmd ourscold env FLAMEGRAPH_PERF_NO_CACHE=1 sh -c "'$ours_bin' -q -i '$data' > /dev/null"
        time_cmd ourspprof sh -c "'$ours_bin' -q -i '$data' --pprof '$out/$label.pb.gz' > /dev/null"
    done
    local t_ours r_ours t_inf r_inf t_script r_script t1 tn t_cold t_perl
    t_ours=$(col 1 "$out/ours.times" | median); r_ours=$(col 2 "$out/ours.times" | median)
    t_inf=$(col 1 "$out/inferno.times" | median); r_inf=$(col 2 "$out/inferno.times" | median)
    t_script=$(col 1 "$out/script.times" | median); r_script=$(col 2 "$out/script.times" | median)
    t1=$(col 1 "$out/ours1.times" | median); tn=$(col 1 "$out/oursn.times" | median)
    t_cold=$(col 1 "$out/ourscold.times" | median)
    t_perl="-"
    [ "$perl_available" = 1 ] && t_perl="$(col 1 "$out/perl.times" | median)s"
    printf '%-6s %9s %7s | %7s %8s | %8s %8s %6s | %7s %8s | %7s | %7s | %6s %6s %6s\n' \
        "$label" "$(samples_of "$data")" "$(du -m "$data" | cut -f1)MB" \
        "${t_ours}s" "$((r_ours / 1024))MiB" \
        "${t_inf}s" "$((r_inf / 1024))MiB" "$(ratio "$t_inf" "$t_ours")x" \
        "${t_script}s" "$((r_script / 1024))MiB" \
        "$t_perl" "${t_cold}s" \
        "${t1}s" "${tn}s" "$(ratio "$t1" "$tn")x"
    eval "${label}_speedup=$(ratio "$t_inf" "$t_ours")"
    eval "${label}_pprof_extra=$(awk -v a="$(col 1 "$out/ourspprof.times" | median)" -v b="$tn" 'BEGIN{printf "%.2f", a-b}')"
    eval "${label}_pprof_rss=$(col 2 "$out/ourspprof.times" | median)"
    eval "${label}_rss_ours=$r_ours ${label}_rss_script=$r_script"
}

echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host: $(uname -r), $(nproc) CPUs; perf: $(perf --version | cut -d' ' -f3); inferno: $(cargo install --list 2>/dev/null | sed -n 's/^inferno v\([0-9.]*\):$/\1/p')"
echo "rounds: $rounds (interleaved); times are medians of wall seconds, RSS medians of peak RSS"
echo "perl pipeline: $([ "$perl_available" = 1 ] && echo yes || echo 'not on PATH, skipped')"
echo "ours: flamegraph-perf -i; inferno: perf script | inferno-collapse-perf --all | inferno-flamegraph"
echo "cold: ours without the per-boot kernel symbol cache (FLAMEGRAPH_PERF_NO_CACHE=1)"
echo
printf '%-6s %9s %7s | %7s %8s | %8s %8s %6s | %7s %8s | %7s | %7s | %6s %6s %6s\n' \
    file samples size ours "ours RSS" inferno "inf RSS" ratio "script" "scr RSS" perl cold "-j 1" "-j $(nproc)" scaling
bench_file large "$large"
bench_file small "$small"
echo
pass() { if awk -v a="$1" -v b="$2" 'BEGIN{exit !(a >= b)}'; then echo PASS; else echo FAIL; fi; }
echo "target: large >= 20x faster than the inferno pipeline: ${large_speedup}x $(pass "$large_speedup" 20)"
echo "target: small >= 8x faster than the inferno pipeline: ${small_speedup}x $(pass "$small_speedup" 8)"
echo "pprof: --pprof adds ${large_pprof_extra}s on large, ${small_pprof_extra}s on small (median, against the same runs without it); peak RSS with it: $((large_pprof_rss / 1024)) MiB on large"
echo "target: --pprof adds well under a second (<= 0.5 s) on large: ${large_pprof_extra}s $(pass 0.5 "$large_pprof_extra")"
echo "target: large peak RSS <= perf script's: $((large_rss_ours / 1024)) vs $((large_rss_script / 1024)) MiB $(pass "$large_rss_script" "$large_rss_ours")"

if [ "$browser" = 1 ]; then
    browser_dir="$root/tests/browser"
    if command -v node >/dev/null && [ -x /usr/bin/chromium ]; then
        if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
            (cd "$browser_dir" && npm ci --no-audit --no-fund -q >/dev/null 2>&1) || true
        fi
        if [ -d "$browser_dir/node_modules/playwright-core" ]; then
            echo
            echo "headless Chromium, median of $rounds loads (load event) and zooms (click on the widest frame):"
            (cd "$browser_dir" && node drive.mjs /usr/bin/chromium load "$rounds" \
                "$out/large.ours.svg" "$out/large.inferno.svg") |
                node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const r of JSON.parse(s).result){const fs=require("fs");console.log(`${r.file.split("/").pop()} load_ms=${r.load_ms.toFixed(0)} zoom_ms=${r.zoom_ms===null?"-":r.zoom_ms.toFixed(0)} frames=${r.frames} bytes=${fs.statSync(r.file).size}`)}})'
        fi
    else
        echo
        echo "browser: skipped (needs node and /usr/bin/chromium: apt-get install chromium nodejs npm)"
    fi
fi
