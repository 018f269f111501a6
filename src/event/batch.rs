//! Collects validated events into Arrow `RecordBatch`es of the [`super::schema`].

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, StringBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use super::EventRef;

/// Column builders for one batch of events.
pub struct EventBatchBuilder {
    ts: TimestampMillisecondBuilder,
    strings: [StringBuilder; 18],
    status: UInt16Builder,
    bytes_sent: UInt64Builder,
    latency_ms: Float64Builder,
    asn: UInt32Builder,
    rows: usize,
    min_ts: i64,
    max_ts: i64,
    /// Rows a batch is built for.
    capacity: usize,
}

// Positions inside `strings`, in schema order.
const S_CLIENT_IP: usize = 0;
const S_METHOD: usize = 1;
const S_PATH: usize = 2;
const S_QUERY: usize = 3;
const S_USER_AGENT: usize = 4;
const S_REFERER: usize = 5;
const S_HOST: usize = 6;
const S_REQUEST_ID: usize = 7;
const S_USER_ID: usize = 8;
const S_API_KEY_ID: usize = 9;
const S_SESSION_ID: usize = 10;
const S_DEVICE_ID: usize = 11;
const S_GRANT_TYPE: usize = 12;
const S_AUTH_RESULT: usize = 13;
const S_ATTESTATION: usize = 14;
const S_SIGNATURE: usize = 15;
const S_COUNTRY: usize = 16;
const S_NOTES: usize = 17;

impl EventBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        EventBatchBuilder {
            ts: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            strings: std::array::from_fn(|_| StringBuilder::with_capacity(rows, rows * 16)),
            status: UInt16Builder::with_capacity(rows),
            bytes_sent: UInt64Builder::with_capacity(rows),
            latency_ms: Float64Builder::with_capacity(rows),
            asn: UInt32Builder::with_capacity(rows),
            rows: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            capacity: rows,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Newest event time among the rows collected so far.
    pub fn max_ts(&self) -> Option<i64> {
        (self.rows > 0).then_some(self.max_ts)
    }

    /// Event-time span of the rows collected so far, in ms (0 when empty).
    pub fn span_ms(&self) -> i64 {
        if self.rows == 0 { 0 } else { self.max_ts - self.min_ts }
    }

    pub fn append(&mut self, e: &EventRef<'_>) {
        self.ts.append_value(e.ts_ms);
        self.min_ts = self.min_ts.min(e.ts_ms);
        self.max_ts = self.max_ts.max(e.ts_ms);
        let s = &mut self.strings;
        s[S_CLIENT_IP].append_value(&e.client_ip);
        s[S_METHOD].append_value(&e.method);
        s[S_PATH].append_value(&e.path);
        s[S_QUERY].append_option(e.query.as_deref());
        s[S_USER_AGENT].append_option(e.user_agent.as_deref());
        s[S_REFERER].append_option(e.referer.as_deref());
        s[S_HOST].append_option(e.host.as_deref());
        s[S_REQUEST_ID].append_option(e.request_id.as_deref());
        s[S_USER_ID].append_option(e.user_id.as_deref());
        s[S_API_KEY_ID].append_option(e.api_key_id.as_deref());
        s[S_SESSION_ID].append_option(e.session_id.as_deref());
        s[S_DEVICE_ID].append_option(e.device_id.as_deref());
        s[S_GRANT_TYPE].append_option(e.grant_type.map(|v| v.as_str()));
        s[S_AUTH_RESULT].append_option(e.auth_result.map(|v| v.as_str()));
        s[S_ATTESTATION].append_option(e.attestation.map(|v| v.as_str()));
        s[S_SIGNATURE].append_option(e.signature.map(|v| v.as_str()));
        s[S_COUNTRY].append_option(e.country.as_deref());
        s[S_NOTES].append_option(e.notes.text.as_deref());
        self.status.append_value(e.status);
        self.bytes_sent.append_option(e.bytes_sent);
        self.latency_ms.append_option(e.latency_ms);
        self.asn.append_option(e.asn);
        self.rows += 1;
    }

    /// Finishes the batch and resets the builder for the next one.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        self.min_ts = i64::MAX;
        self.max_ts = i64::MIN;
        let mut s = self.strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut next = || s.next().ok_or_else(|| ArrowError::SchemaError("string column count".into()));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            next()?, // client_ip
            next()?, // method
            next()?, // path
            next()?, // query
            Arc::new(self.status.finish()),
            Arc::new(self.bytes_sent.finish()),
            Arc::new(self.latency_ms.finish()),
            next()?, // user_agent
            next()?, // referer
            next()?, // host
            next()?, // request_id
            next()?, // user_id
            next()?, // api_key_id
            next()?, // session_id
            next()?, // device_id
            next()?, // grant_type
            next()?, // auth_result
            next()?, // attestation
            next()?, // signature
            next()?, // country
            Arc::new(self.asn.finish()),
            next()?, // notes
        ];
        let batch = RecordBatch::try_new(super::schema(), columns)?;
        self.reserve_like(&batch);
        Ok(batch)
    }

    /// Finishing hands the buffers to the batch and leaves the builders
    /// empty; without this, every batch would grow each of its ~23 buffers
    /// from nothing again, copying as it doubles. The next batch's buffers
    /// are sized after this one's: a full batch's for the full capacity, a
    /// small one's (a live round of a few lines) for twice its rows. Sized
    /// for the full capacity after every small batch, each round of a live
    /// engine took ~3 MB of fresh memory for a few lines, and the kernel
    /// zeroing it (2 MiB huge pages, touched at their first byte) was an
    /// eighth of the engine thread's time.
    fn reserve_like(&mut self, batch: &RecordBatch) {
        let n = batch.num_rows().max(1);
        let rows = if n * 2 >= self.capacity { self.capacity } else { (n * 2).next_power_of_two().max(64) };
        let string_cols = [1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22];
        for (b, col) in self.strings.iter_mut().zip(string_cols) {
            let used = batch
                .column(col)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .map_or(0, |a| a.values().len());
            let bytes = used.saturating_mul(rows) / n;
            *b = StringBuilder::with_capacity(rows, (bytes + bytes / 8).clamp(rows * 4, rows * 256));
        }
        self.ts = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
        self.status = UInt16Builder::with_capacity(rows);
        self.bytes_sent = UInt64Builder::with_capacity(rows);
        self.latency_ms = Float64Builder::with_capacity(rows);
        self.asn = UInt32Builder::with_capacity(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_schema_batch() {
        let mut b = EventBatchBuilder::with_capacity(4);
        let e = super::super::json::parse(
            r#"{"ts":"2026-11-28T10:15:02.113Z","client_ip":"1.2.3.4","method":"GET","path":"/","status":200,"country":"DE","asn":3320}"#,
        )
        .unwrap();
        b.append(&e);
        b.append(&e);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), super::super::schema());
        assert!(b.is_empty());
    }
}
