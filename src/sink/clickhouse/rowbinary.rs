//! Arrow batches as ClickHouse tables: the column list a table gets from an
//! Arrow schema, and rows encoded in ClickHouse's `RowBinary` input format.
//!
//! The tables are derived from the same Arrow schemas the Parquet tables
//! use, so the two histories cannot drift apart: a column added to `events`
//! reaches ClickHouse through `gatewatch clickhouse init` with no second
//! list to keep. Types stay within what ClickHouse 18.16 knows (no
//! `DateTime64`, no `Bool`): an Arrow millisecond timestamp `x` becomes
//! `x DateTime` (seconds, what people read and partitions use) beside
//! `x_ms Int64` (the exact value).
//!
//! Every row also carries `batch UInt64`, the identity of the insert it came
//! in: a batch retried after an ambiguous failure is first looked up by it,
//! so it is never stored twice (see [`super::sink`]).

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray, UInt16Array,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

/// One ClickHouse column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// ClickHouse type, e.g. `Nullable(String)`.
    pub ty: String,
}

/// Name of the batch-identity column every table ends with.
pub const BATCH: &str = "batch";

/// An Arrow type ClickHouse has no column for here.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: Arrow type {ty} has no ClickHouse mapping")]
pub struct Unmapped {
    pub column: String,
    pub ty: String,
}

fn scalar(dt: &DataType) -> Option<&'static str> {
    Some(match dt {
        DataType::Utf8 => "String",
        DataType::UInt16 => "UInt16",
        DataType::UInt32 => "UInt32",
        DataType::UInt64 => "UInt64",
        DataType::Int64 => "Int64",
        DataType::Float64 => "Float64",
        DataType::Boolean => "UInt8",
        _ => return None,
    })
}

/// The ClickHouse columns of a table holding `schema`'s rows, `batch` last.
pub fn columns(schema: &Schema) -> Result<Vec<Column>, Unmapped> {
    let mut out = Vec::with_capacity(schema.fields().len() + 2);
    for f in schema.fields() {
        let wrap = |t: &str| if f.is_nullable() { format!("Nullable({t})") } else { t.to_string() };
        match f.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                out.push(Column { name: f.name().clone(), ty: wrap("DateTime") });
                out.push(Column { name: format!("{}_ms", f.name()), ty: wrap("Int64") });
            }
            dt => match scalar(dt) {
                Some(t) => out.push(Column { name: f.name().clone(), ty: wrap(t) }),
                None => return Err(Unmapped { column: f.name().clone(), ty: dt.to_string() }),
            },
        }
    }
    out.push(Column { name: BATCH.into(), ty: "UInt64".into() });
    Ok(out)
}

