//! The request to send, built once, in the encoding the run uses, and the
//! outputs a good answer must carry.

use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::pb;

/// A tensor as the model describes it (shape -1: any).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct Metadata {
    pub inputs: Vec<Spec>,
    pub outputs: Vec<Spec>,
}

impl Metadata {
    /// From the JSON of `GET /v2/models/{m}`.
    pub fn from_json(v: &Value) -> anyhow::Result<Metadata> {
        let list = |key: &str| -> anyhow::Result<Vec<Spec>> {
            v[key]
                .as_array()
                .with_context(|| format!("model metadata has no '{key}'"))?
                .iter()
                .map(|t| {
                    Ok(Spec {
                        name: t["name"]
                            .as_str()
                            .context("tensor without name")?
                            .to_string(),
                        datatype: t["datatype"]
                            .as_str()
                            .context("tensor without datatype")?
                            .to_string(),
                        shape: t["shape"]
                            .as_array()
                            .context("tensor without shape")?
                            .iter()
                            .map(|d| d.as_i64().context("shape entries are integers"))
                            .collect::<anyhow::Result<_>>()?,
                    })
                })
                .collect()
        };
        Ok(Metadata {
            inputs: list("inputs")?,
            outputs: list("outputs")?,
        })
    }

    pub fn from_grpc(m: pb::ModelMetadataResponse) -> Metadata {
        let conv = |t: pb::model_metadata_response::TensorMetadata| Spec {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        };
        Metadata {
            inputs: m.inputs.into_iter().map(conv).collect(),
            outputs: m.outputs.into_iter().map(conv).collect(),
        }
    }
}

/// One input, held in both the raw (little-endian) and the JSON encoding.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub raw: Bytes,
    pub json: Value,
}

/// Everything a run sends, prepared once.
#[derive(Debug, Clone)]
pub struct Payload {
    pub inputs: Vec<Input>,
    /// Outputs a good answer must have, with their expected shapes (-1: any).
    pub expected: Vec<Spec>,
}

fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

/// `shape` with every -1 replaced: the first by `batch`, others by 1.
fn concrete(shape: &[i64], batch: usize) -> Vec<i64> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d >= 0 {
                d
            } else if i == 0 {
                batch as i64
            } else {
                1
            }
        })
        .collect()
}

