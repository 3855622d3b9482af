//! The user id an apply names: 1 to 128 visible characters.

use std::fmt;

pub const MAX_USER_ID_CHARS: usize = 128;

/// A validated user id. Numeric ids are sent as strings too.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidUserId {
    #[error("userId must not be empty")]
    Empty,
    #[error("userId must be at most {MAX_USER_ID_CHARS} characters")]
    TooLong,
    #[error("userId must contain only visible characters (no spaces or control characters)")]
    NotVisible,
}

impl UserId {
    pub fn parse(raw: String) -> Result<Self, InvalidUserId> {
        if raw.is_empty() {
            return Err(InvalidUserId::Empty);
        }
        if raw.chars().count() > MAX_USER_ID_CHARS {
            return Err(InvalidUserId::TooLong);
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(InvalidUserId::NotVisible);
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ids_up_to_128_characters() {
        for ok in [
            "1",
            "alice",
            "user@example.com",
            "ü-ñ-漢字",
            &"x".repeat(128),
        ] {
            assert_eq!(UserId::parse(ok.to_string()).unwrap().as_str(), ok);
        }
        // 128 characters of 3 bytes each is still 128 characters.
        assert!(UserId::parse("漢".repeat(128)).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_invisible_ids() {
        assert_eq!(UserId::parse(String::new()), Err(InvalidUserId::Empty));
        assert_eq!(UserId::parse("x".repeat(129)), Err(InvalidUserId::TooLong));
        for bad in ["a b", " a", "a\n", "a\tb", "a\u{0}", "\u{7f}"] {
            assert_eq!(
                UserId::parse(bad.to_string()),
                Err(InvalidUserId::NotVisible),
                "{bad:?}"
            );
        }
    }
}
