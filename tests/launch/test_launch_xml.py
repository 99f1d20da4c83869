"""Checks of the ROS 2 package in launch/ without a ROS 2 install.

- policy.launch is valid against launch/schema/launch.xsd (the launch_xml +
  launch_ros grammar, see the schema's header) and the schema rejects the
  mistakes it is there for;
- every $(var x) is declared, every argument is used;
- the launch file is evaluated here the way `ros2 launch` evaluates it
  (substitutions, eval conditions, argument choices, splitting of the args
  attribute into argv): for each combination of the optional arguments exactly
  one node runs, with `maniflow run --config ... --policy ... --transport ...`
  and no empty argv element;
- package.xml follows the package format 3 rules that can be checked by hand;
- CMakeLists.txt configures and installs with a stand-in ament_cmake (needs
  `cmake` on PATH, else skipped);
- the zenoh configs load in zenoh (needs `eclipse-zenoh`, else skipped).

Run with pytest, or as `python tests/launch/test_launch_xml.py`, which prints
"N passed, N failed, N skipped".
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "launch"
LAUNCH = PKG / "policy.launch"
XSD = PKG / "schema" / "launch.xsd"
PACKAGE_XML = PKG / "package.xml"
CMAKELISTS = PKG / "CMakeLists.txt"
FAKE_SHARE = "/opt/ros/jazzy/share/maniflow"


class Skip(Exception):
    """Raised by a test whose optional tool or package is missing."""


_PLAIN = False  # set by main(): run without pytest


def skip(msg: str):
    if _PLAIN:
        raise Skip(msg)
    import pytest  # noqa: PLC0415

    pytest.skip(msg)


def xmlschema_or_skip():
    try:
        import xmlschema  # noqa: PLC0415
    except ImportError:
        skip("xmlschema not installed (pip install -r tests/requirements.txt)")
    return xmlschema


# --- a small reading of the launch substitution grammar ----------------------
# A template is a list of parts: str (text) or Sub(name, [template, ...]).


class Sub:
    def __init__(self, name: str, args: list[list]):
        self.name, self.args = name, args

    def __repr__(self):
        return f"$({self.name} {self.args})"


def parse_template(s: str) -> list:
    parts, i = _parse_parts(s, 0, None)
    assert i == len(s), f"trailing text at {i} in {s!r}"
    return parts


def _parse_parts(s: str, i: int, quote: str | None) -> tuple[list, int]:
    """Text and substitutions up to the closing quote (or end of string)."""
    parts: list = []
    buf = ""
    while i < len(s):
        c = s[i]
        if quote is not None and c == "\\" and i + 1 < len(s) and s[i + 1] in (quote, "\\", "$"):
            buf += s[i + 1]
            i += 2
            continue
        if quote is not None and c == quote:
            break
        if s.startswith("$(", i):
            if buf:
                parts.append(buf)
                buf = ""
            sub, i = _parse_sub(s, i)
            parts.append(sub)
            continue
        buf += c
        i += 1
    if buf:
        parts.append(buf)
    return parts, i


def _parse_sub(s: str, i: int) -> tuple[Sub, int]:
    m = re.compile(r"\$\(([A-Za-z][A-Za-z0-9_-]*)").match(s, i)
    assert m, f"bad substitution at {i} in {s!r}"
    name, i = m.group(1), m.end()
    args: list[list] = []
    while True:
        if s[i] == ")":
            return Sub(name, args), i + 1
        assert s[i] == " ", f"expected ' ' or ')' at {i} in {s!r}"
        i += 1
        if s[i] in "'\"":
            q = s[i]
            arg, i = _parse_parts(s, i + 1, q)
            assert s[i] == q, f"unclosed {q} in {s!r}"
            i += 1
        else:
            arg, buf = [], ""
            while s[i] not in " )":
                if s.startswith("$(", i):
                    if buf:
                        arg.append(buf)
                        buf = ""
                    sub, i = _parse_sub(s, i)
                    arg.append(sub)
                else:
                    buf += s[i]
                    i += 1
            if buf:
                arg.append(buf)
        args.append(arg)


def subs_in(template: list):
    for p in template:
        if isinstance(p, Sub):
            yield p
            for a in p.args:
                yield from subs_in(a)


class LaunchError(Exception):
    pass


def evaluate(template: list, configs: dict[str, str]) -> str:
    return "".join(_eval_part(p, configs) for p in template)


def _eval_part(p, configs: dict[str, str]) -> str:
    if isinstance(p, str):
        return p
    args = [evaluate(a, configs) for a in p.args]
    if p.name == "var":
        if args[0] not in configs:
            raise LaunchError(f"launch configuration '{args[0]}' does not exist")
        return configs[args[0]]
    if p.name == "find-pkg-share":
        assert args == ["maniflow"], args
        return FAKE_SHARE
    if p.name == "env":
        return os.environ.get(args[0], args[1] if len(args) > 1 else "")
    if p.name == "eval":
        # launch's PythonExpression: eval with the math module's names, result as text.
        return str(eval(args[0], {"__builtins__": {}}, dict(vars(math))))  # noqa: S307
    raise AssertionError(f"substitution $({p.name}) is not modelled by this test")


def condition_true(text: str) -> bool:
    v = text.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise LaunchError(f"condition {text!r} is neither true nor false")


def split_cmdline(template: list) -> list[list]:
    """The args attribute as argv elements, each a template, as launch splits it:
    text is split on whitespace, a substitution's result stays one element."""
    result: list[list] = []
    arg: list = []
    for p in template:
        if not isinstance(p, str):
            arg.append(p)
            continue
        tokens = shlex.split(p)
        if not tokens:
            result.append(arg)
            arg = []
            continue
        if p[0].isspace() and arg:
            result.append(arg)
            arg = []
        arg.append(tokens[0])
        if len(tokens) > 1:
            result.append(arg)
            arg = [tokens[-1]]
        if len(tokens) > 2:
            result.extend([t] for t in tokens[1:-1])
        if p[-1].isspace():
            result.append(arg)
            arg = []
    if arg:
        result.append(arg)
    return result


