//! What a ticket's holder is told: its state, from what Redis holds of it and where the
//! campaign stands, and an estimate of the wait. Pure, so it is tested here.

use serde::Serialize;

/// A ticket as the room's Redis keys hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// In the queue, `rank` tickets ahead of it.
    Waiting { rank: u64 },
    /// Let in; its pass expires at `expires_ms`.
    Admitted { expires_ms: u64 },
    /// Dropped (not polled in time) or its pass expired.
    Lapsed,
}

/// What the holder of a ticket is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    Waiting,
    Admitted,
    Expired,
    SoldOut,
    Closed,
}

/// The state of a ticket: a closed campaign closes every ticket; a sold-out one turns
/// every waiting ticket `sold_out` at once, while an admitted user keeps their pass (they
/// may hold a coupon already; their apply tells them).
pub fn state(held: Held, sold_out: bool, closed: bool) -> TicketState {
    match held {
        _ if closed => TicketState::Closed,
        Held::Waiting { .. } if sold_out => TicketState::SoldOut,
        Held::Waiting { .. } => TicketState::Waiting,
        Held::Admitted { .. } => TicketState::Admitted,
        Held::Lapsed => TicketState::Expired,
    }
}

/// Seconds until a ticket `ahead` places from the front is let in at `rate` per second,
/// `until_open_ms` before admission starts; rounded up, so "0" means "now".
pub fn estimated_wait_seconds(ahead: u64, rate: u32, until_open_ms: u64) -> u64 {
    let admitted_after_ms = (ahead.saturating_add(1))
        .saturating_mul(1000)
        .div_ceil(u64::from(rate.max(1)));
    until_open_ms
        .saturating_add(admitted_after_ms)
        .div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_ticket_then_the_campaign() {
        let waiting = Held::Waiting { rank: 3 };
        let admitted = Held::Admitted { expires_ms: 1 };
        // (held, sold out, closed) -> state
        let cases = [
            (waiting, false, false, TicketState::Waiting),
            (waiting, true, false, TicketState::SoldOut),
            (waiting, true, true, TicketState::Closed),
            (admitted, false, false, TicketState::Admitted),
            (admitted, true, false, TicketState::Admitted),
            (admitted, false, true, TicketState::Closed),
            (Held::Lapsed, false, false, TicketState::Expired),
            (Held::Lapsed, true, false, TicketState::Expired),
            (Held::Lapsed, false, true, TicketState::Closed),
        ];
        for (held, sold_out, closed, want) in cases {
            assert_eq!(
                state(held, sold_out, closed),
                want,
                "{held:?} {sold_out} {closed}"
            );
        }
    }

    #[test]
    fn the_wait_is_the_places_ahead_at_the_rate_plus_the_time_to_opening() {
        // (ahead, rate, until open ms) -> seconds
        let cases = [
            (0, 10, 0, 1),
            (9, 10, 0, 1),
            (10, 10, 0, 2),
            (99, 100, 0, 1),
            (1000, 100, 0, 11),
            (0, 1, 0, 1),
            (0, 100_000, 0, 1),
            (0, 10, 60_000, 61),
            (4999, 500, 2_500, 13),
            (u64::MAX, 1, 0, u64::MAX.div_ceil(1000)),
        ];
        for (ahead, rate, until_open_ms, want) in cases {
            assert_eq!(
                estimated_wait_seconds(ahead, rate, until_open_ms),
                want,
                "{ahead} ahead at {rate}/s, {until_open_ms} ms to opening"
            );
        }
    }
}
