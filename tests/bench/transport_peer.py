#!/usr/bin/env python3
"""A Python peer of `maniflow transport-bench` (runtime/src/cli/transport_bench.rs).

  --mw zenoh   an eclipse-zenoh session on our native keys maniflow/<robot>/bench_<topic>
               (the bootstrap's .venv); --shm on|off sets transport/shared_memory/enabled
  --mw rclpy   a real ROS 2 Jazzy node (rclpy with rmw_fastrtps_cpp, the .venv-ros2) on
               /<robot>/bench_<topic>, BEST_EFFORT (qos_profile_sensor_data)

  --role pub   publishes when told to, by lines on stdin:
                 warm TOPIC      samples with frame_id "warmup" every 50 ms until the next line
                 run TOPIC N HZ  N samples with frame_id "bench" at HZ, then prints {"done": TOPIC}
               --rtt: also subscribes to bench_<topic>_echo and records the round trip of
               every echoed "bench" sample (receive wall clock - header stamp)
  --role sub   prints {"heard": TOPIC} at the first sample of each topic and records the
               one-way latency of every "bench" sample; --echo republishes every sample,
               unchanged, on bench_<topic>_echo

TOPIC is `joint` (sensor_msgs/JointState, 5 positions) or `image` (sensor_msgs/Image,
WxH rgb8). The stamp is the wall clock just before serialisation; a latency is taken
once the subscriber holds the sample as a message (rclpy: deserialised; zenoh: the
payload copied out of zenoh and its header parsed), the same points as the Rust side.
One machine, one clock. At EOF on stdin the peer prints {"results": {TOPIC: [ns, ...]}}
and exits. Every line on stdout is one JSON object.
"""
import argparse
import json
import os
import queue
import struct
import sys
import threading
import time

TOPICS = {"joint": "bench_joint_states", "image": "bench_image"}


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stdin_lines():
    """stdin lines on a queue; None at EOF."""
    q = queue.Queue()

    def pump():
        for line in sys.stdin:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


# --- CDR (XCDR1 little endian), laid out as bridge/src/msg.rs encodes ------------------


class Cdr:
    def __init__(self):
        self.b = bytearray(b"\x00\x01\x00\x00")

    def align(self, n):
        pad = (-(len(self.b) - 4)) % n
        self.b += b"\x00" * pad

    def u32(self, v):
        self.align(4)
        self.b += struct.pack("<I", v)

    def i32(self, v):
        self.align(4)
        self.b += struct.pack("<i", v)

    def u8(self, v):
        self.b += struct.pack("<B", v)

    def f64s(self, vs):
        self.u32(len(vs))
        if vs:
            self.align(8)
            self.b += struct.pack(f"<{len(vs)}d", *vs)

    def string(self, s):
        raw = s.encode() + b"\x00"
        self.u32(len(raw))
        self.b += raw


def header(c, frame_id):
    c.i32(0)  # stamp.sec, patched per sample at offset 4
    c.u32(0)  # stamp.nanosec, offset 8
    c.string(frame_id)


def joint_cdr(frame_id):
    c = Cdr()
    header(c, frame_id)
    c.u32(0)  # name
    c.f64s([0.5] * 5)  # position
    c.f64s([])  # velocity
    c.f64s([])  # effort
    return c.b


def image_cdr(frame_id, w, h, pixels):
    c = Cdr()
    header(c, frame_id)
    c.u32(h)
    c.u32(w)
    c.string("rgb8")
    c.u8(0)
    c.u32(w * 3)
    c.u32(len(pixels))
    c.b += pixels
    return c.b


def stamp_of(raw):
    """(stamp ns, frame_id) from a CDR frame."""
    sec, nsec, n = struct.unpack_from("<iII", raw, 4)
    return sec * 1_000_000_000 + nsec, bytes(raw[16:16 + n - 1]).decode()


def pixels_of(w, h):
    # The same bytes as the Rust side: (i % 251) for i in 0..w*h*3.
    n = w * h * 3
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


class Recorder:
    """Latencies per topic, and the first sample of each topic announced."""

    def __init__(self):
        self.lat = {t: [] for t in TOPICS}
        self.heard = set()
        self.lock = threading.Lock()

    def sample(self, topic, stamp_ns, frame_id, now_ns):
        with self.lock:
            if topic not in self.heard:
                self.heard.add(topic)
                out({"heard": topic})
            if frame_id == "bench":
                self.lat[topic].append(now_ns - stamp_ns)


def drive(q, send):
    """The publisher's command loop: `send(topic, frame_id)` publishes one sample."""
    warm = None
    while True:
        try:
            line = q.get(timeout=0.05)
        except queue.Empty:
            if warm:
                send(warm, "warmup")
            continue
        if line is None:
            return
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "warm":
            warm = parts[1]
            send(warm, "warmup")
        elif parts[0] == "run":
            warm = None
            topic, n, hz = parts[1], int(parts[2]), float(parts[3])
            period = 1.0 / hz
            start = time.monotonic()
            for i in range(n):
                delay = start + i * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                send(topic, "bench")
            out({"done": topic})


