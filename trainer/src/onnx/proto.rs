//! A minimal protobuf *writer* for the ONNX messages the exporter needs
//! (field numbers from onnx.proto). Sizes are computed first and the message is
//! written in one pass into one buffer, so a large model is never copied twice.

use anyhow::{bail, Result};

/// ONNX `TensorProto.DataType`.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

/// Protobuf messages are limited to 2 GiB.
pub const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

pub struct ModelProto {
    pub ir_version: i64,
    /// (domain, version); `("", 17)` = the default ONNX opset 17.
    pub opset_import: Vec<(String, i64)>,
    pub producer_name: String,
    pub producer_version: String,
    pub graph: GraphProto,
}

#[derive(Default)]
pub struct GraphProto {
    pub node: Vec<NodeProto>,
    pub name: String,
    pub initializer: Vec<TensorProto>,
    pub input: Vec<ValueInfoProto>,
    pub output: Vec<ValueInfoProto>,
}

pub struct NodeProto {
    pub input: Vec<String>,
    pub output: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub attribute: Vec<AttributeProto>,
}

pub struct AttributeProto {
    pub name: String,
    pub value: AttrValue,
}

pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(TensorProto),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
}

pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A tensor, always written as little-endian `raw_data`.
pub struct TensorProto {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: TensorData,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Value(i64),
    Param(String),
}

/// A tensor-typed `ValueInfoProto`.
pub struct ValueInfoProto {
    pub name: String,
    pub elem_type: i32,
    pub shape: Vec<Dim>,
}

// ----------------------------------------------------------------------------- wire format

const VARINT: u32 = 0;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key_len(field: u32) -> usize {
    varint_len((field as u64) << 3)
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

/// Size of a length-delimited field whose payload is `n` bytes.
fn ld_len(field: u32, n: usize) -> usize {
    key_len(field) + varint_len(n as u64) + n
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn int_len(field: u32, v: i64) -> usize {
    key_len(field) + varint_len(v as u64)
}

fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_key(out, field, VARINT);
    put_varint(out, v as u64);
}

/// Optional string: written only when non-empty.
fn str_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        ld_len(field, s.len())
    }
}

fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

trait Message {
    fn body_len(&self) -> usize;
    fn write_body(&self, out: &mut Vec<u8>);
}

fn msg_len<M: Message>(field: u32, m: &M) -> usize {
    ld_len(field, m.body_len())
}

fn put_msg<M: Message>(out: &mut Vec<u8>, field: u32, m: &M) {
    put_key(out, field, LEN);
    put_varint(out, m.body_len() as u64);
    m.write_body(out);
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and u8 has alignment 1; on little-endian targets
        // the in-memory layout is the little-endian wire layout.
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
    }
    #[cfg(not(target_endian = "little"))]
    compile_error!("the ONNX writer assumes a little-endian target");
}

