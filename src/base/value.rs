//! SQLite values as fieldsync carries them: exactly the five storage classes.
//!
//! A [`Value`] is what one cell of an app table holds. It round-trips through
//! SQLite (via [`rusqlite::ToSql`] / [`rusqlite::types::FromSql`]) and through
//! MessagePack (via serde) without any conversion: integers keep their full
//! `i64` range, reals keep their bits, text keeps its bytes (SQLite does not
//! enforce UTF-8, and a PHP app writing Latin-1 must not lose data), and an
//! empty blob stays distinct from NULL.
//!
//! This module also owns the canonical encoding of a primary key
//! ([`encode_key`]), the byte string the change log uses to find a row.

use std::fmt;

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One SQLite value.
#[derive(Debug, Clone)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// An IEEE-754 double.
    Real(f64),
    /// TEXT, as the bytes SQLite holds (UTF-8 in practice, but not checked).
    Text(Vec<u8>),
    /// A BLOB, possibly empty.
    Blob(Vec<u8>),
}

impl Value {
    /// A TEXT value from a string.
    pub fn text(s: impl Into<String>) -> Self {
        Value::Text(s.into().into_bytes())
    }

    /// The storage class name as SQLite's `typeof()` spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }

    /// Borrow as a rusqlite value reference.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }

    /// Copy out of a rusqlite value reference.
    pub fn from_ref(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(t.to_vec()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

/// Equality is exact: reals compare by their bits, so `-0.0 != 0.0` and a
/// round trip that changed a single bit is caught.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Integer(a), Value::Integer(b)) => a == b,
            (Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Blob(a), Value::Blob(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl fmt::Display for Value {
    /// Shown the way the `sqlite3` shell's `quote()` would write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r:?}"),
            Value::Text(t) => write!(f, "'{}'", String::from_utf8_lossy(t).replace('\'', "''")),
            Value::Blob(b) => {
                f.write_str("X'")?;
                for byte in b {
                    write!(f, "{byte:02X}")?;
                }
                f.write_str("'")
            }
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::text(s)
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_ref()))
    }
}

impl FromSql for Value {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Value::from_ref(value))
    }
}

// MessagePack wire form: nil, int, float 64, str, bin. Text that is not
// valid UTF-8 cannot be a msgpack str, so it travels as a one-element array
// holding a bin; a reader tells it apart from a blob by that array.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(r) => s.serialize_f64(*r),
            Value::Text(t) => match std::str::from_utf8(t) {
                Ok(text) => s.serialize_str(text),
                Err(_) => {
                    let mut tuple = s.serialize_tuple(1)?;
                    tuple.serialize_element(&RawBytes(t))?;
                    tuple.end()
                }
            },
            Value::Blob(b) => s.serialize_bytes(b),
        }
    }
}

struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct OwnedBytes(Vec<u8>);

