//! The V2 HTTP/REST infer body, in both encodings: JSON tensors, and the
//! binary tensor data extension (`Inference-Header-Content-Length`, a JSON
//! header followed by the raw tensors of the inputs that carry
//! `binary_data_size`) that `tritonclient.http` uses by default.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::service::{decode_input, InferRequest, InferResponse};
use bytes::Bytes;

use crate::tensor::{DataType, Elements, JsonElements, JsonElementsSeed, TensorData, TensorError};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

// Parameters are typed structs of the keys infergate acts on (others are
// accepted and ignored), so no map is built per request and tensor.
#[derive(Deserialize)]
struct RequestJson<'a> {
    id: Option<String>,
    #[serde(default)]
    parameters: RequestParams,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize, Default)]
struct RequestParams {
    binary_data_output: Option<bool>,
    /// Microseconds, as Triton's; kept as a value so that a wrong type is
    /// a clear 400.
    timeout: Option<Value>,
}

struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    parameters: InputParams,
    data: Data<'a>,
}

/// An input's `data`, parsed straight into the typed buffer (at most the
/// shape's element count kept, the rest counted): in the same pass as the
/// request when `datatype` and `shape` came first (as every client sends
/// them), else kept as its text and parsed once they are known. Never a
/// `serde_json::Value` tree, which for a 40 MB body of numbers took 1.2 GB.
enum Data<'a> {
    Absent,
    Parsed(Result<(TensorData, usize), TensorError>),
    Text(&'a serde_json::value::RawValue),
}

/// `null` as nothing (as `Option` has it), anything else through the seed.
struct Nullable<S>(S);

impl<'de, S: serde::de::DeserializeSeed<'de>> serde::de::DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct Visit<S>(S);
        impl<'de, S: serde::de::DeserializeSeed<'de>> serde::de::Visitor<'de> for Visit<S> {
            type Value = Option<S::Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("tensor data or null")
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                self.0.deserialize(d).map(Some)
            }
        }
        d.deserialize_option(Visit(self.0))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for InputJson<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Name,
            Shape,
            Datatype,
            Parameters,
            Data,
            #[serde(other)]
            Other,
        }
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = InputJson<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an input: {\"name\", \"shape\", \"datatype\", \"data\"}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let (mut name, mut shape, mut datatype, mut parameters) = (None, None, None, None);
                let mut data = Data::Absent;
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Name => name = Some(map.next_value::<String>()?),
                        Field::Shape => shape = Some(map.next_value::<Vec<i64>>()?),
                        Field::Datatype => datatype = Some(map.next_value::<String>()?),
                        Field::Parameters => parameters = Some(map.next_value::<InputParams>()?),
                        Field::Data => {
                            let known = datatype.as_deref().and_then(DataType::parse).zip(
                                shape
                                    .as_deref()
                                    .and_then(|s| crate::tensor::element_count(s).ok()),
                            );
                            data = match known {
                                Some((datatype, limit)) => {
                                    match map.next_value_seed(Nullable(JsonElementsSeed {
                                        datatype,
                                        limit,
                                    }))? {
                                        Some(parsed) => Data::Parsed(parsed),
                                        None => Data::Absent,
                                    }
                                }
                                None => match map
                                    .next_value::<Option<&'de serde_json::value::RawValue>>()?
                                {
                                    Some(raw) => Data::Text(raw),
                                    None => Data::Absent,
                                },
                            };
                        }
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(InputJson {
                    name: name.ok_or_else(|| A::Error::missing_field("name"))?,
                    shape: shape.ok_or_else(|| A::Error::missing_field("shape"))?,
                    datatype: datatype.ok_or_else(|| A::Error::missing_field("datatype"))?,
                    parameters: parameters.unwrap_or_default(),
                    data,
                })
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
struct InputParams {
    /// Kept as a value so that a wrong type gets an error naming the input.
    binary_data_size: Option<Value>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: OutputParams,
}

#[derive(Deserialize, Default)]
struct OutputParams {
    binary_data: Option<bool>,
}

/// A decoded request plus how each output is to be sent back.
#[derive(Debug)]
pub struct DecodedRequest {
    pub request: InferRequest,
    /// Per requested output (same order as `request.outputs`): binary or JSON.
    pub binary_outputs: Vec<bool>,
    /// For outputs not named in the request (all of them when none is).
    pub binary_default: bool,
}

/// Decodes an infer body. `header_length` is the value of the
/// `Inference-Header-Content-Length` header, if any.
pub fn decode_request(
    model: &str,
    version: Option<&str>,
    body: &Bytes,
    header_length: Option<usize>,
) -> Result<DecodedRequest, Error> {
    let (header, mut binary) = match header_length {
        Some(n) if n > body.len() => {
            return Err(Error::BadRequest(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )))
        }
        Some(n) => (&body[..n], body.slice(n..)),
        None => (&body[..], Bytes::new()),
    };
    let parsed: RequestJson = serde_json::from_slice(header)
        .map_err(|e| Error::BadRequest(format!("invalid inference request JSON: {e}")))?;

    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in parsed.inputs {
        let binary_size = match &input.parameters.binary_data_size {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::BadRequest(format!(
                    "input '{}': binary_data_size must be a non-negative integer",
                    input.name
                ))
            })? as usize),
        };
        let tensor = match (binary_size, input.data) {
            (Some(_), Data::Parsed(_) | Data::Text(_)) => {
                return Err(Error::BadRequest(format!(
                    "input '{}' has both 'data' and binary_data_size",
                    input.name
                )))
            }
            (Some(size), Data::Absent) => {
                if size > binary.len() {
                    return Err(Error::BadRequest(format!(
                        "input '{}': binary_data_size {size} exceeds the {} binary bytes left in the body",
                        input.name,
                        binary.len()
                    )));
                }
                // A slice of the body, not a copy: decoded when the run is assembled.
                let raw = binary.split_to(size);
                decode_input(&input.name, &input.datatype, input.shape, |dt, n| {
                    Elements::raw(dt, raw, n)
                })?
            }
            (None, data @ (Data::Parsed(_) | Data::Text(_))) => {
                decode_input(&input.name, &input.datatype, input.shape, |dt, n| {
                    let (data, got) = match data {
                        Data::Parsed(parsed) => parsed?,
                        Data::Text(text) => TensorData::from_json_text(dt, text.get(), n)?,
                        Data::Absent => unreachable!("matched above"),
                    };
                    if got != n {
                        return Err(TensorError::ElementCount {
                            shape: Vec::new(),
                            expected: n,
                            got,
                        });
                    }
                    Ok(Elements::Typed(data))
                })?
            }
            (None, Data::Absent) => {
                decode_input(&input.name, &input.datatype, input.shape, |_, _| {
                    Err(TensorError::Missing)
                })?
            }
        };
        inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(Error::BadRequest(format!(
            "{} bytes of binary data follow the inputs that no input's binary_data_size accounts for",
            binary.len()
        )));
    }

    let timeout = parsed
        .parameters
        .timeout
        .as_ref()
        .map(|v| {
            v.as_u64()
                .map(std::time::Duration::from_micros)
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "parameters.timeout must be a whole number of microseconds, not {v}"
                    ))
                })
        })
        .transpose()?;
    let binary_default = parsed.parameters.binary_data_output.unwrap_or(false);
    let binary_outputs = parsed
        .outputs
        .iter()
        .map(|o| o.parameters.binary_data.unwrap_or(binary_default))
        .collect();
    Ok(DecodedRequest {
        request: InferRequest {
            transport: crate::monitor::Transport::Http,
            model: model.to_string(),
            version: version.map(str::to_string),
            id: parsed.id,
            inputs,
            outputs: parsed.outputs.into_iter().map(|o| o.name).collect(),
            timeout,
            client_timeout: None,
        },
        binary_outputs,
        binary_default,
    })
}

