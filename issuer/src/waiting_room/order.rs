//! Where a user stands in a room, derived from the room's secret so clients can neither
//! predict nor choose it: the ticket naming their place, and their place in the
//! pre-queue — a secret-keyed random permutation of its members, so arriving a few
//! milliseconds early buys nothing. Arrivals after the opening queue FIFO behind it.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Scores from here up are FIFO arrivals (`FIFO_BASE + n` for the n-th); every
/// pre-queue score is below it. 2^52: every score stays an exact integer in a double
/// (what a Redis sorted set stores, and Lua computes with).
pub const FIFO_BASE: u64 = 1 << 52;
/// Bytes of a ticket before encoding: 128 bits, unguessable.
const TICKET_BYTES: usize = 16;
/// Characters of an encoded ticket.
pub const TICKET_CHARS: usize = 22;

/// The ticket of `user` in the room of `campaign`: the same on every join.
pub fn ticket(secret: &[u8], campaign: &str, user: &str) -> String {
    let digest = keyed(secret, b"firstcome-ticket-v1", campaign, user);
    URL_SAFE_NO_PAD.encode(&digest[..TICKET_BYTES])
}

/// Whether `text` could be a ticket (checked before it reaches Redis).
pub fn is_ticket(text: &str) -> bool {
    text.len() == TICKET_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The pre-queue score of `user`: uniform in `0..FIFO_BASE`, fixed per secret, campaign
/// and user, so joining again draws nothing new.
pub fn prequeue_score(secret: &[u8], campaign: &str, user: &str) -> u64 {
    let digest = keyed(secret, b"firstcome-order-v1", campaign, user);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 12
}

fn keyed(secret: &[u8], domain: &[u8], campaign: &str, user: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(domain);
    for part in [campaign.as_bytes(), user.as_bytes()] {
        mac.update(&[0]);
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tickets_are_stable_per_user_and_distinct_between_users_and_campaigns() {
        let alice = ticket(SECRET, "c", "alice");
        assert_eq!(alice, ticket(SECRET, "c", "alice"));
        assert!(is_ticket(&alice), "{alice}");
        assert_ne!(alice, ticket(SECRET, "c", "bob"));
        assert_ne!(alice, ticket(SECRET, "d", "alice"));
        assert_ne!(
            alice,
            ticket(b"another secret of at least 32 bytes", "c", "alice")
        );
    }

    #[test]
    fn only_ticket_shaped_text_is_a_ticket() {
        for bad in [
            "",
            "short",
            "aaaaaaaaaaaaaaaaaaaaa=",
            "aaaaaaaaaaaaaaaaaaaaa/",
            &"a".repeat(23),
        ] {
            assert!(!is_ticket(bad), "{bad}");
        }
    }

    #[test]
    fn prequeue_scores_stay_below_fifo_and_spread_evenly() {
        let users = 20_000u64;
        let mut buckets = [0u64; 10];
        for i in 0..users {
            let score = prequeue_score(SECRET, "c", &format!("user-{i}"));
            assert!(score < FIFO_BASE);
            buckets[(score * 10 / FIFO_BASE) as usize] += 1;
        }
        // 2,000 expected per tenth; a binomial's standard deviation is ~42, so a
        // bucket outside ±250 (6 sigma) means the scores are not uniform.
        for (tenth, count) in buckets.iter().enumerate() {
            assert!(count.abs_diff(users / 10) < 250, "tenth {tenth}: {count}");
        }
    }

    #[test]
    fn the_order_does_not_follow_the_names() {
        // Neighbouring names land anywhere: of 1,000 consecutive users, about half
        // score above their predecessor (a sorted order would give all or none).
        let scores: Vec<u64> = (0..1000)
            .map(|i| prequeue_score(SECRET, "c", &format!("user-{i:04}")))
            .collect();
        let rising = scores.windows(2).filter(|w| w[1] > w[0]).count();
        assert!((400..600).contains(&rising), "{rising}");
    }
}
