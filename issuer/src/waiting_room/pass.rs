//! The pass of an admitted user: `<expiry ms>.<user>.<mac>` (user and mac in unpadded
//! base64url), the mac an HMAC-SHA256 over campaign, user and expiry with the room's
//! secret. The apply of a campaign with a waiting room requires one for its user.
//!
//! Self-contained (the fuzz target compiles this file alone): a pass comes from outside,
//! so parsing it is bounded and never panics.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Longest pass read: a 128-character user id of 4-byte characters fits with room.
pub const MAX_PASS_BYTES: usize = 1024;
/// What the mac covers first, so the secret's other uses (tickets, order) never sign a
/// valid pass.
const DOMAIN: &[u8] = b"firstcome-pass-v1";

/// Why a pass does not let its bearer apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("the pass is not one this issuer signed")]
    Invalid,
    #[error("the pass belongs to another user")]
    OtherUser,
    #[error("the pass has expired")]
    Expired,
}

/// A pass for `user` of `campaign`, valid until `expires_ms` (Unix ms).
pub fn sign(secret: &[u8], campaign: &str, user: &str, expires_ms: u64) -> String {
    let mac = mac(secret, campaign, user, expires_ms)
        .finalize()
        .into_bytes();
    format!(
        "{expires_ms}.{}.{}",
        URL_SAFE_NO_PAD.encode(user),
        URL_SAFE_NO_PAD.encode(mac)
    )
}

/// Checks that `pass` was signed for `user` of `campaign` and is unexpired at `now_ms`;
/// returns its expiry. A pass that is not well formed or not signed with `secret` is
/// `Invalid`, before anything it says is looked at.
pub fn verify(
    secret: &[u8],
    campaign: &str,
    pass: &[u8],
    user: &str,
    now_ms: u64,
) -> Result<u64, PassError> {
    let (expires_ms, holder, tag) = parse(pass).ok_or(PassError::Invalid)?;
    mac(secret, campaign, &holder, expires_ms)
        .verify_slice(&tag)
        .map_err(|_| PassError::Invalid)?;
    if holder != user {
        return Err(PassError::OtherUser);
    }
    if expires_ms <= now_ms {
        return Err(PassError::Expired);
    }
    Ok(expires_ms)
}

/// The parts of a well-formed pass: expiry, user, mac bytes.
fn parse(pass: &[u8]) -> Option<(u64, String, Vec<u8>)> {
    if pass.len() > MAX_PASS_BYTES {
        return None;
    }
    let text = std::str::from_utf8(pass).ok()?;
    let mut parts = text.split('.');
    let (expires, user, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_canonical_number(expires) {
        return None;
    }
    let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
    Some((
        expires.parse().ok()?,
        user,
        URL_SAFE_NO_PAD.decode(tag).ok()?,
    ))
}

/// Digits without a leading zero: one text per expiry, so only the text `sign` wrote
/// verifies.
fn is_canonical_number(text: &str) -> bool {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    digits && (text == "0" || !text.starts_with('0'))
}

fn mac(secret: &[u8], campaign: &str, user: &str, expires_ms: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(DOMAIN);
    for part in [campaign.as_bytes(), user.as_bytes()] {
        mac.update(&[0]);
        mac.update(part);
    }
    mac.update(&[0]);
    mac.update(expires_ms.to_string().as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_764_000_000_000;

    #[test]
    fn a_signed_pass_verifies_for_its_user_until_it_expires() {
        let pass = sign(SECRET, "launch", "alice", NOW + 1);
        assert_eq!(
            verify(SECRET, "launch", pass.as_bytes(), "alice", NOW),
            Ok(NOW + 1)
        );
        assert_eq!(
            verify(SECRET, "launch", pass.as_bytes(), "alice", NOW + 1),
            Err(PassError::Expired)
        );
        assert_eq!(
            verify(SECRET, "launch", pass.as_bytes(), "bob", NOW),
            Err(PassError::OtherUser)
        );
    }

    #[test]
    fn a_pass_is_bound_to_its_campaign_and_secret() {
        let pass = sign(SECRET, "launch", "alice", NOW + 1000);
        assert_eq!(
            verify(SECRET, "other", pass.as_bytes(), "alice", NOW),
            Err(PassError::Invalid)
        );
        assert_eq!(
            verify(
                b"another secret of at least 32 bytes",
                "launch",
                pass.as_bytes(),
                "alice",
                NOW
            ),
            Err(PassError::Invalid)
        );
    }

    #[test]
    fn edited_passes_are_invalid() {
        let pass = sign(SECRET, "launch", "alice", NOW + 1000);
        let (expires, rest) = pass.split_once('.').unwrap();
        let later = format!("{}.{rest}", expires.parse::<u64>().unwrap() + 1);
        let bob = URL_SAFE_NO_PAD.encode("bob");
        let renamed = pass.replacen(&URL_SAFE_NO_PAD.encode("alice"), &bob, 1);
        let padded = format!("0{pass}");
        for forged in [later, renamed, padded] {
            assert_eq!(
                verify(SECRET, "launch", forged.as_bytes(), "bob", NOW),
                Err(PassError::Invalid),
                "{forged}"
            );
        }
    }

    #[test]
    fn malformed_passes_are_invalid_not_a_panic() {
        let long = "1".repeat(MAX_PASS_BYTES + 1);
        for bad in [
            "",
            ".",
            "..",
            "1..",
            "x.YWxpY2U.AA",
            "-1.YWxpY2U.AA",
            "1.YWxpY2U.AA.AA",
            "99999999999999999999999.YWxpY2U.AA",
            "1.%%%.AA",
            "1.YWxpY2U",
            long.as_str(),
        ] {
            assert_eq!(
                verify(SECRET, "launch", bad.as_bytes(), "alice", NOW),
                Err(PassError::Invalid),
                "{bad}"
            );
        }
        assert_eq!(
            verify(SECRET, "launch", &[0xff, b'.', b'.'], "alice", NOW),
            Err(PassError::Invalid)
        );
    }

    #[test]
    fn the_format_is_pinned() {
        // fuzz/seeds/pass/alice, signed independently (Python's hmac) from the format the
        // module comment describes.
        let seed = "1764000600000.YWxpY2U.y54uTdyRVhYDIToKsVzhtE0zrPVDpTorH_p6py7ywcA";
        let secret = b"fuzzing-secret-fuzzing-secret-32";
        assert_eq!(sign(secret, "launch", "alice", 1_764_000_600_000), seed);
    }

    #[test]
    fn users_with_any_visible_character_round_trip() {
        for user in ["user@x:y/é", "a.b.c", "名前"] {
            let pass = sign(SECRET, "c", user, NOW + 1);
            assert_eq!(verify(SECRET, "c", pass.as_bytes(), user, NOW), Ok(NOW + 1));
        }
    }
}