def run_launch(given: dict[str, str]) -> list[dict]:
    """Evaluate policy.launch with `ros2 launch` style arguments; return the nodes that run."""
    root = ET.parse(LAUNCH).getroot()
    configs: dict[str, str] = {}
    started = []
    for el in root:
        cond_ok = True
        if "if" in el.attrib:
            cond_ok = condition_true(evaluate(parse_template(el.get("if")), configs))
        if "unless" in el.attrib:
            cond_ok = cond_ok and not condition_true(
                evaluate(parse_template(el.get("unless")), configs))
        if not cond_ok:
            continue
        if el.tag == "arg":
            name = el.get("name")
            if name in given:
                value = given[name]
            elif "default" in el.attrib:
                value = evaluate(parse_template(el.get("default")), configs)
            else:
                raise LaunchError(f"missing required argument '{name}'")
            choices = [c.get("value") for c in el.findall("choice")]
            if choices and value not in choices:
                raise LaunchError(f"argument '{name}' = {value!r} is not one of {choices}")
            configs[name] = value
        elif el.tag == "let":
            configs[el.get("name")] = evaluate(parse_template(el.get("value")), configs)
        elif el.tag == "node":
            argv = [evaluate(a, configs) for a in split_cmdline(parse_template(el.get("args", "")))]
            started.append({
                "pkg": el.get("pkg"),
                "exec": el.get("exec"),
                "name": evaluate(parse_template(el.get("name")), configs),
                "namespace": evaluate(parse_template(el.get("namespace", "")), configs),
                "argv": argv,
            })
        else:
            raise AssertionError(f"<{el.tag}> is not modelled by this test")
    return started


# --- the launch file -----------------------------------------------------------


def test_launch_file_is_valid_against_xsd():
    xmlschema = xmlschema_or_skip()
    schema = xmlschema.XMLSchema10(str(XSD))
    errors = [str(e.reason) + " at " + str(e.path) for e in schema.iter_errors(str(LAUNCH))]
    assert not errors, errors


