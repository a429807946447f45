//! Protobuf tensors <-> the core's: raw contents kept as slices of the
//! message, typed contents read from (and written to) the field the V2
//! spec gives each datatype.

use std::time::Duration;

use super::pb;
use crate::error::Error;
use crate::service::{decode_input, InferRequest};
use crate::tensor::{DataType, Elements, TensorData, TensorError};
use pb::infer_parameter::ParameterChoice as Choice;

/// `deadline`: what the client's `grpc-timeout` leaves (see
/// `grpc_deadline`).
pub(super) fn decode_request(
    req: pb::ModelInferRequest,
    deadline: Option<Duration>,
) -> Result<InferRequest, Error> {
    let timeout = match req.parameters.get("timeout").and_then(|p| p.parameter_choice.as_ref()) {
        None => None,
        Some(Choice::Int64Param(us)) if *us >= 0 => Some(Duration::from_micros(*us as u64)),
        Some(Choice::Uint64Param(us)) => Some(Duration::from_micros(*us)),
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "parameters[\"timeout\"] must be a whole number of microseconds (int64_param), not {other:?}"
            )))
        }
    };
    let raw = req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(Error::BadRequest(format!(
            "raw_input_contents has {} entries but there are {} inputs",
            raw.len(),
            req.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut raw = raw.into_iter();
    for input in req.inputs {
        let tensor = match raw.next() {
            Some(bytes) => {
                if input.contents.is_some() {
                    return Err(Error::BadRequest(format!(
                        "input '{}' has contents although raw_input_contents is used",
                        input.name
                    )));
                }
                decode_input(&input.name, &input.datatype, input.shape, |dt, n| {
                    Elements::raw(dt, bytes, n)
                })?
            }
            None => {
                let contents = input.contents;
                decode_input(&input.name, &input.datatype, input.shape, |dt, _| {
                    from_contents(dt, contents).map(Elements::Typed)
                })?
            }
        };
        inputs.push(tensor);
    }
    let version = (!req.model_version.is_empty()).then_some(req.model_version);
    let id = (!req.id.is_empty()).then_some(req.id);
    Ok(InferRequest {
        transport: crate::monitor::Transport::Grpc,
        model: req.model_name,
        version,
        id,
        inputs,
        outputs: req.outputs.into_iter().map(|o| o.name).collect(),
        timeout,
        client_timeout: deadline,
    })
}

/// The time a `grpc-timeout` header value (`<digits><unit>`, unit one of
/// `H M S m u n`: the gRPC over HTTP/2 spec) gives, less a millisecond:
/// tonic cancels the call when the client's deadline passes, and the
/// server answers DEADLINE_EXCEEDED (and counts it) just before that
/// instead. `None`: no header, or one that is not a timeout.
pub(super) fn grpc_deadline(header: Option<&str>) -> Option<Duration> {
    let h = header?;
    let (digits, unit) = h.split_at(h.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d.saturating_sub(Duration::from_millis(1)))
}

/// Typed contents -> buffer: the field must be the one for the datatype,
/// and narrow integer types are range-checked.
fn from_contents(
    dt: DataType,
    c: Option<pb::InferTensorContents>,
) -> Result<TensorData, TensorError> {
    fn narrow<S: Copy + ToString, T: TryFrom<S>>(
        dt: DataType,
        v: Vec<S>,
    ) -> Result<Vec<T>, TensorError> {
        v.into_iter()
            .enumerate()
            .map(|(index, x)| {
                T::try_from(x).map_err(|_| TensorError::BadElement {
                    index,
                    datatype: dt,
                    got: x.to_string(),
                })
            })
            .collect()
    }
    if dt == DataType::Fp16 {
        // FP16 has no typed field: the spec requires raw_input_contents.
        return Err(TensorError::RawOnly(dt));
    }
    let c = c.ok_or(TensorError::Missing)?;
    // Data in a field other than the datatype's is a client bug worth naming.
    let filled = [
        ("bool_contents", !c.bool_contents.is_empty()),
        ("int_contents", !c.int_contents.is_empty()),
        ("int64_contents", !c.int64_contents.is_empty()),
        ("uint_contents", !c.uint_contents.is_empty()),
        ("uint64_contents", !c.uint64_contents.is_empty()),
        ("fp32_contents", !c.fp32_contents.is_empty()),
        ("fp64_contents", !c.fp64_contents.is_empty()),
        ("bytes_contents", !c.bytes_contents.is_empty()),
    ];
    let own = match dt {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 => "raw_input_contents",
    };
    if let Some((field, _)) = filled.iter().find(|(f, set)| *set && *f != own) {
        return Err(TensorError::WrongContents {
            datatype: dt,
            field,
        });
    }
    Ok(match dt {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(dt, c.int_contents)?),
        DataType::Int16 => TensorData::Int16(narrow(dt, c.int_contents)?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(dt, c.uint_contents)?),
        DataType::Uint16 => TensorData::Uint16(narrow(dt, c.uint_contents)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => {
            TensorData::Bytes(c.bytes_contents.into_iter().map(|b| b.to_vec()).collect())
        }
        DataType::Fp16 => unreachable!("refused above"),
    })
}

pub(super) fn to_contents(data: TensorData) -> pb::InferTensorContents {
    let mut c = pb::InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v,
        TensorData::Int8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int32(v) => c.int_contents = v,
        TensorData::Int64(v) => c.int64_contents = v,
        TensorData::Uint8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint32(v) => c.uint_contents = v,
        TensorData::Uint64(v) => c.uint64_contents = v,
        TensorData::Fp32(v) => c.fp32_contents = v,
        TensorData::Fp64(v) => c.fp64_contents = v,
        TensorData::Bytes(v) => c.bytes_contents = v.into_iter().map(bytes::Bytes::from).collect(),
        // Never reached: FP16 answers are always raw (see model_infer).
        TensorData::Fp16(v) => c.fp32_contents = v.into_iter().map(f32::from).collect(),
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each datatype against the field the V2 spec gives it, built by hand:
    /// `to_contents` must fill exactly that field and `from_contents` must
    /// read it back.
    #[test]
    fn typed_contents_use_the_field_of_each_datatype() {
        let c = |f: fn(&mut pb::InferTensorContents)| {
            let mut c = pb::InferTensorContents::default();
            f(&mut c);
            c
        };
        let cases = vec![
            (
                TensorData::Bool(vec![true, false]),
                c(|c| c.bool_contents = vec![true, false]),
            ),
            (
                TensorData::Uint8(vec![0, 255]),
                c(|c| c.uint_contents = vec![0, 255]),
            ),
            (
                TensorData::Uint16(vec![1, 65535]),
                c(|c| c.uint_contents = vec![1, 65535]),
            ),
            (
                TensorData::Uint32(vec![2, u32::MAX]),
                c(|c| c.uint_contents = vec![2, 4_294_967_295]),
            ),
            (
                TensorData::Uint64(vec![3, u64::MAX]),
                c(|c| c.uint64_contents = vec![3, 18_446_744_073_709_551_615]),
            ),
            (
                TensorData::Int8(vec![-128, 127]),
                c(|c| c.int_contents = vec![-128, 127]),
            ),
            (
                TensorData::Int16(vec![i16::MIN, i16::MAX]),
                c(|c| c.int_contents = vec![-32768, 32767]),
            ),
            (
                TensorData::Int32(vec![i32::MIN, i32::MAX]),
                c(|c| c.int_contents = vec![-2_147_483_648, 2_147_483_647]),
            ),
            (
                TensorData::Int64(vec![i64::MIN, i64::MAX]),
                c(|c| {
                    c.int64_contents = vec![-9_223_372_036_854_775_808, 9_223_372_036_854_775_807]
                }),
            ),
            (
                TensorData::Fp32(vec![0.1, f32::MAX]),
                c(|c| c.fp32_contents = vec![0.1, 3.402_823_5e38]),
            ),
            (
                TensorData::Fp64(vec![-0.1, f64::MIN_POSITIVE]),
                c(|c| c.fp64_contents = vec![-0.1, 2.2250738585072014e-308]),
            ),
            (
                TensorData::Bytes(vec![b"".to_vec(), vec![0xff, 0]]),
                c(|c| {
                    c.bytes_contents = vec![
                        bytes::Bytes::from_static(b""),
                        bytes::Bytes::from_static(&[0xff, 0]),
                    ]
                }),
            ),
        ];
        for (data, contents) in cases {
            let dt = data.datatype();
            assert_eq!(to_contents(data.clone()), contents, "{dt} out");
            assert_eq!(from_contents(dt, Some(contents)).unwrap(), data, "{dt} in");
        }
    }

    #[test]
    fn narrow_types_are_range_checked() {
        let c = pb::InferTensorContents {
            int_contents: vec![1, 128],
            ..Default::default()
        };
        let err = from_contents(DataType::Int8, Some(c)).unwrap_err();
        assert!(err.to_string().contains("element 1 is 128"), "{err}");
        let c = pb::InferTensorContents {
            uint_contents: vec![70000],
            ..Default::default()
        };
        assert!(from_contents(DataType::Uint16, Some(c)).is_err());
    }

    #[test]
    fn fp16_and_missing_contents_are_refused() {
        assert_eq!(
            from_contents(DataType::Fp16, None),
            Err(TensorError::RawOnly(DataType::Fp16))
        );
        assert_eq!(
            from_contents(DataType::Fp32, None),
            Err(TensorError::Missing)
        );
    }
}