impl TensorData {
    fn raw_len(&self) -> usize {
        match self {
            TensorData::F32(v) => 4 * v.len(),
            TensorData::I64(v) => 8 * v.len(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn data_type(&self) -> i32 {
        match self {
            TensorData::F32(_) => FLOAT,
            TensorData::I64(_) => INT64,
        }
    }
}

impl Message for TensorProto {
    fn body_len(&self) -> usize {
        // dims = 1 (repeated int64, unpacked as proto2 writes it), data_type = 2, name = 8, raw_data = 9
        self.dims.iter().map(|&d| int_len(1, d)).sum::<usize>()
            + int_len(2, self.data.data_type() as i64)
            + str_len(8, &self.name)
            + ld_len(9, self.data.raw_len())
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        for &d in &self.dims {
            put_int(out, 1, d);
        }
        put_int(out, 2, self.data.data_type() as i64);
        put_str(out, 8, &self.name);
        put_key(out, 9, LEN);
        put_varint(out, self.data.raw_len() as u64);
        match &self.data {
            TensorData::F32(v) => out.extend_from_slice(f32_bytes(v)),
            TensorData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }
}

impl AttrValue {
    /// `AttributeProto.AttributeType`.
    fn type_code(&self) -> i64 {
        match self {
            AttrValue::Float(_) => 1,
            AttrValue::Int(_) => 2,
            AttrValue::String(_) => 3,
            AttrValue::Tensor(_) => 4,
            AttrValue::Floats(_) => 6,
            AttrValue::Ints(_) => 7,
        }
    }
}

impl Message for AttributeProto {
    // name = 1, f = 2, i = 3, s = 4, t = 5, floats = 7, ints = 8, type = 20
    fn body_len(&self) -> usize {
        let v = match &self.value {
            AttrValue::Float(_) => key_len(2) + 4,
            AttrValue::Int(i) => int_len(3, *i),
            AttrValue::String(s) => ld_len(4, s.len()),
            AttrValue::Tensor(t) => msg_len(5, t),
            AttrValue::Floats(f) => f.len() * (key_len(7) + 4),
            AttrValue::Ints(v) => v.iter().map(|&i| int_len(8, i)).sum(),
        };
        str_len(1, &self.name) + v + int_len(20, self.value.type_code())
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        put_str(out, 1, &self.name);
        match &self.value {
            AttrValue::Float(f) => {
                put_key(out, 2, FIXED32);
                out.extend_from_slice(&f.to_le_bytes());
            }
            AttrValue::Int(i) => put_int(out, 3, *i),
            AttrValue::String(s) => put_bytes(out, 4, s),
            AttrValue::Tensor(t) => put_msg(out, 5, t),
            AttrValue::Floats(fs) => {
                for f in fs {
                    put_key(out, 7, FIXED32);
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
            AttrValue::Ints(is) => is.iter().for_each(|&i| put_int(out, 8, i)),
        }
        put_int(out, 20, self.value.type_code());
    }
}

impl Message for NodeProto {
    // input = 1, output = 2, name = 3, op_type = 4, attribute = 5
    fn body_len(&self) -> usize {
        self.input.iter().map(|s| ld_len(1, s.len())).sum::<usize>()
            + self.output.iter().map(|s| ld_len(2, s.len())).sum::<usize>()
            + str_len(3, &self.name)
            + str_len(4, &self.op_type)
            + self.attribute.iter().map(|a| msg_len(5, a)).sum::<usize>()
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        self.input.iter().for_each(|s| put_bytes(out, 1, s.as_bytes()));
        self.output.iter().for_each(|s| put_bytes(out, 2, s.as_bytes()));
        put_str(out, 3, &self.name);
        put_str(out, 4, &self.op_type);
        self.attribute.iter().for_each(|a| put_msg(out, 5, a));
    }
}

/// TensorShapeProto.Dimension: dim_value = 1, dim_param = 2.
impl Message for Dim {
    fn body_len(&self) -> usize {
        match self {
            Dim::Value(v) => int_len(1, *v),
            Dim::Param(p) => ld_len(2, p.len()),
        }
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            Dim::Value(v) => put_int(out, 1, *v),
            Dim::Param(p) => put_bytes(out, 2, p.as_bytes()),
        }
    }
}

struct Shape<'a>(&'a [Dim]);
impl Message for Shape<'_> {
    // TensorShapeProto: dim = 1
    fn body_len(&self) -> usize {
        self.0.iter().map(|d| msg_len(1, d)).sum()
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        self.0.iter().for_each(|d| put_msg(out, 1, d));
    }
}

struct TensorType<'a>(i32, &'a [Dim]);
impl Message for TensorType<'_> {
    // TypeProto.Tensor: elem_type = 1, shape = 2
    fn body_len(&self) -> usize {
        int_len(1, self.0 as i64) + msg_len(2, &Shape(self.1))
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        put_int(out, 1, self.0 as i64);
        put_msg(out, 2, &Shape(self.1));
    }
}

struct TypeProto<'a>(TensorType<'a>);
impl Message for TypeProto<'_> {
    // TypeProto: tensor_type = 1
    fn body_len(&self) -> usize {
        msg_len(1, &self.0)
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        put_msg(out, 1, &self.0);
    }
}

impl ValueInfoProto {
    fn ty(&self) -> TypeProto<'_> {
        TypeProto(TensorType(self.elem_type, &self.shape))
    }
}

impl Message for ValueInfoProto {
    // name = 1, type = 2
    fn body_len(&self) -> usize {
        str_len(1, &self.name) + msg_len(2, &self.ty())
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        put_str(out, 1, &self.name);
        put_msg(out, 2, &self.ty());
    }
}

