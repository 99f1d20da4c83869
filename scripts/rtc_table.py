#!/usr/bin/env python3
"""The issue-17 table from `maniflow eval --json` files: one row per file.

usage: scripts/rtc_table.py LABEL=FILE.json [LABEL=FILE.json ...]
"""
import json
import sys


def row(label, path):
    r = json.load(open(path))
    s = r["smoothness"]["overall"]
    c = r["chunks"]
    produced = c.get("produced", 0)
    rejected = s["chunks_rejected"]
    tts = r.get("mean_time_to_success_s")
    sf = r["safety"]
    return (
        f"| {label} | {r['steps']} | {r['seed']} | {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} "
        f"| {tts:.2f} s |" if tts is not None else f"| {label} | {r['steps']} | {r['seed']} | {r['successes']}/{r['episodes']} = {r['success_rate']:.2f} | - |"
    ) + (
        f" {rejected}/{produced} = {100.0 * rejected / max(produced, 1):.1f} %"
        f" (jump {s['rejected_first_jump']}, vel {s['rejected_velocity']}, jerk {s['rejected_jerk']})"
        f" | {s['seam_jump_deg']['p99']:.2f} deg | {s['jerk_mean_deg_s3']:.0f} deg/s^3"
        f" | {s['delay_mean_ticks']:.2f} / {s['delay_max_ticks']} | {s['prefix_rows_mean']:.2f}"
        f" | first-jump joints {sf.get('first_jump_by_joint', [])[:6]} |"
    )


def main():
    print("| policy / executor | N | seed | success | time to success | chunks rejected (by check) "
          "| seam jump p99 | mean jerk | delay mean / max (ticks) | prefix rows | where |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        print(row(label, path))


if __name__ == "__main__":
    main()
