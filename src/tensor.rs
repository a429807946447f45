//! V2 datatypes and the typed buffers that carry tensor data through the core.
//!
//! Every wire encoding (JSON `data`, HTTP binary extension, gRPC `contents`
//! and `raw_*_contents`) is decoded here into one [`TensorData`] per tensor,
//! in a single pass and a single copy; backends take ownership of the buffer
//! without copying it again. Encoding back is the mirror image.

use half::f16;
use serde_json::Value;

/// A V2 tensor datatype, as the protocol spells it (`FP32`, `BYTES`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses the protocol's spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element in the raw encoding; `None` for BYTES, whose
    /// elements are length-prefixed.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The elements of one tensor, flattened in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Why tensor data could not be decoded. The caller adds the tensor's name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("unknown datatype '{0}'")]
    UnknownDatatype(String),
    #[error("shape {shape:?} holds {expected} elements but {got} were given")]
    ElementCount {
        shape: Vec<i64>,
        expected: usize,
        got: usize,
    },
    #[error("invalid shape {0:?}: dimensions must be non-negative")]
    NegativeDim(Vec<i64>),
    #[error("raw data of {datatype} with {elements} elements needs {expected} bytes but {got} were given")]
    RawSize {
        datatype: DataType,
        elements: usize,
        expected: usize,
        got: usize,
    },
    #[error("malformed BYTES raw data: {0}")]
    BytesFraming(String),
    #[error("element {index} is {got}, which is not a valid {datatype} value")]
    BadElement {
        index: usize,
        datatype: DataType,
        got: String,
    },
    #[error("no data given")]
    Missing,
    #[error("{0} data can only be sent as raw_input_contents (it has no typed contents field)")]
    RawOnly(DataType),
    #[error("{datatype} data given in the '{field}' contents field, which is not the one for {datatype}")]
    WrongContents {
        datatype: DataType,
        field: &'static str,
    },
}

/// A named tensor: what requests carry in and responses carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// Number of elements a shape holds, refusing negative dimensions.
pub fn element_count(shape: &[i64]) -> Result<usize, TensorError> {
    shape.iter().try_fold(1usize, |acc, &d| {
        if d < 0 {
            Err(TensorError::NegativeDim(shape.to_vec()))
        } else {
            Ok(acc.saturating_mul(d as usize))
        }
    })
}

