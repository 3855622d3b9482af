//! The body of an apply, `{"userId": "..."}`, as the JSON extractor reads it. A
//! non-negative JSON integer is the user of its decimal string (`1` is `"1"`): clients
//! that hold ids as numbers (a Java `Long`) send them as they are.
//!
//! Self-contained (serde only): the fuzz targets compile this file on its own.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

pub struct ApplyRequest {
    /// Not yet validated: `UserId::parse` does that. Required under identity `none`;
    /// otherwise optional, and if present it must name the authenticated user.
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fields {
    /// Left out, a string, or a non-negative integer: `null` is none of them (found by
    /// schemathesis, tests/openapi_conformance.rs).
    #[serde(default, deserialize_with = "present_user_id")]
    user_id: Option<String>,
}

/// A field that is there must be a string or a non-negative integer (as its decimal
/// string); `default` makes one that is not there `None`.
fn present_user_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_any(StringOrInteger).map(Some)
}

/// A string, or a non-negative integer; not a fraction, an exponent (`1e3` is a float
/// to JSON parsers), a negative number, a boolean, `null`, an array or an object.
struct StringOrInteger;

impl<'de> Visitor<'de> for StringOrInteger {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a user id: a string, or a non-negative integer")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<String, E> {
        Ok(value)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<String, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::invalid_value(
                serde::de::Unexpected::Signed(value),
                &self,
            )),
        }
    }
}

/// Only an object: serde's derive would also take the fields as an array
/// (`["alice"]`), which the API does not document (found by fuzz/apply_body).
impl<'de> Deserialize<'de> for ApplyRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectOnly)
    }
}

struct ObjectOnly;

impl<'de> Visitor<'de> for ObjectOnly {
    type Value = ApplyRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"userId": "..."}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ApplyRequest, A::Error> {
        let fields = Fields::deserialize(MapAccessDeserializer::new(map))?;
        Ok(ApplyRequest {
            user_id: fields.user_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Option<String>, String> {
        (serde_json::from_str::<ApplyRequest>(body).map(|r| r.user_id)).map_err(|e| e.to_string())
    }

    #[test]
    fn an_object_with_user_id_only() {
        assert_eq!(parse(r#"{"userId":"alice"}"#), Ok(Some("alice".into())));
        assert_eq!(parse("{}"), Ok(None), "identity modes need no userId");
        for bad in [
            r#"["alice"]"#,
            r#"{"userId":"a","x":1}"#,
            r#""alice""#,
            "null",
            r#"{"userId":null}"#,
            r#"{"userId":["a"]}"#,
            r#"{"userId":{}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_non_negative_integer_is_its_decimal_string() {
        for (body, user) in [
            (r#"{"userId":1}"#, "1"),
            (r#"{"userId":0}"#, "0"),
            (r#"{"userId":9007199254740993}"#, "9007199254740993"),
            (r#"{"userId":18446744073709551615}"#, "18446744073709551615"),
        ] {
            assert_eq!(parse(body), Ok(Some(user.into())), "{body}");
            let string = format!(r#"{{"userId":"{user}"}}"#);
            assert_eq!(parse(body), parse(&string), "{body} is {string}");
        }
        for (bad, why) in [
            (r#"{"userId":1.5}"#, "floating point `1.5`"),
            (r#"{"userId":1e3}"#, "floating point `1000.0`"),
            (r#"{"userId":1.0}"#, "floating point `1.0`"),
            (r#"{"userId":-1}"#, "integer `-1`"),
            (r#"{"userId":true}"#, "boolean `true`"),
            (r#"{"userId":18446744073709551616}"#, "floating point"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(
                error.contains("a string, or a non-negative integer"),
                "{bad}: {error}"
            );
        }
    }
}
