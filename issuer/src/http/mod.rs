//! The HTTP surface, as two routers served on two listeners: the public campaign API
//! (with its OpenAPI document) and the operational endpoints (probes, metrics).

mod apply;
pub mod apply_body;
pub mod bare_refusals;
mod caller;
mod client;
mod error;
mod lookup;
mod ops;
mod queue;
mod room_page;
mod served;
mod summary;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::{get, post};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

pub use apply::PASS_HEADER;
pub use error::ApiError;

/// What the API handlers share.
pub struct Api {
    pub issuer: Arc<Issuer>,
    sold_out: apply::SoldOutBodies,
    room_pages: room_page::RoomPages,
    trusted_proxies: TrustedProxies,
}
pub use ops::OpsState;

use crate::client_addr::TrustedProxies;
use crate::issuer::Issuer;

/// Largest apply body accepted: `{"userId": ...}` with a 128-character id fits many times.
pub const MAX_BODY_BYTES: usize = 4096;

/// The OpenAPI document of this API, served as written: public documentation, so on the
/// API's listener.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The public API: the campaign routes when this process serves applies, and its OpenAPI
/// document. Applies are rate limited by client behind `trusted_proxies`: serve the
/// router with connection info ([`bare_refusals::WithPeer`] on a
/// [`bare_refusals::JsonRefusingListener`], whose connections also answer the HTTP
/// parser's refusals in JSON).
pub fn api_router(issuer: Option<Arc<Issuer>>, trusted_proxies: TrustedProxies) -> Router {
    let mut router = Router::new().route(
        "/openapi.yaml",
        get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML) }),
    );
    if let Some(issuer) = issuer {
        let api = Router::new()
            .route("/v1/campaigns", get(summary::list))
            .route("/v1/campaigns/{campaign}", get(summary::one))
            .route("/v1/campaigns/{campaign}/applications", post(apply::apply))
            .route("/v1/campaigns/{campaign}/queue", post(queue::join))
            .route("/v1/campaigns/{campaign}/queue/{ticket}", get(queue::poll))
            .route("/v1/campaigns/{campaign}/room", get(room_page::page))
            .route(
                "/v1/campaigns/{campaign}/applications/me",
                get(lookup::mine),
            )
            .route(
                "/v1/campaigns/{campaign}/applications/{user_id}",
                get(lookup::lookup),
            )
            .with_state(Arc::new(Api {
                sold_out: apply::SoldOutBodies::new(&issuer),
                room_pages: room_page::RoomPages::new(&issuer),
                issuer,
                trusted_proxies,
            }));
        router = router.merge(api);
    }
    answered(router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}

/// Liveness, readiness and metrics, for the cluster and Prometheus only.
pub fn ops_router(ops: OpsState) -> Router {
    answered(ops::routes(ops))
}

/// JSON answers for unknown routes and methods, and a span per request at debug level
/// (free unless enabled). Failed applies are logged in their apply span, so a 503 storm
/// is not logged twice.
fn answered(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
}
