#!/usr/bin/env python3
"""LeRobot 0.6.1's SO101Follower control tick on a serial port: the time of
`get_observation()` + `send_action()` (the present position sent back as the
goal), per tick. Used by `maniflow bus-bench` against the same emulator as our
driver. Prints one JSON line: {"tick_us": [...]} (LeRobot's own logs go to stderr).

    bench_bus.py --port /dev/pts/N --calibration-dir DIR --id bench --ticks 1000
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", required=True)
    p.add_argument("--calibration-dir", required=True)
    p.add_argument("--id", default="bench")
    p.add_argument("--ticks", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=50)
    a = p.parse_args()
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    robot = SO101Follower(SO101FollowerConfig(port=a.port, id=a.id, calibration_dir=Path(a.calibration_dir)))
    with contextlib.redirect_stdout(sys.stderr):
        robot.connect(calibrate=False)
    ticks = []
    for k in range(a.warmup + a.ticks):
        t0 = time.perf_counter()
        obs = robot.get_observation()
        robot.send_action({k2: v for k2, v in obs.items() if k2.endswith(".pos")})
        dt = time.perf_counter() - t0
        if k >= a.warmup:
            ticks.append(dt * 1e6)
    robot.disconnect()
    print(json.dumps({"tick_us": ticks}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
