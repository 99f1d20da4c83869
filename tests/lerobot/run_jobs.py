#!/usr/bin/env python3
"""Run several of these command-line scripts in ONE interpreter, one after the other.

    .venv/bin/python tests/lerobot/run_jobs.py JOBS.json

Importing torch + LeRobot costs about 10 s of CPU here, more than most of the jobs
themselves; the Rust tests (runtime/tests/act_lerobot.rs) pay it once per test
instead of once per script. Each job is run exactly as `python SCRIPT ARGV...`
would run it (`runpy.run_path(..., run_name="__main__")` with `sys.argv` set), its
stdout and stderr going to its own log file; `sys.exit(code)` is its exit code, an
uncaught exception is exit code 1 with the traceback in the log.

JOBS.json: [{"name": "...", "script": "path.py", "argv": [...], "log": "path.log"}, ...]
Prints one JSON line per job: {"name", "rc", "seconds"}; exits 0 (the caller
checks each job's rc, some jobs are expected to fail).
"""

from __future__ import annotations

import contextlib
import json
import runpy
import sys
import time
import traceback


def run(job: dict) -> int:
    argv0 = sys.argv
    sys.argv = [job["script"]] + [str(a) for a in job["argv"]]
    try:
        with open(job["log"], "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            try:
                runpy.run_path(job["script"], run_name="__main__")
                return 0
            except SystemExit as e:
                if e.code is None:
                    return 0
                if isinstance(e.code, int):
                    return e.code
                print(e.code, file=sys.stderr)
                return 1
            except BaseException:  # noqa: BLE001 - reported in the job's log
                traceback.print_exc()
                return 1
    finally:
        sys.argv = argv0


def main() -> int:
    jobs = json.load(open(sys.argv[1]))
    import torch  # noqa: F401  (paid once, here)
    for job in jobs:
        t0 = time.time()
        rc = run(job)
        print(json.dumps({"name": job["name"], "rc": rc, "seconds": round(time.time() - t0, 2)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
