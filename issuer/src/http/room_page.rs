//! The waiting room's page for customers, `GET /v1/campaigns/{campaign}/room`: one HTML
//! document with its style and script inline (no external asset), the campaign's text
//! escaped into it, and a Content-Security-Policy allowing exactly that style and script
//! (by hash) and requests to this origin.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use firstcome_contract::RoomPage;
use sha2::{Digest, Sha256};

use super::queue::room_of;
use super::{Api, ApiError};
use crate::campaign::Campaign;
use crate::issuer::Issuer;

const TEMPLATE: &str = include_str!("room_page/page.html");
const STYLE: &str = include_str!("room_page/page.css");
const SCRIPT: &str = include_str!("room_page/page.js");

/// The script is the same on every page: hashed once.
static SCRIPT_HASH: LazyLock<String> = LazyLock::new(|| csp_hash(SCRIPT));

/// The page of a campaign's waiting room; 404 `no_waiting_room` without one.
pub async fn page(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let campaign = api.issuer.campaign(&name)?;
    room_of(&api, campaign)?;
    Ok(api.room_pages.response(campaign))
}

/// Each waiting room's page, rendered once: its inputs do not change while the process
/// runs, and the opening second may bring every waiting customer to it at once.
pub struct RoomPages(HashMap<String, (Bytes, HeaderValue)>);

impl RoomPages {
    pub fn new(issuer: &Issuer) -> Self {
        let pages = issuer.campaigns().filter_map(|campaign| {
            let page = Rendered::of(campaign)?;
            let policy = HeaderValue::from_str(&page.policy).expect("the policy is ASCII");
            Some((
                campaign.name().to_string(),
                (Bytes::from(page.html), policy),
            ))
        });
        Self(pages.collect())
    }

    fn response(&self, campaign: &Campaign) -> Response {
        match self.0.get(campaign.name()) {
            Some((html, policy)) => page_response(html.clone(), policy.clone()),
            None => Rendered::of(campaign).map_or_else(
                || ApiError::not_found().into_response(),
                IntoResponse::into_response,
            ),
        }
    }
}

/// A rendered page and the policy that lets exactly its own style and script run.
struct Rendered {
    html: String,
    policy: String,
}

impl Rendered {
    /// The page of `campaign`'s waiting room, if it has one.
    fn of(campaign: &Campaign) -> Option<Self> {
        let room = campaign.room.as_ref()?;
        let identity = campaign.config.identity.mode();
        Some(render(campaign.name(), identity, &room.config.page))
    }
}

fn render(campaign: &str, identity: &str, page: &RoomPage) -> Rendered {
    // The colours are `#rrggbb` (validated with the campaign), so they cannot leave the
    // declaration; everything else is escaped.
    let style = format!(
        ":root {{ --accent: {}; --background: {}; }}\n{STYLE}",
        page.accent_color, page.background_color
    );
    let policy = format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
         img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        *SCRIPT_HASH,
        csp_hash(&style)
    );
    let html = fill(TEMPLATE, |name| match name {
        "title" => escape(&page.title),
        "message" => escape(&page.message),
        "campaign" => escape(campaign),
        "identity" => identity.to_string(),
        "style" => style.clone(),
        "script" => SCRIPT.to_string(),
        other => unreachable!("page.html names no placeholder {other}"),
    });
    Rendered { html, policy }
}

fn escape(text: &str) -> String {
    html_escape::encode_safe(text).into_owned()
}

/// `template` with each `{{name}}` replaced by `value(name)`, in one pass: a value is
/// never read as a template (a title of `{{script}}` stays text).
fn fill(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + SCRIPT.len() + STYLE.len());
    let mut rest = template;
    while let Some((before, after)) = rest.split_once("{{") {
        let (name, after) = after
            .split_once("}}")
            .expect("page.html closes each placeholder");
        out.push_str(before);
        out.push_str(&value(name));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A CSP source allowing an inline element whose content is exactly `content`.
fn csp_hash(content: &str) -> String {
    format!("sha256-{}", STANDARD.encode(Sha256::digest(content)))
}

impl IntoResponse for Rendered {
    fn into_response(self) -> Response {
        let policy = HeaderValue::from_str(&self.policy).expect("the policy is ASCII");
        page_response(Bytes::from(self.html), policy)
    }
}

fn page_response(html: Bytes, policy: HeaderValue) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CONTENT_SECURITY_POLICY, policy),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (headers, html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(title: &str, message: &str) -> RoomPage {
        RoomPage {
            title: title.into(),
            message: message.into(),
            ..RoomPage::default()
        }
    }

    #[test]
    fn the_campaigns_text_is_escaped_and_never_read_as_a_placeholder() {
        let rendered = render(
            "shop.sale",
            "none",
            &page(
                "<script>alert(1)</script>",
                "{{script}} \"quoted\" & 'single'",
            ),
        );
        let html = rendered.html;
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(html.contains("<title>&lt;script&gt;alert(1)&lt;&#x2F;script&gt;</title>"));
        assert!(html.contains("{{script}} &quot;quoted&quot; &amp; &#x27;single&#x27;"));
        assert_eq!(
            html.matches("<script>").count(),
            1,
            "only the page's own script"
        );
        assert_eq!(
            html.matches("{{").count(),
            1,
            "every placeholder filled, once"
        );
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let rendered = render("shop.sale", "jwt", &RoomPage::default());
        let inner = |open: &str, close: &str| {
            let start = rendered.html.find(open).unwrap() + open.len();
            let end = rendered.html[start..].find(close).unwrap() + start;
            rendered.html[start..end].to_string()
        };
        let (style, script) = (inner("<style>", "</style>"), inner("<script>", "</script>"));
        assert!(style.contains("--accent: #1d4ed8; --background: #ffffff;"));
        let policy = rendered.policy;
        assert!(policy.contains(&format!("script-src '{}';", csp_hash(&script))));
        assert!(policy.contains(&format!("style-src '{}';", csp_hash(&style))));
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(rendered.html.contains("data-identity=\"jwt\""));
    }
}
