#!/usr/bin/env python3
"""A real ROS 2 node for runtime/tests/ros2_rclpy.rs: Jazzy rclpy on rmw_fastrtps_cpp
(PyPI `ros-rclpy[fastrtps]`, installed by `make bootstrap` into .venv-ros2).

Loopback only: refuses to start unless ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and
RMW_IMPLEMENTATION=rmw_fastrtps_cpp are set. The domain is ROS_DOMAIN_ID (or --domain).

Every line on stdout is one JSON object; the Rust test reads them. Commands come on
stdin, one per line ("stop", "reliable", ...).

Modes:
  exchange  subscribes to our joint_goal (JointState, sensor-data QoS), joint_command
            (Float64MultiArray, reliable) and action_chunk (JointTrajectory, reliable);
            publishes joint_states (100 Hz), head/image_raw (320x240 rgb8, 30 Hz) and
            wrist/image_raw/compressed (30 Hz) with the sensor-data QoS. Every message
            carries its sequence number and a pattern derived from it, so each side
            checks every byte; the receiver reports counts, gaps, bad messages and rates.
  graph     waits until --node in --ns has endpoints on every --topic, then prints the
            node list, topic types and get_publishers_info_by_topic /
            get_subscriptions_info_by_topic (type, type hash, reliability) for them.
  domains   two contexts: --domain (where our node is) and --other-domain; subscribes
            joint_states in both, publishes joint_command on the other one only; reports
            what each context saw.
  qos       on joint_states: a RELIABLE subscription (ROS 2 refuses it against a
            BEST_EFFORT publication) beside a sensor-data (BEST_EFFORT) one; publishes
            joint_command BEST_EFFORT (refused by a RELIABLE subscription) until stdin
            says "reliable", then RELIABLE. Reports messages and incompatible-QoS events.
  joints    publishes joint_states (sensor-data QoS, 100 Hz, the SO-101 home pose in
            LeRobot units) until stdin says "stop".
  watch     subscribes head/image_raw, wrist/image_raw (sensor-data QoS), joint_command
            and action_chunk (reliable) and reports each topic's count and rate, and the
            nodes it saw, once a second and at "stop".
"""
import argparse
import array
import json
import os
import queue
import sys
import threading
import time

if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST" or os.environ.get(
    "RMW_IMPLEMENTATION"
) != "rmw_fastrtps_cpp":
    sys.exit("tests/ros2/peer.py: set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and "
             "RMW_IMPLEMENTATION=rmw_fastrtps_cpp (loopback only)")

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import (  # noqa: E402
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from builtin_interfaces.msg import Duration as RosDuration  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, MultiArrayDimension  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
HOME = [-3.86, -36.64, 33.28, 93.37, 86.14, 40.0]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST)
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                         history=HistoryPolicy.KEEP_LAST)
IMG_W, IMG_H = 320, 240


def out(obj):
    print(json.dumps(obj), flush=True)


def stdin_lines():
    """A queue of stdin lines (EOF reads as "stop")."""
    q = queue.Queue()

    def pump():
        for line in sys.stdin:
            q.put(line.strip())
        q.put("stop")

    threading.Thread(target=pump, daemon=True).start()
    return q


def poll(q):
    try:
        return q.get_nowait()
    except queue.Empty:
        return None


def now_msg(node):
    return node.get_clock().now().to_msg()


# ------------------------------------------------------------------ patterns
# Shared with runtime/tests/ros2_rclpy.rs: every value is exact in binary (dyadic),
# so both sides compare for equality.

def js_positions(seq):
    return [float(seq) + i / 8.0 for i in range(6)]


def js_velocities(seq):
    return [-float(seq) - i / 4.0 for i in range(6)]


def image_bytes(seq):
    """Byte k of frame seq is (k + 7 seq) mod 251."""
    import numpy as np
    return ((np.arange(IMG_W * IMG_H * 3, dtype=np.uint32) + seq * 7) % 251).astype(np.uint8).tobytes()


def jpeg_bytes(seq):
    """FF D8, then 2000 + seq mod 97 bytes (seq + 3 k) mod 256, then FF D9."""
    n = 2000 + seq % 97
    return bytes([0xFF, 0xD8]) + bytes((seq + 3 * k) % 256 for k in range(n)) + bytes([0xFF, 0xD9])


def command_values(seq):
    return [float(seq) + i / 4.0 for i in range(6)]


