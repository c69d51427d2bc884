//! The protobuf JSON mapping as etcd 3.4's gateway applies it (golang/protobuf's `jsonpb` with
//! `OrigName: true` and `EmitDefaults: false`), in both directions, without reflection.
//!
//! Writing ([`ToJson`], [`Object`]): fields in proto order under their proto names; a field
//! holding its default (0, false, empty string, bytes or list, an absent message) is left out,
//! except a set oneof member, which is always written; `int64`/`uint64` as JSON strings,
//! `int32`/`uint32` as numbers, `bytes` as padded standard base64, enums by name (by number if
//! the name is unknown); strings escaped as Go's `encoding/json` escapes them (`<`, `>`, `&`,
//! U+2028 and U+2029 as `\u` sequences).
//!
//! Reading ([`FromJson`], [`Fields`]): a field under its proto name or its JSON name (lower
//! camel case: `prev_kv` or `prevKv`); `null` as absent; unknown fields ignored (grpc-gateway's
//! default); 64-bit integers as numbers or strings; enums as names or numbers; `bytes` as
//! standard base64 with padding. Anything else is a [`JsonError`] naming what was wrong.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

/// Why a JSON request could not be read as its message. Its `Display` is what the gateway
/// answers, with code `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(pub String);

/// A message that can be written in the gateway's JSON.
pub trait ToJson {
    /// Writes this message's fields into `out`.
    fn write_fields(&self, out: &mut Object<'_>);

    /// This message as a JSON object.
    fn to_json(&self) -> String {
        let mut buf = String::new();
        Object::write(&mut buf, |o| self.write_fields(o));
        buf
    }
}

/// A message that can be read from the gateway's JSON.
pub trait FromJson: Sized {
    /// Reads the message from the object `fields`.
    fn from_fields(fields: &Fields<'_>) -> Result<Self, JsonError>;

    /// Reads the message from any JSON value: an object, or `null` for the empty message.
    fn from_json(value: &Value) -> Result<Self, JsonError> {
        Self::from_fields(&Fields::new(value, std::any::type_name::<Self>())?)
    }
}

/// A JSON object being written into a buffer: each method writes one field unless it holds
/// its default.
pub struct Object<'a> {
    buf: &'a mut String,
    empty: bool,
}

impl Object<'_> {
    /// Writes `{`, the fields `f` writes, and `}` into `buf`.
    pub fn write(buf: &mut String, f: impl FnOnce(&mut Object<'_>)) {
        buf.push('{');
        let mut o = Object { buf, empty: true };
        f(&mut o);
        o.buf.push('}');
    }

    fn key(&mut self, name: &str) {
        if !self.empty {
            self.buf.push(',');
        }
        self.empty = false;
        push_string(self.buf, name);
        self.buf.push(':');
    }

    /// An `int64` field (a JSON string).
    pub fn i64(&mut self, name: &str, v: i64) {
        if v != 0 {
            self.key(name);
            self.buf.push('"');
            self.buf.push_str(&v.to_string());
            self.buf.push('"');
        }
    }

    /// A `uint64` field (a JSON string).
    pub fn u64(&mut self, name: &str, v: u64) {
        if v != 0 {
            self.key(name);
            self.buf.push('"');
            self.buf.push_str(&v.to_string());
            self.buf.push('"');
        }
    }

    /// A `uint32` field (a JSON number).
    pub fn u32(&mut self, name: &str, v: u32) {
        if v != 0 {
            self.key(name);
            self.buf.push_str(&v.to_string());
        }
    }

    /// A `bool` field.
    pub fn bool(&mut self, name: &str, v: bool) {
        if v {
            self.key(name);
            self.buf.push_str("true");
        }
    }

    /// A `string` field.
    pub fn string(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.key(name);
            push_string(self.buf, v);
        }
    }

