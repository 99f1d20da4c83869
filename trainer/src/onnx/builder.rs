//! A small ONNX graph builder (opset 17): every helper appends one or a few nodes
//! and returns the name of the produced value. Node and value names are unique
//! (`<scope>/<Op>_<n>`); weights are pulled by name from a [`TensorSource`] and
//! stored as initializers (Linear weights transposed to (in, out) for MatMul).

use super::proto::{
    AttrValue, AttributeProto, Dim, GraphProto, ModelProto, NodeProto, TensorData, TensorProto, ValueInfoProto, FLOAT,
};
use anyhow::{bail, ensure, Result};
use std::collections::{HashMap, HashSet};

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
pub const PRODUCER: &str = "maniflow-train";

/// Named f32 tensors (shape, row-major data), e.g. a safetensors checkpoint.
pub trait TensorSource {
    fn tensor(&self, name: &str) -> Result<(&[usize], &[f32])>;
}

/// The symbolic batch dimension `B`.
pub fn batch() -> Dim {
    Dim::Param("B".into())
}

/// A fixed dimension.
pub fn fixed(n: usize) -> Dim {
    Dim::Value(n as i64)
}

pub fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        value: AttrValue::Int(v),
    }
}

pub fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        value: AttrValue::Float(v),
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        value: AttrValue::Ints(v.to_vec()),
    }
}

pub struct GraphBuilder<'w> {
    graph: GraphProto,
    src: &'w dyn TensorSource,
    counter: usize,
    scope: String,
    /// Names of initializers and graph inputs (must be unique).
    names: HashSet<String>,
    /// Auto-named constants by content, so repeated shapes / scalars are stored once.
    consts: HashMap<String, String>,
    /// Source tensors this graph used.
    used: HashSet<String>,
}

impl<'w> GraphBuilder<'w> {
    pub fn new(name: &str, src: &'w dyn TensorSource) -> Self {
        GraphBuilder {
            graph: GraphProto {
                name: name.into(),
                ..Default::default()
            },
            src,
            counter: 0,
            scope: String::new(),
            names: HashSet::new(),
            consts: HashMap::new(),
            used: HashSet::new(),
        }
    }

    /// Prefix for the names of the nodes added from now on (readability only).
    pub fn set_scope(&mut self, scope: &str) {
        self.scope = scope.to_string();
    }

    /// Names of the source tensors used so far.
    pub fn used(&self) -> &HashSet<String> {
        &self.used
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        ensure!(
            self.names.insert(name.to_string()),
            "ONNX graph `{}`: duplicate tensor name `{name}`",
            self.graph.name
        );
        Ok(())
    }

    /// A graph input (f32).
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> Result<String> {
        self.claim(name)?;
        self.graph.input.push(ValueInfoProto {
            name: name.into(),
            elem_type: FLOAT,
            shape: dims.to_vec(),
        });
        Ok(name.to_string())
    }