def test_xsd_rejects_the_design_article_spelling_and_unknown_attributes():
    """The mistakes the schema is there to catch: node attributes spelled as in
    the ROS 2 design article (package/executable/ns), a typo, a bad output."""
    xmlschema = xmlschema_or_skip()
    schema = xmlschema.XMLSchema10(str(XSD))
    good = LAUNCH.read_text()
    assert schema.is_valid(good)
    bad = {
        "package attribute": good.replace('pkg="maniflow"', 'package="maniflow"', 1),
        "executable attribute": good.replace('exec="maniflow"', 'executable="maniflow"', 1),
        "ns attribute": good.replace('namespace="$(var namespace)"', 'ns="$(var namespace)"', 1),
        "unknown attribute": good.replace('output="screen"', 'output="screen" respwan="true"', 1),
        "output mode": good.replace('output="screen"', 'output="console"', 1),
        "arg without name": good.replace('<arg name="duration"', "<arg", 1),
        "unknown tag": good.replace("</launch>", "<nodes/></launch>", 1),
    }
    for what, text in bad.items():
        assert text != good, what
        assert not schema.is_valid(text), f"schema accepted a launch file with a bad {what}"


def test_external_schema_if_given():
    """ROS2_LAUNCH_XSD=/path/to/schema.xsd validates against a schema of your choice too."""
    path = os.environ.get("ROS2_LAUNCH_XSD")
    if not path:
        skip("ROS2_LAUNCH_XSD not set (optional: a second schema to validate against)")
    xmlschema = xmlschema_or_skip()
    schema = xmlschema.XMLSchema11(path) if "vc:minVersion=\"1.1\"" in Path(path).read_text() \
        else xmlschema.XMLSchema10(path)
    errors = [str(e.reason) + " at " + str(e.path) for e in schema.iter_errors(str(LAUNCH))]
    assert not errors, errors


def test_every_var_is_declared_and_every_arg_used():
    root = ET.parse(LAUNCH).getroot()
    declared: list[str] = []
    used: set[str] = set()
    for el in root.iter():
        for attr, value in el.attrib.items():
            if el.tag == "arg" and attr == "description":
                assert "$(" not in value, f"arg {el.get('name')}: description is not substituted"
                continue
            for sub in subs_in(parse_template(value)):
                if sub.name == "var":
                    assert len(sub.args) == 1 and all(isinstance(p, str) for p in sub.args[0]), sub
                    name = "".join(sub.args[0])
                    assert name in declared, f"$(var {name}) in <{el.tag} {attr}> before any <arg>/<let> declares it"
                    used.add(name)
        if el.tag == "arg":
            declared.append(el.get("name"))
        elif el.tag == "let":
            declared.append(el.get("name"))
    assert len(declared) == len(set(declared)), declared
    assert set(declared) == used, f"declared but never used: {set(declared) - used}"
    assert {"policy", "config", "transport", "namespace", "duration", "stats_json"} <= set(declared)


def test_node_runs_maniflow_run():
    root = ET.parse(LAUNCH).getroot()
    nodes = root.findall("node")
    assert nodes
    for n in nodes:
        assert n.get("pkg") == "maniflow" and n.get("exec") == "maniflow", n.attrib
        assert n.get("name") == "maniflow_policy", n.attrib
        assert n.get("namespace") == "$(var namespace)", n.attrib
        assert n.get("output") == "screen", n.attrib
        args = n.get("args")
        assert args.startswith("run --config $(var config) --policy $(var policy) "
                               "--transport $(var transport)"), args


def test_exactly_one_node_per_combination_with_the_right_argv():
    share = FAKE_SHARE
    base = ["run", "--config", f"{share}/so101.toml", "--policy", "/pol", "--transport", "ros2-dds"]
    cases = [
        ({}, base),
        ({"duration": "10s"}, base + ["--duration", "10s"]),
        ({"stats_json": "/tmp/s.json"}, base + ["--stats-json", "/tmp/s.json"]),
        ({"duration": "2min", "stats_json": "/tmp/s.json"},
         base + ["--duration", "2min", "--stats-json", "/tmp/s.json"]),
    ]
    for extra, want in cases:
        nodes = run_launch({"policy": "/pol", **extra})
        assert len(nodes) == 1, (extra, nodes)
        assert nodes[0]["argv"] == want, (extra, nodes[0]["argv"])
        assert "" not in nodes[0]["argv"]
        assert nodes[0]["namespace"] == ""
        assert nodes[0]["name"] == "maniflow_policy"


