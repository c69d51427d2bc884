//! The history file format: one JSON object per line, one line per operation.
//!
//! ```text
//! {"client": 3, "op": "cas", "key": "x", "expected": "1", "value": "4", "call": 1200, "return": 1350, "status": "ok"}
//! ```
//!
//! Fields:
//! - `client`: a non-negative integer;
//! - `op`: `read`, `write`, `cas` or `append`;
//! - `key`: a string; missing or `null` means the history is over one single register;
//! - `value`: for `read`, what was read (`null`: the key was absent; may be left out when the
//!   status is not `ok`); for `write` and `append`, what was written or appended; for `cas`,
//!   the value written on a match;
//! - `expected`: for `cas` only, the value compared with (`null`: the key must be absent);
//! - `call`, `return`: non-negative integers on one clock; `return` may be missing or `null`
//!   when the status is `info`;
//! - `status`: `ok`, `fail` or `info`.
//!
//! Values may be strings or integers (an integer stands for its decimal string). Unknown fields
//! are ignored, so a history may carry extra metadata. Blank lines are skipped.

use serde_json::{Map, Value};

use crate::linearizability::{OpKind, Operation, Status};

/// A line of a history file that is not a valid operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The line is not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The line is JSON but not an object.
    #[error("expected a JSON object, one operation per line")]
    NotAnObject,
    /// A required field is missing (or `null` where that is not allowed).
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// `op` names no known operation.
    #[error("unknown op {0:?} (expected read, write, cas or append)")]
    UnknownOp(String),
    /// `status` names no known status.
    #[error("unknown status {0:?} (expected ok, fail or info)")]
    UnknownStatus(String),
    /// `return` is before `call`.
    #[error("return {ret} is before call {call}")]
    ReturnBeforeCall {
        /// The call time.
        call: u64,
        /// The return time.
        ret: u64,
    },
}

/// Parses a whole history file.
///
/// # Errors
/// The first line that is not a valid operation, with its number.
pub fn parse_history(text: &str) -> Result<Vec<Operation>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            parse_operation(line).map_err(|problem| ParseError { line: number + 1, problem })
        })
        .collect()
}

/// The 1-based line numbers of the operations of a history file, in the order
/// [`parse_history`] returns them: `line_numbers(text)[i]` is the line of operation `i`.
pub fn line_numbers(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, _)| number + 1)
        .collect()
}

/// Parses one line of a history file.
///
/// # Errors
/// What is wrong with the line.
pub fn parse_operation(line: &str) -> Result<Operation, Problem> {
    let value: Value = serde_json::from_str(line).map_err(|error| {
        // serde_json names a line and column within this one line; only the column helps.
        let message = error.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        Problem::InvalidJson(format!("{message} at column {}", error.column()))
    })?;
    let Value::Object(object) = value else {
        return Err(Problem::NotAnObject);
    };
    let fields = Fields(&object);

    let client = fields.required_integer("client")?;
    let call = fields.required_integer("call")?;
    let ret = fields.optional_integer("return")?;
    let status = match fields.required_string("status")? {
        "ok" => Status::Ok,
        "fail" => Status::Fail,
        "info" => Status::Info,
        other => return Err(Problem::UnknownStatus(other.to_owned())),
    };
    match (status, ret) {
        (Status::Ok | Status::Fail, None) => return Err(Problem::MissingField("return")),
        (_, Some(ret)) if ret < call => return Err(Problem::ReturnBeforeCall { call, ret }),
        _ => {}
    }
    let key = match object.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => Some(key.clone()),
        Some(_) => {
            return Err(Problem::WrongType { field: "key", expected: "a string or null" });
        }
    };
    let kind = match fields.required_string("op")? {
        "read" => OpKind::Read {
            value: match (object.contains_key("value"), status) {
                // Only a successful read must say what it saw.
                (false, Status::Fail | Status::Info) => None,
                _ => fields.nullable_value("value")?,
            },
        },
        "write" => OpKind::Write { value: fields.required_value("value")? },
        "cas" => OpKind::Cas {
            expected: fields.nullable_value("expected")?,
            value: fields.required_value("value")?,
        },
        "append" => OpKind::Append { value: fields.required_value("value")? },
        other => return Err(Problem::UnknownOp(other.to_owned())),
    };
    Ok(Operation { client, key, kind, call, ret, status })
}

/// Writes one operation as a line of a history file (without the newline); the inverse of
/// [`parse_operation`].
pub fn format_operation(op: &Operation) -> String {
    let mut object = Map::new();
    object.insert("client".to_owned(), Value::from(op.client));
    let (name, value, expected) = match &op.kind {
        OpKind::Read { value } => ("read", value.clone(), None),
        OpKind::Write { value } => ("write", Some(value.clone()), None),
        OpKind::Cas { expected, value } => ("cas", Some(value.clone()), Some(expected.clone())),
        OpKind::Append { value } => ("append", Some(value.clone()), None),
    };
    object.insert("op".to_owned(), Value::from(name));
    if let Some(key) = &op.key {
        object.insert("key".to_owned(), Value::from(key.clone()));
    }
    if let Some(expected) = expected {
        object.insert("expected".to_owned(), Value::from(expected));
    }
    object.insert("value".to_owned(), Value::from(value));
    object.insert("call".to_owned(), Value::from(op.call));
    if let Some(ret) = op.ret {
        object.insert("return".to_owned(), Value::from(ret));
    }
    object.insert("status".to_owned(), Value::from(op.status.to_string()));
    Value::Object(object).to_string()
}

