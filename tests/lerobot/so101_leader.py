#!/usr/bin/env python3
"""LeRobot 0.6.1's own SO101Leader (its FeetechMotorsBus on scservo_sdk) on a
serial port whose calibration file exists: connect (no calibration prompt when
file and EEPROM agree), `get_action()` a few times, disconnect. Prints one JSON
line: {"is_calibrated": bool, "actions": [{motor.pos: repr(value)}...]}
(values as repr() strings: exact f64 round trips). LeRobot's logs go to stderr.

    so101_leader.py --port /dev/pts/N --calibration-dir DIR --id leader
"""
import argparse
import contextlib
import json
import sys
from pathlib import Path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", required=True)
    p.add_argument("--calibration-dir", required=True)
    p.add_argument("--id", default="leader")
    p.add_argument("--actions", type=int, default=3)
    a = p.parse_args()
    from lerobot.teleoperators.so_leader import SO101Leader, SO101LeaderConfig

    leader = SO101Leader(SO101LeaderConfig(port=a.port, id=a.id, calibration_dir=Path(a.calibration_dir)))
    with contextlib.redirect_stdout(sys.stderr):
        leader.connect(calibrate=False)
    acts = [leader.get_action() for _ in range(a.actions)]
    calibrated = leader.is_calibrated
    leader.disconnect()
    print(json.dumps({"is_calibrated": calibrated,
                      "actions": [{k: repr(float(v)) for k, v in x.items()} for x in acts]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