/// An encoded response body, and the JSON header's length when binary
/// tensors follow it.
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

#[derive(Serialize)]
struct ResponseHead<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputHead<'a>>,
}

#[derive(Serialize)]
struct OutputHead<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonElements<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Encodes an answer: the JSON header serialised straight from the tensors
/// (no intermediate `Value` tree), then the raw bytes of the outputs sent
/// in binary.
pub fn encode_response(
    response: &InferResponse,
    requested: &[String],
    binary_outputs: &[bool],
    binary_default: bool,
) -> EncodedResponse {
    let is_binary = |name: &str| {
        requested
            .iter()
            .position(|r| r == name)
            .map_or(binary_default, |i| binary_outputs[i])
    };
    let mut tail = Vec::new();
    let mut any_binary = false;
    let outputs = response
        .outputs
        .iter()
        .map(|t| {
            let binary = is_binary(&t.name);
            any_binary |= binary;
            let parameters = binary.then(|| {
                let before = tail.len();
                t.data.write_raw(&mut tail);
                BinarySize {
                    binary_data_size: tail.len() - before,
                }
            });
            OutputHead {
                name: &t.name,
                datatype: t.data.datatype().as_str(),
                shape: &t.shape,
                parameters,
                data: (!binary).then_some(JsonElements(&t.data)),
            }
        })
        .collect();
    let head = ResponseHead {
        model_name: &response.model,
        model_version: response.version.to_string(),
        id: response.id.as_deref(),
        outputs,
    };
    let mut body = Vec::with_capacity(256 + tail.len());
    serde_json::to_writer(&mut body, &head).expect("the header always serialises");
    if !any_binary {
        return EncodedResponse {
            body,
            header_length: None,
        };
    }
    let header_length = body.len();
    body.extend_from_slice(&tail);
    EncodedResponse {
        body,
        header_length: Some(header_length),
    }
}

