//! The body of an apply, `{"userId": "..."}`, as the JSON extractor reads it.
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
    /// Left out, or a string: `null` is neither (the document says string; found by
    /// schemathesis, tests/openapi_conformance.rs).
    #[serde(default, deserialize_with = "present_string")]
    user_id: Option<String>,
}

/// A field that is there must be a string; `default` makes one that is not there `None`.
fn present_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
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
            r#"{"userId":42}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
