//! V2 datatypes and the typed buffers that carry tensor data through the core.
//!
//! Every wire encoding (JSON `data`, HTTP binary extension, gRPC `contents`
//! and `raw_*_contents`) is decoded here into one [`TensorData`] per tensor,
//! in a single pass and a single copy; backends take ownership of the buffer
//! without copying it again. Encoding back is the mirror image.

use half::f16;

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
    #[error("'data' is not valid JSON: {0}")]
    BadJson(String),
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

mod data;
pub use data::JsonElementsSeed;
mod elements;
mod json;

pub use elements::Elements;
pub use json::JsonElements;

/// A request's input: name, shape and elements (see [`Elements`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Elements,
}

#[cfg(test)]
mod tests;
