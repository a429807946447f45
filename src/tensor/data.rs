//! Decoding every wire encoding into a [`TensorData`], and encoding back.

use half::f16;
use serde_json::Value;

use super::*;

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        numeric_variants!(self, v => v.len(), bool b => b.len(), bytes s => s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts a buffer into consecutive pieces of `lengths` elements (a
    /// batch's answer, back into each caller's rows). `None` when the
    /// lengths do not add up to the buffer.
    pub fn split(self, lengths: &[usize]) -> Option<Vec<TensorData>> {
        if lengths.iter().sum::<usize>() != self.len() {
            return None;
        }
        fn cut<T>(mut v: Vec<T>, lengths: &[usize]) -> Vec<Vec<T>> {
            // Back to front, so each piece is one `split_off` of the tail.
            let mut pieces: Vec<Vec<T>> = lengths
                .iter()
                .rev()
                .map(|&n| v.split_off(v.len() - n))
                .collect();
            pieces.reverse();
            pieces
        }
        macro_rules! pieces {
            ($v:expr, $variant:ident) => {
                cut($v, lengths)
                    .into_iter()
                    .map(TensorData::$variant)
                    .collect()
            };
        }
        Some(match self {
            TensorData::Bool(v) => pieces!(v, Bool),
            TensorData::Uint8(v) => pieces!(v, Uint8),
            TensorData::Uint16(v) => pieces!(v, Uint16),
            TensorData::Uint32(v) => pieces!(v, Uint32),
            TensorData::Uint64(v) => pieces!(v, Uint64),
            TensorData::Int8(v) => pieces!(v, Int8),
            TensorData::Int16(v) => pieces!(v, Int16),
            TensorData::Int32(v) => pieces!(v, Int32),
            TensorData::Int64(v) => pieces!(v, Int64),
            TensorData::Fp16(v) => pieces!(v, Fp16),
            TensorData::Fp32(v) => pieces!(v, Fp32),
            TensorData::Fp64(v) => pieces!(v, Fp64),
            TensorData::Bytes(v) => pieces!(v, Bytes),
        })
    }

    /// `n` zero elements (empty strings for BYTES): warm-up inputs.
    pub fn zeros(datatype: DataType, n: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(vec![false; n]),
            DataType::Uint8 => TensorData::Uint8(vec![0; n]),
            DataType::Uint16 => TensorData::Uint16(vec![0; n]),
            DataType::Uint32 => TensorData::Uint32(vec![0; n]),
            DataType::Uint64 => TensorData::Uint64(vec![0; n]),
            DataType::Int8 => TensorData::Int8(vec![0; n]),
            DataType::Int16 => TensorData::Int16(vec![0; n]),
            DataType::Int32 => TensorData::Int32(vec![0; n]),
            DataType::Int64 => TensorData::Int64(vec![0; n]),
            DataType::Fp16 => TensorData::Fp16(vec![f16::ZERO; n]),
            DataType::Fp32 => TensorData::Fp32(vec![0.0; n]),
            DataType::Fp64 => TensorData::Fp64(vec![0.0; n]),
            DataType::Bytes => TensorData::Bytes(vec![Vec::new(); n]),
        }
    }

    /// Decodes the raw little-endian encoding (gRPC `raw_input_contents`, the
    /// HTTP binary extension) of `elements` elements.
    pub fn from_raw(
        datatype: DataType,
        raw: &[u8],
        elements: usize,
    ) -> Result<TensorData, TensorError> {
        let Some(size) = datatype.element_size() else {
            return decode_bytes(raw, elements).map(TensorData::Bytes);
        };
        check_raw_size(datatype, size, raw.len(), elements)?;
        let mut data = TensorData::with_capacity(datatype, elements);
        data.extend_from_raw(raw);
        Ok(data)
    }

    /// An empty buffer with room for `n` elements.
    pub fn with_capacity(datatype: DataType, n: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(n)),
            DataType::Uint8 => TensorData::Uint8(Vec::with_capacity(n)),
            DataType::Uint16 => TensorData::Uint16(Vec::with_capacity(n)),
            DataType::Uint32 => TensorData::Uint32(Vec::with_capacity(n)),
            DataType::Uint64 => TensorData::Uint64(Vec::with_capacity(n)),
            DataType::Int8 => TensorData::Int8(Vec::with_capacity(n)),
            DataType::Int16 => TensorData::Int16(Vec::with_capacity(n)),
            DataType::Int32 => TensorData::Int32(Vec::with_capacity(n)),
            DataType::Int64 => TensorData::Int64(Vec::with_capacity(n)),
            DataType::Fp16 => TensorData::Fp16(Vec::with_capacity(n)),
            DataType::Fp32 => TensorData::Fp32(Vec::with_capacity(n)),
            DataType::Fp64 => TensorData::Fp64(Vec::with_capacity(n)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(n)),
        }
    }

    /// Decodes raw little-endian elements onto the end of this buffer. The
    /// length was checked when the raw data was accepted (`Elements::raw`);
    /// a trailing partial element is ignored. BYTES never arrive here: their
    /// raw form is decoded when accepted.
    pub(super) fn extend_from_raw(&mut self, raw: &[u8]) {
        macro_rules! le {
            ($v:expr, $t:ty) => {
                $v.extend(
                    raw.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of element size"))),
                )
            };
        }
        match self {
            TensorData::Bool(v) => v.extend(raw.iter().map(|&b| b != 0)),
            TensorData::Uint8(v) => v.extend_from_slice(raw),
            TensorData::Uint16(v) => le!(v, u16),
            TensorData::Uint32(v) => le!(v, u32),
            TensorData::Uint64(v) => le!(v, u64),
            TensorData::Int8(v) => v.extend(raw.iter().map(|&b| b as i8)),
            TensorData::Int16(v) => le!(v, i16),
            TensorData::Int32(v) => le!(v, i32),
            TensorData::Int64(v) => le!(v, i64),
            TensorData::Fp16(v) => le!(v, f16),
            TensorData::Fp32(v) => le!(v, f32),
            TensorData::Fp64(v) => le!(v, f64),
            TensorData::Bytes(_) => unreachable!("BYTES are decoded when accepted"),
        }
    }

    /// Appends another buffer of the same datatype; false if they differ.
    pub fn extend_from(&mut self, other: &TensorData) -> bool {
        macro_rules! app {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => a.extend_from_slice(b),)*
                    _ => return false,
                }
            };
        }
        app!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
        );
        true
    }

    /// Appends the raw little-endian encoding to `out`.
    pub fn write_raw(&self, out: &mut Vec<u8>) {
        out.reserve(self.raw_len());
        match self {
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
            TensorData::Uint8(v) => out.extend_from_slice(v),
            TensorData::Int8(v) => out.extend(v.iter().map(|&b| b as u8)),
            TensorData::Bytes(v) => {
                for s in v {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s);
                }
            }
            TensorData::Uint16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Uint32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Uint64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    /// The raw encoding as a fresh buffer.
    pub fn to_raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_raw(&mut out);
        out
    }

    /// Length of the raw encoding in bytes.
    pub fn raw_len(&self) -> usize {
        match self {
            TensorData::Bytes(v) => v.iter().map(|s| 4 + s.len()).sum(),
            other => other.len() * other.datatype().element_size().unwrap_or(0),
        }
    }

    /// Decodes JSON `data`: flat or nested arrays (or a lone scalar) of
    /// numbers, booleans or strings as the datatype requires.
    pub fn from_json(datatype: DataType, value: &Value) -> Result<TensorData, TensorError> {
        let mut leaves = Vec::new();
        flatten(value, &mut leaves);
        let bad = |index: usize, v: &Value| TensorError::BadElement {
            index,
            datatype,
            got: truncate(v.to_string()),
        };
        macro_rules! ints {
            ($t:ty, $variant:ident) => {{
                let mut out = Vec::with_capacity(leaves.len());
                for (i, v) in leaves.iter().enumerate() {
                    let x = v
                        .as_i64()
                        .and_then(|x| <$t>::try_from(x).ok())
                        .or_else(|| v.as_u64().and_then(|x| <$t>::try_from(x).ok()))
                        .ok_or_else(|| bad(i, v))?;
                    out.push(x);
                }
                TensorData::$variant(out)
            }};
        }
        macro_rules! floats {
            ($conv:expr, $variant:ident) => {{
                let mut out = Vec::with_capacity(leaves.len());
                for (i, v) in leaves.iter().enumerate() {
                    out.push($conv(v.as_f64().ok_or_else(|| bad(i, v))?));
                }
                TensorData::$variant(out)
            }};
        }
        Ok(match datatype {
            DataType::Bool => {
                let mut out = Vec::with_capacity(leaves.len());
                for (i, v) in leaves.iter().enumerate() {
                    out.push(v.as_bool().ok_or_else(|| bad(i, v))?);
                }
                TensorData::Bool(out)
            }
            DataType::Uint8 => ints!(u8, Uint8),
            DataType::Uint16 => ints!(u16, Uint16),
            DataType::Uint32 => ints!(u32, Uint32),
            DataType::Uint64 => ints!(u64, Uint64),
            DataType::Int8 => ints!(i8, Int8),
            DataType::Int16 => ints!(i16, Int16),
            DataType::Int32 => ints!(i32, Int32),
            DataType::Int64 => ints!(i64, Int64),
            DataType::Fp16 => floats!(f16::from_f64, Fp16),
            DataType::Fp32 => floats!(|x: f64| x as f32, Fp32),
            DataType::Fp64 => floats!(|x: f64| x, Fp64),
            DataType::Bytes => {
                let mut out = Vec::with_capacity(leaves.len());
                for (i, v) in leaves.iter().enumerate() {
                    out.push(v.as_str().ok_or_else(|| bad(i, v))?.as_bytes().to_vec());
                }
                TensorData::Bytes(out)
            }
        })
    }
}

