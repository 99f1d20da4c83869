#!/usr/bin/env python3
"""Real ROS 2 / zenoh peers for the transport interop tests (tests/tests/interop.rs).

Modes (all loopback only):
  zenoh      eclipse-zenoh session on our native keys  maniflow/<robot>/<topic>
  rmw-zenoh  eclipse-zenoh session on rmw_zenoh keys   <domain>/<ns>/<topic>/<type>/<hash>,
             every sample with the 33-byte attachment (seq i64, ts i64, 0x10 + 16-byte gid)
  dds        Cyclone DDS participant on rt/<ns>/<topic> (what a ROS 2 node on rmw_cyclonedds does)
  garbage    eclipse-zenoh: random bytes on every input key (native and rmw_zenoh)

The peer publishes a JointState (the six SO-101 joints, positions 1..6 * 0.1 +
seq * 1e-3) and a 4x3 rgb8 Image on joint_states and head/image_raw for
--seconds, listens on joint_command (std_msgs/Float64MultiArray), and prints one
JSON line per received command, then a summary line {"summary": ...}.
Messages are serialised by cyclonedds' own CDR (XCDR1 LE), never by us.
"""
import argparse
import json
import os
import random
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bridge", "tests", "golden"))
from make_golden import (  # noqa: E402  (the IdlStruct ROS types)
    Float64MultiArray,
    Header,
    Image,
    JointState,
    Time,
)
from cyclonedds.idl._support import Endianness  # noqa: E402

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
JS_HASH = "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e"
IMG_HASH = "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
# Official Jazzy/Kilted hash of std_msgs/msg/Float64MultiArray (share/std_msgs/msg/Float64MultiArray.json).
F64MA_HASH = "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f"


def out(obj):
    print(json.dumps(obj), flush=True)


def cdr(msg):
    return msg.serialize(endianness=Endianness.Little, use_version_2=False)


def sample_msgs(seq):
    now = time.time_ns()
    h = Header(stamp=Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000), frame_id="peer")
    js = JointState(header=h, name=list(JOINTS),
                    position=[0.1 * (i + 1) + seq * 1e-3 for i in range(6)], velocity=[], effort=[])
    img = Image(header=h, height=3, width=4, encoding="rgb8", is_bigendian=0, step=12,
                data=[(seq + i) % 256 for i in range(36)])
    return js, img


def zenoh_config(args):
    import zenoh
    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    if args.listen:
        c.insert_json5("listen/endpoints", json.dumps([args.listen]))
    else:
        c.insert_json5("listen/endpoints", "[]")
    if args.connect:
        c.insert_json5("connect/endpoints", json.dumps(args.connect.split(",")))
    return c


def run_zenoh(args, rmw):
    import zenoh
    from zenoh.ext import Int64, z_serialize
    received = []
    attach_ok = [0, 0]
    session = zenoh.open(zenoh_config(args))
    ns = args.robot
    if rmw:
        d = args.domain
        js_key = f"{d}/{ns}/joint_states/sensor_msgs::msg::dds_::JointState_/{JS_HASH}"
        img_key = f"{d}/{ns}/head/image_raw/sensor_msgs::msg::dds_::Image_/{IMG_HASH}"
        # the exact key an rmw_zenoh (Jazzy+) subscriber declares: type and hash, no wildcard
        cmd_key = f"{d}/{ns}/joint_command/std_msgs::msg::dds_::Float64MultiArray_/{F64MA_HASH}"
    else:
        js_key = f"maniflow/{ns}/joint_states"
        img_key = f"maniflow/{ns}/head/image_raw"
        cmd_key = f"maniflow/{ns}/joint_command"

    def on_cmd(sample):
        raw = bytes(sample.payload.to_bytes())
        att = sample.attachment
        if rmw:
            a = bytes(att.to_bytes()) if att is not None else b""
            attach_ok[0 if len(a) == 33 else 1] += 1
        try:
            m = Float64MultiArray.deserialize(raw)
            received.append(list(m.data))
            out({"cmd": list(m.data), "key": str(sample.key_expr)})
        except Exception as e:  # noqa: BLE001
            out({"cmd_error": str(e), "key": str(sample.key_expr)})

    sub = session.declare_subscriber(cmd_key, on_cmd)
    pub_js = session.declare_publisher(js_key)
    pub_img = session.declare_publisher(img_key)
    gid = bytes(range(16))
    out({"ready": True, "keys": [js_key, img_key, cmd_key]})
    t_end = time.time() + args.seconds
    seq = 0
    while time.time() < t_end:
        seq += 1
        js, img = sample_msgs(seq)
        if rmw:
            att = z_serialize((Int64(seq), Int64(time.time_ns()), gid))
            pub_js.put(cdr(js), attachment=att)
            pub_img.put(cdr(img), attachment=att)
        else:
            pub_js.put(cdr(js))
            pub_img.put(cdr(img))
        time.sleep(1.0 / args.rate)
    time.sleep(0.3)
    sub.undeclare()
    session.close()
    out({"summary": {"sent": seq, "commands": len(received), "attachment_33": attach_ok[0],
                     "attachment_other": attach_ok[1], "last_cmd": received[-1] if received else None}})


