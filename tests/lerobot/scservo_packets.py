#!/usr/bin/env python3
"""The bytes `scservo_sdk` (feetech-servo-sdk 1.0.0, what LeRobot uses) puts on
the wire for the five instructions, captured on the master side of a pty (no
servo answers, so each call times out after sending). Prints one JSON object
{name: "HEX BYTES"}."""
import json
import os
import pty
import sys
import time
import termios
import tty

import scservo_sdk as scs


def main():
    master, slave = pty.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    port = scs.PortHandler(name)
    assert port.openPort() and port.setBaudRate(1_000_000)
    ph = scs.PacketHandler(0)

    def capture(f):
        termios.tcflush(master, termios.TCIFLUSH)
        port.is_using = False  # a sync read sent without its receive leaves the port "busy"
        f()
        time.sleep(0.05)
        data = b""
        while True:
            try:
                os.set_blocking(master, False)
                chunk = os.read(master, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return " ".join(f"{b:02X}" for b in data)

    out = {}
    out["ping_1"] = capture(lambda: ph.ping(port, 1))
    out["read_3_56_2"] = capture(lambda: ph.read2ByteTxRx(port, 3, 56))
    out["write_5_40_1"] = capture(lambda: ph.write1ByteTxRx(port, 5, 40, 1))
    out["write_2_31_0A54"] = capture(lambda: ph.write2ByteTxRx(port, 2, 31, 0x0A54))

    def sync_read():
        g = scs.GroupSyncRead(port, ph, 56, 2)
        for i in range(1, 7):
            g.addParam(i)
        g.txPacket()

    out["sync_read_56_2_1to6"] = capture(sync_read)

    def sync_write():
        g = scs.GroupSyncWrite(port, ph, 42, 2)
        for i, v in zip(range(1, 7), [2048, 100, 4095, 0, 1234, 3000]):
            g.addParam(i, [v & 0xFF, v >> 8])
        g.txPacket()

    out["sync_write_42_2"] = capture(sync_write)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