pub(super) fn check_raw_size(
    datatype: DataType,
    size: usize,
    got: usize,
    elements: usize,
) -> Result<(), TensorError> {
    let expected = elements.saturating_mul(size);
    if got != expected {
        return Err(TensorError::RawSize {
            datatype,
            elements,
            expected,
            got,
        });
    }
    Ok(())
}

pub(super) fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

pub(super) fn truncate(mut s: String) -> String {
    if s.len() > 40 {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Splits BYTES raw data: each element is a 4-byte little-endian length and
/// then that many bytes.
pub(super) fn decode_bytes(raw: &[u8], elements: usize) -> Result<Vec<Vec<u8>>, TensorError> {
    let mut out = Vec::with_capacity(elements.min(raw.len() / 4));
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(TensorError::BytesFraming(format!(
                "element {} has a truncated length prefix",
                out.len()
            )));
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if tail.len() < len {
            return Err(TensorError::BytesFraming(format!(
                "element {} declares {len} bytes but only {} remain",
                out.len(),
                tail.len()
            )));
        }
        let (item, tail) = tail.split_at(len);
        out.push(item.to_vec());
        rest = tail;
    }
    if out.len() != elements {
        return Err(TensorError::BytesFraming(format!(
            "{} elements expected, {} found",
            elements,
            out.len()
        )));
    }
    Ok(out)
}