    /// A repeated `string` field.
    pub fn strings(&mut self, name: &str, v: &[String]) {
        if !v.is_empty() {
            self.key(name);
            self.buf.push('[');
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                push_string(self.buf, s);
            }
            self.buf.push(']');
        }
    }

    /// A `bytes` field (base64).
    pub fn bytes(&mut self, name: &str, v: &[u8]) {
        if !v.is_empty() {
            self.key(name);
            push_base64(self.buf, v);
        }
    }

    /// A repeated `bytes` field.
    pub fn bytes_list(&mut self, name: &str, v: &[Bytes]) {
        if !v.is_empty() {
            self.key(name);
            self.buf.push('[');
            for (i, b) in v.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                push_base64(self.buf, b);
            }
            self.buf.push(']');
        }
    }

    /// An enum field: its name in `names` (indexed by value), or its number if unnamed.
    pub fn enumeration(&mut self, name: &str, v: i32, names: &[&str]) {
        if v != 0 {
            self.key(name);
            match usize::try_from(v).ok().and_then(|i| names.get(i)) {
                Some(n) => push_string(self.buf, n),
                None => self.buf.push_str(&v.to_string()),
            }
        }
    }

    /// A message field, written when present (even if all its fields are defaults: `{}`).
    pub fn message<T: ToJson>(&mut self, name: &str, v: Option<&T>) {
        if let Some(m) = v {
            self.key(name);
            Object::write(self.buf, |o| m.write_fields(o));
        }
    }

    /// A repeated message field.
    pub fn messages<T: ToJson>(&mut self, name: &str, v: &[T]) {
        if !v.is_empty() {
            self.key(name);
            self.buf.push('[');
            for (i, m) in v.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                Object::write(self.buf, |o| m.write_fields(o));
            }
            self.buf.push(']');
        }
    }
}

/// `s` as a JSON string, escaped as Go's `encoding/json` escapes it.
pub fn push_string(buf: &mut String, s: &str) {
    let quoted = serde_json::to_string(s).expect("a string always serializes");
    if quoted.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        for c in quoted.chars() {
            match c {
                '<' => buf.push_str("\\u003c"),
                '>' => buf.push_str("\\u003e"),
                '&' => buf.push_str("\\u0026"),
                '\u{2028}' => buf.push_str("\\u2028"),
                '\u{2029}' => buf.push_str("\\u2029"),
                c => buf.push(c),
            }
        }
    } else {
        buf.push_str(&quoted);
    }
}

fn push_base64(buf: &mut String, v: &[u8]) {
    buf.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(v, buf);
    buf.push('"');
}

