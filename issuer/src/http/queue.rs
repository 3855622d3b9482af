//! The waiting room over HTTP: `POST /v1/campaigns/{campaign}/queue` joins it (the
//! caller's ticket, the same on every join), `GET /v1/campaigns/{campaign}/queue/{ticket}`
//! reads the ticket's state, place and wait, and, once admitted, its pass.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use firstcome_contract::Window;
use serde_json::{Value, json};

use super::apply_body::ApplyRequest;
use super::caller::Caller;
use super::client::WithinClientRate;
use super::{Api, ApiError};
use crate::campaign::Campaign;
use crate::waiting_room::Room;
use crate::waiting_room::order::is_ticket;
use crate::waiting_room::place::{Held, TicketState, estimated_wait_seconds, state};
use crate::waiting_room::queue::{Joined, Polled, RoomQueue};

/// Joins the caller to the room: rate limited like an apply (the client before its
/// credentials), from the pre-queue's opening until the campaign closes.
pub async fn join(
    State(api): State<Arc<Api>>,
    _within_rate: WithinClientRate,
    Path(name): Path<String>,
    caller: Caller,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let campaign = api.issuer.campaign(&name)?;
    let (room, queue) = room_of(&api, campaign)?;
    let Json(request) = body?;
    let user = caller.applicant(request.user_id)?;
    campaign.limits.check_user(&user)?;
    joinable(campaign, room, Utc::now())?;
    let ticket = room.ticket(user.as_str());
    let (score, opens_ms) = (room.prequeue_score(user.as_str()), room.opens_ms());
    let joined = (queue.join(&campaign.keys, (&ticket, user.as_str()), score, opens_ms)).await?;
    let polled = (queue.poll(&campaign.keys, &ticket).await?).ok_or_else(unknown_ticket)?;
    let status = match joined {
        Joined::New => StatusCode::CREATED,
        Joined::Again => StatusCode::OK,
    };
    Ok((status, Json(view(campaign, room, &ticket, &polled))).into_response())
}

/// A ticket's state; with identity on, only its own user may read it.
pub async fn poll(
    State(api): State<Arc<Api>>,
    Path((name, ticket)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let campaign = api.issuer.campaign(&name)?;
    let (room, queue) = room_of(&api, campaign)?;
    if !is_ticket(&ticket) {
        return Err(unknown_ticket());
    }
    let polled = (queue.poll(&campaign.keys, &ticket).await?).ok_or_else(unknown_ticket)?;
    caller.may_look_up(polled.user.clone())?;
    Ok(Json(view(campaign, room, &ticket, &polled)))
}

/// The campaign's room as this issuer serves it; 404 `no_waiting_room` without one.
pub(super) fn room_of<'a>(
    api: &'a Api,
    campaign: &'a Campaign,
) -> Result<(&'a Room, &'a RoomQueue), ApiError> {
    match (&campaign.room, api.issuer.rooms()) {
        (Some(room), Some(queue)) => Ok((room, queue)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_waiting_room",
            "this campaign has no waiting room: apply directly",
        )
        .with("campaign", campaign.name())),
    }
}

/// Users join from the pre-queue's opening until the campaign closes.
fn joinable(campaign: &Campaign, room: &Room, now: DateTime<Utc>) -> Result<(), ApiError> {
    if let Some(from) = room.joinable_from().filter(|from| now < *from) {
        let wait = (from - now).num_seconds().max(1) as u64;
        return Err(ApiError::new(
            StatusCode::TOO_EARLY,
            "queue_not_open",
            "the waiting room does not take users yet",
        )
        .with("campaign", campaign.name())
        .with("joinableAt", from.to_rfc3339())
        .retry_after(wait));
    }
    match campaign.config.window(now) {
        Window::Closed => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "campaign_closed",
            "the campaign is closed",
        )
        .with("campaign", campaign.name())),
        Window::Scheduled | Window::Open => Ok(()),
    }
}

fn unknown_ticket() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_ticket",
        "this waiting room handed out no such ticket; join again",
    )
}

/// What the holder of a ticket is told. Before the opening a waiting ticket shows no
/// place: the pre-queue's order is only final once everyone has joined it.
fn view(campaign: &Campaign, room: &Room, ticket: &str, polled: &Polled) -> Value {
    let closed = campaign.config.window(Utc::now()) == Window::Closed;
    let state = state(polled.held, polled.sold_out, closed);
    let mut body = json!({
        "campaign": campaign.name(),
        "ticket": ticket,
        "userId": polled.user,
        "state": state,
        "pollWithinSeconds": room.config.ticket_timeout_seconds,
    });
    match (state, polled.held) {
        (TicketState::Waiting, Held::Waiting { rank }) => {
            let until_open_ms = room.opens_ms().saturating_sub(polled.now_ms);
            let rate = room.config.admission_rate;
            if until_open_ms == 0 {
                body["position"] = json!(rank + 1);
                body["ahead"] = json!(rank);
            }
            let ahead = if until_open_ms == 0 { rank } else { 0 };
            body["estimatedWaitSeconds"] =
                json!(estimated_wait_seconds(ahead, rate, until_open_ms));
        }
        (TicketState::Admitted, Held::Admitted { expires_ms }) => {
            body["pass"] = json!(room.pass(&polled.user, expires_ms));
            body["passExpiresAt"] = json!(at_ms(expires_ms));
            body["admission"] = json!(polled.admission);
        }
        _ => {}
    }
    body
}

fn at_ms(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    Some(Utc.timestamp_millis_opt(ms).single()?.to_rfc3339())
}
