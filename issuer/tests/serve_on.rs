//! `serve_on` runs a wiring on a listener the caller bound, until the caller's shutdown
//! future resolves: an issuer started in process, over real TCP.

use std::time::Duration;

use clap::Parser;
use firstcome_issuer::cli::Cli;
use firstcome_issuer::wiring::{build, serve_on};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn serves_on_its_listener_until_shutdown_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = Cli::try_parse_from(["firstcome-issuer", "--data-dir", data]).unwrap();
    let wiring = build(&args.serve).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_on(listener, wiring, stop.clone().cancelled_owned()));

    let client = reqwest::Client::new();
    let applied = client
        .post(format!("{base}/v1/campaigns/demo/applications"))
        .json(&json!({ "userId": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), reqwest::StatusCode::CREATED);

    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing listens once stopped"
    );
}