/// The JSON name protobuf gives a field: its proto name in lower camel case (`prev_kv` is
/// `prevKv`; `ID` and `peerURLs` stay as they are).
fn json_name(proto_name: &str) -> String {
    let mut out = String::with_capacity(proto_name.len());
    let mut upper = false;
    for c in proto_name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Implements [`ToJson`] for responses that are only a header.
macro_rules! header_only {
    ($($t:ty),*) => {$(
        impl $crate::api::gateway::json::ToJson for $t {
            fn write_fields(&self, o: &mut $crate::api::gateway::json::Object<'_>) {
                o.message("header", self.header.as_ref());
            }
        }
    )*};
}
pub(super) use header_only;

/// Implements [`FromJson`] for requests without fields: any object (its fields are unknown,
/// so ignored) reads as one.
macro_rules! empty_request {
    ($($t:ty),*) => {$(
        impl $crate::api::gateway::json::FromJson for $t {
            fn from_fields(
                _: &$crate::api::gateway::json::Fields<'_>,
            ) -> Result<Self, $crate::api::gateway::json::JsonError> {
                Ok(<$t>::default())
            }
        }
    )*};
}
pub(super) use empty_request;

/// The fields of a JSON object being read as a message.
pub struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Fields<'a> {
    /// The fields of `value`, which must be an object or `null` (no fields). `what` names the
    /// message in the error.
    pub fn new(value: &'a Value, what: &str) -> Result<Fields<'a>, JsonError> {
        match value {
            Value::Object(map) => Ok(Fields { map: Some(map) }),
            Value::Null => Ok(Fields { map: None }),
            other => Err(JsonError(format!(
                "json: cannot unmarshal {} into Go value of type {}",
                kind(other),
                go_type(what)
            ))),
        }
    }

    /// The value of the field `name` (under its proto or its JSON name), `None` if absent or
    /// `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        let map = self.map?;
        let v = map.get(name).or_else(|| map.get(&json_name(name)))?;
        (!v.is_null()).then_some(v)
    }

    /// An `int64` field: a number or a string holding one.
    pub fn i64(&self, name: &str) -> Result<i64, JsonError> {
        self.integer(name, "int64", |s| s.parse().ok(), Value::as_i64)
    }

    /// A `uint64` field: a number or a string holding one.
    pub fn u64(&self, name: &str) -> Result<u64, JsonError> {
        self.integer(name, "uint64", |s| s.parse().ok(), Value::as_u64)
    }

    fn integer<T: Default>(
        &self,
        name: &str,
        go_type: &str,
        parse: impl Fn(&str) -> Option<T>,
        from_number: impl Fn(&Value) -> Option<T>,
    ) -> Result<T, JsonError> {
        let Some(v) = self.get(name) else { return Ok(T::default()) };
        let parsed = match v {
            Value::String(s) => parse(s),
            Value::Number(_) => from_number(v),
            _ => None,
        };
        parsed.ok_or_else(|| {
            JsonError(format!("json: cannot unmarshal {} into Go value of type {go_type}", show(v)))
        })
    }

    /// A `bool` field.
    pub fn bool(&self, name: &str) -> Result<bool, JsonError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(JsonError(format!(
                "json: cannot unmarshal {} into Go value of type bool",
                show(v)
            ))),
        }
    }

    /// A `bytes` field (base64).
    pub fn bytes(&self, name: &str) -> Result<Bytes, JsonError> {
        match self.get(name) {
            None => Ok(Bytes::new()),
            Some(v) => decode_base64(v),
        }
    }

    /// A repeated `bytes` field.
    pub fn bytes_list(&self, name: &str) -> Result<Vec<Bytes>, JsonError> {
        self.list(name, "[]byte")?.into_iter().map(decode_base64).collect()
    }

    /// A `string` field.
    pub fn string(&self, name: &str) -> Result<String, JsonError> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(JsonError(format!(
                "json: cannot unmarshal {} into Go value of type string",
                show(other)
            ))),
        }
    }

    /// A repeated `string` field.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, JsonError> {
        self.list(name, "string")?
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(JsonError(format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    show(other)
                ))),
            })
            .collect()
    }

    /// An enum field: a name among `names` (indexed by value) or a number. `go_name` is the
    /// enum's Go name, for the error.
    pub fn enumeration(&self, name: &str, names: &[&str], go_name: &str) -> Result<i32, JsonError> {
        match self.get(name) {
            None => Ok(0),
            Some(v) => enum_value(v, names, go_name),
        }
    }

    /// A repeated enum field.
    pub fn enumerations(
        &self,
        name: &str,
        names: &[&str],
        go_name: &str,
    ) -> Result<Vec<i32>, JsonError> {
        self.list(name, go_name)?.into_iter().map(|v| enum_value(v, names, go_name)).collect()
    }

    /// Whether the field `name` is present (and not `null`): how a oneof member is chosen.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A message field.
    pub fn message<T: FromJson>(&self, name: &str) -> Result<Option<T>, JsonError> {
        self.get(name).map(T::from_json).transpose()
    }

    /// A repeated message field.
    pub fn messages<T: FromJson>(&self, name: &str) -> Result<Vec<T>, JsonError> {
        self.list(name, std::any::type_name::<T>())?.into_iter().map(T::from_json).collect()
    }

    fn list(&self, name: &str, element: &str) -> Result<Vec<&'a Value>, JsonError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.iter().collect()),
            Some(v) => Err(JsonError(format!(
                "json: cannot unmarshal {} into Go value of type []{}",
                kind(v),
                go_type(element)
            ))),
        }
    }
}

fn enum_value(v: &Value, names: &[&str], go_name: &str) -> Result<i32, JsonError> {
    match v {
        Value::String(s) => names
            .iter()
            .position(|n| n == s)
            .map(|i| i as i32)
            .ok_or_else(|| JsonError(format!("unknown value {v} for enum {go_name}"))),
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(|| {
            JsonError(format!("json: cannot unmarshal number {n} into Go value of type int32"))
        }),
        other => Err(JsonError(format!(
            "json: cannot unmarshal {} into Go value of type int32",
            kind(other)
        ))),
    }
}

/// Padded standard base64, as Go's `encoding/json` reads `[]byte` (it skips `\r` and `\n`).
fn decode_base64(v: &Value) -> Result<Bytes, JsonError> {
    let Value::String(s) = v else {
        return Err(JsonError(format!(
            "json: cannot unmarshal {} into Go value of type []uint8",
            kind(v)
        )));
    };
    let text: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    base64::engine::general_purpose::STANDARD.decode(&text).map(Bytes::from).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            // An incomplete last quantum: Go reports where it starts.
            base64::DecodeError::InvalidLength(len) => len - len % 4,
            base64::DecodeError::InvalidPadding => text.len() - text.len() % 4,
        };
        JsonError(format!("illegal base64 data at input byte {at}"))
    })
}

