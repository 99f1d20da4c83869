//! REP-2016 type hashes (`RIHS01_<64 hex>`) of the ROS 2 messages we speak,
//! computed from their field lists with rosidl's algorithm
//! (`rosidl_generator_type_description`, rcl `type_hash.c`):
//!
//! 1. one `{"type_name", "fields": [{"name", "type": {"type_id", "capacity",
//!    "string_capacity", "nested_type_name"}}]}` per type, fields in `.msg`
//!    order (`default_value` is not hashed);
//! 2. `{"type_description": <top>, "referenced_type_descriptions": [<every
//!    nested type, transitively, sorted by type_name>]}`;
//! 3. serialised like Python's `json.dumps(ensure_ascii=True,
//!    separators=(", ", ": "))`, hashed with SHA-256, `RIHS01_` + lower hex.
//!
//! rmw_zenoh (Jazzy and later) puts the hash in every data key and liveliness
//! token and matches on it exactly; DDS RMWs put `typehash=<hash>;` in each
//! endpoint's USER_DATA. Humble has no hashes: its rmw_zenoh writes
//! [`HUMBLE_PLACEHOLDER`]. The test in this module and
//! `bridge/tests/interop.rs` compare every hash with the official
//! `share/<pkg>/msg/<T>.json` of the PyPI message wheels (Jazzy and Kilted).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// What Humble's rmw_zenoh writes in the hash slot.
pub const HUMBLE_PLACEHOLDER: &str = "TypeHashNotSupported";

/// rosidl field type ids (`type_description_interfaces/msg/FieldType`).
pub mod type_id {
    pub const NESTED: u8 = 1;
    pub const INT8: u8 = 2;
    pub const UINT8: u8 = 3;
    pub const INT16: u8 = 4;
    pub const UINT16: u8 = 5;
    pub const INT32: u8 = 6;
    pub const UINT32: u8 = 7;
    pub const INT64: u8 = 8;
    pub const UINT64: u8 = 9;
    pub const FLOAT32: u8 = 10;
    pub const FLOAT64: u8 = 11;
    pub const BOOLEAN: u8 = 15;
    pub const BYTE: u8 = 16;
    pub const STRING: u8 = 17;
    /// Added to a base id for `T[N]`.
    pub const ARRAY: u8 = 48;
    /// Added to a base id for `T[<=N]`.
    pub const BOUNDED_SEQUENCE: u8 = 96;
    /// Added to a base id for `T[]`.
    pub const UNBOUNDED_SEQUENCE: u8 = 144;
}

/// One field of a message, as rosidl describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub type_id: u8,
    /// Array length or sequence bound (0 for none).
    pub capacity: u64,
    /// Bound of a bounded string (0 for none).
    pub string_capacity: u64,
    /// `pkg/msg/Type` for nested types, else empty.
    pub nested_type_name: &'static str,
}

impl Field {
    const fn prim(name: &'static str, type_id: u8) -> Field {
        Field {
            name,
            type_id,
            capacity: 0,
            string_capacity: 0,
            nested_type_name: "",
        }
    }
    const fn seq(name: &'static str, base: u8) -> Field {
        Field::prim(name, base + type_id::UNBOUNDED_SEQUENCE)
    }
    const fn nested(name: &'static str, ty: &'static str) -> Field {
        Field {
            nested_type_name: ty,
            ..Field::prim(name, type_id::NESTED)
        }
    }
    const fn nested_seq(name: &'static str, ty: &'static str) -> Field {
        Field {
            nested_type_name: ty,
            ..Field::prim(name, type_id::NESTED + type_id::UNBOUNDED_SEQUENCE)
        }
    }
}

/// A message type: `pkg/msg/Name` and its fields in `.msg` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeDescription {
    pub type_name: &'static str,
    pub fields: &'static [Field],
}

use type_id::*;

const TIME: &str = "builtin_interfaces/msg/Time";
const DURATION: &str = "builtin_interfaces/msg/Duration";
const HEADER: &str = "std_msgs/msg/Header";