def chunk_positions(seq, p):
    return [float(seq) + p / 16.0 + i / 4.0 for i in range(6)]


class Rx:
    """Receive statistics of one topic: counts, sequence gaps, bad messages, rate."""

    def __init__(self):
        self.n = 0
        self.seqs = set()
        self.bad = 0
        self.bad_reason = ""
        self.t = []
        self.dup = 0
        self.reorder = 0
        self.last_seq = None

    def got(self, seq, err):
        self.n += 1
        self.t.append(time.monotonic())
        if err:
            self.bad += 1
            self.bad_reason = err
        if seq in self.seqs:
            self.dup += 1
        if self.last_seq is not None and seq < self.last_seq:
            self.reorder += 1
        self.last_seq = seq
        self.seqs.add(seq)

    def summary(self):
        s = {"n": self.n, "bad": self.bad, "bad_reason": self.bad_reason,
             "dup": self.dup, "reorder": self.reorder}
        if self.seqs:
            lo, hi = min(self.seqs), max(self.seqs)
            s.update(first=lo, last=hi, gaps=(hi - lo + 1) - len(self.seqs))
        s["rate_hz"] = rate(self.t)
        return s


def rate(ts):
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return 0.0
    return (len(ts) - 1) / (ts[-1] - ts[0])


def frame_seq(frame_id, tag):
    parts = frame_id.split(" ")
    if len(parts) != 2 or parts[0] != tag:
        return -1
    return int(parts[1])


# ------------------------------------------------------------------ exchange

