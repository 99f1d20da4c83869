#!/usr/bin/env bash
# Control-loop wake-up lateness at 100 Hz with the bus path (`maniflow eval --bus`:
# the simulated arm's STS3215 emulator on a pty, the node's [robot] bus thread,
# the bundled policy), in four settings: a quiet machine, both cores busy (two
# spinning processes), a memory-heavy neighbour (tests/bench/memory_hog.py:
# allocates, touches and frees HOG_GB GiB in a loop), and the busy and memory
# settings again with the node's realtime setting off (no SCHED_FIFO, no
# mlockall). SETTINGS="quiet memory" picks some. Beside each
# run, cyclictest (rt-tests, if installed) measures the platform's own wake-up
# latency at the same priority: what the kernel and the VM give any thread.
# Prints one line per setting; JSON reports in runs/lateness-*.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/debug/maniflow
EPISODES=${EPISODES:-3}
HOG_GB=${HOG_GB:-6}
PY=${PYTHON:-python3}
mkdir -p runs
tmp=$(mktemp -d)
loads=()
cleanup() { for p in "${loads[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
# 100 Hz control ticks: the policy's chunk at 33.3 Hz, interpolated 3x.
sed -e 's/^rate_hz = 30.0 .*/rate_hz = 33.333333333/' -e 's/^interpolation = 1 .*/interpolation = 3/' \
    launch/so101.toml > "$tmp/fifo.toml"
sed -e 's/^realtime = true.*/realtime = false/' "$tmp/fifo.toml" > "$tmp/plain.toml"
sed -i "s|path = \"../models/so101-sim-pick\"|path = \"$PWD/models/so101-sim-pick\"|" "$tmp/fifo.toml" "$tmp/plain.toml"
grep -q '^interpolation = 3' "$tmp/fifo.toml" || { echo "lateness.sh: could not set 100 Hz in the config" >&2; exit 1; }

start_load() {
  case "$1" in
    quiet) ;;
    busy|busy-no-rt) for _ in 1 2; do "$PY" -c 'while True: pass' & loads+=($!); done ;;
    memory|memory-no-rt) "$PY" tests/bench/memory_hog.py --gb "$HOG_GB" & loads+=($!) ;;
  esac
  sleep 1
}
stop_load() { for p in "${loads[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done; loads=(); }

printf '%-14s %10s %10s %10s %8s %6s | %s\n' setting p50_us p99_us max_us misses fifo "cyclictest (same time, FIFO 80, 10 ms): p50/p99/max us"
for s in ${SETTINGS:-quiet busy busy-no-rt memory memory-no-rt}; do
  cfg="$tmp/fifo.toml"; case "$s" in *-no-rt) cfg="$tmp/plain.toml" ;; esac
  start_load "$s"
  ct=""
  if command -v cyclictest >/dev/null; then
    cyclictest -q -m -p 80 -i 10000 -D 40 -h 100000 > "$tmp/ct-$s.txt" 2>&1 & ct=$!
  fi
  "$BIN" eval --policy models/so101-sim-pick --bus --no-expert --episodes "$EPISODES" --seed 0 \
    --config "$cfg" --json "runs/lateness-$s.json" > "$tmp/eval-$s.log" 2>&1 || { cat "$tmp/eval-$s.log"; exit 1; }
  [ -n "$ct" ] && { kill -INT "$ct" 2>/dev/null || true; wait "$ct" 2>/dev/null || true; }
  stop_load
  "$PY" - "$s" "runs/lateness-$s.json" "$tmp/ct-$s.txt" <<'PYEOF'
import json, sys
s, path, ct = sys.argv[1:4]
r = json.load(open(path))
l = r["lateness_us"]
cts = "-"
try:
    hist = {}
    for line in open(ct):
        if line[:1].isdigit():
            us, n = line.split()[:2]
            if int(n):
                hist[int(us)] = int(n)
        elif line.startswith("# Max Latencies"):
            mx = int(line.split()[-1])
    tot = sum(hist.values())
    def q(p):
        c = 0
        for us in sorted(hist):
            c += hist[us]
            if c >= p * tot:
                return us
    cts = f"{q(0.5)}/{q(0.99)}/{mx} (n={tot})"
except Exception as e:
    cts = f"- ({e.__class__.__name__})"
print(f"{s:<14} {l['p50_us']:>10.0f} {l['p99_us']:>10.0f} {l['max_us']:>10.0f} {r['deadline_misses']:>8} {str(r['realtime']['sched_fifo']):>6} | {cts}")
PYEOF
done
