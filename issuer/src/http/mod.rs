//! The HTTP surface: the versioned campaign API and the operational endpoints.

mod apply;
mod client;
mod error;
mod lookup;
mod ops;
mod summary;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

pub use error::ApiError;

/// What the API handlers share.
pub struct Api {
    pub issuer: Arc<Issuer>,
    sold_out: apply::SoldOutBodies,
    trusted_proxies: TrustedProxies,
}
pub use ops::OpsState;

use crate::client_addr::TrustedProxies;
use crate::issuer::Issuer;

/// Largest apply body accepted: `{"userId": ...}` with a 128-character id fits many times.
pub const MAX_BODY_BYTES: usize = 4096;

/// The API routes (when this process serves applies) and the operational routes.
/// Applies are rate limited by client behind `trusted_proxies`: serve the router with
/// connection info (`into_make_service_with_connect_info::<SocketAddr>`).
pub fn router(
    issuer: Option<Arc<Issuer>>,
    trusted_proxies: TrustedProxies,
    ops: OpsState,
) -> Router {
    let mut router = ops::routes(ops);
    if let Some(issuer) = issuer {
        let api = Router::new()
            .route("/v1/campaigns", get(summary::list))
            .route("/v1/campaigns/{campaign}", get(summary::one))
            .route("/v1/campaigns/{campaign}/applications", post(apply::apply))
            .route(
                "/v1/campaigns/{campaign}/applications/{user_id}",
                get(lookup::lookup),
            )
            .with_state(Arc::new(Api {
                sold_out: apply::SoldOutBodies::new(&issuer),
                issuer,
                trusted_proxies,
            }));
        router = router.merge(api);
    }
    router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A span per request, at debug level: free unless enabled. Failed applies are
        // logged in their apply span, so a 503 storm is not logged twice.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
}
