//! The dashboard's static files, compiled into the binary: htmx and its SSE extension
//! (vendored, 0BSD; their versions are in the names, so they are cached for good) and the
//! style sheet. Nothing is read from disk.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &[u8])] = &[
    ("htmx-2.0.11.min.js", "text/javascript", include_bytes!("../../assets/htmx-2.0.11.min.js")),
    (
        "htmx-ext-sse-2.2.4.min.js",
        "text/javascript",
        include_bytes!("../../assets/htmx-ext-sse-2.2.4.min.js"),
    ),
    ("ui.css", "text/css", include_bytes!("../../assets/ui.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../assets/favicon.svg")),
];

/// `GET /ui/assets/{file}`: public (the login page needs them), cached.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, mime, bytes)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Versioned names never change; the style sheet may change with a release.
    let cache =
        if file.starts_with("htmx") { "public, max-age=31536000, immutable" } else { "public, max-age=300" };
    let mut r = (*bytes).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}
