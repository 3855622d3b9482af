//! Answers applies to a sold-out campaign from memory.
//!
//! When a backend first says "sold out", the issuer loads the campaign's holders once
//! (no admission can happen any more, so the copy is exact) and from then on answers
//! every apply without touching the backend, by the same rule as the backend: users who
//! hold their per-user limit get "already applied", everyone else "sold out". The board
//! is cleared once the backend counts fewer admissions than the limit again: the limit
//! was raised, or a restore freed sequences Redis lost before they reached the topic.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::rule::{self, Decision};
use super::{Counts, Outcome};

/// Every holder of a sold-out campaign, and the limit it sold out at.
#[derive(Debug, Default)]
pub struct SoldOutSnapshot {
    pub limit: u64,
    pub holders: HashMap<String, Vec<u64>>,
}

#[derive(Debug, Default)]
pub struct SoldOutBoard {
    snapshot: RwLock<Option<SoldOutSnapshot>>,
    loading: AtomicBool,
}

impl SoldOutBoard {
    /// The answer for `user` if the campaign is known to be sold out.
    pub fn answer(&self, user: &str, per_user_limit: u32) -> Option<Outcome> {
        let guard = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let snapshot = guard.as_ref()?;
        let held = snapshot.holders.get(user).map_or(&[][..], Vec::as_slice);
        Some(
            match rule::decide(held.len(), per_user_limit, snapshot.limit, snapshot.limit) {
                Decision::AlreadyApplied => Outcome::AlreadyApplied(held.to_vec()),
                Decision::SoldOut | Decision::Admit { .. } => Outcome::SoldOut,
            },
        )
    }

    /// The limit the campaign sold out at, if it is sold out.
    pub fn sold_out_at(&self) -> Option<u64> {
        let guard = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|s| s.limit)
    }

    /// Claims the right to load the snapshot; only one caller at a time gets `true`.
    pub fn begin_loading(&self) -> bool {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
            && !self.loading.swap(true, Ordering::AcqRel)
    }

    /// Installs a loaded snapshot (or gives up loading with `None`).
    pub fn finish_loading(&self, snapshot: Option<SoldOutSnapshot>) {
        if let Some(snapshot) = snapshot {
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        }
        self.loading.store(false, Ordering::Release);
    }

    /// Forgets the snapshot when the backend's `counts` leave room again: applies go to
    /// the backend again.
    pub fn refresh(&self, counts: Counts) {
        let mut guard = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        if guard.is_some() && counts.admitted < counts.limit {
            *guard = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sold_out_at(limit: u64) -> SoldOutBoard {
        let board = SoldOutBoard::default();
        assert!(board.begin_loading());
        board.finish_loading(Some(SoldOutSnapshot {
            limit,
            holders: HashMap::from([("winner".to_string(), vec![7])]),
        }));
        board
    }

    #[test]
    fn empty_board_answers_nothing() {
        let board = SoldOutBoard::default();
        assert_eq!(board.answer("anyone", 1), None);
        assert_eq!(board.sold_out_at(), None);
    }

    #[test]
    fn loaded_board_tells_holders_from_others() {
        let board = sold_out_at(10);
        assert_eq!(
            board.answer("winner", 1),
            Some(Outcome::AlreadyApplied(vec![7]))
        );
        assert_eq!(board.answer("late", 1), Some(Outcome::SoldOut));
        // A holder below the per-user limit could win more, but nothing is left.
        assert_eq!(board.answer("winner", 2), Some(Outcome::SoldOut));
        assert!(!board.begin_loading(), "a loaded board is not loaded again");
    }

    #[test]
    fn only_one_loader_at_a_time() {
        let board = SoldOutBoard::default();
        assert!(board.begin_loading());
        assert!(!board.begin_loading());
        board.finish_loading(None);
        assert!(board.begin_loading(), "a failed load can be retried");
    }

    fn counts(limit: u64, admitted: u64) -> Counts {
        Counts { limit, admitted }
    }

    #[test]
    fn room_again_clears_the_board_none_does_not() {
        let board = sold_out_at(10);
        board.refresh(counts(10, 10));
        board.refresh(counts(5, 10));
        assert_eq!(board.sold_out_at(), Some(10));
        board.refresh(counts(11, 10)); // the limit raised
        assert_eq!(board.answer("late", 1), None);

        let board = sold_out_at(10);
        board.refresh(counts(10, 7)); // three sequences freed by a restore
        assert_eq!(board.answer("late", 1), None);
    }
}
