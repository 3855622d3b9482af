//! Who a request comes from: the one home of that question for applies and look-ups.
//! The campaign of the path says how its callers are authenticated (its identity).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::served::ServedCampaign;
use super::{Api, ApiError};
use crate::user_id::UserId;

/// The caller of a campaign's endpoint, as its identity mode establishes it.
pub enum Caller {
    /// Identity `none`: the request names its user itself.
    Unauthenticated,
    Authenticated(UserId),
}

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let ServedCampaign(campaign) = ServedCampaign::from_request_parts(parts, api).await?;
        let user = (campaign.identity.authenticate(&parts.headers).await)
            .map_err(|error| ApiError::from_identity(error, &campaign.identity))?;
        Ok(user.map_or(Self::Unauthenticated, Self::Authenticated))
    }
}

impl Caller {
    /// The user an apply is for: the authenticated user, whom a `userId` in the body
    /// must name; under identity `none`, the body's `userId`.
    pub fn applicant(self, claimed: Option<String>) -> Result<UserId, ApiError> {
        match (self, claimed) {
            (Self::Unauthenticated, Some(claimed)) => Ok(UserId::parse(claimed)?),
            (Self::Unauthenticated, None) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing field `userId`: this campaign does not authenticate callers",
            )),
            (Self::Authenticated(user), claimed) => same_user(user, claimed.as_deref()),
        }
    }

    /// The user a look-up by id may answer for: anyone under identity `none`, else the
    /// caller only.
    pub fn may_look_up(self, named: String) -> Result<UserId, ApiError> {
        match self {
            Self::Unauthenticated => Ok(UserId::parse(named)?),
            Self::Authenticated(user) => same_user(user, Some(&named)),
        }
    }

    /// The caller's own user, for `/applications/me`.
    pub fn me(self) -> Result<UserId, ApiError> {
        match self {
            Self::Authenticated(user) => Ok(user),
            Self::Unauthenticated => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "identity_not_configured",
                "this campaign does not authenticate callers: look up by user id",
            )),
        }
    }
}

fn same_user(user: UserId, claimed: Option<&str>) -> Result<UserId, ApiError> {
    match claimed {
        Some(claimed) if claimed != user.as_str() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "user_mismatch",
            "the request names a user other than the one authenticated",
        )),
        _ => Ok(user),
    }
}