def test_arguments_pass_through():
    nodes = run_launch({
        "policy": "/home/robot/policies/pick cube",  # a space stays inside one argv element
        "config": "/etc/maniflow/so101.toml",
        "transport": "ros2-zenoh",
        "namespace": "so101",
    })
    assert len(nodes) == 1
    assert nodes[0]["argv"] == ["run", "--config", "/etc/maniflow/so101.toml",
                                "--policy", "/home/robot/policies/pick cube",
                                "--transport", "ros2-zenoh"]
    assert nodes[0]["namespace"] == "so101"


def test_policy_is_required_and_transport_checked():
    for given, msg in [({}, "missing required argument 'policy'"),
                       ({"policy": "/p", "transport": "dds"}, "is not one of")]:
        try:
            run_launch(given)
        except LaunchError as e:
            assert msg in str(e), e
        else:
            raise AssertionError(f"{given} was accepted")
    for t in ("ros2-dds", "ros2-zenoh", "zenoh"):
        assert run_launch({"policy": "/p", "transport": t})[0]["argv"][6] == t


def test_substitution_reading_matches_launch_examples():
    """The grammar reading above, on forms from the ROS 2 docs."""
    t = parse_template("$(eval '\\'$(var x)\\' == \\'val1\\'')")
    assert evaluate(t, {"x": "val1"}) == "True"
    assert evaluate(t, {"x": "other"}) == "False"
    assert [evaluate(a, {"a": "x y"}) for a in split_cmdline(parse_template("run --p $(var a) z"))] \
        == ["run", "--p", "x y", "z"]
    assert [evaluate(a, {"d": "/s"}) for a in split_cmdline(parse_template("$(var d)/f.toml -v"))] \
        == ["/s/f.toml", "-v"]


# --- package.xml ---------------------------------------------------------------


def test_package_xml_format_3():
    root = ET.parse(PACKAGE_XML).getroot()
    assert root.tag == "package" and root.get("format") == "3"
    tags = [el.tag for el in root]
    # Format 3: name, version, description, maintainer+, license+ come first, in order.
    head = [t for t in tags if t in ("name", "version", "description", "maintainer", "license")]
    assert head[:3] == ["name", "version", "description"], head
    assert head == sorted(head, key=["name", "version", "description", "maintainer",
                                     "license"].index), head
    for t in ("name", "version", "description"):
        assert tags.count(t) == 1, t
    name = root.findtext("name")
    assert name == "maniflow"
    # REP 149 package names: lowercase letters, digits, single underscores, a letter first.
    assert re.fullmatch(r"[a-z](?:_?[a-z0-9]+)*", name), name
    version = root.findtext("version")
    assert re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", version), version
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]
    assert version == ws["version"], (version, ws["version"])
    assert root.findtext("description").strip()
    maintainers = root.findall("maintainer")
    assert maintainers and all(m.get("email") and m.text.strip() for m in maintainers)
    licenses = [el.text.strip() for el in root.findall("license")]
    assert licenses == [part.strip() for part in ws["license"].split(" OR ")], licenses
    assert [el.text for el in root.findall("buildtool_depend")] == ["ament_cmake"]
    assert root.find("export/build_type").text == "ament_cmake"
    exec_deps = {el.text for el in root.findall("exec_depend")}
    assert {"launch", "launch_xml", "launch_ros", "ros2launch"} <= exec_deps, exec_deps
    known = {"name", "version", "description", "maintainer", "license", "url", "author",
             "buildtool_depend", "build_depend", "build_export_depend", "buildtool_export_depend",
             "exec_depend", "depend", "doc_depend", "test_depend", "conflict", "replace",
             "group_depend", "member_of_group", "export"}
    assert set(tags) <= known, set(tags) - known


# --- CMakeLists.txt ------------------------------------------------------------

_STUB_AMENT = """
set(ament_cmake_FOUND TRUE)
macro(ament_package)
  set(_AMENT_PACKAGE_CALLED TRUE)
endmacro()
"""


