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
    /// A JSON value's leaves (nested arrays flattened, row-major) as
    /// elements of `datatype`.
    pub fn from_json(datatype: DataType, value: &Value) -> Result<TensorData, TensorError> {
        let mut sink = Sink::new(datatype, usize::MAX);
        walk(value, &mut sink);
        sink.finish().map(|(data, _)| data)
    }

    /// The same from the JSON text of the value, parsed straight into the
    /// typed buffer: no `Value` tree (a 64 MiB body of numbers would make
    /// one of about a gigabyte), and at most `limit` elements kept — those
    /// beyond are counted, not stored, so that the caller can say how many
    /// came against how many the shape wants.
    pub fn from_json_text(
        datatype: DataType,
        text: &str,
        limit: usize,
    ) -> Result<(TensorData, usize), TensorError> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(text);
        JsonElementsSeed { datatype, limit }
            .deserialize(&mut de)
            .map_err(|e| TensorError::BadJson(e.to_string()))?
    }
}

/// Deserializes a JSON value (nested arrays flattened) straight into
/// elements of `datatype`, keeping at most `limit` and counting the rest:
/// what `from_json_text` does, for a deserializer already positioned at
/// the value (the HTTP codec parses `data` in the same pass as the rest of
/// the request when `datatype` and `shape` came before it). A bad element
/// is the inner error; the JSON around it is still read through.
pub struct JsonElementsSeed {
    pub datatype: DataType,
    pub limit: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonElementsSeed {
    type Value = Result<(TensorData, usize), TensorError>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut sink = Sink::new(self.datatype, self.limit);
        Leaves(&mut sink).deserialize(d)?;
        Ok(sink.finish())
    }
}

/// One JSON leaf, as the conversion sees it.
enum Leaf<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a str),
    /// null, an object: never an element.
    Other(&'static str),
}

impl Leaf<'_> {
    fn describe(&self) -> String {
        match self {
            Leaf::Bool(b) => b.to_string(),
            Leaf::I64(v) => v.to_string(),
            Leaf::U64(v) => v.to_string(),
            Leaf::F64(v) => v.to_string(),
            Leaf::Str(s) => truncate(format!("{s:?}")),
            Leaf::Other(what) => what.to_string(),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Leaf::I64(v) => Some(v as f64),
            Leaf::U64(v) => Some(v as f64),
            Leaf::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// Where leaves go: converted to the datatype while fewer than `limit`,
/// counted after. The first element that does not convert is the error.
struct Sink {
    datatype: DataType,
    out: TensorData,
    limit: usize,
    count: usize,
    error: Option<TensorError>,
}

impl Sink {
    fn new(datatype: DataType, limit: usize) -> Sink {
        Sink {
            datatype,
            out: TensorData::with_capacity(datatype, 0),
            limit,
            count: 0,
            error: None,
        }
    }

    /// The elements and how many there were, or the first bad one.
    fn finish(self) -> Result<(TensorData, usize), TensorError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.out, self.count)),
        }
    }

    fn push(&mut self, leaf: Leaf<'_>) {
        let index = self.count;
        self.count += 1;
        if index >= self.limit || self.error.is_some() {
            return;
        }
        if let Err(e) = self.convert(index, leaf) {
            self.error = Some(e);
        }
    }

    fn convert(&mut self, index: usize, leaf: Leaf<'_>) -> Result<(), TensorError> {
        let bad = || TensorError::BadElement {
            index,
            datatype: self.datatype,
            got: leaf.describe(),
        };
        macro_rules! int {
            ($v:expr, $t:ty) => {{
                let x: Option<$t> = match leaf {
                    Leaf::I64(x) => <$t>::try_from(x).ok(),
                    Leaf::U64(x) => <$t>::try_from(x).ok(),
                    _ => None,
                };
                $v.push(x.ok_or_else(bad)?)
            }};
        }
        match &mut self.out {
            TensorData::Bool(v) => match leaf {
                Leaf::Bool(b) => v.push(b),
                _ => return Err(bad()),
            },
            TensorData::Uint8(v) => int!(v, u8),
            TensorData::Uint16(v) => int!(v, u16),
            TensorData::Uint32(v) => int!(v, u32),
            TensorData::Uint64(v) => int!(v, u64),
            TensorData::Int8(v) => int!(v, i8),
            TensorData::Int16(v) => int!(v, i16),
            TensorData::Int32(v) => int!(v, i32),
            TensorData::Int64(v) => int!(v, i64),
            TensorData::Fp16(v) => v.push(f16::from_f64(leaf.as_f64().ok_or_else(bad)?)),
            TensorData::Fp32(v) => v.push(leaf.as_f64().ok_or_else(bad)? as f32),
            TensorData::Fp64(v) => v.push(leaf.as_f64().ok_or_else(bad)?),
            TensorData::Bytes(v) => match leaf {
                Leaf::Str(s) => v.push(s.as_bytes().to_vec()),
                _ => return Err(bad()),
            },
        }
        Ok(())
    }
}

fn walk(value: &Value, sink: &mut Sink) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| walk(v, sink)),
        Value::Bool(b) => sink.push(Leaf::Bool(*b)),
        Value::Number(n) => sink.push(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Leaf::I64(i),
            (None, Some(u)) => Leaf::U64(u),
            _ => Leaf::F64(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => sink.push(Leaf::Str(s)),
        Value::Null => sink.push(Leaf::Other("null")),
        Value::Object(_) => sink.push(Leaf::Other("an object")),
    }
}

/// The streaming side: nested arrays are walked as they are read.
struct Leaves<'s>(&'s mut Sink);

impl<'de> serde::de::DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("tensor elements, or arrays of them")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Leaves(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Leaf::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Leaf::I64(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        // As serde_json's Value has it: non-negative integers that fit are i64.
        match i64::try_from(v) {
            Ok(i) => self.leaf(Leaf::I64(i)),
            Err(_) => self.leaf(Leaf::U64(v)),
        }
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Leaf::F64(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Leaf::Str(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf(Leaf::Other("null"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Read through (the JSON goes on after it), then it is one bad leaf.
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        self.leaf(Leaf::Other("an object"))
    }
}

impl Leaves<'_> {
    fn leaf<E: serde::de::Error>(self, leaf: Leaf<'_>) -> Result<(), E> {
        self.0.push(leaf);
        Ok(())
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