def run_exchange(args):
    rclpy.init()
    node = Node("rclpy_peer", namespace=args.ns)
    rx = {"joint_goal": Rx(), "joint_command": Rx(), "action_chunk": Rx()}

    def on_goal(m):
        seq = frame_seq(m.header.frame_id, "goal")
        err = ""
        if list(m.name) != JOINTS:
            err = f"names {list(m.name)}"
        elif list(m.position) != js_positions(seq):
            err = f"positions {list(m.position)} for seq {seq}"
        elif list(m.velocity) != js_velocities(seq) or list(m.effort) != []:
            err = f"velocity/effort {list(m.velocity)} {list(m.effort)}"
        elif abs(time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)) > 5.0:
            err = f"stamp {m.header.stamp}"
        rx["joint_goal"].got(seq, err)

    def on_cmd(m):
        seq = int(m.data[0]) if len(m.data) else -1
        err = ""
        dims = [(d.label, d.size, d.stride) for d in m.layout.dim]
        if list(m.data) != command_values(seq):
            err = f"data {list(m.data)}"
        elif dims != [("joints", 6, 6)] or m.layout.data_offset != 0:
            err = f"layout {dims} offset {m.layout.data_offset}"
        rx["joint_command"].got(seq, err)

    def on_chunk(m):
        seq = frame_seq(m.header.frame_id, "chunk")
        err = ""
        if list(m.joint_names) != JOINTS:
            err = f"joint names {list(m.joint_names)}"
        elif len(m.points) != 10:
            err = f"{len(m.points)} points"
        else:
            for p, pt in enumerate(m.points):
                if list(pt.positions) != chunk_positions(seq, p):
                    err = f"point {p} positions {list(pt.positions)}"
                elif list(pt.velocities) or list(pt.accelerations) or list(pt.effort):
                    err = f"point {p} has velocities/accelerations/effort"
                elif (pt.time_from_start.sec, pt.time_from_start.nanosec) != (p // 4, (p % 4) * 250_000_000):
                    err = f"point {p} time_from_start {pt.time_from_start}"
                if err:
                    break
        rx["action_chunk"].got(seq, err)

    node.create_subscription(JointState, "joint_goal", on_goal, qos_profile_sensor_data)
    node.create_subscription(Float64MultiArray, "joint_command", on_cmd, RELIABLE)
    node.create_subscription(JointTrajectory, "action_chunk", on_chunk, RELIABLE)
    p_js = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    p_img = node.create_publisher(Image, "head/image_raw", qos_profile_sensor_data)
    p_jpg = node.create_publisher(CompressedImage, "wrist/image_raw/compressed", qos_profile_sensor_data)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ns = args.ns.rstrip("/")
    ours = [f"{ns}/joint_goal", f"{ns}/joint_command", f"{ns}/action_chunk"]

    # Discovery, awaited both ways: our three publishers seen here, our three
    # subscriptions matched by these publishers.
    deadline = time.monotonic() + args.discovery_s
    while True:
        ex.spin_once(timeout_sec=0.05)
        seen = [node.count_publishers(t) for t in ours]
        matched = [p.get_subscription_count() for p in (p_js, p_img, p_jpg)]
        if all(seen) and all(matched):
            break
        if time.monotonic() > deadline:
            out({"error": "discovery timed out", "publishers_seen": seen, "subscriptions_matched": matched})
            return
    out({"ready": True})

    sent = {"joint_states": 0, "head/image_raw": 0, "wrist/image_raw/compressed": 0}

    def pub_js():
        sent["joint_states"] += 1
        seq = sent["joint_states"]
        m = JointState()
        m.header.stamp = now_msg(node)
        m.header.frame_id = f"js {seq}"
        m.name = JOINTS
        m.position = js_positions(seq)
        m.velocity = js_velocities(seq)
        p_js.publish(m)

    def pub_img():
        sent["head/image_raw"] += 1
        seq = sent["head/image_raw"]
        m = Image()
        m.header.stamp = now_msg(node)
        m.header.frame_id = f"head {seq}"
        m.height, m.width, m.encoding, m.is_bigendian, m.step = IMG_H, IMG_W, "rgb8", 0, IMG_W * 3
        m.data = array.array("B", image_bytes(seq))
        p_img.publish(m)

    def pub_jpg():
        sent["wrist/image_raw/compressed"] += 1
        seq = sent["wrist/image_raw/compressed"]
        m = CompressedImage()
        m.header.stamp = now_msg(node)
        m.header.frame_id = f"wrist {seq}"
        m.format = "jpeg"
        m.data = array.array("B", jpeg_bytes(seq))
        p_jpg.publish(m)

    timers = [node.create_timer(1.0 / 100.0, pub_js), node.create_timer(1.0 / 30.0, pub_img),
              node.create_timer(1.0 / 30.0, pub_jpg)]
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        ex.spin_once(timeout_sec=0.005)
    for t in timers:
        node.destroy_timer(t)
    out({"published": sent, "seconds": time.monotonic() - t0,
         "rates_hz": {k: v / args.seconds for k, v in sent.items()}})
    # Keep receiving until the test says how much it sent ("sent {json}") and the
    # last message of every topic arrived, or nothing came for 1 s (best effort
    # loses the tail), or "stop".
    stdin = stdin_lines()
    expect = None
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.02)
        line = poll(stdin)
        if line and line.startswith("sent "):
            expect = json.loads(line[5:])
        elif line == "stop":
            break
        if expect is not None:
            quiet = all(not r.t or time.monotonic() - r.t[-1] > 1.0 for r in rx.values())
            if quiet or all(rx[k].last_seq == expect[k] for k in rx):
                break
    out({"summary": {k: v.summary() for k, v in rx.items()}, "published": sent})
    node.destroy_node()
    rclpy.shutdown()


# ------------------------------------------------------------------ graph

def endpoint(info):
    return {
        "node_name": info.node_name,
        "node_namespace": info.node_namespace,
        "topic_type": info.topic_type,
        "topic_type_hash": str(info.topic_type_hash),
        "reliability": info.qos_profile.reliability.name,
        "durability": info.qos_profile.durability.name,
    }


def run_graph(args):
    rclpy.init()
    node = Node("rclpy_graph_probe")
    deadline = time.monotonic() + args.discovery_s
    report = {}
    while True:
        rclpy.spin_once(node, timeout_sec=0.1)
        nodes = node.get_node_names_and_namespaces()
        report = {
            "nodes": [[n, ns] for n, ns in nodes],
            "topics": {t: types for t, types in node.get_topic_names_and_types() if t in args.topic},
            "publishers": {t: [endpoint(i) for i in node.get_publishers_info_by_topic(t)] for t in args.topic},
            "subscriptions": {t: [endpoint(i) for i in node.get_subscriptions_info_by_topic(t)] for t in args.topic},
        }
        mine = lambda eps: any(e["node_name"] == args.node and e["node_namespace"] == args.ns for e in eps)  # noqa: E731
        if (args.node, args.ns) in nodes and all(
            mine(report["publishers"][t]) or mine(report["subscriptions"][t]) for t in args.topic
        ):
            break
        if time.monotonic() > deadline:
            report["timeout"] = True
            break
    out({"graph": report})
    node.destroy_node()
    rclpy.shutdown()


