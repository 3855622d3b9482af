//! The waiting room's page in a real headless Chromium (`scripts/chromium`), against a
//! distributed issuer on the real Redis, Kafka and PostgreSQL: customers join, wait, are
//! admitted, apply with their pass and see their coupon (or why there is none); with
//! identity jwt the page sends the token the shop put in its fragment; the campaign's
//! text is shown as text, never run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use fantoccini::Locator;
use firstcome_e2e::browser::Browser;
use firstcome_e2e::issuer::{coupons, postgres, start_distributed, temp_dir, wait_for_coupons};
use firstcome_e2e::process::Process;
use firstcome_e2e::tokens::{AUDIENCE, ISSUER, SIGNER, in_five_minutes, keys_dir, token};
use firstcome_e2e::{Services, unique_name, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// States the page ends in: no more polling after one of them.
const FINAL: [&str; 6] = [
    "coupon",
    "refused",
    "unconfirmed",
    "expired",
    "sold_out",
    "closed",
];

/// A campaigns file with `campaigns` and a fresh room secret, in `dir`.
fn files(dir: &Path, campaigns: Vec<Value>) -> [PathBuf; 2] {
    let path = dir.join("campaigns.json");
    std::fs::write(&path, json!({ "campaigns": campaigns }).to_string()).unwrap();
    let secret = dir.join("room-secret");
    std::fs::write(&secret, unique_name("secret").repeat(3)).unwrap();
    [path, secret]
}

/// A campaign of `limit` coupons with a waiting room admitting one user a second, whose
/// page carries `page`. The per-user limit is out of the way: a page polls its ticket.
fn campaign(name: &str, limit: u32, page: Value) -> Value {
    let unlimited = json!({ "perSecond": 1_000_000, "burst": 1_000_000 });
    json!({
        "name": name,
        "limit": limit,
        "topic": format!("firstcome.{name}.winners"),
        "waitingRoom": { "admissionRate": 1, "page": page },
        "rateLimits": { "perUser": unlimited },
    })
}

async fn start_issuer(
    services: &Services,
    [campaigns, secret]: &[PathBuf; 2],
    extra: &[&str],
) -> Process {
    let (campaigns, secret) = (
        campaigns.display().to_string(),
        secret.display().to_string(),
    );
    let mut flags = vec![
        "--campaigns-file",
        &campaigns,
        "--waiting-room-secret-file",
        &secret,
    ];
    flags.extend(extra);
    start_distributed(services, &flags).await
}

/// The page's progress in the current tab: the states it went through, and its outcome.
async fn progress(browser: &Browser) -> Value {
    browser
        .eval(
            "const room = document.getElementById('room');
             return { states: room.dataset.states, state: room.dataset.state || '',
                      sequence: room.dataset.sequence || null,
                      reason: document.getElementById('outcome-reason').textContent,
                      title: document.getElementById('outcome-title').textContent };",
        )
        .await
}

/// Waits (at most 90 s) until the page in every tab of `tabs` reached a final state,
/// then returns each tab's progress.
async fn settle(browser: &Browser, tabs: &[fantoccini::wd::WindowHandle]) -> Vec<Value> {
    wait_for(
        "every page at a final state",
        Duration::from_secs(90),
        || async {
            let mut all = Vec::new();
            for tab in tabs {
                browser.client.switch_to_window(tab.clone()).await.unwrap();
                let progress = progress(browser).await;
                if !FINAL.contains(&progress["state"].as_str().unwrap_or_default()) {
                    return None;
                }
                all.push(progress);
            }
            Some(all)
        },
    )
    .await
}

/// Opens `url` in a new tab and returns the tab.
async fn open_tab(browser: &Browser, url: &str) -> fantoccini::wd::WindowHandle {
    let tab = browser.client.new_window(true).await.unwrap().handle;
    browser.client.switch_to_window(tab.clone()).await.unwrap();
    browser.client.goto(url).await.unwrap();
    tab
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_wait_are_admitted_one_a_second_and_see_their_coupon_until_sold_out() {
    let services = Services::from_env();
    let name = unique_name("room-page");
    // Started before the clock below runs: a first start of Chromium (its profile, its
    // font cache) can take longer than the whole lead.
    let browser = Browser::start().await;
    // Opening in a few seconds: every page shows `waiting` first (the pre-queue), then the
    // room lets in one user a second and two coupons go to the first two let in.
    let opens_at = Utc::now() + chrono::Duration::seconds(8);
    let mut config = campaign(
        &name,
        2,
        json!({ "title": "Winter sale", "message": "Hold on." }),
    );
    config["opensAt"] = json!(opens_at);
    let files = files(&temp_dir("room-page"), vec![config]);
    let issuer = start_issuer(&services, &files, &[]).await;

    let users = ["ada", "grace", "edsger"];
    let mut tabs = Vec::new();
    for user in users {
        let url = format!("{}/v1/campaigns/{name}/room?user={user}", issuer.base);
        tabs.push(open_tab(&browser, &url).await);
    }
    let ends = settle(&browser, &tabs).await;

    let pool = postgres(&services).await;
    let stored = wait_for_coupons(&pool, &name, 2).await;
    let mut winners = Vec::new();
    for (user, end) in users.iter().zip(&ends) {
        let states = end["states"].as_str().unwrap();
        if end["state"] == "coupon" {
            assert_eq!(states, "waiting admitted coupon", "{user}: {end}");
            let sequence: i64 = end["sequence"].as_str().unwrap().parse().unwrap();
            winners.push((user.to_string(), sequence));
        } else {
            // the one let in last finds the coupons gone, at its ticket or at its apply
            assert!(
                states == "waiting sold_out" || states == "waiting admitted refused",
                "{user}: {end}"
            );
            assert_eq!(end["reason"], "sold_out", "{user}: {end}");
        }
    }
    winners.sort_by_key(|(_, sequence)| *sequence);
    assert_eq!(winners, stored, "the coupons shown are the coupons stored");
    assert_eq!(winners.len(), 2);
    browser.stop().await;
    assert_eq!(coupons(&pool, &name).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_identity_jwt_the_page_applies_as_the_user_of_the_token_in_its_fragment() {
    let services = Services::from_env();
    let name = unique_name("room-page-jwt");
    let keys = keys_dir().display().to_string();
    let mut config = campaign(&name, 5, json!({}));
    config["identity"] = json!({ "mode": "jwt", "jwt": {
        "issuer": ISSUER, "audience": AUDIENCE, "keysDir": keys,
    }});
    let files = files(&temp_dir("room-page-jwt"), vec![config]);
    let issuer = start_issuer(&services, &files, &[]).await;
    let browser = Browser::start().await;

    let signed = token(SIGNER, "token-user", in_five_minutes());
    let page = format!("{}/v1/campaigns/{name}/room", issuer.base);
    // `?user=` is ignored with identity on: the token says who applies
    let tab = open_tab(
        &browser,
        &format!("{page}?user=someone-else#token={signed}"),
    )
    .await;
    let end = &settle(&browser, &[tab]).await[0];
    assert_eq!(end["state"], "coupon", "{end}");
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(
        url.fragment(),
        None,
        "the token is dropped from the address bar"
    );

    let pool = postgres(&services).await;
    let stored = wait_for_coupons(&pool, &name, 1).await;
    assert_eq!(stored, vec![("token-user".to_string(), 1)]);

    // without a token the page asks the customer to sign in, and joins nobody
    let tab = open_tab(&browser, &page).await;
    let end = &settle(&browser, &[tab]).await[0];
    assert_eq!(
        (end["state"].as_str(), end["reason"].as_str()),
        (Some("refused"), Some("missing_token"))
    );
    browser.stop().await;
    assert_eq!(coupons(&pool, &name).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaigns_text_is_shown_as_text_under_a_strict_policy() {
    let services = Services::from_env();
    let (name, plain) = (unique_name("room-page-text"), unique_name("no-room"));
    let title = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">";
    let page = json!({ "title": title, "message": "<b>bold?</b>",
                       "accentColor": "#aa0000", "backgroundColor": "#fafafa" });
    let no_room =
        json!({ "name": plain, "limit": 1, "topic": format!("firstcome.{plain}.winners") });
    let files = files(
        &temp_dir("room-page-text"),
        vec![campaign(&name, 1, page), no_room],
    );
    let issuer = start_issuer(&services, &files, &[]).await;

    let url = format!("{}/v1/campaigns/{name}/room", issuer.base);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe"), "{policy}");
    let (status, body) = issuer.get(&format!("/v1/campaigns/{plain}/room")).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_waiting_room"))
    );

    let browser = Browser::start().await;
    let tab = open_tab(&browser, &url).await;
    // the page's own script runs under the policy: without `?user=` it asks for the user
    // id, then joins and gets the coupon...
    let field = (browser
        .client
        .find(Locator::Css("label[for=user] + input#user"))
        .await)
        .expect("a labelled user id field");
    field.send_keys("reader").await.unwrap();
    (browser
        .client
        .find(Locator::Css("#join button[type=submit]"))
        .await
        .unwrap())
    .click()
    .await
    .unwrap();
    let end = &settle(&browser, &[tab]).await[0];
    assert_eq!(end["state"], "coupon", "{end}");
    let pool = postgres(&services).await;
    assert_eq!(
        wait_for_coupons(&pool, &name, 1).await,
        vec![("reader".to_string(), 1)]
    );
    let shown = browser
        .eval(
            "return { h1: document.querySelector('h1').textContent, title: document.title,
                      message: document.getElementById('message').textContent,
                      pwned: window.pwned === undefined ? null : window.pwned,
                      scripts: document.scripts.length,
                      accent: getComputedStyle(document.querySelector('main')).borderTopColor,
                      background: getComputedStyle(document.body).backgroundColor };",
        )
        .await;
    // ...and the title is text: shown as written, nothing in it ran
    assert_eq!(shown["h1"], title, "{shown}");
    assert_eq!(shown["title"], title);
    assert_eq!(shown["message"], "<b>bold?</b>");
    assert_eq!(shown["pwned"], Value::Null);
    assert_eq!(shown["scripts"], 1);
    assert_eq!(shown["accent"], "rgb(170, 0, 0)");
    assert_eq!(shown["background"], "rgb(250, 250, 250)");
    browser.stop().await;
}
