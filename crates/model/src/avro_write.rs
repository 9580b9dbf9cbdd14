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

    /// `long` and `int`: zig-zag, then variable length.
    pub fn long(&mut self, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
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
        self.long(value.timestamp_millis());
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