# ------------------------------------------------------------------ domains

def run_domains(args):
    ctx = {}
    nodes = {}
    got = {"here": 0, "other": 0}
    for which, d in (("here", args.domain), ("other", args.other_domain)):
        c = Context()
        rclpy.init(context=c, domain_id=d)
        n = Node(f"rclpy_domain_{which}", context=c)
        n.create_subscription(JointState, f"{args.ns}/joint_states",
                              lambda m, w=which: got.__setitem__(w, got[w] + 1), qos_profile_sensor_data)
        ctx[which], nodes[which] = c, n
    pub = nodes["other"].create_publisher(Float64MultiArray, f"{args.ns}/joint_command", RELIABLE)
    execs = {}
    for w in nodes:
        execs[w] = SingleThreadedExecutor(context=ctx[w])
        execs[w].add_node(nodes[w])
    seen = {"here": set(), "other": set()}
    pubs_seen = {"here": 0, "other": 0}
    sent = 0
    t_here = None
    deadline = time.monotonic() + args.discovery_s
    last_pub = 0.0
    while True:
        for w in nodes:
            execs[w].spin_once(timeout_sec=0.01)
            for n, ns in nodes[w].get_node_names_and_namespaces():
                seen[w].add(f"{ns.rstrip('/')}/{n}")
            pubs_seen[w] = max(pubs_seen[w], nodes[w].count_publishers(f"{args.ns}/joint_states"))
        if time.monotonic() - last_pub >= 0.05:
            last_pub = time.monotonic()
            sent += 1
            m = Float64MultiArray()
            m.layout.dim = [MultiArrayDimension(label="joints", size=6, stride=6)]
            m.data = list(HOME)
            pub.publish(m)
        if t_here is None and got["here"] >= 20 and f"{args.ns}/{args.node}" in seen["here"]:
            t_here = time.monotonic()
        if t_here is not None and time.monotonic() - t_here >= args.seconds:
            break
        if time.monotonic() > deadline:
            break
    out({"summary": {
        "received": got, "nodes": {w: sorted(s) for w, s in seen.items()},
        "publishers_seen": pubs_seen, "other_commands_sent": sent,
        "other_subscribers_matched": pub.get_subscription_count(),
        "here_ok": t_here is not None,
    }})
    for w in nodes:
        nodes[w].destroy_node()
        rclpy.shutdown(context=ctx[w])


# ------------------------------------------------------------------ qos

def run_qos(args):
    rclpy.init()
    node = Node("rclpy_qos_probe")
    got = {"reliable": 0, "best_effort": 0}
    events = {"sub_reliable_incompatible": [], "pub_best_effort_incompatible": [],
              "sub_best_effort_incompatible": [], "pub_reliable_incompatible": []}

    def ev(key):
        def cb(e):
            events[key].append({"total_count": e.total_count, "policy": str(e.last_policy_kind)})
        return cb

    topic = f"{args.ns}/joint_states"
    node.create_subscription(JointState, topic, lambda m: got.__setitem__("reliable", got["reliable"] + 1),
                             RELIABLE, event_callbacks=SubscriptionEventCallbacks(
                                 incompatible_qos=ev("sub_reliable_incompatible")))
    node.create_subscription(JointState, topic, lambda m: got.__setitem__("best_effort", got["best_effort"] + 1),
                             qos_profile_sensor_data, event_callbacks=SubscriptionEventCallbacks(
                                 incompatible_qos=ev("sub_best_effort_incompatible")))
    cmd_topic = f"{args.ns}/joint_command"
    pub = node.create_publisher(Float64MultiArray, cmd_topic, BEST_EFFORT, event_callbacks=PublisherEventCallbacks(
        incompatible_qos=ev("pub_best_effort_incompatible")))
    phase = "best_effort"
    sent = {"best_effort": 0, "reliable": 0}
    stdin = stdin_lines()
    out({"ready": True})
    last_pub = 0.0
    last_report = time.monotonic()
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.01)
        if time.monotonic() - last_pub >= 0.05:
            last_pub = time.monotonic()
            m = Float64MultiArray()
            m.layout.dim = [MultiArrayDimension(label="joints", size=6, stride=6)]
            m.data = list(HOME)
            pub.publish(m)
            sent[phase] += 1
        if time.monotonic() - last_report >= 0.5:
            last_report = time.monotonic()
            out({"status": {"received": got, "sent": sent, "phase": phase,
                            "subscribers_matched": pub.get_subscription_count(),
                            "events": {k: len(v) for k, v in events.items()}}})
        line = poll(stdin)
        if line == "reliable" and phase == "best_effort":
            node.destroy_publisher(pub)
            pub = node.create_publisher(Float64MultiArray, cmd_topic, RELIABLE,
                                        event_callbacks=PublisherEventCallbacks(
                                            incompatible_qos=ev("pub_reliable_incompatible")))
            phase = "reliable"
        elif line == "stop":
            break
    out({"summary": {"received": got, "sent": sent, "events": events,
                     "subscribers_matched": pub.get_subscription_count()}})
    node.destroy_node()
    rclpy.shutdown()


