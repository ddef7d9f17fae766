#!/usr/bin/env bash
# A long CLI session on one run, with each command's resident memory (VmRSS from /proc, every
# 0.5 s): 20 base epochs, mask, UM, UMAP, control, two exports. Linux only; never part of the tests.
# Usage (from the repository root, after `cargo build --release`): benches/soak_cli.sh [OUT_DIR]
set -u
B=${UNLEASH:-target/release/unleash}
O=${1:-/tmp/unleash-soak}
R=$O/run
rm -rf "$R" "$O/exp"; mkdir -p "$O/exp"
: > "$O/summary.log"; : > "$O/epochs.log"
run() {
  local name=$1; shift
  "$B" "$@" > "$O/$name.out" 2>&1 &
  local pid=$! samples=() seen=0 rss n
  while kill -0 $pid 2>/dev/null; do
    rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null)
    [ -n "$rss" ] && samples+=("$rss")
    if [ -f "$R/events.jsonl" ]; then
      n=$(wc -l < "$R/events.jsonl")
      [ "$n" != "$seen" ] && { echo "$name events=$n rss_kib=$rss" >> "$O/epochs.log"; seen=$n; }
    fi
    sleep 0.5
  done
  wait $pid; local rc=$? max=0
  for s in "${samples[@]}"; do [ "$s" -gt "$max" ] && max=$s; done
  echo "$name rc=$rc last_kib=${samples[-1]:-0} max_kib=$max samples=${#samples[@]}" | tee -a "$O/summary.log"
}
run train train --epochs 20 --device cpu --out "$R"
run mask mask --run "$R" --device cpu
run um um --run "$R" --epochs 5 --device cpu
run umap umap --run "$R" --epochs 5 --device cpu
run control control --run "$R" --epochs 5 --device cpu
run export_model export --run "$R" --model "$O/exp/model" --report "$O/exp/report" --device cpu
run export_atypical export --run "$R" --atypical "$O/exp/atyp" --contact-sheet "$O/exp/sheet" --device cpu
grep -il "error\|panic" "$O"/*.out && echo "errors above" || echo "no error or panic in any output"
