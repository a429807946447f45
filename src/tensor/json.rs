//! Tensor buffers written as JSON arrays.

use super::*;

/// Serialises a buffer as a flat JSON array, straight into the output
/// without building a `Value` tree. Non-finite floats, which JSON cannot
/// hold, become `null`; FP32 is written in its shortest form (0.1, not
/// 0.10000000149); BYTES that are not UTF-8 are replaced lossily (ask for
/// binary output to get them exactly).
pub struct JsonElements<'a>(pub &'a TensorData);

impl serde::Serialize for JsonElements<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        macro_rules! each {
            ($v:expr) => {
                for x in $v {
                    seq.serialize_element(x)?;
                }
            };
            ($v:expr, float) => {
                for x in $v {
                    if x.is_finite() {
                        seq.serialize_element(&x)?;
                    } else {
                        seq.serialize_element(&())?;
                    }
                }
            };
        }
        match self.0 {
            TensorData::Bool(v) => each!(v),
            TensorData::Uint8(v) => each!(v),
            TensorData::Uint16(v) => each!(v),
            TensorData::Uint32(v) => each!(v),
            TensorData::Uint64(v) => each!(v),
            TensorData::Int8(v) => each!(v),
            TensorData::Int16(v) => each!(v),
            TensorData::Int32(v) => each!(v),
            TensorData::Int64(v) => each!(v),
            TensorData::Fp16(v) => each!(v.iter().map(|x| x.to_f32()), float),
            TensorData::Fp32(v) => each!(v.iter().copied(), float),
            TensorData::Fp64(v) => each!(v.iter().copied(), float),
            TensorData::Bytes(v) => each!(v
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<Vec<_>>()
                .iter()),
        }
        seq.end()
    }
}
