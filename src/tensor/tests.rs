//! Every datatype through every encoding, byte by byte.
use super::data::{decode_bytes, truncate};
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
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0x7f,
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

/// The text parser (what HTTP requests go through) and the `Value` walker
/// say the same of the same JSON: elements, and the first bad one.
#[test]
fn json_text_and_value_agree() {
    let cases: &[(DataType, &str)] = &[
        (DataType::Fp32, "[[1, 2.5], [3, 4]]"),
        (DataType::Fp16, "[0.5, -2, 65504]"),
        (DataType::Fp64, "[1e300, -0.0, 3]"),
        (DataType::Uint8, "[0, 255, 256]"),
        (DataType::Int8, "[-128, 127, -129]"),
        (
            DataType::Int64,
            "[9223372036854775807, -9223372036854775808]",
        ),
        (DataType::Uint64, "[18446744073709551615, 0]"),
        (DataType::Int32, "[1, 1.5]"),
        (DataType::Bool, "[true, [false], 1]"),
        (DataType::Bytes, "[\"a\", [\"b\", \"\"], 3]"),
        (DataType::Fp32, "[1, null]"),
        (DataType::Fp32, "[1, {\"x\": 2}]"),
        (DataType::Fp32, "7"),
    ];
    for &(dt, text) in cases {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let walked = TensorData::from_json(dt, &value);
        let parsed = TensorData::from_json_text(dt, text, usize::MAX).map(|(d, _)| d);
        assert_eq!(walked, parsed, "{dt} {text}");
    }
}

/// Beyond `limit`, elements are counted, not stored: the memory a request
/// can make the parser take is what its shape says, whatever it sends.
#[test]
fn json_text_keeps_at_most_the_limit_and_counts_the_rest() {
    let text = format!("[{}]", vec!["1.5"; 10_000].join(","));
    let (data, count) = TensorData::from_json_text(DataType::Fp32, &text, 16).unwrap();
    assert_eq!((data.len(), count), (16, 10_000));
    // An element beyond the limit is not converted, so not refused either;
    // the caller refuses the count.
    let (data, count) = TensorData::from_json_text(DataType::Uint8, "[1, 2, 999]", 2).unwrap();
    assert_eq!((data, count), (TensorData::Uint8(vec![1, 2]), 3));
    let err = TensorData::from_json_text(DataType::Fp32, "[1, 2", 8).unwrap_err();
    assert!(matches!(err, TensorError::BadJson(_)), "{err}");
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
