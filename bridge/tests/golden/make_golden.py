#!/usr/bin/env python3
"""Golden CDR samples for maniflow-bridge's ROS 2 message layer (bridge/src/msg.rs).

Serialises one fixed sample per message type with Eclipse Cyclone DDS's Python
binding (PyPI `cyclonedds`, the same IDL/CDR machinery a ROS 2 node on
rmw_cyclonedds uses) and writes `<name>.hex` next to this file: lowercase hex,
16 bytes per line, the 4-byte encapsulation header included.

The IdlStruct types below mirror the ROS 2 .msg layouts field for field and use
the DDS type names ROS 2 puts on the wire (`pkg::msg::dds_::Type_`).
We ask explicitly for XCDR1 little endian (`use_version_2=False`,
`Endianness.Little`), which is what ROS 2 (Humble, Jazzy) puts on the wire for
these @final types: header 00 01 00 00.

Run:  /work/main/.venv/bin/python bridge/tests/golden/make_golden.py [--wire]
The values must match the `g_*` functions in bridge/src/msg.rs's tests.

With --wire it also publishes every sample through the real Cyclone DDS C stack
(loopback only, domain 77, reliable), takes the raw CDR as the DataReader
receives it, and writes `wire_<name>.hex` for each sample whose received bytes
differ from `serialize()`'s (the C layer pads the payload to a multiple of 4).
"""
import os
import sys
from dataclasses import dataclass, field

import cyclonedds
from importlib.metadata import version
from cyclonedds.idl import IdlStruct
from cyclonedds.idl._support import Endianness
import cyclonedds.idl.types as t

OUT = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@dataclass
class Duration(IdlStruct, typename="builtin_interfaces::msg::dds_::Duration_"):
    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    encoding: str = ""
    is_bigendian: t.uint8 = 0
    step: t.uint32 = 0
    data: t.sequence[t.uint8] = field(default_factory=list)


@dataclass
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header = field(default_factory=Header)
    format: str = ""
    data: t.sequence[t.uint8] = field(default_factory=list)


@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header = field(default_factory=Header)
    name: t.sequence[str] = field(default_factory=list)
    position: t.sequence[t.float64] = field(default_factory=list)
    velocity: t.sequence[t.float64] = field(default_factory=list)
    effort: t.sequence[t.float64] = field(default_factory=list)


@dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    label: str = ""
    size: t.uint32 = 0
    stride: t.uint32 = 0


@dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    dim: t.sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: t.uint32 = 0


@dataclass
class Float32MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float32MultiArray_"):
    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: t.sequence[t.float32] = field(default_factory=list)


@dataclass
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: t.sequence[t.float64] = field(default_factory=list)


