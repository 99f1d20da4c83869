#!/usr/bin/env python3
"""Copy a LeRobot checkpoint directory with one tensor removed from model.safetensors
(a corrupt / mismatched checkpoint for the exporter's negative test).

    .venv/bin/python tests/lerobot/drop_tensor.py SRC_DIR DST_DIR KEY
"""

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main(argv=None) -> int:
    src, dst, key = (argv or sys.argv[1:])[:3]
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy2(f, dst / f.name)
    t = load_file(str(src / "model.safetensors"))
    if key not in t:
        print(f"drop_tensor: {key} is not in {src / 'model.safetensors'}", file=sys.stderr)
        return 1
    del t[key]
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    print(f"drop_tensor: {dst / 'model.safetensors'} without {key} ({len(t)} tensors left)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
