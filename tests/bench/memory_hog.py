#!/usr/bin/env python3
"""A memory-heavy neighbour, as a training job is beside the robot's control
loop: in a loop, allocate GB gigabytes, write one byte per 4 KiB page (every
page faulted in and zeroed by the kernel), free it. Runs until killed; prints
the rate it touched memory at on exit (SIGTERM).

    memory_hog.py --gb 6
"""
import argparse
import mmap
import signal
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gb", type=float, default=6.0)
    a = p.parse_args()
    n = int(a.gb * 2**30)
    touched, t0 = 0, time.monotonic()

    def done(*_):
        dt = time.monotonic() - t0
        print(f"memory_hog: touched {touched / 2**30:.1f} GiB in {dt:.1f} s ({touched / 2**30 / max(dt, 1e-9):.2f} GiB/s)", file=sys.stderr)
        sys.exit(0)

    signal.signal(signal.SIGTERM, done)
    signal.signal(signal.SIGINT, done)
    page = mmap.PAGESIZE
    while True:
        m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mv = memoryview(m)
        for off in range(0, n, page * 256):  # 1 MiB strides, one byte per page within
            end = min(off + page * 256, n)
            mv[off:end:page] = b"\x01" * len(range(off, end, page))
        touched += n
        mv.release()
        m.close()


if __name__ == "__main__":
    main()
