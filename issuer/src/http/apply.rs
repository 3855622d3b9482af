//! `POST /v1/campaigns/{campaign}/applications`: a user applies for a coupon.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::apply_body::ApplyRequest;
use super::caller::Caller;
use super::client::WithinClientRate;
use super::served::ServedCampaign;
use super::{Api, ApiError};
use crate::admission::Outcome;
use crate::issuer::Issuer;

/// The sold-out answer of each campaign, rendered once: the tail of a spike is all
/// sold-out answers, so they cost a copy of a reference, not a serialization.
pub struct SoldOutBodies(HashMap<String, Bytes>);

impl SoldOutBodies {
    pub fn new(issuer: &Issuer) -> Self {
        Self(
            issuer
                .campaigns()
                .map(|c| {
                    let body = sold_out(c.config.name.clone()).with_body_only();
                    (c.config.name.clone(), Bytes::from(body))
                })
                .collect(),
        )
    }

    fn response(&self, campaign: &str) -> Response {
        match self.0.get(campaign) {
            Some(body) => (
                StatusCode::GONE,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body.clone(),
            )
                .into_response(),
            None => sold_out(campaign.to_string()).into_response(),
        }
    }
}

fn sold_out(campaign: String) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "sold_out",
        "every coupon of this campaign is taken",
    )
    .with("campaign", campaign)
}

/// The header an apply to a campaign with a waiting room carries its pass in.
pub const PASS_HEADER: &str = "firstcome-pass";

/// The apply's pass header, if any: one value taken, not the whole header map copied.
pub struct PassHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for PassHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(PASS_HEADER).cloned()))
    }
}

/// The body of an admitted apply, serialized as it is (no JSON tree built per winner);
/// fields in alphabetical order, as every other body's (a `serde_json` object's) are.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Admitted<'a> {
    admitted_at: DateTime<Utc>,
    campaign: &'a str,
    ordinal: u32,
    reason: &'static str,
    sequence: u64,
    user_id: &'a str,
}

/// Rate limits first (the client before its credentials or the body are even looked at,
/// then the user), so what they refuse costs no authentication or admission work; then
/// the waiting room's pass, if the campaign has one.
pub async fn apply(
    State(api): State<std::sync::Arc<Api>>,
    _within_rate: WithinClientRate,
    ServedCampaign(served): ServedCampaign,
    caller: Caller,
    PassHeader(pass): PassHeader,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let campaign = served.name();
    let Json(request) = body?;
    let user = caller.applicant(request.user_id)?;
    served.limits.check_user(&user)?;
    if let Some(room) = &served.room {
        let pass = pass.as_ref().map(HeaderValue::as_bytes);
        room.check_pass(pass, user.as_str(), Utc::now())?;
    }
    let outcome = api.issuer.apply(&served, &user).await?;
    Ok(match outcome {
        Outcome::SoldOut => api.sold_out.response(campaign),
        Outcome::Admitted(admission) => (
            StatusCode::CREATED,
            Json(Admitted {
                admitted_at: admission.admitted_at,
                campaign,
                ordinal: admission.ordinal,
                reason: "admitted",
                sequence: admission.sequence,
                user_id: user.as_str(),
            }),
        )
            .into_response(),
        Outcome::AlreadyApplied(sequences) => ApiError::new(
            StatusCode::CONFLICT,
            "already_applied",
            "you already hold as many coupons of this campaign as one user may",
        )
        .with("campaign", campaign)
        .with("sequences", sequences)
        .into_response(),
        Outcome::NotOpen { opens_at } => {
            let mut error = ApiError::new(
                StatusCode::TOO_EARLY,
                "campaign_not_open",
                "the campaign is not open yet",
            )
            .with("campaign", campaign);
            if let Some(opens_at) = opens_at {
                let wait = (opens_at - Utc::now()).num_seconds().max(1) as u64;
                error = error
                    .with("opensAt", opens_at.to_rfc3339())
                    .retry_after(wait);
            }
            error.into_response()
        }
        Outcome::Closed { closes_at } => ApiError::new(
            StatusCode::FORBIDDEN,
            "campaign_closed",
            "the campaign is closed",
        )
        .with("campaign", campaign)
        .with("closedAt", closes_at.map(|t| t.to_rfc3339()))
        .into_response(),
    })
}