# --- eclipse-zenoh ------------------------------------------------------------------------


def run_zenoh(args, q):
    import zenoh

    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("listen/endpoints", json.dumps([args.listen] if args.listen else []))
    c.insert_json5("connect/endpoints", json.dumps([args.connect] if args.connect else []))
    c.insert_json5("transport/shared_memory/enabled", "true" if args.shm == "on" else "false")
    session = zenoh.open(c)
    key = {t: f"maniflow/{args.robot}/{name}" for t, name in TOPICS.items()}
    rec = Recorder()
    keep = []
    if args.role == "sub":
        for topic in TOPICS:
            def cb(sample, topic=topic):
                raw = sample.payload.to_bytes()
                stamp, frame_id = stamp_of(raw)
                rec.sample(topic, stamp, frame_id, time.time_ns())

            keep.append(session.declare_subscriber(key[topic], cb))
        out({"ready": True})
        while q.get() is not None:
            pass
    else:
        pixels = pixels_of(args.width, args.height)
        frames = {
            ("joint", f): joint_cdr(f) for f in ("warmup", "bench")
        } | {
            ("image", f): image_cdr(f, args.width, args.height, pixels) for f in ("warmup", "bench")
        }
        pubs = {
            t: session.declare_publisher(
                key[t],
                congestion_control=zenoh.CongestionControl.DROP,
                priority=zenoh.Priority.DATA_HIGH,
                express=True,
            )
            for t in TOPICS
        }

        def send(topic, frame_id):
            buf = frames[(topic, frame_id)]
            now = time.time_ns()
            struct.pack_into("<iI", buf, 4, now // 1_000_000_000, now % 1_000_000_000)
            pubs[topic].put(bytes(buf))

        out({"ready": True, "bytes": {t: len(frames[(t, "bench")]) for t in TOPICS}})
        drive(q, send)
    out({"results": rec.lat})
    session.close()


# --- rclpy --------------------------------------------------------------------------------


def run_rclpy(args, q):
    import array

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    rclpy.init()
    node = rclpy.create_node(f"bench_{args.role}", namespace=f"/{args.robot}")
    types = {"joint": JointState, "image": Image}
    rec = Recorder()
    keep = []

    def ns(m):
        return m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec

    def listen(topic, name, echo_pub=None):
        def cb(m):
            rec.sample(topic, ns(m), m.header.frame_id, time.time_ns())
            if echo_pub is not None:
                echo_pub.publish(m)

        keep.append(node.create_subscription(types[topic], name, cb, qos_profile_sensor_data))

    if args.role == "sub":
        for topic, name in TOPICS.items():
            echo = None
            if args.echo:
                echo = node.create_publisher(types[topic], name + "_echo", qos_profile_sensor_data)
            listen(topic, name, echo)
    else:
        pubs = {t: node.create_publisher(types[t], name, qos_profile_sensor_data)
                for t, name in TOPICS.items()}
        if args.rtt:
            for topic, name in TOPICS.items():
                listen(topic, name + "_echo")
        js = JointState()
        js.position = [0.5] * 5
        img = Image()
        img.height, img.width, img.encoding, img.is_bigendian = args.height, args.width, "rgb8", 0
        img.step = args.width * 3
        img.data = array.array("B", pixels_of(args.width, args.height))
        msgs = {"joint": js, "image": img}

    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    if args.role == "sub":
        out({"ready": True})
        while q.get() is not None:
            pass
    else:
        def send(topic, frame_id):
            m = msgs[topic]
            m.header.frame_id = frame_id
            now = time.time_ns()
            m.header.stamp.sec, m.header.stamp.nanosec = now // 1_000_000_000, now % 1_000_000_000
            pubs[topic].publish(m)

        out({"ready": True})
        drive(q, send)
        time.sleep(0.3)  # the last echoes
    out({"results": rec.lat})
    # Teardown is not measured, and rclpy aborts when the executor's thread is
    # still spinning at exit: leave at once.
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mw", choices=["zenoh", "rclpy"], required=True)
    ap.add_argument("--role", choices=["pub", "sub"], required=True)
    ap.add_argument("--robot", default="bench")
    ap.add_argument("--listen")
    ap.add_argument("--connect")
    ap.add_argument("--shm", choices=["on", "off"], default="on")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--rtt", action="store_true")
    args = ap.parse_args()
    q = stdin_lines()
    try:
        (run_zenoh if args.mw == "zenoh" else run_rclpy)(args, q)
    except ImportError as e:
        out({"error": f"{args.mw} is not installed in {sys.executable}: {e}"})
        sys.exit(3)


if __name__ == "__main__":
    main()
