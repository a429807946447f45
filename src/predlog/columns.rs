//! Records into Arrow columns (for Parquet) and into JSON lines.

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, UInt64Builder};
use arrow_array::types::Int64Type;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float16Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, Int8Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{ArrowError, DataType as Arrow, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{json, Map, Value};

use super::{Layout, Record};
use crate::tensor::{DataType, Elements, JsonElements, Tensor, TensorData};

fn element_type(dt: DataType) -> Arrow {
    match dt {
        DataType::Bool => Arrow::Boolean,
        DataType::Uint8 => Arrow::UInt8,
        DataType::Uint16 => Arrow::UInt16,
        DataType::Uint32 => Arrow::UInt32,
        DataType::Uint64 => Arrow::UInt64,
        DataType::Int8 => Arrow::Int8,
        DataType::Int16 => Arrow::Int16,
        DataType::Int32 => Arrow::Int32,
        DataType::Int64 => Arrow::Int64,
        DataType::Fp16 => Arrow::Float16,
        DataType::Fp32 => Arrow::Float32,
        DataType::Fp64 => Arrow::Float64,
        DataType::Bytes => Arrow::Binary,
    }
}

fn list_of(t: Arrow) -> Arrow {
    Arrow::List(Arc::new(Field::new("item", t, true)))
}

/// The file schema of a layout (see the module docs of `predlog`).
pub fn schema(layout: &Layout) -> SchemaRef {
    let mut fields = vec![
        Field::new(
            "time",
            Arrow::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("id", Arrow::Utf8, false),
        Field::new("model", Arrow::Utf8, false),
        Field::new("version", Arrow::UInt64, false),
        Field::new("model_sha256", Arrow::Utf8, false),
        Field::new("protocol", Arrow::Utf8, false),
        Field::new("latency_us", Arrow::UInt64, false),
        Field::new("status", Arrow::Utf8, false),
        Field::new("error", Arrow::Utf8, true),
    ];
    let shape = list_of(Arrow::Int64);
    for (prefix, tensors) in [("input", &layout.inputs), ("output", &layout.outputs)] {
        for (name, dt) in tensors {
            fields.push(Field::new(
                format!("{prefix}.{name}"),
                list_of(element_type(*dt)),
                true,
            ));
            fields.push(Field::new(
                format!("{prefix}.{name}.shape"),
                shape.clone(),
                true,
            ));
        }
    }
    if layout.classes {
        fields.push(Field::new("predicted", list_of(Arrow::Int64), true));
    }
    fields.push(Field::new("shadow_target", Arrow::Utf8, true));
    fields.push(Field::new("shadow_error", Arrow::Utf8, true));
    for (name, dt) in &layout.outputs {
        fields.push(Field::new(
            format!("shadow.{name}"),
            list_of(element_type(*dt)),
            true,
        ));
    }
    if layout.classes {
        fields.push(Field::new("shadow_predicted", list_of(Arrow::Int64), true));
    }
    Arc::new(Schema::new(fields))
}

/// The elements of one tensor column over many records, concatenated, and
/// where each record's list ends.
struct TensorColumn {
    datatype: DataType,
    data: TensorData,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl TensorColumn {
    fn new(datatype: DataType) -> TensorColumn {
        TensorColumn {
            datatype,
            data: TensorData::with_capacity(datatype, 0),
            offsets: vec![0],
            valid: Vec::new(),
        }
    }

    /// One record's tensor; `None`, or one of another datatype: null.
    fn push(&mut self, data: Option<&TensorData>) {
        let end = *self.offsets.last().expect("starts with 0");
        match data.filter(|d| d.datatype() == self.datatype) {
            Some(d) => {
                self.data.extend_from(d);
                self.offsets.push(end + d.len() as i32);
                self.valid.push(true);
            }
            None => {
                self.offsets.push(end);
                self.valid.push(false);
            }
        }
    }

    fn finish(self) -> Result<ArrayRef, ArrowError> {
        let values: ArrayRef = match self.data {
            TensorData::Bool(v) => Arc::new(BooleanArray::from(v)),
            TensorData::Uint8(v) => Arc::new(UInt8Array::from(v)),
            TensorData::Uint16(v) => Arc::new(UInt16Array::from(v)),
            TensorData::Uint32(v) => Arc::new(UInt32Array::from(v)),
            TensorData::Uint64(v) => Arc::new(UInt64Array::from(v)),
            TensorData::Int8(v) => Arc::new(Int8Array::from(v)),
            TensorData::Int16(v) => Arc::new(Int16Array::from(v)),
            TensorData::Int32(v) => Arc::new(Int32Array::from(v)),
            TensorData::Int64(v) => Arc::new(Int64Array::from(v)),
            TensorData::Fp16(v) => Arc::new(Float16Array::from(v)),
            TensorData::Fp32(v) => Arc::new(Float32Array::from(v)),
            TensorData::Fp64(v) => Arc::new(Float64Array::from(v)),
            TensorData::Bytes(v) => Arc::new(BinaryArray::from_iter_values(v)),
        };
        let field = Arc::new(Field::new("item", element_type(self.datatype), true));
        Ok(Arc::new(ListArray::try_new(
            field,
            OffsetBuffer::new(self.offsets.into()),
            values,
            Some(NullBuffer::from(self.valid)),
        )?))
    }
}

fn shapes(values: impl Iterator<Item = Option<Vec<i64>>>) -> ArrayRef {
    let mut b = ListBuilder::new(arrow_array::builder::PrimitiveBuilder::<Int64Type>::new());
    for v in values {
        match v {
            Some(shape) => {
                b.values().append_slice(&shape);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn classes(values: impl Iterator<Item = Option<Vec<Option<i64>>>>) -> ArrayRef {
    let mut b = ListBuilder::new(arrow_array::builder::PrimitiveBuilder::<Int64Type>::new());
    for v in values {
        match v {
            Some(rows) => {
                for r in rows {
                    b.values().append_option(r);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn typed(e: &Elements) -> std::borrow::Cow<'_, TensorData> {
    match e {
        Elements::Typed(d) => std::borrow::Cow::Borrowed(d),
        raw => std::borrow::Cow::Owned(raw.clone().into_typed()),
    }
}

fn micros(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Records of one layout as one Arrow batch of `schema`.
pub fn batch(
    schema: &SchemaRef,
    layout: &Layout,
    records: &[Record],
) -> Result<RecordBatch, ArrowError> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from(
                records.iter().map(|r| micros(r.time)).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| &*r.model),
        )),
        {
            let mut b = UInt64Builder::with_capacity(records.len());
            b.extend(records.iter().map(|r| Some(r.version)));
            Arc::new(b.finish())
        },
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| &*r.sha256),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.protocol),
        )),
        Arc::new(UInt64Array::from(
            records
                .iter()
                .map(|r| r.latency.as_micros() as u64)
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.status),
        )),
        strings(records.iter().map(|r| r.error.as_deref())),
    ];
    for (name, dt) in &layout.inputs {
        let mut col = TensorColumn::new(*dt);
        let mut shape = Vec::with_capacity(records.len());
        for r in records {
            let t = r.inputs.iter().find(|t| &t.name == name);
            let data = t.map(|t| typed(&t.data));
            col.push(data.as_deref());
            shape.push(t.map(|t| t.shape.clone()));
        }
        columns.push(col.finish()?);
        columns.push(shapes(shape.into_iter()));
    }
    fn output<'a>(outputs: &'a [Tensor], name: &str) -> Option<&'a Tensor> {
        outputs.iter().find(|t| t.name == name)
    }
    for (name, dt) in &layout.outputs {
        let mut col = TensorColumn::new(*dt);
        for r in records {
            col.push(output(&r.outputs, name).map(|t| &t.data));
        }
        columns.push(col.finish()?);
        columns.push(shapes(
            records
                .iter()
                .map(|r| output(&r.outputs, name).map(|t| t.shape.clone())),
        ));
    }
    if layout.classes {
        columns.push(classes(records.iter().map(|r| r.predicted.clone())));
    }
    columns.push(strings(
        records
            .iter()
            .map(|r| r.shadow.as_ref().map(|s| s.target.as_str())),
    ));
    columns.push(strings(
        records
            .iter()
            .map(|r| r.shadow.as_ref().and_then(|s| s.error.as_deref())),
    ));
    for (name, dt) in &layout.outputs {
        let mut col = TensorColumn::new(*dt);
        for r in records {
            col.push(
                r.shadow
                    .as_ref()
                    .and_then(|s| output(&s.outputs, name))
                    .map(|t| &t.data),
            );
        }
        columns.push(col.finish()?);
    }
    if layout.classes {
        columns.push(classes(
            records
                .iter()
                .map(|r| r.shadow.as_ref().and_then(|s| s.predicted.clone())),
        ));
    }
    RecordBatch::try_new(schema.clone(), columns)
}

fn tensor_json(
    name: &str,
    datatype: DataType,
    shape: &[i64],
    data: &TensorData,
) -> (String, Value) {
    (
        name.to_string(),
        json!({
            "datatype": datatype.as_str(),
            "shape": shape,
            "data": serde_json::to_value(JsonElements(data)).unwrap_or(Value::Null),
        }),
    )
}

/// One record as one JSON line (the Parquet columns, nested).
pub fn json_line(r: &Record) -> Value {
    let inputs: Map<String, Value> = r
        .inputs
        .iter()
        .map(|t| {
            let data = typed(&t.data);
            tensor_json(&t.name, data.datatype(), &t.shape, &data)
        })
        .collect();
    let outputs = |ts: &[Tensor]| -> Map<String, Value> {
        ts.iter()
            .map(|t| tensor_json(&t.name, t.data.datatype(), &t.shape, &t.data))
            .collect()
    };
    let mut line = json!({
        "time": humantime::format_rfc3339_micros(r.time).to_string(),
        "id": r.id,
        "model": &*r.model,
        "version": r.version,
        "model_sha256": &*r.sha256,
        "protocol": r.protocol,
        "latency_us": r.latency.as_micros() as u64,
        "status": r.status,
        "error": r.error,
        "inputs": inputs,
        "outputs": outputs(&r.outputs),
    });
    if let Some(p) = &r.predicted {
        line["predicted"] = json!(p);
    }
    if let Some(s) = &r.shadow {
        line["shadow"] = json!({
            "target": s.target,
            "error": s.error,
            "outputs": outputs(&s.outputs),
            "predicted": s.predicted,
        });
    }
    line
}