impl Payload {
    /// Random data of the right type and shape for every input. `shapes`
    /// overrides an input's shape (`--shape name=1,64`).
    pub fn random(
        meta: &Metadata,
        batch: usize,
        shapes: &[(String, Vec<i64>)],
        seed: u64,
    ) -> anyhow::Result<Payload> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut inputs = Vec::new();
        for spec in &meta.inputs {
            let shape = match shapes.iter().find(|(n, _)| n == &spec.name) {
                Some((_, s)) => s.clone(),
                None => concrete(&spec.shape, batch),
            };
            let n: usize = shape.iter().map(|&d| d.max(0) as usize).product();
            let (raw, json) = random_data(&spec.datatype, n, &mut rng)
                .with_context(|| format!("input '{}' has datatype {}", spec.name, spec.datatype))?;
            inputs.push(Input {
                name: spec.name.clone(),
                datatype: spec.datatype.clone(),
                shape,
                raw: raw.into(),
                json,
            });
        }
        let rows = inputs
            .first()
            .and_then(|i| i.shape.first())
            .map_or(batch, |&r| r as usize);
        Ok(Payload {
            inputs,
            expected: expected_outputs(meta, rows),
        })
    }

    /// The inputs of a V2 JSON infer request (`{"inputs": [{name, shape,
    /// datatype, data}]}`), sent as they are.
    pub fn from_request_file(path: &Path, meta: &Metadata) -> anyhow::Result<Payload> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let mut inputs = Vec::new();
        for t in v["inputs"]
            .as_array()
            .context("the request file has no 'inputs' array")?
        {
            let name = t["name"]
                .as_str()
                .context("input without name")?
                .to_string();
            let datatype = t["datatype"]
                .as_str()
                .context("input without datatype")?
                .to_string();
            let shape: Vec<i64> =
                serde_json::from_value(t["shape"].clone()).context("input shape")?;
            let mut flat = Vec::new();
            flatten(&t["data"], &mut flat);
            let raw = raw_from_json(&datatype, &flat).with_context(|| format!("input '{name}'"))?;
            inputs.push(Input {
                name,
                datatype,
                shape,
                raw: raw.into(),
                json: Value::Array(flat),
            });
        }
        let rows = inputs
            .first()
            .and_then(|i| i.shape.first())
            .map_or(1, |&r| r as usize);
        Ok(Payload {
            inputs,
            expected: expected_outputs(meta, rows),
        })
    }

    /// A V2 JSON body.
    pub fn http_json(&self) -> Bytes {
        let inputs: Vec<Value> = self
            .inputs
            .iter()
            .map(|i| json!({ "name": i.name, "shape": i.shape, "datatype": i.datatype, "data": i.json }))
            .collect();
        serde_json::to_vec(&json!({ "inputs": inputs }))
            .expect("JSON serialises")
            .into()
    }

    /// A binary-extension body and its JSON header's length; outputs are
    /// asked for in binary too.
    pub fn http_binary(&self) -> (Bytes, usize) {
        let inputs: Vec<Value> = self
            .inputs
            .iter()
            .map(|i| {
                json!({ "name": i.name, "shape": i.shape, "datatype": i.datatype,
                        "parameters": { "binary_data_size": i.raw.len() } })
            })
            .collect();
        let mut body = serde_json::to_vec(
            &json!({ "inputs": inputs, "parameters": { "binary_data_output": true } }),
        )
        .expect("JSON serialises");
        let header = body.len();
        for i in &self.inputs {
            body.extend_from_slice(&i.raw);
        }
        (body.into(), header)
    }

    /// A gRPC request with `raw_input_contents`.
    pub fn grpc(&self, model: &str, version: Option<&str>) -> pb::ModelInferRequest {
        pb::ModelInferRequest {
            model_name: model.to_string(),
            model_version: version.unwrap_or_default().to_string(),
            id: String::new(),
            parameters: Default::default(),
            inputs: self
                .inputs
                .iter()
                .map(|i| pb::model_infer_request::InferInputTensor {
                    name: i.name.clone(),
                    datatype: i.datatype.clone(),
                    shape: i.shape.clone(),
                    parameters: Default::default(),
                    contents: None,
                })
                .collect(),
            outputs: vec![],
            raw_input_contents: self.inputs.iter().map(|i| i.raw.clone()).collect(),
        }
    }

    /// Checks an answer's outputs (name, shape) against what was expected.
    pub fn check<'a>(
        &self,
        outputs: impl Iterator<Item = (&'a str, &'a [i64])>,
    ) -> Result<(), String> {
        let mut seen = 0;
        for (name, shape) in outputs {
            let Some(spec) = self.expected.iter().find(|s| s.name == name) else {
                return Err(format!("unexpected output '{name}'"));
            };
            let fits = spec.shape.len() == shape.len()
                && spec.shape.iter().zip(shape).all(|(&e, &g)| e < 0 || e == g);
            if !fits {
                return Err(format!(
                    "output '{name}' has shape {shape:?}, expected {:?}",
                    spec.shape
                ));
            }
            seen += 1;
        }
        if seen != self.expected.len() {
            return Err(format!("{seen} outputs, expected {}", self.expected.len()));
        }
        Ok(())
    }
}

/// The model's outputs, with a -1 first dimension pinned to the request's rows.
fn expected_outputs(meta: &Metadata, rows: usize) -> Vec<Spec> {
    meta.outputs
        .iter()
        .map(|o| Spec {
            name: o.name.clone(),
            datatype: o.datatype.clone(),
            shape: o
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if i == 0 && d < 0 && meta.inputs.iter().all(|s| s.shape.first() == Some(&-1)) {
                        rows as i64
                    } else {
                        d
                    }
                })
                .collect(),
        })
        .collect()
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
        other => out.push(other.clone()),
    }
}

fn random_data(datatype: &str, n: usize, rng: &mut impl Rng) -> anyhow::Result<(Vec<u8>, Value)> {
    let mut raw = Vec::with_capacity(n * element_size(datatype).unwrap_or(8));
    let mut json = Vec::with_capacity(n);
    macro_rules! ints {
        ($t:ty, $lo:expr, $hi:expr) => {
            for _ in 0..n {
                let x: $t = rng.random_range($lo..=$hi);
                raw.extend_from_slice(&x.to_le_bytes());
                json.push(json!(x));
            }
        };
    }
    match datatype {
        "BOOL" => {
            for _ in 0..n {
                let b: bool = rng.random();
                raw.push(b as u8);
                json.push(json!(b));
            }
        }
        "UINT8" => ints!(u8, 0, 100),
        "UINT16" => ints!(u16, 0, 100),
        "UINT32" => ints!(u32, 0, 100),
        "UINT64" => ints!(u64, 0, 100),
        "INT8" => ints!(i8, -50, 50),
        "INT16" => ints!(i16, -50, 50),
        "INT32" => ints!(i32, -50, 50),
        "INT64" => ints!(i64, -50, 50),
        "FP16" => {
            for _ in 0..n {
                let x = half::f16::from_f32(rng.random::<f32>());
                raw.extend_from_slice(&x.to_le_bytes());
                json.push(json!(x.to_f32()));
            }
        }
        "FP32" => {
            for _ in 0..n {
                let x: f32 = rng.random();
                raw.extend_from_slice(&x.to_le_bytes());
                json.push(json!(x));
            }
        }
        "FP64" => {
            for _ in 0..n {
                let x: f64 = rng.random();
                raw.extend_from_slice(&x.to_le_bytes());
                json.push(json!(x));
            }
        }
        "BYTES" => {
            for _ in 0..n {
                let s = format!("s{}", rng.random_range(0..1000u32));
                raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
                raw.extend_from_slice(s.as_bytes());
                json.push(json!(s));
            }
        }
        other => bail!("unknown datatype {other}"),
    }
    Ok((raw, Value::Array(json)))
}

