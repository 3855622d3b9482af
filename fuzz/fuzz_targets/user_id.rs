//! User ids from any bytes: never a panic, and what is accepted is 1-128 visible
//! characters, unchanged.
#![no_main]

#[path = "../../issuer/src/user_id.rs"]
mod user_id;

use libfuzzer_sys::fuzz_target;
use user_id::{MAX_USER_ID_CHARS, UserId};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(user) = UserId::parse(raw.to_string()) {
        let chars = user.as_str().chars();
        assert_eq!(user.as_str(), raw);
        assert!((1..=MAX_USER_ID_CHARS).contains(&chars.clone().count()));
        assert!(chars.clone().all(|c| !c.is_control() && !c.is_whitespace()));
    }
});