@dataclass
class JointTrajectoryPoint(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectoryPoint_"):
    positions: t.sequence[t.float64] = field(default_factory=list)
    velocities: t.sequence[t.float64] = field(default_factory=list)
    accelerations: t.sequence[t.float64] = field(default_factory=list)
    effort: t.sequence[t.float64] = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
class JointTrajectory(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectory_"):
    header: Header = field(default_factory=Header)
    joint_names: t.sequence[str] = field(default_factory=list)
    points: t.sequence[JointTrajectoryPoint] = field(default_factory=list)


@dataclass
class KeyValue(IdlStruct, typename="diagnostic_msgs::msg::dds_::KeyValue_"):
    key: str = ""
    value: str = ""


@dataclass
class DiagnosticStatus(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticStatus_"):
    level: t.uint8 = 0
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: t.sequence[KeyValue] = field(default_factory=list)


@dataclass
class DiagnosticArray(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticArray_"):
    header: Header = field(default_factory=Header)
    status: t.sequence[DiagnosticStatus] = field(default_factory=list)


SO101 = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def samples():
    # Keep in sync with `golden_values` in bridge/src/msg.rs.
    stamp = Time(sec=1_700_000_000, nanosec=123_456_789)
    yield "time", Time(sec=-2, nanosec=999_999_999)
    yield "duration", Duration(sec=3, nanosec=500_000_000)
    # frame_id "base" (5 bytes with NUL): the Header ends unaligned.
    yield "header", Header(stamp=stamp, frame_id="base")
    yield "joint_state", JointState(
        # frame_id "so101" (6 bytes with NUL) leaves the names sequence needing 2 bytes of padding;
        # the six names have odd and even lengths, so every name is followed by different padding,
        # and the float64 arrays need 8-byte alignment (relative to the byte after the header).
        header=Header(stamp=stamp, frame_id="so101"),
        name=SO101,
        position=[0.0, -1.5, 1.25, 0.5, -0.125, 0.75],
        velocity=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        effort=[],
    )
    # 4x3 rgb8: height 3, width 4, step 12, 36 bytes.
    yield "image", Image(
        header=Header(stamp=stamp, frame_id="camera_optical"),
        height=3,
        width=4,
        encoding="rgb8",
        is_bigendian=0,
        step=12,
        data=[(i * 7) % 256 for i in range(36)],
    )
    yield "compressed_image", CompressedImage(
        header=Header(stamp=stamp, frame_id="cam"),
        format="jpeg",
        data=[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46, 0x00, 0xFF, 0xD9],
    )
    yield "float32_multi_array", Float32MultiArray(
        layout=MultiArrayLayout(dim=[MultiArrayDimension(label="joints", size=6, stride=6)], data_offset=0),
        data=[0.0, 1.5, -2.25, 3.0, 0.0625, -7.0],
    )
    yield "float64_multi_array", Float64MultiArray(
        layout=MultiArrayLayout(
            dim=[MultiArrayDimension(label="t", size=2, stride=6), MultiArrayDimension(label="joint", size=3, stride=3)],
            data_offset=1,
        ),
        data=[0.5, -0.25, 1e100, -1e-100, 2.0, 3.0],
    )
    yield "joint_trajectory", JointTrajectory(
        header=Header(stamp=stamp, frame_id="base_link"),
        joint_names=SO101,
        points=[
            JointTrajectoryPoint(
                positions=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                velocities=[],
                accelerations=[],
                effort=[],
                time_from_start=Duration(sec=0, nanosec=100_000_000),
            ),
            JointTrajectoryPoint(
                positions=[0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
                velocities=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                accelerations=[1.0],
                effort=[],
                time_from_start=Duration(sec=1, nanosec=5),
            ),
        ],
    )
    # level is one byte: the strings after it start at offset 4 (3 bytes of padding).
    yield "diagnostic_array", DiagnosticArray(
        header=Header(stamp=stamp, frame_id=""),
        status=[
            DiagnosticStatus(
                level=0,
                name="so101/bus",
                message="ok",
                hardware_id="/dev/ttyACM0",
                values=[KeyValue(key="cycles", value="1234"), KeyValue(key="x", value="")],
            ),
            DiagnosticStatus(level=2, name="so101/gripper", message="overload", hardware_id="id 6", values=[]),
        ],
    )


def capture_wire(samples):
    """{name: raw CDR bytes as a Cyclone DDS DataReader receives them}."""
    import time
    os.environ["CYCLONEDDS_URI"] = (
        "<CycloneDDS><Domain><General><Interfaces><NetworkInterface name='lo'/></Interfaces>"
        "<AllowMulticast>false</AllowMulticast></General><Discovery><Peers><Peer address='127.0.0.1'/>"
        "</Peers><ParticipantIndex>auto</ParticipantIndex></Discovery></Domain></CycloneDDS>"
    )
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds._clayer import ddspy_take

    dp = DomainParticipant(77)
    qos = Qos(Policy.Reliability.Reliable(1_000_000_000), Policy.History.KeepAll)
    out = {}
    for name, msg in samples:
        topic = Topic(dp, "rt/golden_" + name, type(msg))
        reader = DataReader(dp, topic, qos=qos)
        writer = DataWriter(dp, topic, qos=qos)
        time.sleep(0.3)
        writer.write(msg)
        for _ in range(100):
            got = ddspy_take(reader._ref, 0, 1)
            if got:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{name}: nothing received over loopback")
        out[name] = bytes(got[0][0])
    return out


def write_hex(name, data):
    lines = [data[i : i + 16].hex(" ") for i in range(0, len(data), 16)]
    with open(os.path.join(OUT, f"{name}.hex"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    print(f"cyclonedds {version('cyclonedds')}, python {sys.version.split()[0]}")
    for name, msg in samples():
        data = msg.serialize(endianness=Endianness.Little, use_version_2=False)
        # What the library picks by itself (ROS 2 expects XCDR1; report if the default differs).
        default = msg.serialize(endianness=Endianness.Little)
        assert data[:4] == b"\x00\x01\x00\x00", data[:4].hex()
        assert type(msg).deserialize(data) == msg
        write_hex(name, data)
        print(f"{name:22} {len(data):4} bytes  header {data[:4].hex(' ')}  default header {default[:4].hex(' ')}")
    if "--wire" in sys.argv[1:]:
        all_samples = list(samples())
        for name, raw in capture_wire(all_samples).items():
            ser = dict(all_samples)[name].serialize(endianness=Endianness.Little, use_version_2=False)
            same = raw == ser
            print(f"wire {name:17} {len(raw):4} bytes  header {raw[:4].hex(' ')}  "
                  + ("identical to serialize()" if same else f"extra {raw[len(ser):].hex(' ') or '-'}, prefix identical: {raw[:len(ser)] == ser}"))
            if not same:
                write_hex("wire_" + name, raw)


if __name__ == "__main__":
    main()
