#!/usr/bin/env python3
"""Fetch the official ROS 2 message descriptions (share/<pkg>/msg/<T>.json,
with their REP-2016 `type_hashes`) from the PyPI message wheels of Jazzy and
Kilted into .cache/ros-msgs/<distro>/<pkg>/msg/<T>.json.

Only the JSON files are kept (about 3 MB of wheels, cached by pip). The
bridge's type-hash test compares every hash we compute with these files.
"""
import pathlib
import subprocess
import sys
import tempfile
import zipfile

WHEELS = {
    "jazzy": ["ros-sensor-msgs==5.3.6", "ros-std-msgs==5.3.6", "ros-trajectory-msgs==5.3.6",
              "ros-builtin-interfaces==2.0.3", "ros-diagnostic-msgs==5.3.6"],
    "kilted": ["ros-sensor-msgs==5.5.1", "ros-std-msgs==5.5.1", "ros-trajectory-msgs==5.5.1",
               "ros-builtin-interfaces==2.3.0", "ros-diagnostic-msgs==5.5.1"],
}


def main(out_root: pathlib.Path) -> int:
    for distro, reqs in WHEELS.items():
        out = out_root / distro
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "-d", tmp, *reqs], check=True)
            wheels = sorted(pathlib.Path(tmp).glob("*.whl"))
            if len(wheels) != len(reqs):
                print(f"ros_msg_json: expected {len(reqs)} wheels for {distro}, got {len(wheels)}",
                      file=sys.stderr)
                return 1
            n = 0
            for whl in wheels:
                with zipfile.ZipFile(whl) as z:
                    for name in z.namelist():
                        parts = name.split("/")
                        if name.endswith(".json") and "share" in parts and parts[-2] == "msg":
                            rel = pathlib.Path(*parts[parts.index("share") + 1:])
                            dst = out / rel
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            dst.write_bytes(z.read(name))
                            n += 1
        print(f"ros_msg_json: {n} message descriptions for {distro} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/ros-msgs")))
