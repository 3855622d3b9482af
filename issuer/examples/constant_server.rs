//! The HTTP ceiling of the machine for `scripts/bench`: an axum server that answers every
//! POST with a constant JSON body the size of a sold-out answer, on the same runtime setup
//! as the issuer. Usage: `constant_server 127.0.0.1:18090`.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::post;

const BODY: &str = r#"{"campaign":"bench","message":"every coupon of this campaign is taken","reason":"sold_out"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_string());
    let app = Router::new().route(
        "/v1/campaigns/{campaign}/applications",
        post(|| async {
            (
                StatusCode::GONE,
                [(header::CONTENT_TYPE, "application/json")],
                BODY,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await
}
