#!/usr/bin/env python3
"""Zero the device code of a shared library's CUDA fat binaries for every GPU
architecture but the ones kept, so the library compresses to what the target
GPU needs (used to carry ONNX Runtime's CUDA provider, 271 MB, to a GPU
machine whose transfers are limited; see README, "GPU").

Each fat binary in the file (magic 0xBA55ED50) holds entries with a header
(kind, header size, padded payload size, ..., SM version at byte 0x1c) and a
payload (an ELF cubin, often zstd-compressed, or PTX). Entries of other
architectures keep their headers and sizes; only their payload bytes become
zero. The CUDA driver loads the entry of the device's architecture and never
reads the others. Offsets, sizes and every other byte are unchanged.

    trim_fatbin.py IN.so OUT.so --keep 90 [--keep 89 ...]
"""
import argparse
import struct
import sys

MAGIC = struct.pack("<I", 0xBA55ED50)


def trim(data: bytearray, keep: set) -> dict:
    pos, stats = 0, {"fatbins": 0, "kept": 0, "zeroed": 0, "zeroed_bytes": 0}
    while True:
        i = data.find(MAGIC, pos)
        if i < 0:
            return stats
        _, version, hsize, fsize = struct.unpack_from("<IHHQ", data, i)
        if version != 1 or hsize != 16 or i + hsize + fsize > len(data):
            pos = i + 4
            continue
        stats["fatbins"] += 1
        off, end = i + hsize, i + hsize + fsize
        while off < end:
            kind, _, ehs, padded = struct.unpack_from("<HHIQ", data, off)
            sm = struct.unpack_from("<I", data, off + 0x1C)[0]
            if ehs < 0x20 or off + ehs + padded > end:
                raise SystemExit(f"malformed fat binary entry at byte {off}")
            if sm in keep:
                stats["kept"] += 1
            else:
                data[off + ehs: off + ehs + padded] = bytes(padded)
                stats["zeroed"] += 1
                stats["zeroed_bytes"] += padded
            off += ehs + padded
        pos = end


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--keep", type=int, action="append", required=True, help="SM version to keep (90 = H100/H200)")
    a = p.parse_args()
    data = bytearray(open(a.src, "rb").read())
    s = trim(data, set(a.keep))
    open(a.dst, "wb").write(data)
    print(f"{a.src}: {s['fatbins']} fat binaries, kept {s['kept']} entries (sm {sorted(a.keep)}), "
          f"zeroed {s['zeroed']} ({s['zeroed_bytes'] / 2**20:.1f} MiB) -> {a.dst}")


if __name__ == "__main__":
    sys.exit(main())