/// A column of a batch, downcast once.
enum Col<'a> {
    Str(&'a StringArray),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    I64(&'a Int64Array),
    F64(&'a Float64Array),
    Bool(&'a BooleanArray),
    Ts(&'a TimestampMillisecondArray),
}

fn downcast<'a>(name: &str, a: &'a ArrayRef) -> Result<(Col<'a>, bool), Unmapped> {
    let any = a.as_any();
    let unmapped = || Unmapped { column: name.to_string(), ty: a.data_type().to_string() };
    let col = match a.data_type() {
        DataType::Utf8 => Col::Str(any.downcast_ref().ok_or_else(unmapped)?),
        DataType::UInt16 => Col::U16(any.downcast_ref().ok_or_else(unmapped)?),
        DataType::UInt32 => Col::U32(any.downcast_ref().ok_or_else(unmapped)?),
        DataType::UInt64 => Col::U64(any.downcast_ref().ok_or_else(unmapped)?),
        DataType::Int64 => Col::I64(any.downcast_ref().ok_or_else(unmapped)?),
        DataType::Float64 => Col::F64(any.downcast_ref().ok_or_else(unmapped)?),
        DataType::Boolean => Col::Bool(any.downcast_ref().ok_or_else(unmapped)?),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Col::Ts(any.downcast_ref().ok_or_else(unmapped)?),
        _ => return Err(unmapped()),
    };
    Ok((col, a.is_nullable()))
}

/// Unsigned LEB128, the length prefix of a `RowBinary` string.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Seconds of a millisecond time as a `DateTime` (UInt32), clamped to its range.
fn datetime(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

impl Col<'_> {
    fn is_valid(&self, row: usize) -> bool {
        match self {
            Col::Str(a) => a.is_valid(row),
            Col::U16(a) => a.is_valid(row),
            Col::U32(a) => a.is_valid(row),
            Col::U64(a) => a.is_valid(row),
            Col::I64(a) => a.is_valid(row),
            Col::F64(a) => a.is_valid(row),
            Col::Bool(a) => a.is_valid(row),
            Col::Ts(a) => a.is_valid(row),
        }
    }
}

/// Writes one value: the null marker of a nullable column, then the value
/// unless it is null. A null in a column declared non-null (which Arrow
/// allows and the engine never produces) is written as whatever the array
/// holds under it: zero, for arrays built by Arrow's builders.
fn put(nullable: bool, valid: bool, out: &mut Vec<u8>, value: impl FnOnce(&mut Vec<u8>)) {
    if nullable {
        out.push(u8::from(!valid));
        if !valid {
            return;
        }
    }
    value(out);
}

/// Appends `batch`'s rows to `out` in `RowBinary`, in [`columns`] order,
/// each ending with `batch_id`.
pub fn encode(batch: &RecordBatch, batch_id: u64, out: &mut Vec<u8>) -> Result<(), Unmapped> {
    let schema = batch.schema();
    let cols = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| downcast(f.name(), a).map(|(c, _)| (c, f.is_nullable())))
        .collect::<Result<Vec<_>, _>>()?;
    for row in 0..batch.num_rows() {
        for (col, nullable) in &cols {
            let (nullable, valid) = (*nullable, col.is_valid(row));
            match col {
                Col::Str(a) => put(nullable, valid, out, |o| {
                    let s = if valid { a.value(row).as_bytes() } else { b"" };
                    varint(s.len() as u64, o);
                    o.extend_from_slice(s);
                }),
                Col::U16(a) => put(nullable, valid, out, |o| o.extend_from_slice(&a.value(row).to_le_bytes())),
                Col::U32(a) => put(nullable, valid, out, |o| o.extend_from_slice(&a.value(row).to_le_bytes())),
                Col::U64(a) => put(nullable, valid, out, |o| o.extend_from_slice(&a.value(row).to_le_bytes())),
                Col::I64(a) => put(nullable, valid, out, |o| o.extend_from_slice(&a.value(row).to_le_bytes())),
                Col::F64(a) => put(nullable, valid, out, |o| o.extend_from_slice(&a.value(row).to_le_bytes())),
                Col::Bool(a) => put(nullable, valid, out, |o| o.push(u8::from(valid && a.value(row)))),
                Col::Ts(a) => {
                    let ms = a.value(row);
                    put(nullable, valid, out, |o| o.extend_from_slice(&datetime(ms).to_le_bytes()));
                    put(nullable, valid, out, |o| o.extend_from_slice(&ms.to_le_bytes()));
                }
            }
        }
        out.extend_from_slice(&batch_id.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn columns_follow_the_arrow_schema() {
        let cols = columns(&crate::event::schema()).expect("events map");
        assert_eq!(cols[0], Column { name: "ts".into(), ty: "DateTime".into() });
        assert_eq!(cols[1], Column { name: "ts_ms".into(), ty: "Int64".into() });
        assert!(cols.contains(&Column { name: "user_agent".into(), ty: "Nullable(String)".into() }));
        assert!(cols.contains(&Column { name: "status".into(), ty: "UInt16".into() }));
        assert_eq!(cols.last().map(|c| c.name.as_str()), Some(BATCH));
        columns(&crate::features::table_schema()).expect("features map");
        columns(&crate::sink::parquet::decisions_schema()).expect("decisions map");
    }

    #[test]
    fn rows_encode_as_rowbinary() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::UInt16, false),
            Field::new("f", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![1_500, -1]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![Some("ab"), None])),
                Arc::new(UInt16Array::from(vec![7, 300])),
                Arc::new(Float64Array::from(vec![None, Some(0.5)])),
            ],
        )
        .expect("batch");
        let mut out = Vec::new();
        encode(&batch, 9, &mut out).expect("encodes");
        let mut want = Vec::new();
        // Row 1: ts 1 s / 1500 ms, "ab", 7, null, batch 9.
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&1500i64.to_le_bytes());
        want.extend_from_slice(&[0, 2, b'a', b'b']);
        want.extend_from_slice(&7u16.to_le_bytes());
        want.push(1);
        want.extend_from_slice(&9u64.to_le_bytes());
        // Row 2: a time before 1970 clamps to 0 s and keeps its ms, null, 300, 0.5.
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&(-1i64).to_le_bytes());
        want.push(1);
        want.extend_from_slice(&300u16.to_le_bytes());
        want.push(0);
        want.extend_from_slice(&0.5f64.to_le_bytes());
        want.extend_from_slice(&9u64.to_le_bytes());
        assert_eq!(out, want);
    }

    #[test]
    fn long_strings_get_a_multi_byte_length() {
        let mut out = Vec::new();
        varint(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
    }
}
