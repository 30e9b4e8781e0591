//! What guards the admin listener, which holds everything: the bearer token (required
//! when it is not on loopback; `/health` stays open for probes), a `Host` check against
//! DNS rebinding when it has no token, `Origin` and a CSRF token for every request that
//! changes state, and the browser hardening headers on every answer. Also its actions.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::storage::StoreError;

/// The header a state-changing request carries its CSRF token in. A custom header also
/// makes the request non-simple: a page on another origin cannot send it without a CORS
/// preflight, which this listener never grants.
pub const CSRF_HEADER: &str = "x-futurnal-csrf";

/// Every admin answer: no framing, no sniffing, no referrer, no inline script or style
/// (the dashboard has none), nothing loaded from elsewhere.
pub async fn hardening_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

use super::json_error as refuse;

/// Compares digests, so the time taken says nothing about how much of a guess was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    Sha256::digest(given) == Sha256::digest(expected)
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| value[7..].trim_ascii())
}

/// Whether `host` (a `Host` header) names this machine's loopback: the only names a
/// browser uses for a loopback listener, unless a DNS-rebinding page points its own name
/// here.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The scheme-less `host[:port]` of an `Origin` header.
fn origin_host(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    matches!(scheme, "http" | "https").then_some(rest.trim_end_matches('/'))
}

pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    match &state.admin_token {
        Some(token) => {
            let open = request.uri().path() == "/health" && request.method() == Method::GET;
            if !open && !bearer(headers).is_some_and(|given| same_secret(given, token.0.as_bytes())) {
                let mut response =
                    refuse(StatusCode::UNAUTHORIZED, "this listener needs its token (Authorization: Bearer …)");
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
        }
        // Loopback without a token: a page whose own name resolves to 127.0.0.1 must not
        // read or drive it.
        None if !is_loopback_host(host) => {
            return refuse(StatusCode::FORBIDDEN, "the admin listener answers only to a loopback host name");
        }
        None => {}
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().ok().and_then(origin_host);
            if origin.is_none_or(|o| !o.eq_ignore_ascii_case(host)) {
                return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
            }
        }
        let token = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
        if !token.is_some_and(|t| same_secret(t, state.csrf_token.as_bytes())) {
            return refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token (x-futurnal-csrf, from GET /api/csrf)");
        }
    }
    next.run(request).await
}

/// `GET /api/csrf`: the token state-changing requests carry. Another origin cannot read
/// it (no CORS), and the `Host` check or the bearer token keeps rebinding pages out.
pub async fn csrf(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({ "token": state.csrf_token, "header": CSRF_HEADER })).into_response()
}

/// `POST /api/deliveries/{id}/replay`: processes a stored delivery again, as `webhook
/// replay` does.
pub async fn replay(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.queue.replay(&id).await {
        Ok(record) => {
            state.work_available.notify_one();
            tracing::info!(delivery_id = %record.delivery_id, "Delivery queued again from the admin listener");
            Json(json!({ "status": "queued", "delivery": crate::output::delivery_json(&record) })).into_response()
        }
        Err(StoreError::NotFound(_)) => refuse(StatusCode::NOT_FOUND, "no such delivery"),
        Err(StoreError::Conflict(message)) => refuse(StatusCode::CONFLICT, message),
        Err(e) => super::json_unavailable("Replaying a delivery", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_host_names() {
        for host in ["127.0.0.1:8766", "localhost", "LOCALHOST:1", "[::1]:8766", "127.8.9.1"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example:8766", "evil.example", "10.0.0.1:80", "", "[::2]:1", "127.0.0.1.evil.example"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer  abc "));
        assert_eq!(bearer(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        assert!(same_secret(b"x", b"x") && !same_secret(b"x", b"y"));
    }
}