/// Every message type the node, the simulator and the robot process use
/// (plus `std_msgs/String` and `std_msgs/Float32`, whose official hashes
/// TRANSPORT.md quotes, as checks of the algorithm).
pub const DESCRIPTIONS: &[TypeDescription] = &[
    TypeDescription {
        type_name: TIME,
        fields: &[Field::prim("sec", INT32), Field::prim("nanosec", UINT32)],
    },
    TypeDescription {
        type_name: DURATION,
        fields: &[Field::prim("sec", INT32), Field::prim("nanosec", UINT32)],
    },
    TypeDescription {
        type_name: HEADER,
        fields: &[
            Field::nested("stamp", TIME),
            Field::prim("frame_id", STRING),
        ],
    },
    TypeDescription {
        type_name: "std_msgs/msg/String",
        fields: &[Field::prim("data", STRING)],
    },
    TypeDescription {
        type_name: "std_msgs/msg/Float32",
        fields: &[Field::prim("data", FLOAT32)],
    },
    TypeDescription {
        type_name: "sensor_msgs/msg/Image",
        fields: &[
            Field::nested("header", HEADER),
            Field::prim("height", UINT32),
            Field::prim("width", UINT32),
            Field::prim("encoding", STRING),
            Field::prim("is_bigendian", UINT8),
            Field::prim("step", UINT32),
            Field::seq("data", UINT8),
        ],
    },
    TypeDescription {
        type_name: "sensor_msgs/msg/CompressedImage",
        fields: &[
            Field::nested("header", HEADER),
            Field::prim("format", STRING),
            Field::seq("data", UINT8),
        ],
    },
    TypeDescription {
        type_name: "sensor_msgs/msg/JointState",
        fields: &[
            Field::nested("header", HEADER),
            Field::seq("name", STRING),
            Field::seq("position", FLOAT64),
            Field::seq("velocity", FLOAT64),
            Field::seq("effort", FLOAT64),
        ],
    },
    TypeDescription {
        type_name: "std_msgs/msg/MultiArrayDimension",
        fields: &[
            Field::prim("label", STRING),
            Field::prim("size", UINT32),
            Field::prim("stride", UINT32),
        ],
    },
    TypeDescription {
        type_name: "std_msgs/msg/MultiArrayLayout",
        fields: &[
            Field::nested_seq("dim", "std_msgs/msg/MultiArrayDimension"),
            Field::prim("data_offset", UINT32),
        ],
    },
    TypeDescription {
        type_name: "std_msgs/msg/Float32MultiArray",
        fields: &[
            Field::nested("layout", "std_msgs/msg/MultiArrayLayout"),
            Field::seq("data", FLOAT32),
        ],
    },
    TypeDescription {
        type_name: "std_msgs/msg/Float64MultiArray",
        fields: &[
            Field::nested("layout", "std_msgs/msg/MultiArrayLayout"),
            Field::seq("data", FLOAT64),
        ],
    },
    TypeDescription {
        type_name: "trajectory_msgs/msg/JointTrajectoryPoint",
        fields: &[
            Field::seq("positions", FLOAT64),
            Field::seq("velocities", FLOAT64),
            Field::seq("accelerations", FLOAT64),
            Field::seq("effort", FLOAT64),
            Field::nested("time_from_start", DURATION),
        ],
    },
    TypeDescription {
        type_name: "trajectory_msgs/msg/JointTrajectory",
        fields: &[
            Field::nested("header", HEADER),
            Field::seq("joint_names", STRING),
            Field::nested_seq("points", "trajectory_msgs/msg/JointTrajectoryPoint"),
        ],
    },
    TypeDescription {
        type_name: "diagnostic_msgs/msg/KeyValue",
        fields: &[Field::prim("key", STRING), Field::prim("value", STRING)],
    },
    TypeDescription {
        type_name: "diagnostic_msgs/msg/DiagnosticStatus",
        fields: &[
            Field::prim("level", BYTE),
            Field::prim("name", STRING),
            Field::prim("message", STRING),
            Field::prim("hardware_id", STRING),
            Field::nested_seq("values", "diagnostic_msgs/msg/KeyValue"),
        ],
    },
    TypeDescription {
        type_name: "diagnostic_msgs/msg/DiagnosticArray",
        fields: &[
            Field::nested("header", HEADER),
            Field::nested_seq("status", "diagnostic_msgs/msg/DiagnosticStatus"),
        ],
    },
];

/// Errors of [`compute`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeHashError {
    #[error("no type description for {0} (add it to type_hash::DESCRIPTIONS)")]
    Unknown(String),
}

/// The description of `pkg/msg/Name`, if we have it.
pub fn description(type_name: &str) -> Option<&'static TypeDescription> {
    DESCRIPTIONS.iter().find(|d| d.type_name == type_name)
}

/// The hashed JSON text of `type_name` (what rosidl hashes), from `table`.
pub fn hashable_json(type_name: &str, table: &[TypeDescription]) -> Result<String, TypeHashError> {
    let find = |n: &str| {
        table
            .iter()
            .find(|d| d.type_name == n)
            .ok_or_else(|| TypeHashError::Unknown(n.to_string()))
    };
    let top = find(type_name)?;
    // Transitive closure of nested types, sorted by name (BTreeMap order).
    let mut refs: BTreeMap<&str, &TypeDescription> = BTreeMap::new();
    let mut todo: Vec<&str> = nested_names(top).collect();
    while let Some(n) = todo.pop() {
        if refs.contains_key(n) {
            continue;
        }
        let d = find(n)?;
        refs.insert(d.type_name, d);
        todo.extend(nested_names(d));
    }
    let mut s = String::from("{\"type_description\": ");
    write_type(&mut s, top);
    s.push_str(", \"referenced_type_descriptions\": [");
    for (i, d) in refs.values().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        write_type(&mut s, d);
    }
    s.push_str("]}");
    Ok(s)
}