/// Typed access to the fields of one line.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn required_integer(&self, field: &'static str) -> Result<u64, Problem> {
        self.optional_integer(field)?.ok_or(Problem::MissingField(field))
    }

    fn optional_integer(&self, field: &'static str) -> Result<Option<u64>, Problem> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => number
                .as_u64()
                .map(Some)
                .ok_or(Problem::WrongType { field, expected: "a non-negative integer" }),
            Some(_) => Err(Problem::WrongType { field, expected: "a non-negative integer" }),
        }
    }

    fn required_string(&self, field: &'static str) -> Result<&str, Problem> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(Problem::MissingField(field)),
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(Problem::WrongType { field, expected: "a string" }),
        }
    }

    /// A register value that must be present and not `null`.
    fn required_value(&self, field: &'static str) -> Result<String, Problem> {
        self.nullable_value(field)?.ok_or(Problem::MissingField(field))
    }

    /// A register value that must be present; `null` means absent.
    fn nullable_value(&self, field: &'static str) -> Result<Option<String>, Problem> {
        match self.0.get(field) {
            None => Err(Problem::MissingField(field)),
            Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {
                Ok(Some(number.to_string()))
            }
            Some(_) => Err(Problem::WrongType { field, expected: "a string, an integer or null" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_example() {
        let line = r#"{"client": 3, "op": "cas", "key": "x", "expected": "1", "value": "4", "call": 1200, "return": 1350, "status": "ok"}"#;
        let op = parse_operation(line).expect("valid line");
        assert_eq!(
            op,
            Operation {
                client: 3,
                key: Some("x".to_owned()),
                kind: OpKind::Cas { expected: Some("1".to_owned()), value: "4".to_owned() },
                call: 1200,
                ret: Some(1350),
                status: Status::Ok,
            }
        );
    }

    #[test]
    fn info_may_lack_a_return_and_integers_are_values() {
        let op = parse_operation(
            r#"{"client": 0, "op": "write", "value": 5, "call": 1, "status": "info"}"#,
        )
        .expect("valid line");
        assert_eq!(op.ret, None);
        assert_eq!(op.key, None);
        assert_eq!(op.kind, OpKind::Write { value: "5".to_owned() });
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let text = "{\"client\":0,\"op\":\"read\",\"value\":null,\"call\":1,\"return\":2,\"status\":\"ok\"}\n\n{\"client\":0,\"op\":\"incr\",\"value\":\"1\",\"call\":3,\"return\":4,\"status\":\"ok\"}\n";
        let error = parse_history(text).expect_err("line 3 is bad");
        assert_eq!(error.line, 3);
        assert_eq!(error.problem, Problem::UnknownOp("incr".to_owned()));
        assert_eq!(
            error.to_string(),
            "line 3: unknown op \"incr\" (expected read, write, cas or append)"
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        let cases = [
            ("{", "invalid JSON"),
            ("[1]", "expected a JSON object"),
            (
                r#"{"op":"read","value":null,"call":1,"return":2,"status":"ok"}"#,
                "missing field `client`",
            ),
            (
                r#"{"client":0,"op":"read","call":1,"return":2,"status":"ok"}"#,
                "missing field `value`",
            ),
            (
                r#"{"client":0,"op":"write","value":null,"call":1,"return":2,"status":"ok"}"#,
                "missing field `value`",
            ),
            (
                r#"{"client":0,"op":"cas","value":"1","call":1,"return":2,"status":"ok"}"#,
                "missing field `expected`",
            ),
            (
                r#"{"client":0,"op":"read","value":null,"call":1,"status":"ok"}"#,
                "missing field `return`",
            ),
            (
                r#"{"client":0,"op":"read","value":null,"call":3,"return":2,"status":"ok"}"#,
                "return 2 is before call 3",
            ),
            (
                r#"{"client":-1,"op":"read","value":null,"call":1,"return":2,"status":"ok"}"#,
                "`client` must be",
            ),
            (
                r#"{"client":0,"op":"read","value":null,"call":1,"return":2,"status":"maybe"}"#,
                "unknown status",
            ),
            (
                r#"{"client":0,"op":"read","value":[1],"call":1,"return":2,"status":"ok"}"#,
                "`value` must be",
            ),
        ];
        for (line, message) in cases {
            let problem = parse_operation(line).expect_err(line);
            assert!(
                problem.to_string().contains(message),
                "{line}: {problem} does not contain {message}"
            );
        }
    }

    fn arb_value() -> impl Strategy<Value = String> {
        "[a-z0-9\"\\\\ ]{0,6}"
    }

    fn arb_operation() -> impl Strategy<Value = Operation> {
        let kind = prop_oneof![
            proptest::option::of(arb_value()).prop_map(|value| OpKind::Read { value }),
            arb_value().prop_map(|value| OpKind::Write { value }),
            (proptest::option::of(arb_value()), arb_value())
                .prop_map(|(expected, value)| OpKind::Cas { expected, value }),
            arb_value().prop_map(|value| OpKind::Append { value }),
        ];
        let status = prop_oneof![Just(Status::Ok), Just(Status::Fail), Just(Status::Info)];
        (
            any::<u64>(),
            proptest::option::of(arb_value()),
            kind,
            0..u64::MAX / 2,
            0..1000u64,
            status,
            any::<bool>(),
        )
            .prop_map(|(client, key, kind, call, length, status, drop_return)| {
                let ret =
                    if status == Status::Info && drop_return { None } else { Some(call + length) };
                Operation { client, key, kind, call, ret, status }
            })
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(op in arb_operation()) {
            let line = format_operation(&op);
            prop_assert_eq!(parse_operation(&line), Ok(op));
        }
    }
}