def _cmake(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cmake", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cmake_installs_with_a_stand_in_ament_cmake():
    if shutil.which("cmake") is None:
        skip("cmake not on PATH")
    text = CMAKELISTS.read_text()
    assert "ament_package()" in text and "find_package(ament_cmake REQUIRED)" in text
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stub = tmp / "stub" / "share" / "ament_cmake" / "cmake"
        stub.mkdir(parents=True)
        (stub / "ament_cmakeConfig.cmake").write_text(_STUB_AMENT)
        prefix_path = f"-DCMAKE_PREFIX_PATH={tmp / 'stub'}"

        # 1. No binary: a clear error that says how to build it.
        b1 = tmp / "b1"
        b1.mkdir()
        r = _cmake([str(PKG), prefix_path, f"-DMANIFLOW_BINARY={tmp / 'nope' / 'maniflow'}"], b1)
        assert r.returncode != 0
        assert "cargo build --release -p maniflow-runtime" in r.stderr, r.stderr

        # 2. A binary, an ONNX Runtime library and a policy package: installed where launch_ros looks.
        exe = tmp / "maniflow"
        exe.write_text("#!/bin/sh\necho maniflow \"$@\"\n")
        exe.chmod(0o755)
        ort = tmp / "libonnxruntime.so.1.31.1"
        ort.write_bytes(b"\x7fELF")
        pol = tmp / "policies" / "so101-pick"
        pol.mkdir(parents=True)
        (pol / "policy.toml").write_text("format_version = 1\n")
        (pol / "act.onnx").write_bytes(b"onnx")
        b2, inst = tmp / "b2", tmp / "install"
        b2.mkdir()
        r = _cmake([str(PKG), prefix_path, f"-DMANIFLOW_BINARY={exe}",
                    f"-DMANIFLOW_ORT_LIBRARY={ort}", f"-DMANIFLOW_POLICY_DIRS={pol}",
                    f"-DCMAKE_INSTALL_PREFIX={inst}"], b2)
        assert r.returncode == 0, r.stdout + r.stderr
        r = _cmake(["--install", "."], b2)
        assert r.returncode == 0, r.stdout + r.stderr
        lib = inst / "lib" / "maniflow"
        assert os.access(lib / "maniflow", os.X_OK)
        assert (lib / "libonnxruntime.so").read_bytes() == b"\x7fELF"
        assert (inst / "bin" / "maniflow").is_symlink()
        assert (inst / "bin" / "maniflow").resolve() == (lib / "maniflow").resolve()
        share = inst / "share" / "maniflow"
        assert (share / "policy.launch").read_text() == LAUNCH.read_text()
        for f in PKG.glob("*.json5"):
            assert (share / f.name).is_file(), f.name
        for f in PKG.glob("*.toml"):
            assert (share / f.name).is_file(), f.name
        assert (share / "models" / "so101-pick" / "policy.toml").is_file()
        assert (share / "models" / "so101-pick" / "act.onnx").is_file()

        # 3. A directory without policy.toml is refused.
        b3 = tmp / "b3"
        b3.mkdir()
        r = _cmake([str(PKG), prefix_path, f"-DMANIFLOW_BINARY={exe}",
                    f"-DMANIFLOW_POLICY_DIRS={tmp}"], b3)
        assert r.returncode != 0 and "not a policy package" in r.stderr, r.stderr


# --- zenoh configs -------------------------------------------------------------


def test_zenoh_configs_load():
    try:
        import zenoh  # noqa: PLC0415
    except ImportError:
        skip("eclipse-zenoh not installed (pip install -r tests/requirements.txt)")
    import json  # noqa: PLC0415

    def get(c, key):
        return json.loads(c.get_json(key))

    lo = zenoh.Config.from_file(str(PKG / "zenoh-loopback.json5"))
    assert get(lo, "mode") == "peer"
    assert get(lo, "listen/endpoints") == ["tcp/127.0.0.1:7447"]
    assert get(lo, "scouting/multicast/enabled") is False
    robot = zenoh.Config.from_file(str(PKG / "zenoh-robot.json5"))
    assert get(robot, "mode") == "peer"
    assert "tcp/127.0.0.1:7447" in get(robot, "connect/endpoints")
    assert get(robot, "scouting/multicast/enabled") is False


# --- plain runner ----------------------------------------------------------------


def main() -> int:
    global _PLAIN
    _PLAIN = True
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    passed = failed = skipped = 0
    for name, fn in tests:
        try:
            fn()
        except Skip as e:
            skipped += 1
            print(f"SKIP {name}: {e}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