fn nested_names(d: &TypeDescription) -> impl Iterator<Item = &'static str> + '_ {
    d.fields
        .iter()
        .filter(|f| !f.nested_type_name.is_empty())
        .map(|f| f.nested_type_name)
}

fn write_type(s: &mut String, d: &TypeDescription) {
    s.push_str("{\"type_name\": ");
    json_str(s, d.type_name);
    s.push_str(", \"fields\": [");
    for (i, f) in d.fields.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str("{\"name\": ");
        json_str(s, f.name);
        let _ = write!(
            s,
            ", \"type\": {{\"type_id\": {}, \"capacity\": {}, \"string_capacity\": {}, \"nested_type_name\": ",
            f.type_id, f.capacity, f.string_capacity
        );
        json_str(s, f.nested_type_name);
        s.push_str("}}");
    }
    s.push_str("]}");
}

/// A JSON string as Python's `json.dumps(ensure_ascii=True)` writes it.
fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    let _ = write!(s, "\\u{u:04x}");
                }
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// `RIHS01_<sha256 of the hashable JSON>` of `type_name`, from `table`.
pub fn compute(type_name: &str, table: &[TypeDescription]) -> Result<String, TypeHashError> {
    let json = hashable_json(type_name, table)?;
    let digest = Sha256::digest(json.as_bytes());
    let mut out = String::with_capacity(71);
    out.push_str("RIHS01_");
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

/// The REP-2016 hash of one of our types (`pkg/msg/Name`), computed once.
pub fn rihs01(type_name: &str) -> Result<&'static str, TypeHashError> {
    static CACHE: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        DESCRIPTIONS
            .iter()
            .filter_map(|d| Some((d.type_name, compute(d.type_name, DESCRIPTIONS).ok()?)))
            .collect()
    });
    cache
        .get(type_name)
        .map(String::as_str)
        .ok_or_else(|| TypeHashError::Unknown(type_name.to_string()))
}

/// ROS 2 distribution the ROS 2 backends speak (the bridge's cargo feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    Humble,
    Jazzy,
    Kilted,
}

impl Distro {
    /// The distribution this build targets (`humble`, `jazzy` (default) or `kilted` feature).
    pub const fn built() -> Distro {
        if cfg!(feature = "kilted") {
            Distro::Kilted
        } else if cfg!(feature = "jazzy") {
            Distro::Jazzy
        } else {
            Distro::Humble
        }
    }

    /// What goes in the hash slot of rmw_zenoh keys and liveliness tokens
    /// (and in DDS USER_DATA, except on Humble, which sends none).
    pub fn wire_hash(self, type_name: &str) -> Result<&'static str, TypeHashError> {
        match self {
            Distro::Humble => Ok(HUMBLE_PLACEHOLDER),
            Distro::Jazzy | Distro::Kilted => rihs01(type_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_md_hashes() {
        // The values TRANSPORT.md quotes from the official Jazzy/Kilted JSON files.
        let expect = [
            (
                "sensor_msgs/msg/JointState",
                "a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
            ),
            (
                "sensor_msgs/msg/Image",
                "d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
            ),
            (
                "sensor_msgs/msg/CompressedImage",
                "15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a",
            ),
            (
                "trajectory_msgs/msg/JointTrajectory",
                "179b33eba59d676f6d967ac71fe35e7ca2f64b2f3928f4a018cec115e213796e",
            ),
            (
                "std_msgs/msg/Float64MultiArray",
                "1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f",
            ),
            (
                "std_msgs/msg/Float32",
                "7170d3d8f841f7be3172ce5f4f59f3a4d7f63b0447e8b33327601ad64d83d6e2",
            ),
            (
                "std_msgs/msg/String",
                "df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18",
            ),
            (
                "builtin_interfaces/msg/Time",
                "b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197",
            ),
        ];
        for (t, h) in expect {
            assert_eq!(rihs01(t).unwrap(), format!("RIHS01_{h}"), "{t}");
        }
    }

    #[test]
    fn every_nested_type_is_described_and_humble_has_no_hash() {
        for d in DESCRIPTIONS {
            compute(d.type_name, DESCRIPTIONS).unwrap();
        }
        assert_eq!(
            Distro::Humble.wire_hash("sensor_msgs/msg/Image").unwrap(),
            HUMBLE_PLACEHOLDER
        );
        assert!(matches!(
            rihs01("pkg/msg/Nope"),
            Err(TypeHashError::Unknown(_))
        ));
        // A changed field changes the hash.
        let mut t = DESCRIPTIONS.to_vec();
        let i = t.iter().position(|d| d.type_name == TIME).unwrap();
        const CHANGED: &[Field] = &[Field::prim("sec", INT32), Field::prim("nanosec", INT32)];
        t[i].fields = CHANGED;
        assert_ne!(
            compute("sensor_msgs/msg/Image", &t).unwrap(),
            rihs01("sensor_msgs/msg/Image").unwrap()
        );
    }

    #[test]
    fn json_escapes_like_python() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\u{e9}");
        assert_eq!(s, "\"a\\\"b\\\\c\\u00e9\"");
    }
}