/// What Go's `encoding/json` calls a JSON value's kind in its errors.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value in an error: numbers as written, anything else by kind.
fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("number {n}"),
        other => kind(other).to_string(),
    }
}

/// `etcdserverpb.RangeRequest` for the Rust path `...::pb::etcdserverpb::RangeRequest`.
fn go_type(rust_path: &str) -> String {
    let mut parts = rust_path.rsplit("::");
    let name = parts.next().unwrap_or(rust_path);
    match parts.next() {
        Some(package) if package.ends_with("pb") => format!("{package}.{name}"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sample {
        n: i64,
        u: u64,
        b: bool,
        key: Bytes,
        order: i32,
        names: Vec<String>,
    }

    const ORDERS: &[&str] = &["NONE", "ASCEND", "DESCEND"];

    impl ToJson for Sample {
        fn write_fields(&self, o: &mut Object<'_>) {
            o.bytes("key", &self.key);
            o.i64("n", self.n);
            o.u64("member_id", self.u);
            o.bool("prev_kv", self.b);
            o.enumeration("sort_order", self.order, ORDERS);
            o.strings("peerURLs", &self.names);
        }
    }

    impl FromJson for Sample {
        fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
            Ok(Sample {
                key: f.bytes("key")?,
                n: f.i64("n")?,
                u: f.u64("member_id")?,
                b: f.bool("prev_kv")?,
                order: f.enumeration(
                    "sort_order",
                    ORDERS,
                    "etcdserverpb.RangeRequest_SortOrder",
                )?,
                names: f.strings("peerURLs")?,
            })
        }
    }

    fn read(s: &str) -> Result<Sample, JsonError> {
        Sample::from_json(&serde_json::from_str(s).unwrap())
    }

    #[test]
    fn defaults_are_left_out_and_64_bit_integers_are_strings() {
        let s = Sample { n: 0, u: 0, b: false, key: Bytes::new(), order: 0, names: vec![] };
        assert_eq!(s.to_json(), "{}");
        let s = Sample {
            n: -3,
            u: u64::MAX,
            b: true,
            key: Bytes::from_static(b"foo"),
            order: 2,
            names: vec!["a<b>&".into()],
        };
        assert_eq!(
            s.to_json(),
            r#"{"key":"Zm9v","n":"-3","member_id":"18446744073709551615","prev_kv":true,"sort_order":"DESCEND","peerURLs":["a\u003cb\u003e\u0026"]}"#
        );
    }

    #[test]
    fn fields_are_read_under_either_name_and_integers_in_either_form() {
        let s = read(r#"{"key":"Zm9v","n":"-3","memberId":7,"prevKv":true,"sortOrder":1,"x":[]}"#)
            .unwrap();
        assert_eq!((s.key.as_ref(), s.n, s.u, s.b, s.order), (&b"foo"[..], -3, 7, true, 1));
        let s = read(r#"{"sort_order":"DESCEND","key":null}"#).unwrap();
        assert_eq!((s.order, s.key.len()), (2, 0));
        assert_eq!(read("null").unwrap().n, 0);
    }

    #[test]
    fn bad_values_are_refused_with_gos_messages() {
        let err = |s: &str| read(s).err().expect("refused").0;
        assert_eq!(err(r#"{"key":"@@@"}"#), "illegal base64 data at input byte 0");
        assert_eq!(err(r#"{"key":"YQ"}"#), "illegal base64 data at input byte 0");
        assert_eq!(
            err(r#"{"sort_order":"BOGUS"}"#),
            r#"unknown value "BOGUS" for enum etcdserverpb.RangeRequest_SortOrder"#
        );
        assert_eq!(
            err(r#"{"n":1.5}"#),
            "json: cannot unmarshal number 1.5 into Go value of type int64"
        );
        assert_eq!(
            err(r#"{"n":"x"}"#),
            "json: cannot unmarshal string into Go value of type int64"
        );
        assert_eq!(
            err(r#"{"member_id":-1}"#),
            "json: cannot unmarshal number -1 into Go value of type uint64"
        );
        assert_eq!(
            err(r#"{"prev_kv":"true"}"#),
            "json: cannot unmarshal string into Go value of type bool"
        );
        assert_eq!(
            err(r#"{"peerURLs":"a"}"#),
            "json: cannot unmarshal string into Go value of type []string"
        );
        assert!(err("[1]").starts_with("json: cannot unmarshal array into Go value of type"));
    }
}