/// Applies `$body` to the vector inside every numeric variant (not BOOL, BYTES).
macro_rules! numeric_variants {
    ($value:expr, $v:ident => $body:expr, bool $b:ident => $bbody:expr, bytes $s:ident => $sbody:expr) => {
        match $value {
            TensorData::Bool($b) => $bbody,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($s) => $sbody,
        }
    };
}

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
    fn extend_from_raw(&mut self, raw: &[u8]) {
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
    fn extend_from(&mut self, other: &TensorData) -> bool {
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

fn check_raw_size(
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

/// An input's elements as they arrived: typed already (JSON, gRPC typed
/// contents, BYTES), or still the raw little-endian bytes of the wire — a
/// slice of the received body, not a copy — decoded only when the run is
/// assembled, straight into the buffer the runtime takes. A request's rows
/// are thus copied once on the way in, whether they run alone or merged
/// into a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    Typed(TensorData),
    Raw {
        datatype: DataType,
        bytes: bytes::Bytes,
        count: usize,
    },
}

impl Elements {
    /// Accepts raw elements, checking their size (BYTES: decoding them,
    /// since their elements have no fixed size).
    pub fn raw(
        datatype: DataType,
        bytes: bytes::Bytes,
        count: usize,
    ) -> Result<Elements, TensorError> {
        match datatype.element_size() {
            None => TensorData::from_raw(datatype, &bytes, count).map(Elements::Typed),
            Some(size) => {
                check_raw_size(datatype, size, bytes.len(), count)?;
                Ok(Elements::Raw {
                    datatype,
                    bytes,
                    count,
                })
            }
        }
    }

    pub fn datatype(&self) -> DataType {
        match self {
            Elements::Typed(d) => d.datatype(),
            Elements::Raw { datatype, .. } => *datatype,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Elements::Typed(d) => d.len(),
            Elements::Raw { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f(index, value)` for every numeric element, as f64, without
    /// keeping a decoded copy (BOOL is 0/1; BYTES have no numbers and are
    /// skipped). Stops at the first error.
    pub fn try_for_each_f64<E>(
        &self,
        mut f: impl FnMut(usize, f64) -> Result<(), E>,
    ) -> Result<(), E> {
        macro_rules! typed {
            ($v:expr) => {
                for (i, x) in $v.iter().enumerate() {
                    f(i, *x as f64)?;
                }
            };
        }
        macro_rules! raw {
            ($bytes:expr, $t:ty) => {
                for (i, c) in $bytes.chunks_exact(std::mem::size_of::<$t>()).enumerate() {
                    f(
                        i,
                        <$t>::from_le_bytes(c.try_into().expect("element size")) as f64,
                    )?;
                }
            };
        }
        match self {
            Elements::Typed(d) => match d {
                TensorData::Bool(v) => typed!(v.iter().map(|&b| b as u8).collect::<Vec<_>>()),
                TensorData::Uint8(v) => typed!(v),
                TensorData::Uint16(v) => typed!(v),
                TensorData::Uint32(v) => typed!(v),
                TensorData::Uint64(v) => typed!(v),
                TensorData::Int8(v) => typed!(v),
                TensorData::Int16(v) => typed!(v),
                TensorData::Int32(v) => typed!(v),
                TensorData::Int64(v) => typed!(v),
                TensorData::Fp16(v) => {
                    for (i, x) in v.iter().enumerate() {
                        f(i, x.to_f64())?;
                    }
                }
                TensorData::Fp32(v) => typed!(v),
                TensorData::Fp64(v) => typed!(v),
                TensorData::Bytes(_) => {}
            },
            Elements::Raw {
                datatype, bytes, ..
            } => match datatype {
                DataType::Bool | DataType::Uint8 => raw!(bytes, u8),
                DataType::Uint16 => raw!(bytes, u16),
                DataType::Uint32 => raw!(bytes, u32),
                DataType::Uint64 => raw!(bytes, u64),
                DataType::Int8 => raw!(bytes, i8),
                DataType::Int16 => raw!(bytes, i16),
                DataType::Int32 => raw!(bytes, i32),
                DataType::Int64 => raw!(bytes, i64),
                DataType::Fp16 => {
                    for (i, c) in bytes.chunks_exact(2).enumerate() {
                        f(i, f16::from_le_bytes([c[0], c[1]]).to_f64())?;
                    }
                }
                DataType::Fp32 => raw!(bytes, f32),
                DataType::Fp64 => raw!(bytes, f64),
                DataType::Bytes => {}
            },
        }
        Ok(())
    }

    /// The typed buffer (decoding raw elements: the one copy).
    pub fn into_typed(self) -> TensorData {
        match self {
            Elements::Typed(d) => d,
            Elements::Raw {
                datatype,
                bytes,
                count,
            } => {
                let mut data = TensorData::with_capacity(datatype, count);
                data.extend_from_raw(&bytes);
                data
            }
        }
    }

    /// One buffer holding every part end to end, raw parts decoded straight
    /// into it. `None` when the datatypes differ.
    pub fn concat(parts: &[&Elements]) -> Option<TensorData> {
        let first = parts.first()?;
        let datatype = first.datatype();
        let mut out = TensorData::with_capacity(datatype, parts.iter().map(|p| p.len()).sum());
        for p in parts {
            match p {
                Elements::Typed(d) => {
                    if !out.extend_from(d) {
                        return None;
                    }
                }
                Elements::Raw {
                    datatype: dt,
                    bytes,
                    ..
                } if *dt == datatype => out.extend_from_raw(bytes),
                Elements::Raw { .. } => return None,
            }
        }
        Some(out)
    }
}

/// A request's input: name, shape and elements (see [`Elements`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Elements,
}

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

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn truncate(mut s: String) -> String {
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
fn decode_bytes(raw: &[u8], elements: usize) -> Result<Vec<Vec<u8>>, TensorError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
        }
        assert_eq!(DataType::parse("FLOAT32"), None);
    }

    /// Every datatype against its V2 raw encoding written out byte by byte
    /// (little-endian; BOOL one byte; BYTES behind a u32 length), both ways.
    #[test]
    fn raw_encoding_of_every_type_byte_by_byte() {
        let cases: Vec<(TensorData, Vec<u8>)> = vec![
            (TensorData::Bool(vec![true, false, true]), vec![1, 0, 1]),
            (TensorData::Uint8(vec![0, 7, 255]), vec![0, 7, 255]),
            (TensorData::Uint16(vec![1, 65535]), vec![1, 0, 0xff, 0xff]),
            (
                TensorData::Uint32(vec![u32::MAX, 3]),
                vec![0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0],
            ),
            (
                TensorData::Uint64(vec![0x0102_0304_0506_0708]),
                vec![8, 7, 6, 5, 4, 3, 2, 1],
            ),
            (TensorData::Int8(vec![-128, 127]), vec![0x80, 0x7f]),
            (
                TensorData::Int16(vec![-2, 300]),
                vec![0xfe, 0xff, 0x2c, 0x01],
            ),
            (
                TensorData::Int32(vec![i32::MIN, 5]),
                vec![0, 0, 0, 0x80, 5, 0, 0, 0],
            ),
            (
                TensorData::Int64(vec![-1, i64::MAX]),
                vec![
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0xff, 0xff, 0x7f,
                ],
            ),
            // IEEE half: 1.5 = 0x3e00, -0.25 = 0xb400.
            (
                TensorData::Fp16(vec![f16::from_f32(1.5), f16::from_f32(-0.25)]),
                vec![0x00, 0x3e, 0x00, 0xb4],
            ),
            // 1.0 = 0x3f800000, -3.5 = 0xc0600000, quiet NaN = 0x7fc00000.
            (
                TensorData::Fp32(vec![1.0, -3.5, f32::NAN]),
                vec![0, 0, 0x80, 0x3f, 0, 0, 0x60, 0xc0, 0, 0, 0xc0, 0x7f],
            ),
            // 2.0 = 0x4000000000000000, -0.0 = 0x8000000000000000.
            (
                TensorData::Fp64(vec![2.0, -0.0]),
                vec![0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x80],
            ),
            (
                TensorData::Bytes(vec![b"abc".to_vec(), vec![], vec![0xff, 0]]),
                vec![
                    3, 0, 0, 0, b'a', b'b', b'c', 0, 0, 0, 0, 2, 0, 0, 0, 0xff, 0,
                ],
            ),
        ];
        assert_eq!(cases.len(), 13, "every datatype");
        for (data, raw) in cases {
            let dt = data.datatype();
            assert_eq!(data.to_raw(), raw, "{dt} encoded");
            assert_eq!(data.raw_len(), raw.len(), "{dt} raw_len");
            let back = TensorData::from_raw(dt, &raw, data.len()).unwrap();
            // NaN != NaN: compare bit patterns through the same bytes.
            match (&back, &data) {
                (TensorData::Fp32(a), TensorData::Fp32(b)) => assert!(
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                ),
                _ => assert_eq!(back, data, "{dt} decoded"),
            }
        }
    }

    #[test]
    fn raw_size_mismatch_names_the_sizes() {
        let err = TensorData::from_raw(DataType::Fp32, &[0u8; 7], 2).unwrap_err();
        assert_eq!(
            err,
            TensorError::RawSize {
                datatype: DataType::Fp32,
                elements: 2,
                expected: 8,
                got: 7
            }
        );
        assert!(err.to_string().contains("needs 8 bytes but 7"));
    }

    #[test]
    fn bytes_framing_errors() {
        assert!(matches!(
            TensorData::from_raw(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1),
            Err(TensorError::BytesFraming(_))
        ));
        assert!(matches!(
            TensorData::from_raw(DataType::Bytes, &[1, 0], 1),
            Err(TensorError::BytesFraming(_))
        ));
        let two = TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec()]).to_raw();
        assert!(TensorData::from_raw(DataType::Bytes, &two, 3).is_err());
    }

    #[test]
    fn json_nested_and_flat_agree() {
        let flat = TensorData::from_json(DataType::Fp32, &json!([1, 2.5, 3, 4])).unwrap();
        let nested = TensorData::from_json(DataType::Fp32, &json!([[1, 2.5], [3, 4]])).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat, TensorData::Fp32(vec![1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn json_rejects_out_of_range_and_wrong_kind() {
        let err = TensorData::from_json(DataType::Uint8, &json!([1, 256])).unwrap_err();
        assert!(
            matches!(err, TensorError::BadElement { index: 1, .. }),
            "{err}"
        );
        let err = TensorData::from_json(DataType::Int32, &json!([1.5])).unwrap_err();
        assert!(matches!(err, TensorError::BadElement { index: 0, .. }));
        let err = TensorData::from_json(DataType::Bool, &json!([1])).unwrap_err();
        assert!(err.to_string().contains("not a valid BOOL"), "{err}");
        let err = TensorData::from_json(DataType::Fp32, &json!(["x"])).unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
    }

    #[test]
    fn json_encoding() {
        let text = |d: TensorData| serde_json::to_string(&JsonElements(&d)).unwrap();
        assert_eq!(
            text(TensorData::Fp32(vec![0.1, f32::INFINITY, f32::NAN])),
            "[0.1,null,null]"
        );
        assert_eq!(
            text(TensorData::Bytes(vec![b"hi".to_vec(), vec![0xff]])),
            "[\"hi\",\"\u{fffd}\"]"
        );
        assert_eq!(text(TensorData::Int64(vec![-3])), "[-3]");
        assert_eq!(text(TensorData::Fp16(vec![f16::from_f32(0.5)])), "[0.5]");
        assert_eq!(text(TensorData::Bool(vec![true])), "[true]");
    }

    #[test]
    fn sizes_and_emptiness() {
        // A zero dimension is a valid, empty shape; a negative one is not.
        assert_eq!(element_count(&[0, 3]), Ok(0));
        assert_eq!(element_count(&[2, 3]), Ok(6));
        assert_eq!(element_count(&[]), Ok(1));
        assert!(matches!(
            element_count(&[2, -1]),
            Err(TensorError::NegativeDim(_))
        ));
        assert!(TensorData::Fp32(vec![]).is_empty());
        assert!(!TensorData::Bytes(vec![vec![]]).is_empty());
        let raw = |n: usize| Elements::raw(DataType::Uint8, bytes::Bytes::from(vec![0u8; n]), n);
        assert!(raw(0).unwrap().is_empty());
        assert!(!raw(2).unwrap().is_empty());
    }

    #[test]
    fn a_raw_part_of_another_datatype_is_not_merged() {
        let fp32 = Elements::raw(DataType::Fp32, bytes::Bytes::from(vec![0u8; 4]), 1).unwrap();
        let int32 = Elements::raw(DataType::Int32, bytes::Bytes::from(vec![0u8; 4]), 1).unwrap();
        assert!(Elements::concat(&[&fp32, &int32]).is_none());
        assert_eq!(
            Elements::concat(&[&fp32, &fp32]),
            Some(TensorData::Fp32(vec![0.0, 0.0]))
        );
    }

    #[test]
    fn long_values_in_messages_are_cut_at_a_character() {
        assert_eq!(truncate("x".repeat(40)), "x".repeat(40));
        assert_eq!(truncate("x".repeat(41)), format!("{}…", "x".repeat(40)));
        // Byte 40 falls inside an 'é' (2 bytes): cut before it.
        let s = format!("a{}", "é".repeat(25));
        assert_eq!(truncate(s.clone()), format!("{}…", &s[..39]));
    }

    #[test]
    fn bytes_framing_ends_with_an_empty_element() {
        assert_eq!(
            decode_bytes(&[1, 0, 0, 0, b'x', 0, 0, 0, 0], 2),
            Ok(vec![b"x".to_vec(), vec![]])
        );
        assert!(decode_bytes(&[1, 0, 0, 0, b'x', 0, 0, 0], 2).is_err());
    }

    #[test]
    fn concat_then_split_gives_the_parts_back() {
        let a = TensorData::Int64(vec![1, 2, 3]);
        let b = TensorData::Int64(vec![4]);
        let c = TensorData::Int64(vec![5, 6]);
        let typed = |d: &TensorData| Elements::Typed(d.clone());
        let joined = Elements::concat(&[&typed(&a), &typed(&b), &typed(&c)]).unwrap();
        assert_eq!(joined, TensorData::Int64(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(joined.clone().split(&[3, 1, 2]).unwrap(), vec![a, b, c]);
        assert!(joined.split(&[3, 1]).is_none());
        let s = Elements::Typed(TensorData::Bytes(vec![b"x".to_vec()]));
        assert!(Elements::concat(&[&s, &Elements::Typed(TensorData::Int64(vec![1]))]).is_none());
        assert_eq!(Elements::concat(&[&s, &s]).unwrap().len(), 2);
    }

    #[test]
    fn raw_elements_decode_once_alone_or_merged() {
        let a: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let raw = Elements::raw(DataType::Fp32, bytes::Bytes::from(a), 2).unwrap();
        assert_eq!(raw.len(), 2);
        assert_eq!(raw.clone().into_typed(), TensorData::Fp32(vec![1.5, -2.0]));
        let typed = Elements::Typed(TensorData::Fp32(vec![7.0]));
        assert_eq!(
            Elements::concat(&[&raw, &typed, &raw]).unwrap(),
            TensorData::Fp32(vec![1.5, -2.0, 7.0, 1.5, -2.0])
        );
        let other = Elements::Typed(TensorData::Int64(vec![1]));
        assert!(Elements::concat(&[&raw, &other]).is_none());
        assert!(matches!(
            Elements::raw(DataType::Fp32, bytes::Bytes::from_static(&[0; 7]), 2),
            Err(TensorError::RawSize {
                expected: 8,
                got: 7,
                ..
            })
        ));
        // BYTES are decoded when accepted.
        let s = TensorData::Bytes(vec![b"ab".to_vec()]).to_raw();
        assert!(matches!(
            Elements::raw(DataType::Bytes, s.into(), 1).unwrap(),
            Elements::Typed(_)
        ));
    }

    #[test]
    fn element_count_refuses_negative() {
        assert_eq!(element_count(&[2, 3]).unwrap(), 6);
        assert_eq!(element_count(&[]).unwrap(), 1);
        assert!(element_count(&[2, -1]).is_err());
    }
}