    /// Declares `value` as graph output `name` (an Identity node when the names differ).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        if value != name {
            self.graph.node.push(NodeProto {
                input: vec![value.into()],
                output: vec![name.into()],
                name: format!("output/{name}"),
                op_type: "Identity".into(),
                attribute: vec![],
            });
        }
        self.graph.output.push(ValueInfoProto {
            name: name.into(),
            elem_type: FLOAT,
            shape: dims.to_vec(),
        });
    }

    pub fn initializer_vec(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> Result<String> {
        let n: usize = dims.iter().product();
        ensure!(
            n == data.len(),
            "initializer `{name}`: shape {dims:?} needs {n} values, got {}",
            data.len()
        );
        self.claim(name)?;
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data: TensorData::F32(data),
        });
        Ok(name.to_string())
    }

    pub fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Result<String> {
        self.initializer_vec(name, dims, data.to_vec())
    }

    /// An auto-named f32 constant (stored once per distinct content).
    pub fn constant_f32(&mut self, dims: &[usize], data: &[f32]) -> String {
        let key = format!("f32{dims:?}{:?}", data.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = format!("const_{}", self.consts.len());
        self.initializer(&name, dims, data)
            .expect("auto-named constant is unique");
        self.consts.insert(key, name.clone());
        name
    }

    /// A 0-d f32 constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.constant_f32(&[], &[v])
    }

    /// An auto-named 1-D i64 constant (shapes, axes, indices).
    pub fn constant_i64(&mut self, data: &[i64]) -> String {
        let key = format!("i64{data:?}");
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = format!("const_{}", self.consts.len());
        self.claim(&name).expect("auto-named constant is unique");
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data: TensorData::I64(data.to_vec()),
        });
        self.consts.insert(key, name.clone());
        name
    }

    // ------------------------------------------------------------------------- weights

    /// A source tensor (recorded as used).
    pub fn weight(&mut self, name: &str) -> Result<(&'w [usize], &'w [f32])> {
        let t = self.src.tensor(name)?;
        self.used.insert(name.to_string());
        Ok(t)
    }

    /// A source tensor checked against `shape`.
    pub fn weight_shaped(&mut self, name: &str, shape: &[usize]) -> Result<&'w [f32]> {
        let (s, d) = self.weight(name)?;
        ensure!(
            s == shape,
            "weight `{name}` has shape {s:?}, the config implies {shape:?}"
        );
        Ok(d)
    }

    /// The source tensor `name` as an initializer of the same name, optionally viewed
    /// with other dims of the same size (added once; later calls reuse it).
    pub fn param(&mut self, name: &str, dims: Option<&[usize]>) -> Result<String> {
        let (s, d) = self.weight(name)?;
        if self.names.contains(name) {
            return Ok(name.to_string());
        }
        let dims = dims.unwrap_or(s);
        ensure!(
            dims.iter().product::<usize>() == d.len(),
            "weight `{name}` of shape {s:?} cannot be viewed as {dims:?}"
        );
        self.initializer(name, dims, d)
    }

    /// y = x W^T + b with W (out, in) from the source: MatMul with W^T stored as
    /// initializer `<w_name>.T`, then Add of the bias (when given).
    pub fn linear(&mut self, x: &str, w_name: &str, b_name: Option<&str>) -> Result<String> {
        let (s, w) = self.weight(w_name)?;
        ensure!(s.len() == 2, "weight `{w_name}` must be 2-D (out, in), got shape {s:?}");
        let (o, i) = (s[0], s[1]);
        let wt_name = format!("{w_name}.T");
        if !self.names.contains(&wt_name) {
            self.initializer_vec(&wt_name, &[i, o], transpose2d(w, o, i))?;
        }
        let y = self.matmul(x, &wt_name);
        match b_name {
            Some(b) => {
                let (bs, _) = self.weight(b)?;
                ensure!(bs == [o], "bias `{b}` has shape {bs:?}, expected [{o}]");
                let b = self.param(b, None)?;
                Ok(self.add(&y, &b))
            }
            None => Ok(y),
        }
    }

    // ------------------------------------------------------------------------- nodes

    /// Appends a node with `n_out` outputs and returns their names.
    pub fn node(&mut self, op: &str, inputs: &[&str], n_out: usize, attrs: Vec<AttributeProto>) -> Vec<String> {
        self.counter += 1;
        let name = if self.scope.is_empty() {
            format!("{op}_{}", self.counter)
        } else {
            format!("{}/{op}_{}", self.scope, self.counter)
        };
        let outputs: Vec<String> = if n_out == 1 {
            vec![name.clone()]
        } else {
            (0..n_out).map(|k| format!("{name}:{k}")).collect()
        };
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name,
            op_type: op.into(),
            attribute: attrs,
        });
        outputs
    }

    /// A single-output node.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.node(op, inputs, 1, attrs).pop().unwrap()
    }

    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.op("MatMul", &[a, b], vec![])
    }
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }
    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.op("Div", &[a, b], vec![])
    }
    pub fn relu(&mut self, x: &str) -> String {
        self.op("Relu", &[x], vec![])
    }
    pub fn sigmoid(&mut self, x: &str) -> String {
        self.op("Sigmoid", &[x], vec![])
    }
    pub fn tanh(&mut self, x: &str) -> String {
        self.op("Tanh", &[x], vec![])
    }
    pub fn sin(&mut self, x: &str) -> String {
        self.op("Sin", &[x], vec![])
    }
    pub fn cos(&mut self, x: &str) -> String {
        self.op("Cos", &[x], vec![])
    }
    pub fn sqrt(&mut self, x: &str) -> String {
        self.op("Sqrt", &[x], vec![])
    }
    pub fn softmax(&mut self, x: &str, axis: i64) -> String {
        self.op("Softmax", &[x], vec![attr_i("axis", axis)])
    }

    /// x * sigmoid(x)
    pub fn silu(&mut self, x: &str) -> String {
        let s = self.sigmoid(x);
        self.mul(x, &s)
    }

    /// x * tanh(softplus(x)), softplus = ln(1 + e^x) (Mish is opset 18).
    pub fn mish(&mut self, x: &str) -> String {
        let sp = self.op("Softplus", &[x], vec![]);
        let th = self.tanh(&sp);
        self.mul(x, &th)
    }

    /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Gelu is opset 20).
    pub fn gelu_tanh(&mut self, x: &str) -> String {
        let x2 = self.mul(x, x);
        let x3 = self.mul(&x2, x);
        let kappa = self.scalar(0.044715);
        let x3k = self.mul(&x3, &kappa);
        let inner = self.add(x, &x3k);
        let beta = self.scalar((2.0f64 / std::f64::consts::PI).sqrt() as f32);
        let z = self.mul(&inner, &beta);
        let th = self.tanh(&z);
        let one = self.scalar(1.0);
        let opt = self.add(&th, &one);
        let half = self.scalar(0.5);
        let hx = self.mul(&half, x);
        self.mul(&hx, &opt)
    }

    /// 0.5 x (1 + erf(x / sqrt(2))): the exact GELU (torch's default; Gelu is opset 20).
    pub fn gelu_erf(&mut self, x: &str) -> String {
        let r2 = self.scalar(std::f64::consts::SQRT_2 as f32);
        let z = self.div(x, &r2);
        let e = self.op("Erf", &[&z], vec![]);
        let one = self.scalar(1.0);
        let opt = self.add(&e, &one);
        let half = self.scalar(0.5);
        let hx = self.mul(&half, x);
        self.mul(&hx, &opt)
    }

    /// Reshape to `shape` (0 = copy the dim, -1 = infer).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.constant_i64(shape);
        self.op("Reshape", &[x, &s], vec![])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![attr_ints("perm", perm)])
    }

    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.op("Concat", xs, vec![attr_i("axis", axis)])
    }

    pub fn slice(&mut self, x: &str, starts: &[i64], ends: &[i64], axes: &[i64]) -> String {
        let (s, e, a) = (
            self.constant_i64(starts),
            self.constant_i64(ends),
            self.constant_i64(axes),
        );
        self.op("Slice", &[x, &s, &e, &a], vec![])
    }

    /// Gather along `axis` with constant i64 indices.
    pub fn gather(&mut self, x: &str, indices: &[i64], axis: i64) -> String {
        let i = self.constant_i64(indices);
        self.op("Gather", &[x, &i], vec![attr_i("axis", axis)])
    }

    /// Equal split into `n` parts along `axis`.
    pub fn split(&mut self, x: &str, n: usize, axis: i64) -> Vec<String> {
        self.node("Split", &[x], n, vec![attr_i("axis", axis)])
    }

    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let a = self.constant_i64(axes);
        self.op("Unsqueeze", &[x, &a], vec![])
    }

    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        self.op(
            "ReduceMean",
            &[x],
            vec![attr_ints("axes", axes), attr_i("keepdims", keepdims as i64)],
        )
    }

    pub fn shape(&mut self, x: &str) -> String {
        self.op("Shape", &[x], vec![])
    }

    /// LayerNormalization over the last axis; `scale` (and `bias`) are value names.
    pub fn layer_norm(&mut self, x: &str, scale: &str, bias: Option<&str>, eps: f32) -> String {
        let mut ins = vec![x, scale];
        ins.extend(bias);
        self.op(
            "LayerNormalization",
            &ins,
            vec![attr_i("axis", -1), attr_f("epsilon", eps)],
        )
    }

    /// GroupNorm on (N, C, H, W): per sample and group mean / biased variance over
    /// (C/G, H, W), then per-channel `weight` and `bias` (value names of shape (C, 1, 1)).
    pub fn group_norm(&mut self, x: &str, groups: usize, weight: &str, bias: &str, eps: f32) -> String {
        let shape = self.shape(x);
        let y = self.reshape(x, &[0, groups as i64, -1]);
        let mean = self.reduce_mean(&y, &[2], true);
        let d = self.sub(&y, &mean);
        let d2 = self.mul(&d, &d);
        let var = self.reduce_mean(&d2, &[2], true);
        let e = self.scalar(eps);
        let ve = self.add(&var, &e);
        let sd = self.sqrt(&ve);
        let n = self.div(&d, &sd);
        let n = self.op("Reshape", &[&n, &shape], vec![]);
        let n = self.mul(&n, weight);
        self.add(&n, bias)
    }

    /// 2-D convolution, square stride / padding; the kernel comes from `w`.
    pub fn conv(&mut self, x: &str, w: &str, b: Option<&str>, stride: usize, pad: usize) -> String {
        let mut ins = vec![x, w];
        ins.extend(b);
        let (s, p) = (stride as i64, pad as i64);
        self.op(
            "Conv",
            &ins,
            vec![attr_ints("strides", &[s, s]), attr_ints("pads", &[p, p, p, p])],
        )
    }

    pub fn maxpool(&mut self, x: &str, kernel: usize, stride: usize, pad: usize) -> String {
        let (k, s, p) = (kernel as i64, stride as i64, pad as i64);
        self.op(
            "MaxPool",
            &[x],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ],
        )
    }

    pub fn finish(self) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![(String::new(), OPSET)],
            producer_name: PRODUCER.into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: self.graph,
        }
    }

    /// The serialized ModelProto.
    pub fn to_bytes(self) -> Result<Vec<u8>> {
        self.finish().encode()
    }
}

/// (rows, cols) row-major -> (cols, rows) row-major, in cache-friendly tiles.
fn transpose2d(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                let row = &w[r * cols..(r + 1) * cols];
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = row[c];
                }
            }
        }
    }
    t
}

/// A source with no tensors (graphs built from constants only).
pub struct NoTensors;

impl TensorSource for NoTensors {
    fn tensor(&self, name: &str) -> Result<(&[usize], &[f32])> {
        bail!("no tensor `{name}`")
    }
}
