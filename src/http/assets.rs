//! The dashboard's files (`assets/dashboard/`), embedded in the binary and served by the
//! admin listener: `GET /` is the page, `GET /assets/<file>` the script, the stylesheet
//! and the icon. Nothing is read from disk or fetched from elsewhere at run time, so the
//! dashboard works offline and is always the one built with this binary.
//!
//! These routes carry no data and sit outside `admin::guard` (a browser loads the page
//! before it knows the admin token; the page then asks for it): everything the page shows
//! comes from `/api/`, which stays behind the guard.
//!
//! Caching: each file's ETag is a hash of its content. The page names its assets with
//! that hash (`/assets/app.js?v=…`), so an asset fetched under its hash can be cached for
//! good (`immutable`), and a new binary's page names new URLs. The page itself, and an
//! asset asked for without its hash, are revalidated every time (`no-cache`; a 304 when
//! the ETag still matches).

use std::sync::LazyLock;

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/dashboard/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/dashboard/favicon.svg"),
    },
];

const INDEX: &str = include_str!("../../assets/dashboard/index.html");

/// A file with its content hash, ready to serve.
struct Served {
    content_type: &'static str,
    body: axum::body::Bytes,
    /// The first 16 hex digits of the content's SHA-256.
    hash: String,
    etag: HeaderValue,
}

impl Served {
    fn new(content_type: &'static str, body: axum::body::Bytes) -> Self {
        let hash = hex::encode(&Sha256::digest(&body)[..8]);
        let etag = HeaderValue::from_str(&format!("\"{hash}\"")).expect("hex is a valid header value");
        Self { content_type, body, hash, etag }
    }
}

/// The assets, and the page with each asset's URL carrying its hash.
static SERVED: LazyLock<(Served, Vec<(&'static str, Served)>)> = LazyLock::new(|| {
    let assets: Vec<(&'static str, Served)> =
        FILES.iter().map(|a| (a.name, Served::new(a.content_type, axum::body::Bytes::from_static(a.body)))).collect();
    let mut page = INDEX.to_owned();
    for (name, served) in &assets {
        page = page.replace(&format!("\"/assets/{name}\""), &format!("\"/assets/{name}?v={}\"", served.hash));
    }
    (Served::new("text/html; charset=utf-8", page.into()), assets)
});

const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");
const FOREVER: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

fn serve(served: &Served, cache: HeaderValue, request: &HeaderMap) -> Response {
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim().trim_start_matches("W/") == served.etag));
    let headers = [(header::ETAG, served.etag.clone()), (header::CACHE_CONTROL, cache)];
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let mut response = (headers, served.body.clone()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(served.content_type));
    response
}

/// `GET /`: the dashboard page.
pub async fn index(request: HeaderMap) -> Response {
    serve(&SERVED.0, REVALIDATE, &request)
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>, RawQuery(query): RawQuery, request: HeaderMap) -> Response {
    let Some((_, served)) = SERVED.1.iter().find(|(name, _)| *name == file) else {
        return super::json_error(StatusCode::NOT_FOUND, "no such asset");
    };
    let versioned = query.as_deref().and_then(|q| q.strip_prefix("v=")) == Some(served.hash.as_str());
    serve(served, if versioned { FOREVER } else { REVALIDATE }, &request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_by_its_hash() {
        let (page, assets) = &*SERVED;
        let page = std::str::from_utf8(&page.body).unwrap();
        for name in ["app.js", "app.css", "favicon.svg"] {
            let (_, served) = assets.iter().find(|(n, _)| *n == name).unwrap();
            assert!(page.contains(&format!("/assets/{name}?v={}", served.hash)), "{name} in {page}");
        }
    }

    /// Whether `html` has an attribute such as ` onclick=`.
    fn has_event_handler_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].trim_start().starts_with('=')
        })
    }

    #[test]
    fn event_handler_attributes_are_recognised() {
        assert!(has_event_handler_attribute("<img src=x onerror=alert(1)>"));
        assert!(has_event_handler_attribute("<a onclick = \"x\">"));
        assert!(!has_event_handler_attribute("<p>only one</p>"));
    }

    /// The page's own rule, checked on the files themselves: no inline script, no inline
    /// style, no event handler attributes, and no data put into the page as markup.
    #[test]
    fn the_assets_hold_no_inline_script_or_style_and_no_markup_injection() {
        let page = INDEX.to_ascii_lowercase();
        assert_eq!(page.matches("<script").count(), 1, "one script, a file: {INDEX}");
        assert!(page.contains("<script src=\"/assets/app.js\" defer></script>"));
        assert!(!page.contains("<style") && !page.contains("style="), "{INDEX}");
        assert!(!has_event_handler_attribute(&page), "{INDEX}");
        let script = std::str::from_utf8(FILES[0].body).unwrap();
        for (line_number, line) in script.lines().enumerate() {
            let code = line.trim_start();
            // Comments may name what the code never does.
            if code.starts_with("//") || code.starts_with('*') || code.starts_with("/*") {
                continue;
            }
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!code.contains(banned), "line {}: app.js uses {banned}: {line}", line_number + 1);
            }
            // Requests go to this origin only: no absolute URL is ever fetched.
            assert!(
                !code.contains("fetch('http") && !code.contains("fetch(\"http"),
                "line {}: {line}",
                line_number + 1
            );
            assert!(
                !code.contains(".style.") && !code.contains("'style'"),
                "line {}: inline style: {line}",
                line_number + 1
            );
        }
    }
}
