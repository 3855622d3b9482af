//! Every non-success answer of the API: a status code and a JSON body with a
//! machine-readable `reason` and a human-readable `message`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::IssuerError;
use crate::identity::header::GatewayError;
use crate::identity::jwks::REFETCH_ON_MISS;
use crate::identity::{Identity, IdentityError, RepeatedHeader};
use crate::limits::{Limited, Scope};
use crate::user_id::InvalidUserId;
use crate::waiting_room::PassRefused;
use crate::waiting_room::pass::PassError;
use crate::waiting_room::queue::QueueError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// `WWW-Authenticate` of a 401 to a bearer-token campaign.
    challenge: Option<&'static str>,
    extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            retry_after: None,
            challenge: None,
            extra: Map::new(),
        }
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /openapi.yaml",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method; see /openapi.yaml",
        )
    }

    /// A request `identity` does not authenticate. The message names the problem class,
    /// never the token or a secret.
    pub fn from_identity(error: IdentityError, identity: &Identity) -> Self {
        let challenge = match (&error, identity) {
            (_, Identity::None | Identity::Header(_)) | (IdentityError::KeysUnavailable(_), _) => {
                None
            }
            (IdentityError::InvalidToken(_), Identity::Jwt(_)) => {
                Some(r#"Bearer error="invalid_token""#)
            }
            (_, Identity::Jwt(_)) => Some("Bearer"),
        };
        let (reason, message) = match &error {
            IdentityError::KeysUnavailable(_) => return Self::identity_unavailable(),
            IdentityError::Repeated(repeated)
            | IdentityError::Gateway(GatewayError::Repeated(repeated)) => {
                return Self::repeated_header(repeated);
            }
            IdentityError::MissingToken => ("missing_credentials", error.to_string()),
            IdentityError::Gateway(GatewayError::Missing(_)) => {
                ("missing_credentials", source_message(&error))
            }
            IdentityError::InvalidToken(_) => ("invalid_token", source_message(&error)),
            IdentityError::Gateway(_) => ("invalid_credentials", source_message(&error)),
        };
        Self {
            challenge,
            ..Self::new(StatusCode::UNAUTHORIZED, reason, message)
        }
    }

    /// A credential header sent more than once: the request is malformed, whatever the
    /// values say.
    fn repeated_header(repeated: &RepeatedHeader) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "duplicate_header",
            repeated.to_string(),
        )
    }

    /// A token naming a key not fetched while the provider's key set cannot be fetched:
    /// not the caller's fault, and not to be told from a forged token.
    fn identity_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_unavailable",
            "the identity provider's keys cannot be fetched to check this token; retry later",
        )
        .retry_after(REFETCH_ON_MISS.as_secs())
    }

    /// The server was started without connection info: a wiring bug, not the client's.
    pub fn no_peer_address() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server does not know the address of this connection",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body must be at most {} bytes", super::MAX_BODY_BYTES),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with content-type: application/json",
            ),
            _ if matches!(rejection, JsonRejection::JsonSyntaxError(_)) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
            }
            _ => Self::new(StatusCode::BAD_REQUEST, "invalid_request", message),
        }
    }
}

impl From<InvalidUserId> for ApiError {
    fn from(error: InvalidUserId) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            error.to_string(),
        )
    }
}

impl From<Limited> for ApiError {
    fn from(limited: Limited) -> Self {
        let (scope, whom) = match limited.scope {
            Scope::client => ("client", "your address"),
            Scope::user => ("user", "this user"),
        };
        let seconds = limited.retry_after.as_millis().div_ceil(1000).max(1);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many applies from {whom}; retry after the Retry-After seconds"),
        )
        .with("scope", scope)
        .retry_after(u64::try_from(seconds).unwrap_or(u64::MAX))
    }
}

impl From<PassRefused> for ApiError {
    fn from(refused: PassRefused) -> Self {
        let reason = match refused {
            PassRefused::Missing => "pass_missing",
            PassRefused::Pass(PassError::Invalid) => "pass_invalid",
            PassRefused::Pass(PassError::OtherUser) => "pass_other_user",
            PassRefused::Pass(PassError::Expired) => "pass_expired",
        };
        Self::new(
            StatusCode::FORBIDDEN,
            reason,
            format!(
                "this campaign has a waiting room: apply with the pass it gave you in the {} header ({refused})",
                super::apply::PASS_HEADER
            ),
        )
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        tracing::warn!(%error, "waiting room unavailable");
        IssuerError::Unavailable(error.into()).into()
    }
}

impl From<IssuerError> for ApiError {
    fn from(error: IssuerError) -> Self {
        match &error {
            IssuerError::UnknownCampaign(name) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_campaign", error.to_string())
                    .with("campaign", name.as_str())
            }
            IssuerError::Unavailable(_)
            | IssuerError::Unprovisioned(_)
            | IssuerError::ClaimsNotRead(_)
            | IssuerError::Fenced(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                "the issuer cannot reach its backends right now; retry shortly",
            )
            .retry_after(RETRY_AFTER_SECONDS),
            IssuerError::OutcomeUnknown(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "your apply reached Redis but its answer was lost, so you may have been admitted: apply again (or look up your application) to learn the outcome",
            )
            .retry_after(RETRY_AFTER_SECONDS),
            IssuerError::Unconfirmed { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "admission_unconfirmed",
                "your apply may have been admitted but is not confirmed yet; look up your application before applying again",
            )
            .retry_after(RETRY_AFTER_SECONDS),
        }
    }
}

impl ApiError {
    fn body(self) -> Value {
        let mut body = self.extra;
        body.insert("reason".into(), json!(self.reason));
        body.insert("message".into(), json!(self.message));
        Value::Object(body)
    }

    /// The JSON body alone, e.g. to render an answer once and serve it many times.
    pub fn with_body_only(self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).expect("a JSON value always serializes")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_after, challenge) = (self.status, self.retry_after, self.challenge);
        let mut response = (status, Json(self.body())).into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An identity error's own message followed by its direct cause's: e.g. "the token is not
/// valid: the token names no key this issuer knows".
fn source_message(error: &IdentityError) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}