/// `{"labels": [{"id": "...", "label": 3}, {"id": "...", "label": [1, 0]}]}`:
/// a body that is not this is refused whole; an item whose label is not a
/// number or a list of numbers is kept, marked invalid, so that the others
/// are still applied.
pub fn decode_labels(body: &[u8]) -> Result<Vec<crate::feedback::LabelIn>, Error> {
    #[derive(Deserialize)]
    struct Body {
        labels: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        id: String,
        label: Value,
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "invalid feedback body (expected {{\"labels\": [{{\"id\": ..., \"label\": ...}}]}}): {e}"
        ))
    })?;
    let number = |v: &Value| v.as_f64();
    Ok(parsed
        .labels
        .into_iter()
        .map(|item| {
            let values = match &item.label {
                Value::Array(rows) => rows
                    .iter()
                    .map(number)
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| "a label list must hold only numbers".to_string()),
                v => number(v).map(|x| vec![x]).ok_or_else(|| {
                    format!(
                        "label {v} is not a number (a class index or a value) or a list of them"
                    )
                }),
            };
            crate::feedback::LabelIn {
                id: item.id,
                values,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use serde_json::json;

    fn decode(body: &str) -> Result<DecodedRequest, Error> {
        decode_request("m", None, &Bytes::from(body.to_string()), None)
    }

    /// `data` before `datatype`/`shape` (kept as text, parsed after) and
    /// after them (parsed in the same pass) give the same tensor and the
    /// same errors; `null` is no data.
    #[test]
    fn json_data_in_either_order() {
        let after =
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
        let before =
            r#"{"inputs":[{"data":[[1,2],[3,4.5]],"name":"x","datatype":"FP32","shape":[2,2]}]}"#;
        for body in [after, before] {
            let d = decode(body).unwrap();
            assert_eq!(
                d.request.inputs[0].data,
                Elements::Typed(TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.5])),
                "{body}"
            );
        }
        for (body, says) in [
            (
                r#"{"inputs":[{"name":"x","shape":[3],"datatype":"UINT8","data":[1,256,2]}]}"#,
                "element 1 is 256",
            ),
            (
                r#"{"inputs":[{"data":[1,256,2],"name":"x","shape":[3],"datatype":"UINT8"}]}"#,
                "element 1 is 256",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2,3,4,5]}]}"#,
                "holds 2 elements but 5 were given",
            ),
            (
                r#"{"inputs":[{"data":[1,2,3],"name":"x","shape":[2],"datatype":"FP32"}]}"#,
                "holds 2 elements but 3 were given",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":null}]}"#,
                "no data given",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[{"a":1}]}]}"#,
                "element 0 is an object",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP99","data":[1]}]}"#,
                "unknown datatype",
            ),
            (
                r#"{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}"#,
                "missing field `shape`",
            ),
        ] {
            let e = decode(body).unwrap_err().to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn binary_and_json_inputs_mix() {
        let head = br#"{"id":"7","inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[1],"datatype":"INT64","data":[5]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2f32).to_le_bytes());
        let d = decode_request("m", None, &Bytes::from(body), Some(head.len())).unwrap();
        assert_eq!(d.request.id.as_deref(), Some("7"));
        // The binary input stays a slice of the body until the run is assembled.
        assert!(matches!(
            d.request.inputs[0].data,
            Elements::Raw { count: 2, .. }
        ));
        assert_eq!(
            d.request.inputs[0].data.clone().into_typed(),
            TensorData::Fp32(vec![1.5, -2.0])
        );
        assert_eq!(
            d.request.inputs[1].data,
            Elements::Typed(TensorData::Int64(vec![5]))
        );
        assert_eq!(d.binary_outputs, vec![true]);
    }

    #[test]
    fn leftover_or_short_binary_is_refused() {
        let head = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&[0; 6]);
        let body = Bytes::from(body);
        let err = decode_request("m", None, &body, Some(head.len())).unwrap_err();
        assert!(err.to_string().contains("2 bytes"), "{err}");
        let err =
            decode_request("m", None, &body.slice(..head.len() + 2), Some(head.len())).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let err =
            decode_request("m", None, &Bytes::from_static(head), Some(head.len() + 1)).unwrap_err();
        assert!(
            err.to_string().contains("Inference-Header-Content-Length"),
            "{err}"
        );
    }

    #[test]
    fn element_count_checked_for_json() {
        let body = br#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#;
        let err = decode_request("m", None, &Bytes::from_static(body), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("'a'") && text.contains("4 elements") && text.contains("3 were given"),
            "{text}"
        );
    }

    #[test]
    fn response_binary_layout() {
        let response = InferResponse {
            model: "m".into(),
            version: 3,
            id: None,
            outputs: vec![
                Tensor {
                    name: "p".into(),
                    shape: vec![1, 2],
                    data: TensorData::Fp32(vec![0.25, 0.75]),
                },
                Tensor {
                    name: "l".into(),
                    shape: vec![1],
                    data: TensorData::Int64(vec![1]),
                },
            ],
        };
        let e = encode_response(&response, &["p".into(), "l".into()], &[true, false], false);
        let n = e.header_length.unwrap();
        let head: Value = serde_json::from_slice(&e.body[..n]).unwrap();
        assert_eq!(head["model_version"], "3");
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(head["outputs"][1]["data"], json!([1]));
        assert_eq!(&e.body[n..n + 4], &0.25f32.to_le_bytes());
        let plain = encode_response(&response, &[], &[], false);
        assert!(plain.header_length.is_none());
    }
}