/// The raw encoding of JSON elements.
fn raw_from_json(datatype: &str, items: &[Value]) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let bad = || anyhow::anyhow!("element {i} ({v}) is not a valid {datatype}");
        match datatype {
            "BOOL" => raw.push(v.as_bool().ok_or_else(bad)? as u8),
            "UINT8" => raw.push(u8::try_from(v.as_u64().ok_or_else(bad)?)?),
            "UINT16" => {
                raw.extend_from_slice(&u16::try_from(v.as_u64().ok_or_else(bad)?)?.to_le_bytes())
            }
            "UINT32" => {
                raw.extend_from_slice(&u32::try_from(v.as_u64().ok_or_else(bad)?)?.to_le_bytes())
            }
            "UINT64" => raw.extend_from_slice(&v.as_u64().ok_or_else(bad)?.to_le_bytes()),
            "INT8" => {
                raw.extend_from_slice(&i8::try_from(v.as_i64().ok_or_else(bad)?)?.to_le_bytes())
            }
            "INT16" => {
                raw.extend_from_slice(&i16::try_from(v.as_i64().ok_or_else(bad)?)?.to_le_bytes())
            }
            "INT32" => {
                raw.extend_from_slice(&i32::try_from(v.as_i64().ok_or_else(bad)?)?.to_le_bytes())
            }
            "INT64" => raw.extend_from_slice(&v.as_i64().ok_or_else(bad)?.to_le_bytes()),
            "FP16" => raw
                .extend_from_slice(&half::f16::from_f64(v.as_f64().ok_or_else(bad)?).to_le_bytes()),
            "FP32" => raw.extend_from_slice(&(v.as_f64().ok_or_else(bad)? as f32).to_le_bytes()),
            "FP64" => raw.extend_from_slice(&v.as_f64().ok_or_else(bad)?.to_le_bytes()),
            "BYTES" => {
                let s = v.as_str().ok_or_else(bad)?;
                raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
            other => bail!("unknown datatype {other}"),
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata::from_json(&json!({
            "inputs": [{ "name": "input", "datatype": "FP32", "shape": [-1, 16] }],
            "outputs": [{ "name": "output", "datatype": "FP32", "shape": [-1, 16] }]
        }))
        .unwrap()
    }

    #[test]
    fn random_payload_fits_the_metadata() {
        let p = Payload::random(&meta(), 4, &[], 1).unwrap();
        assert_eq!(p.inputs[0].shape, vec![4, 16]);
        assert_eq!(p.inputs[0].raw.len(), 4 * 16 * 4);
        assert_eq!(p.inputs[0].json.as_array().unwrap().len(), 64);
        assert_eq!(p.expected[0].shape, vec![4, 16]);
        assert!(p.check([("output", &[4i64, 16][..])].into_iter()).is_ok());
        assert!(p.check([("output", &[3i64, 16][..])].into_iter()).is_err());
        assert!(p.check([("other", &[4i64, 16][..])].into_iter()).is_err());
        assert!(p.check(std::iter::empty()).is_err());
    }

    #[test]
    fn binary_body_layout() {
        let p = Payload::random(&meta(), 1, &[], 1).unwrap();
        let (body, header) = p.http_binary();
        let head: Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(head["inputs"][0]["parameters"]["binary_data_size"], 64);
        assert_eq!(&body[header..], &p.inputs[0].raw[..]);
    }

    #[test]
    fn request_file_round_trips_to_raw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.json");
        std::fs::write(
            &path,
            r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"INT16","data":[[-2, 300]]}]}"#,
        )
        .unwrap();
        let p = Payload::from_request_file(&path, &meta()).unwrap();
        assert_eq!(&p.inputs[0].raw[..], &[0xfe, 0xff, 0x2c, 0x01]);
        std::fs::write(
            &path,
            r#"{"inputs":[{"name":"input","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
        )
        .unwrap();
        assert!(Payload::from_request_file(&path, &meta()).is_err());
    }
}
