//! How many users a room may admit at one moment: the rule of `admit.lua`, as a pure
//! function the script mirrors, tested here.
//!
//! Admissions are counted per second of Redis time (one clock for every issuer), never
//! more than the rate in one second. Within the second they are paced: by `micros` into
//! it, `rate × micros / 10⁶` may have been admitted, plus a tenth of a second ahead, so
//! that a tick landing in the last tenth still fills the second's quota.

/// Users that may be admitted now, `used` having been admitted in this second already,
/// `micros` into it; `active` of `max_active` passes unexpired, when bounded.
pub fn grant(rate: u64, used: u64, micros: u64, active: Option<(u64, u64)>) -> u64 {
    let ahead = rate.div_ceil(10).max(1);
    let allowance = rate.min(rate * micros / 1_000_000 + ahead);
    let by_rate = allowance.saturating_sub(used);
    match active {
        Some((active, max_active)) => by_rate.min(max_active.saturating_sub(active)),
        None => by_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_follow_the_rate_within_a_second() {
        // (rate, used, micros, active/max) -> granted
        let cases = [
            (100, 0, 0, None, 10),
            (100, 10, 0, None, 0),
            (100, 10, 500_000, None, 50),
            (100, 0, 899_999, None, 99),
            (100, 0, 900_000, None, 100),
            (100, 0, 999_999, None, 100),
            (100, 100, 999_999, None, 0),
            (100, 120, 999_999, None, 0),
            (1, 0, 0, None, 1),
            (1, 1, 999_999, None, 0),
            (5, 0, 0, None, 1),
            (100_000, 0, 999_999, None, 100_000),
            (100, 0, 999_999, Some((7, 10)), 3),
            (100, 0, 999_999, Some((10, 10)), 0),
            (100, 0, 999_999, Some((12, 10)), 0),
            (100, 95, 999_999, Some((0, 10)), 5),
        ];
        for (rate, used, micros, active, want) in cases {
            assert_eq!(
                grant(rate, used, micros, active),
                want,
                "rate {rate}, used {used}, {micros} µs, {active:?}"
            );
        }
    }

    #[test]
    fn a_second_never_admits_more_than_the_rate() {
        for rate in [1, 3, 10, 99, 100, 1000] {
            let mut used = 0;
            for micros in (0..1_000_000).step_by(7_919) {
                used += grant(rate, used, micros, None);
            }
            used += grant(rate, used, 999_999, None);
            assert_eq!(used, rate, "rate {rate}");
        }
    }
}
