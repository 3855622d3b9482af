//! The admission rule, as a pure function.
//!
//! In the distributed issuer the same rule runs inside Redis (`admit.lua`); this is its
//! twin for the standalone issuer, and the table both are tested against.

/// What an apply gets, given the state it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admit the user; this is their `ordinal`-th coupon in the campaign.
    Admit { ordinal: u32 },
    /// The user already holds `per_user_limit` coupons.
    AlreadyApplied,
    /// Every coupon is taken.
    SoldOut,
}

/// The per-user check comes first: a winner who applies again after the sell-out is told
/// they already hold a coupon, not that the campaign is sold out.
pub fn decide(held_by_user: usize, per_user_limit: u32, admitted: u64, limit: u64) -> Decision {
    if held_by_user >= per_user_limit as usize {
        Decision::AlreadyApplied
    } else if admitted >= limit {
        Decision::SoldOut
    } else {
        Decision::Admit {
            ordinal: held_by_user as u32 + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (held by user, per-user limit, admitted, limit) -> decision.
    const TABLE: &[(usize, u32, u64, u64, Decision)] = &[
        (0, 1, 0, 1, Decision::Admit { ordinal: 1 }),
        (0, 1, 99, 100, Decision::Admit { ordinal: 1 }),
        (0, 1, 100, 100, Decision::SoldOut),
        (0, 1, 101, 100, Decision::SoldOut),
        (1, 1, 5, 100, Decision::AlreadyApplied),
        (1, 1, 100, 100, Decision::AlreadyApplied),
        (1, 3, 5, 100, Decision::Admit { ordinal: 2 }),
        (2, 3, 5, 100, Decision::Admit { ordinal: 3 }),
        (3, 3, 5, 100, Decision::AlreadyApplied),
        (2, 3, 100, 100, Decision::SoldOut),
    ];

    #[test]
    fn decide_follows_the_table() {
        for &(held, per_user, admitted, limit, want) in TABLE {
            assert_eq!(
                decide(held, per_user, admitted, limit),
                want,
                "held={held} per_user={per_user} admitted={admitted} limit={limit}"
            );
        }
    }
}