def run_graph(args):
    """rmw_zenoh graph watcher: every liveliness token under @ros2_lv/<domain>,
    and samples on the exact data keys given with --key (no wildcard: the way an
    rmw_zenoh Jazzy subscriber declares them)."""
    import zenoh
    session = zenoh.open(zenoh_config(args))
    counts = {k: 0 for k in args.key}
    bad_attachment = {k: 0 for k in args.key}

    def counter(key):
        def on_sample(sample):
            counts[key] += 1
            att = sample.attachment
            if att is None or len(bytes(att.to_bytes())) != 33:
                bad_attachment[key] += 1
        return on_sample

    subs = [session.declare_subscriber(k, counter(k)) for k in args.key]
    tokens = set()

    def on_token(sample):
        if sample.kind == zenoh.SampleKind.PUT:
            tokens.add(str(sample.key_expr))

    live = session.liveliness().declare_subscriber(f"@ros2_lv/{args.domain}/**", on_token, history=True)
    out({"ready": True})
    t_end = time.time() + args.seconds
    while time.time() < t_end:
        time.sleep(0.05)
    live.undeclare()
    for s in subs:
        s.undeclare()
    session.close()
    out({"summary": {"tokens": sorted(tokens), "counts": counts, "bad_attachment": bad_attachment}})


def run_garbage(args):
    import zenoh
    from zenoh.ext import Int64, z_serialize
    session = zenoh.open(zenoh_config(args))
    ns, d = args.robot, args.domain
    topics = ["joint_states", "head/image_raw", "wrist/image_raw", "tactile"]
    keys = [f"maniflow/{ns}/{t}" for t in topics]
    rmw_keys = [f"{d}/{ns}/{t}/x::msg::dds_::Y_/RIHS01_" + "0" * 64 for t in topics]
    pubs = [session.declare_publisher(k) for k in keys + rmw_keys]
    rng = random.Random(args.seed)
    out({"ready": True})
    t_end = time.time() + args.seconds
    n = 0
    while time.time() < t_end:
        for i, p in enumerate(pubs):
            kind = rng.randrange(4)
            if kind == 0:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
            elif kind == 1:  # valid header, random body
                data = b"\x00\x01\x00\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
            elif kind == 2:  # huge length prefixes
                data = b"\x00\x01\x00\x00" + struct.pack("<IIi", 1, 2, -1) + b"\xff" * 16
            else:  # a truncated real message
                js, img = sample_msgs(n)
                full = cdr(js if i % 2 == 0 else img)
                data = full[: rng.randrange(1, len(full))]
            if i >= len(keys):
                p.put(data, attachment=z_serialize((Int64(n + 1), Int64(time.time_ns()), bytes(16))))
            else:
                p.put(data)
            n += 1
        time.sleep(1.0 / args.rate)
    session.close()
    out({"summary": {"garbage_sent": n}})


def run_dds(args):
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.topic import Topic
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.core import Qos, Policy
    from cyclonedds.util import duration

    dp = DomainParticipant(args.domain)
    ns = args.robot
    be = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1))
    rel = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)), Policy.History.KeepLast(10))
    t_js = Topic(dp, f"rt/{ns}/joint_states", JointState)
    t_img = Topic(dp, f"rt/{ns}/head/image_raw", Image)
    t_cmd = Topic(dp, f"rt/{ns}/joint_command", Float64MultiArray)
    w_js = DataWriter(dp, t_js, qos=be)
    w_img = DataWriter(dp, t_img, qos=be)
    r_cmd = DataReader(dp, t_cmd, qos=rel)
    out({"ready": True})
    received = []
    t_end = time.time() + args.seconds
    seq = 0
    while time.time() < t_end:
        seq += 1
        js, img = sample_msgs(seq)
        w_js.write(js)
        w_img.write(img)
        for m in r_cmd.take(N=100):
            if isinstance(m, Float64MultiArray):
                received.append(list(m.data))
                out({"cmd": list(m.data)})
        time.sleep(1.0 / args.rate)
    out({"summary": {"sent": seq, "commands": len(received), "last_cmd": received[-1] if received else None}})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["zenoh", "rmw-zenoh", "dds", "garbage", "graph"])
    ap.add_argument("--listen", default="")
    ap.add_argument("--connect", default="")
    ap.add_argument("--robot", default="so101")
    ap.add_argument("--domain", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--key", action="append", default=[], help="graph: an exact data key to count samples on")
    args = ap.parse_args()
    if args.mode == "dds":
        run_dds(args)
    elif args.mode == "graph":
        run_graph(args)
    elif args.mode == "garbage":
        run_garbage(args)
    else:
        run_zenoh(args, rmw=args.mode == "rmw-zenoh")


if __name__ == "__main__":
    main()
