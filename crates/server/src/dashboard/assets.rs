//! The page, compiled into the binary: plain HTML, JavaScript and CSS in `assets/`, no build
//! step and nothing fetched from elsewhere.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page.
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// Its script: follows `/api/events`, draws the members, events, timeline and sparklines,
/// sends the controls, plays scenarios.
pub const APP_JS: &str = include_str!("assets/app.js");
/// Its style.
pub const STYLE_CSS: &str = include_str!("assets/style.css");

/// `body` with its content type, never cached (a rebuilt binary serves a new page).
pub fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}
