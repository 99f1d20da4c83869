#!/usr/bin/env python3
"""Make the installed lerobot 0.6.1 importable on Python 3.11 (idempotent).

lerobot 0.6.1 declares Requires-Python >= 3.12, but the only 3.12-only code in
the package is PEP 695 syntax in five files (six type aliases, two generic
classes, one generic function). `make bootstrap` installs the wheel
with `--no-deps --ignore-requires-python` and runs this script, which rewrites
exactly those spots into their 3.11 equivalents (TypeVar + Generic, plain type
aliases); the logic is unchanged and line numbers are kept (the extra
definitions are joined onto an existing line with `;`). Every rewritten line
carries the marker `# maniflow-py311`.

For each spot: the original text present -> rewrite; the rewritten text present
-> already done; neither -> fail loudly (a different lerobot version). Then the
whole package is byte-compiled (`compileall`), which fails on any remaining
3.12-only syntax.

Usage: python tests/lerobot/patch_py311.py [--check]
  --check: change nothing, exit 1 if a spot is not patched yet.
"""

import compileall
import importlib.util
import sys
from pathlib import Path

EXPECTED_VERSION = "0.6.1"
M = "  # maniflow-py311"

# (file relative to the package, [(original line, replacement line)])
SPOTS = [
    (
        "processor/pipeline.py",
        [
            (
                "from typing import Any, TypedDict, TypeVar, cast\n",
                "from typing import Any, Generic, TypedDict, TypeVar, cast" + M + "\n",
            ),
            (
                "class DataProcessorPipeline[TInput, TOutput](HubMixin):\n",
                "class DataProcessorPipeline(HubMixin, Generic[TInput, TOutput]):" + M + "\n",
            ),
        ],
    ),
    (
        "motors/motors_bus.py",
        [
            ("type NameOrID = str | int\n", "NameOrID = str | int" + M + "\n"),
            ("type Value = int | float\n", "Value = int | float" + M + "\n"),
        ],
    ),
    (
        "datasets/streaming_dataset.py",
        [
            (
                "from typing import Literal\n",
                'from typing import Generic, Literal, TypeVar; T = TypeVar("T")' + M + "\n",
            ),
            ("class Backtrackable[T]:\n", "class Backtrackable(Generic[T]):" + M + "\n"),
        ],
    ),
    (
        "datasets/aggregate.py",
        [
            ("type FeatureDict = dict[str, dict[str, Any]]\n", "FeatureDict = dict[str, dict[str, Any]]" + M + "\n"),
            ("type ChunkFile = tuple[int, int]\n", "ChunkFile = tuple[int, int]" + M + "\n"),
            ("type VideoIndexState = dict[str, VideoIndex]\n", "VideoIndexState = dict[str, VideoIndex]" + M + "\n"),
        ],
    ),
    (
        "utils/io_utils.py",
        [
            ("from typing import Any\n", "from typing import Any, TypeVar" + M + "\n"),
            (
                'JsonLike = str | int | float | bool | None | list["JsonLike"] | dict[str, "JsonLike"] | tuple["JsonLike", ...]\n',
                'JsonLike = str | int | float | bool | None | list["JsonLike"] | dict[str, "JsonLike"] | tuple["JsonLike", ...]'
                '; T = TypeVar("T", bound=JsonLike)' + M + "\n",
            ),
            (
                "def deserialize_json_into_object[T: JsonLike](fpath: Path, obj: T) -> T:\n",
                "def deserialize_json_into_object(fpath: Path, obj: T) -> T:" + M + "\n",
            ),
        ],
    ),
]


def package_dir() -> Path:
    spec = importlib.util.find_spec("lerobot")  # imports nothing of lerobot itself
    if spec is None or not spec.submodule_search_locations:
        sys.exit("patch_py311: lerobot is not installed in this interpreter")
    root = Path(list(spec.submodule_search_locations)[0])
    dist = list(root.parent.glob("lerobot-*.dist-info"))
    versions = [d.name[len("lerobot-") : -len(".dist-info")] for d in dist]
    if versions != [EXPECTED_VERSION]:
        sys.exit(f"patch_py311: expected lerobot {EXPECTED_VERSION} next to {root}, found {versions}")
    return root


def main() -> int:
    check = "--check" in sys.argv[1:]
    root = package_dir()
    todo, done = 0, 0
    for rel, edits in SPOTS:
        path = root / rel
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        changed = False
        for old, new in edits:
            n_old, n_new = lines.count(old), lines.count(new)
            if n_new == 1 and n_old == 0:
                done += 1
            elif n_old == 1 and n_new == 0:
                todo += 1
                lines[lines.index(old)] = new
                changed = True
            else:
                sys.exit(
                    f"patch_py311: {path}: expected exactly one of\n  {old!r} (original) or\n  {new!r} (patched)\n"
                    f"found {n_old} and {n_new}: not lerobot {EXPECTED_VERSION} as released?"
                )
        if changed and not check:
            path.write_text("".join(lines), encoding="utf-8")
            print(f"patch_py311: patched {path}")
    if check:
        print(f"patch_py311: {done} spots patched, {todo} not")
        return 1 if todo else 0
    if not compileall.compile_dir(str(root), quiet=1, force=False):
        sys.exit(f"patch_py311: {root} still does not byte-compile on Python {sys.version.split()[0]}")
    print(f"patch_py311: lerobot {EXPECTED_VERSION} at {root}: {todo} spots rewritten, {done} already done; compiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