# ------------------------------------------------------------------ joints

def run_joints(args):
    rclpy.init()
    node = Node("rclpy_arm", namespace=args.ns)
    p = node.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
    n = [0]

    def tick():
        m = JointState()
        m.header.stamp = now_msg(node)
        m.name = JOINTS
        m.position = list(HOME)
        p.publish(m)
        n[0] += 1

    node.create_timer(0.01, tick)
    stdin = stdin_lines()
    out({"ready": True})
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline and poll(stdin) != "stop":
        rclpy.spin_once(node, timeout_sec=0.01)
    out({"summary": {"published": n[0], "subscribers_matched": p.get_subscription_count()}})
    node.destroy_node()
    rclpy.shutdown()


# ------------------------------------------------------------------ watch

def run_watch(args):
    rclpy.init()
    node = Node("rclpy_watch")
    ns = args.ns
    ts = {"head/image_raw": [], "wrist/image_raw": [], "joint_command": [], "action_chunk": []}
    bad = {k: 0 for k in ts}

    def on_img(key):
        def cb(m):
            ts[key].append(time.monotonic())
            if (m.width, m.height, m.encoding) != (96, 96, "rgb8") or len(m.data) != 96 * 96 * 3:
                bad[key] += 1
        return cb

    def on_cmd(m):
        ts["joint_command"].append(time.monotonic())
        if len(m.data) != 6:
            bad["joint_command"] += 1

    def on_chunk(m):
        ts["action_chunk"].append(time.monotonic())
        if list(m.joint_names) != JOINTS or not m.points:
            bad["action_chunk"] += 1

    node.create_subscription(Image, f"{ns}/head/image_raw", on_img("head/image_raw"), qos_profile_sensor_data)
    node.create_subscription(Image, f"{ns}/wrist/image_raw", on_img("wrist/image_raw"), qos_profile_sensor_data)
    node.create_subscription(Float64MultiArray, f"{ns}/joint_command", on_cmd, RELIABLE)
    node.create_subscription(JointTrajectory, f"{ns}/action_chunk", on_chunk, RELIABLE)
    stdin = stdin_lines()
    out({"ready": True})
    seen = set()
    last = time.monotonic()
    deadline = time.monotonic() + 600.0

    def report():
        # rates over the last 2 s and overall (first to last message)
        now = time.monotonic()
        return {k: {"n": len(v), "rate_hz": rate(v),
                    "rate_2s_hz": len([t for t in v if t > now - 2.0]) / 2.0, "bad": bad[k]}
                for k, v in ts.items()}

    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.02)
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            for n, nns in node.get_node_names_and_namespaces():
                seen.add(f"{nns.rstrip('/')}/{n}")
            out({"status": report(), "nodes": sorted(seen)})
        if poll(stdin) == "stop":
            break
    out({"summary": report(), "nodes": sorted(seen)})
    node.destroy_node()
    rclpy.shutdown()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["exchange", "graph", "domains", "qos", "joints", "watch"])
    ap.add_argument("--ns", default="/so101")
    ap.add_argument("--node", default="so101_sim")
    ap.add_argument("--topic", action="append", default=[])
    ap.add_argument("--domain", type=int, default=None)
    ap.add_argument("--other-domain", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--discovery-s", type=float, default=30.0)
    args = ap.parse_args()
    {"exchange": run_exchange, "graph": run_graph, "domains": run_domains, "qos": run_qos,
     "joints": run_joints, "watch": run_watch}[args.mode](args)


if __name__ == "__main__":
    main()