impl Message for GraphProto {
    // node = 1, name = 2, initializer = 5, input = 11, output = 12
    fn body_len(&self) -> usize {
        self.node.iter().map(|n| msg_len(1, n)).sum::<usize>()
            + str_len(2, &self.name)
            + self.initializer.iter().map(|t| msg_len(5, t)).sum::<usize>()
            + self.input.iter().map(|v| msg_len(11, v)).sum::<usize>()
            + self.output.iter().map(|v| msg_len(12, v)).sum::<usize>()
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        self.node.iter().for_each(|n| put_msg(out, 1, n));
        put_str(out, 2, &self.name);
        self.initializer.iter().for_each(|t| put_msg(out, 5, t));
        self.input.iter().for_each(|v| put_msg(out, 11, v));
        self.output.iter().for_each(|v| put_msg(out, 12, v));
    }
}

struct OpsetId<'a>(&'a str, i64);
impl Message for OpsetId<'_> {
    // OperatorSetIdProto: domain = 1, version = 2
    fn body_len(&self) -> usize {
        str_len(1, self.0) + int_len(2, self.1)
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        put_str(out, 1, self.0);
        put_int(out, 2, self.1);
    }
}

impl Message for ModelProto {
    // ir_version = 1, producer_name = 2, producer_version = 3, graph = 7, opset_import = 8
    fn body_len(&self) -> usize {
        int_len(1, self.ir_version)
            + str_len(2, &self.producer_name)
            + str_len(3, &self.producer_version)
            + msg_len(7, &self.graph)
            + self
                .opset_import
                .iter()
                .map(|(d, v)| msg_len(8, &OpsetId(d, *v)))
                .sum::<usize>()
    }
    fn write_body(&self, out: &mut Vec<u8>) {
        put_int(out, 1, self.ir_version);
        put_str(out, 2, &self.producer_name);
        put_str(out, 3, &self.producer_version);
        put_msg(out, 7, &self.graph);
        self.opset_import
            .iter()
            .for_each(|(d, v)| put_msg(out, 8, &OpsetId(d, *v)));
    }
}

impl ModelProto {
    /// The serialized model. Errors when it exceeds protobuf's 2 GiB message limit
    /// (ONNX external data is not supported by this writer).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let n = self.body_len();
        if n > MAX_MESSAGE_BYTES {
            bail!(
                "ONNX graph `{}` would be {n} bytes ({:.2} GiB), over protobuf's 2 GiB message limit; \
                 this writer does not support external data",
                self.graph.name,
                n as f64 / (1u64 << 30) as f64
            );
        }
        let mut out = Vec::with_capacity(n);
        self.write_body(&mut out);
        debug_assert_eq!(out.len(), n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (v, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![127]),
            (128, vec![0x80, 1]),
            (300, vec![0xac, 2]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes);
            assert_eq!(varint_len(v), bytes.len());
        }
        let mut out = Vec::new();
        put_varint(&mut out, -1i64 as u64);
        assert_eq!(out.len(), 10);
        assert_eq!(varint_len(-1i64 as u64), 10);
    }

    #[test]
    fn lengths_match_written_bytes() {
        let node = NodeProto {
            input: vec!["a".into(), "b".into()],
            output: vec!["c".into()],
            name: "n".into(),
            op_type: "Gemm".into(),
            attribute: vec![
                AttributeProto {
                    name: "alpha".into(),
                    value: AttrValue::Float(0.5),
                },
                AttributeProto {
                    name: "perm".into(),
                    value: AttrValue::Ints(vec![0, -1, 300]),
                },
                AttributeProto {
                    name: "fs".into(),
                    value: AttrValue::Floats(vec![1.0, 2.0]),
                },
                AttributeProto {
                    name: "s".into(),
                    value: AttrValue::String(b"x".to_vec()),
                },
            ],
        };
        let mut out = Vec::new();
        node.write_body(&mut out);
        assert_eq!(out.len(), node.body_len());
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![(String::new(), 17)],
            producer_name: "p".into(),
            producer_version: String::new(),
            graph: GraphProto {
                node: vec![node],
                name: "g".into(),
                initializer: vec![TensorProto {
                    name: "w".into(),
                    dims: vec![2],
                    data: TensorData::F32(vec![1.0, 2.0]),
                }],
                input: vec![ValueInfoProto {
                    name: "a".into(),
                    elem_type: FLOAT,
                    shape: vec![Dim::Param("B".into()), Dim::Value(3)],
                }],
                output: vec![],
            },
        };
        assert_eq!(model.encode().unwrap().len(), model.body_len());
    }
}
