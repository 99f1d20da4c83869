//! Just enough of the ONNX protobuf to count a graph's parameters (the elements
//! of its initializers) for `maniflow inspect`. A bounds-checked walker over the
//! wire format: malformed bytes give `None`, never a panic.

/// Read a base-128 varint at `*pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Iterate (field number, wire type, payload) of one message. Payload is the
/// length-delimited bytes for wire type 2, empty otherwise; varints are returned
/// in the `u64`.
fn fields(buf: &[u8]) -> Option<Vec<(u64, u8, &[u8], u64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (field, wt) = (key >> 3, (key & 7) as u8);
        match wt {
            0 => {
                let v = varint(buf, &mut pos)?;
                out.push((field, wt, &buf[0..0], v));
            }
            1 => {
                pos = pos.checked_add(8)?;
                if pos > buf.len() {
                    return None;
                }
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                let payload = buf.get(pos..end)?;
                out.push((field, wt, payload, 0));
                pos = end;
            }
            5 => {
                pos = pos.checked_add(4)?;
                if pos > buf.len() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Number of parameters (initializer elements) of an ONNX model, or `None` if
/// the bytes are not a well-formed ModelProto.
pub fn count_parameters(model: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    // ModelProto.graph = 7; GraphProto.initializer = 5; TensorProto.dims = 1 (int64, packed or not).
    for (f, wt, graph, _) in fields(model)? {
        if f != 7 || wt != 2 {
            continue;
        }
        for (gf, gwt, tensor, _) in fields(graph)? {
            if gf != 5 || gwt != 2 {
                continue;
            }
            let mut n = 1u64;
            for (tf, twt, payload, v) in fields(tensor)? {
                if tf != 1 {
                    continue;
                }
                if twt == 0 {
                    n = n.saturating_mul(v);
                } else if twt == 2 {
                    let mut p = 0;
                    while p < payload.len() {
                        n = n.saturating_mul(varint(payload, &mut p)?);
                    }
                }
            }
            total = total.saturating_add(n);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_dims_of_initializers_and_survives_garbage() {
        // TensorProto { dims: [3, 4] } (unpacked), wrapped in GraphProto.initializer, in ModelProto.graph
        let tensor = [0x08, 3, 0x08, 4];
        let mut graph = vec![0x2a, tensor.len() as u8];
        graph.extend_from_slice(&tensor);
        let mut model = vec![0x3a, graph.len() as u8];
        model.extend_from_slice(&graph);
        assert_eq!(count_parameters(&model), Some(12));
        for cut in 0..model.len() {
            let _ = count_parameters(&model[..cut]);
        }
        assert_eq!(count_parameters(&[0xff, 0xff, 0xff]), None);
    }
}
