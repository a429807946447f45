//! A request's elements as they arrived, decoded when the run is assembled.

use super::data::check_raw_size;
use super::*;

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
