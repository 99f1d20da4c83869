#!/usr/bin/env python3
"""LeRobot 0.6.1's own SO101Follower (its FeetechMotorsBus on scservo_sdk) on a
serial port: connect (interactive calibration answered on stdin when there is
no calibration file), get_observation, send_action, disconnect. Prints one
JSON line per step on stdout (the test reads them); LeRobot's own prompts go
to stderr.

    so101_follower.py --port /dev/pts/N --calibration-dir DIR --id emu [--action JSON]
"""
import argparse
import contextlib
import json
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", required=True)
    p.add_argument("--calibration-dir", required=True)
    p.add_argument("--id", default="emu")
    p.add_argument("--action", default=None, help="JSON {motor.pos: value} sent once")
    p.add_argument("--observations", type=int, default=5)
    a = p.parse_args()
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    from pathlib import Path

    robot = SO101Follower(SO101FollowerConfig(port=a.port, id=a.id, calibration_dir=Path(a.calibration_dir)))
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        robot.connect(calibrate=True)
    print(json.dumps({"step": "connected", "is_calibrated": robot.is_calibrated,
                      "calibration_file": str(robot.calibration_fpath)}), file=out, flush=True)
    obs = [robot.get_observation() for _ in range(a.observations)]
    # Values as repr() strings: exact f64 round trips (JSON numbers may be parsed inexactly).
    print(json.dumps({"step": "observations", "values": [{k: repr(float(v)) for k, v in o.items()} for o in obs]}),
          file=out, flush=True)
    if a.action:
        sent = robot.send_action(json.loads(a.action))
        print(json.dumps({"step": "action", "sent": {k: repr(float(v)) for k, v in sent.items()}}), file=out, flush=True)
    robot.disconnect()
    print(json.dumps({"step": "disconnected"}), file=out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