impl<'de> Deserialize<'de> for OwnedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = OwnedBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<OwnedBytes, E> {
                Ok(OwnedBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<OwnedBytes, E> {
                Ok(OwnedBytes(v))
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an SQLite value (nil, integer, float, str, bin or [bin])")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Err(E::invalid_type(de::Unexpected::Bool(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v)
                    .map(Value::Integer)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f32<E: de::Error>(self, v: f32) -> Result<Value, E> {
                Ok(Value::Real(f64::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Real(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.as_bytes().to_vec()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::Text(v.into_bytes()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value::Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
                Ok(Value::Blob(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let bytes: OwnedBytes = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &"one bin element"))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(2, &"one bin element"));
                }
                Ok(Value::Text(bytes.0))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

/// A key as SQL literals, for messages: `'p-1', 42`.
pub fn key_literal(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The inverse of [`key_literal`]: the values of a key written as SQL
/// literals separated by commas (`'p-1', 3, NULL, 2.5, X'0A'`), or `None`
/// if `text` is not in that form (a key recorded in words).
pub fn parse_key_literal(text: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    loop {
        let (value, after) = parse_literal(rest)?;
        out.push(value);
        rest = after.trim_start();
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

/// One SQL literal at the start of `text`, and what follows it.
fn parse_literal(text: &str) -> Option<(Value, &str)> {
    if let Some(after) = text.strip_prefix("NULL") {
        return Some((Value::Null, after));
    }
    if let Some(body) = text.strip_prefix('\'') {
        let mut s = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\'' {
                s.push(c);
            } else if body[i + 1..].starts_with('\'') {
                s.push('\'');
                chars.next();
            } else {
                return Some((Value::text(s), &body[i + 1..]));
            }
        }
        return None;
    }
    if let Some(body) = text.strip_prefix("X'") {
        let end = body.find('\'')?;
        let hex = &body[..end];
        if hex.len() % 2 != 0 {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        return Some((Value::Blob(bytes), &body[end + 1..]));
    }
    let end = text.find(',').unwrap_or(text.len());
    let number = text[..end].trim_end();
    if let Ok(i) = number.parse::<i64>() {
        return Some((Value::Integer(i), &text[end..]));
    }
    let real = number.parse::<f64>().ok()?;
    Some((Value::Real(real), &text[end..]))
}

/// The canonical byte encoding of a primary key: the MessagePack array of
/// its values. Keys SQLite considers equal encode to equal bytes: integers
/// use their shortest form, and a real with an integral value (`1.0`, `-0.0`)
/// is written as that integer, since a key column without type affinity
/// holds `1` and `1.0` as the same key. So the change log can index rows by
/// these bytes.
pub fn encode_key(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + values.len() * 8);
    write_key(&mut out, values);
    out
}

/// Append the canonical key encoding of `values` to `out`.
pub fn write_key(out: &mut Vec<u8>, values: &[Value]) {
    // Writing into a Vec cannot fail, and every Value serializes.
    let _ = rmp::encode::write_array_len(out, values.len() as u32);
    for v in values {
        match v {
            // The integral reals an i64 holds exactly: -2^63 ..< 2^63.
            Value::Real(r)
                if r.fract() == 0.0 && (i64::MIN as f64..-(i64::MIN as f64)).contains(r) =>
            {
                let _ = rmp::encode::write_sint(out, *r as i64);
            }
            _ => {
                let _ = rmp_serde::encode::write(out, v);
            }
        }
    }
}

/// Decode a key written by [`encode_key`].
pub fn decode_key(bytes: &[u8]) -> Result<Vec<Value>, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> Value {
        let bytes = rmp_serde::to_vec(v).expect("encode");
        rmp_serde::from_slice(&bytes).expect("decode")
    }

    #[test]
    fn every_storage_class_round_trips_through_msgpack() {
        let values = [
            Value::Null,
            Value::Integer(0),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Integer(-1),
            Value::Real(0.1),
            Value::Real(-0.0),
            Value::Real(f64::MAX),
            Value::Real(f64::MIN_POSITIVE),
            Value::text(""),
            Value::text("héllo ✓ 🚑"),
            Value::Text(vec![0xE9, 0x74, 0xE9]), // Latin-1 "été": not UTF-8
            Value::Blob(vec![]),
            Value::Blob(vec![0, 1, 2, 255]),
        ];
        for v in &values {
            assert_eq!(&round_trip(v), v, "{v:?}");
        }
    }

    #[test]
    fn empty_blob_is_not_null_and_not_empty_text() {
        assert_ne!(round_trip(&Value::Blob(vec![])), Value::Null);
        assert_ne!(round_trip(&Value::Blob(vec![])), Value::text(""));
    }

    #[test]
    fn every_storage_class_round_trips_through_sqlite() -> rusqlite::Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute("CREATE TABLE t(v)", [])?;
        let values = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(1.5e300),
            Value::text("ok"),
            Value::Text(vec![0xff, 0xfe]),
            Value::Blob(vec![]),
        ];
        for v in &values {
            conn.execute("DELETE FROM t", [])?;
            conn.execute("INSERT INTO t VALUES (?1)", [v])?;
            let back: Value = conn.query_row("SELECT v FROM t", [], |r| r.get(0))?;
            assert_eq!(&back, v);
        }
        Ok(())
    }

    #[test]
    fn key_encoding_is_canonical_and_reversible() {
        let key = vec![Value::Integer(5), Value::text("a")];
        let bytes = encode_key(&key);
        assert_eq!(bytes, encode_key(&[Value::Integer(5), Value::text("a")]));
        assert_eq!(decode_key(&bytes).expect("decode"), key);
        assert_ne!(
            encode_key(&[Value::Integer(1)]),
            encode_key(&[Value::Real(1.5)])
        );
        assert_ne!(
            encode_key(&[Value::Integer(1)]),
            encode_key(&[Value::text("1")])
        );
    }

    /// SQLite holds 1 and 1.0 (and 0.0 and -0.0) as one key in a column
    /// without type affinity; encoded differently, two instances inserting
    /// them kept different rows.
    #[test]
    fn keys_sqlite_compares_equal_encode_equal() {
        assert_eq!(
            encode_key(&[Value::Integer(1)]),
            encode_key(&[Value::Real(1.0)])
        );
        assert_eq!(
            encode_key(&[Value::Integer(0)]),
            encode_key(&[Value::Real(-0.0)])
        );
        assert_eq!(
            encode_key(&[Value::Integer(i64::MIN)]),
            encode_key(&[Value::Real(i64::MIN as f64)])
        );
        assert_ne!(
            encode_key(&[Value::Integer(i64::MAX)]),
            encode_key(&[Value::Real(-(i64::MIN as f64))])
        );
    }
}
