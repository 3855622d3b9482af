//! Apply bodies from any bytes, read as the JSON extractor reads them, then the user id
//! validated: never a panic, and a body that passes names exactly the user it parsed to —
//! its string, or the decimal string of its non-negative integer.
#![no_main]

#[path = "../../issuer/src/http/apply_body.rs"]
mod apply_body;
#[path = "../../issuer/src/user_id.rs"]
mod user_id;

use apply_body::ApplyRequest;
use libfuzzer_sys::fuzz_target;
use user_id::UserId;

fuzz_target!(|data: &[u8]| {
    let Ok(ApplyRequest { user_id: Some(raw) }) = serde_json::from_slice::<ApplyRequest>(data)
    else {
        return;
    };
    if let Ok(user) = UserId::parse(raw.clone()) {
        let again: serde_json::Value = serde_json::from_slice(data).expect("it parsed once");
        let named = match &again["userId"] {
            serde_json::Value::String(named) => named.clone(),
            serde_json::Value::Number(number) => {
                let integer = number.as_u64().expect("only non-negative integers pass");
                integer.to_string()
            }
            other => panic!("{other} passed as a user id"),
        };
        assert_eq!(named, user.as_str());
        assert_eq!(user.as_str(), raw);
    }
});
