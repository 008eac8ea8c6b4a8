#!/usr/bin/env bash
# Compares two `pmi` builds on the bench backfill, alternately on the same input, so that
# the machine's other tenants slow both alike: on a shared machine one run's time varies by
# a fifth or more, and only ratios taken side by side are worth reporting.
#
#   scripts/bench-ab.sh [-n ROUNDS] [-w WORKERS] [-d DIR] BIN_A BIN_B
#
# The input is a fleet as `pmi bench` generates (1000 vehicles × 1 h at 1 Hz, seed 1; the
# first 8 sensors as channels, as `--sensors 8`), simulated once by BIN_A under DIR
# (default: a temporary folder). Each round runs
# `pmi backfill` with BIN_A, then with BIN_B (the order alternates between rounds), and
# prints both runs' wall and CPU seconds; at the end, each build's medians and the median of
# the rounds' ratios B / A (below 1: B is faster).
set -euo pipefail

rounds=6 workers=2 dir=""
while getopts "n:w:d:" opt; do
  case "$opt" in
    n) rounds=$OPTARG ;;
    w) workers=$OPTARG ;;
    d) dir=$OPTARG ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2")
[ -x "$a" ] && [ -x "$b" ] || { echo "bench-ab: both builds must be executable files" >&2; exit 2; }
if [ -z "$dir" ]; then
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
fi
mkdir -p "$dir"

echo "simulating the bench fleet under $dir" >&2
rm -rf "$dir/telemetry" "$dir/ground_truth"
"$a" simulate --vehicles 1000 --seed 1 --start-ms 1767225600000 --duration 1h --out "$dir" \
  >/dev/null 2>"$dir/simulate.log" || { cat "$dir/simulate.log" >&2; exit 1; }
cat >"$dir/channels.toml" <<'EOF'
[window]
channels = ["engine_temp_c", "coolant_temp_c", "oil_pressure_kpa", "oil_temp_c", "rpm", "speed_kmh", "engine_load_pct", "battery_voltage_v"]
EOF

# One backfill of the input by build $1; prints "wall cpu" in seconds.
run() {
  rm -rf "$dir/ab-out"
  local TIMEFORMAT='%R %U %S' t
  t=$({ time "$1" backfill --config "$dir/channels.toml" --no-database \
        --input "$dir/telemetry" --out "$dir/ab-out" --workers "$workers" \
        >/dev/null 2>&1; } 2>&1)
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' <<<"$t"
}

results=()
for ((i = 0; i < rounds; i++)); do
  if ((i % 2 == 0)); then ra=$(run "$a"); rb=$(run "$b"); else rb=$(run "$b"); ra=$(run "$a"); fi
  echo "round $((i + 1)): A wall ${ra% *} s cpu ${ra#* } s | B wall ${rb% *} s cpu ${rb#* } s"
  results+=("$ra $rb")
done

printf '%s\n' "${results[@]}" | awk '
  function median(v, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  { n++; aw[n] = $1; ac[n] = $2; bw[n] = $3; bc[n] = $4; rw[n] = $3 / $1; rc[n] = $4 / $2 }
  END {
    printf "A: median wall %.2f s, cpu %.2f s\n", median(aw, n), median(ac, n)
    printf "B: median wall %.2f s, cpu %.2f s\n", median(bw, n), median(bc, n)
    printf "B / A over %d rounds: wall %.3f, cpu %.3f (median of the rounds'\'' ratios)\n", n, median(rw, n), median(rc, n)
  }'
