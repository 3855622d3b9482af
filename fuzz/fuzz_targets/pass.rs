//! Waiting-room passes from any bytes: never a panic, and a pass verifies only as the
//! exact text `sign` wrote for that user (nothing else passes for it); any user id signs
//! into a pass that verifies for that user only.
#![no_main]

#[path = "../../issuer/src/waiting_room/pass.rs"]
mod pass;

use libfuzzer_sys::fuzz_target;
use pass::{PassError, sign, verify};

/// The secret fuzz/seeds/pass/ was signed with.
const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32";
const CAMPAIGN: &str = "launch";
const NOW: u64 = 1_764_000_000_000;

fuzz_target!(|data: &[u8]| {
    for user in ["alice", "bob"] {
        if let Ok(expires) = verify(SECRET, CAMPAIGN, data, user, NOW) {
            assert!(expires > NOW);
            assert_eq!(data, sign(SECRET, CAMPAIGN, user, expires).as_bytes());
        }
    }
    let Ok(user) = std::str::from_utf8(data) else {
        return;
    };
    let expires = NOW + 1 + u64::from(data.first().copied().unwrap_or(0));
    let signed = sign(SECRET, CAMPAIGN, user, expires);
    if signed.len() <= pass::MAX_PASS_BYTES {
        assert_eq!(verify(SECRET, CAMPAIGN, signed.as_bytes(), user, NOW), Ok(expires));
        let other = format!("{user}x");
        let refused = verify(SECRET, CAMPAIGN, signed.as_bytes(), &other, NOW);
        assert_eq!(refused, Err(PassError::OtherUser));
        let late = verify(SECRET, CAMPAIGN, signed.as_bytes(), user, expires);
        assert_eq!(late, Err(PassError::Expired));
    }
});
