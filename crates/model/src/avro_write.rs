//! A minimal Avro binary datum writer (the spec's encodings of long, boolean, double, string,
//! array and map blocks, unions and enums by index), for records written once per event: the
//! schema-walking serde writer of apache-avro costs ten times as much per record. The layout a
//! record writes must follow its `.avsc` field order; tests decode the bytes with the `.avsc` file
//! and compare them with the serde writer's.

use chrono::{DateTime, Utc};

use crate::event::TraitValue;

/// Writes Avro binary encodings into a byte buffer.
#[derive(Debug)]
pub struct DatumWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> DatumWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    /// `long` and `int`: zig-zag, then variable length. Inlined for the one-byte case (lengths,
    /// indexes: most calls), the longer ones out of line.
    #[inline]
    pub fn long(&mut self, value: i64) {
        let n = zigzag(value);
        if n < 0x80 {
            self.buf.push(n as u8);
        } else {
            self.varint_out_of_line(n);
        }
    }

    #[inline(never)]
    fn varint_out_of_line(&mut self, n: u64) {
        self.varint(n);
    }

    /// A varint of 2 to 8 bytes (a timestamp of these decades takes 6) is one 8-byte write: the
    /// 7-bit groups spread to bytes in three shift-and-mask steps, then the continuation bits. A
    /// byte at a time cost about 11 instructions a byte, and a profile writes some 22 timestamps
    /// (callgrind, 2026-12-08).
    #[inline(always)]
    fn varint(&mut self, n: u64) {
        if n < 0x80 {
            self.buf.push(n as u8);
        } else if n < 1 << 56 {
            let len = (64 - n.leading_zeros() as usize).div_ceil(7);
            // Two 28-bit groups into 32-bit lanes, 14-bit groups into 16-bit lanes, then 7-bit
            // groups into bytes.
            let mut spread = (n & 0x0FFF_FFFF) | ((n & 0x00FF_FFFF_F000_0000) << 4);
            spread = (spread & 0x0000_3FFF_0000_3FFF) | ((spread & 0x0FFF_C000_0FFF_C000) << 2);
            spread = (spread & 0x007F_007F_007F_007F) | ((spread & 0x3F80_3F80_3F80_3F80) << 1);
            let continuation = 0x8080_8080_8080_8080_u64 & ((1_u64 << (8 * (len - 1))) - 1);
            let start = self.buf.len();
            self.buf.extend_from_slice(&(spread | continuation).to_le_bytes());
            self.buf.truncate(start + len);
        } else {
            self.varint_bytewise(n);
        }
    }

    #[cold]
    fn varint_bytewise(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.buf.push(n as u8);
    }

    pub fn boolean(&mut self, value: bool) {
        self.buf.push(u8::from(value));
    }

    pub fn double(&mut self, value: f64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn string(&mut self, value: &str) {
        self.long(value.len() as i64);
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// `long` with logical type `timestamp-millis`.
    pub fn timestamp(&mut self, value: DateTime<Utc>) {
        // Inlined whole: nearly every timestamp takes 6 bytes.
        self.varint(zigzag(value.timestamp_millis()));
    }

    /// An enum symbol or a union branch, by its position.
    pub fn index(&mut self, index: u32) {
        self.long(i64::from(index));
    }

    /// A `["null", T]` union.
    pub fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.index(0),
            Some(inner) => {
                self.index(1);
                write(self, inner);
            }
        }
    }

    /// An array (or a map, whose items write their key first): one block, then the end marker.
    pub fn block<T>(&mut self, items: impl ExactSizeIterator<Item = T>, mut write: impl FnMut(&mut Self, T)) {
        if items.len() > 0 {
            self.long(items.len() as i64);
            for item in items {
                write(self, item);
            }
        }
        self.long(0);
    }

    /// The `["null", "boolean", "long", "double", "string"]` union of trait values.
    pub fn trait_value(&mut self, value: &TraitValue) {
        match value {
            TraitValue::Null => self.index(0),
            TraitValue::Bool(flag) => {
                self.index(1);
                self.boolean(*flag);
            }
            TraitValue::Long(number) => {
                self.index(2);
                self.long(*number);
            }
            TraitValue::Double(number) => {
                self.index(3);
                self.double(*number);
            }
            TraitValue::String(text) => {
                self.index(4);
                self.string(text);
            }
        }
    }
}

/// Avro's zig-zag: small magnitudes of either sign to small unsigned numbers.
#[inline(always)]
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use apache_avro::Schema;
    use apache_avro::types::Value;
    use proptest::prelude::*;

    use super::DatumWriter;

    /// apache-avro's encoding of a `long`: the oracle for the writer's varints.
    fn avro_long(value: i64) -> Vec<u8> {
        let schema = Schema::parse_str(r#""long""#).expect("the long schema");
        apache_avro::to_avro_datum(&schema, Value::Long(value)).expect("a long datum")
    }

    fn written(value: i64) -> Vec<u8> {
        let mut buf = vec![0xAA];
        DatumWriter::new(&mut buf).long(value);
        buf.split_off(1)
    }

    #[test]
    fn every_varint_length_is_written_as_apache_avro_writes_it() {
        // The edges of each length (1 to 10 bytes) on both signs, and today's timestamps.
        let mut values = vec![0, -1, 1, i64::MIN, i64::MAX, 1_796_688_000_000, -1_796_688_000_000];
        for bits in 6..63 {
            let edge = 1_i64 << bits;
            values.extend([edge - 1, edge, edge + 1, -edge, -edge - 1, -edge + 1]);
        }
        for value in values {
            assert_eq!(written(value), avro_long(value), "{value}");
        }
    }

    /// apache-avro's encoding of a `timestamp-millis`.
    fn avro_timestamp(millis: i64) -> Vec<u8> {
        let schema = Schema::parse_str(r#"{"type": "long", "logicalType": "timestamp-millis"}"#)
            .expect("the timestamp schema");
        apache_avro::to_avro_datum(&schema, Value::TimestampMillis(millis)).expect("a timestamp datum")
    }

    fn written_timestamp(millis: i64) -> Vec<u8> {
        let mut buf = vec![0xAA];
        let time = chrono::DateTime::from_timestamp_millis(millis).expect("a time chrono holds");
        DatumWriter::new(&mut buf).timestamp(time);
        buf.split_off(1)
    }

    #[test]
    fn timestamps_around_the_epoch_and_today_are_written_as_apache_avro_writes_them() {
        for millis in [0, 1, -1, 63, 64, -64, -65, 1_796_688_000_000, -1_796_688_000_000, 1 << 52, -(1 << 52)]
        {
            assert_eq!(written_timestamp(millis), avro_timestamp(millis), "{millis}");
        }
    }

    proptest! {
        #[test]
        fn any_timestamp_is_written_as_apache_avro_writes_it(
            millis in -8_000_000_000_000_000_i64..8_000_000_000_000_000,
            shift in 0_u32..64,
        ) {
            let millis = millis >> shift;
            prop_assert_eq!(written_timestamp(millis), avro_timestamp(millis));
        }

        #[test]
        fn any_long_is_written_as_apache_avro_writes_it(value in any::<i64>(), shift in 0_u32..64) {
            let value = value >> shift;
            prop_assert_eq!(written(value), avro_long(value));
        }
    }
}
