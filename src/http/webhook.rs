//! `POST /webhook/github`: PRODUCT.md's eight steps, in order. The only way to build a
//! [`NewDelivery`] with `Queued` status here is past the signature check.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futurnal_github::signature::{verify_any, SignatureError};
use futurnal_github::{RoutingFields, WebhookEventType};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::{AppState, Refresh};
use crate::config::Compression;
use crate::domain::DeliveryId;
use crate::metrics::ReceiveOutcome;
use crate::secrets::SecretSet;
use crate::storage::queue::{EnqueueOutcome, InitialStatus, NewDelivery, StoredBody};
use crate::storage::StoreError;
use crate::time::now_ms;

/// A delivery whose signature was checked (or whose listener runs with verification
/// switched off on loopback). Only [`verify`] builds one.
struct VerifiedDelivery {
    event: String,
    delivery_id: DeliveryId,
    hook_id: Option<u64>,
    content_type: ContentKind,
    body: Bytes,
}

enum ContentKind {
    Json,
    Form,
}

struct Rejection {
    status: StatusCode,
    outcome: ReceiveOutcome,
    message: &'static str,
}

impl Rejection {
    fn new(status: StatusCode, outcome: ReceiveOutcome, message: &'static str) -> Self {
        Self { status, outcome, message }
    }
}

pub async fn receive(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let client = state.client_ip(&parts);
    if !state.sources.allows(client) {
        // Before the body is read: a source that may not deliver costs no more than this.
        state.metrics.received(ReceiveOutcome::Forbidden);
        tracing::debug!(client = %client, "Delivery refused: source not allowed");
        return super::json_error(StatusCode::FORBIDDEN, "source not allowed");
    }
    // Run to completion in a task of its own: a client that hangs up mid-request must not
    // cancel a write half-way, and what is stored is counted even if nobody reads the answer.
    let task_state = state.clone();
    let arrived = std::time::Instant::now();
    let task = tokio::spawn(async move {
        let result = handle(&task_state, client, &parts.headers, body).await;
        let answer = match result {
            Ok(answer) => answer,
            Err(rejection) => {
                (rejection.status, rejection.outcome, json!({ "status": "error", "error": rejection.message }))
            }
        };
        task_state.metrics.received(answer.1);
        if answer.1 == ReceiveOutcome::Queued {
            task_state.metrics.activity.acknowledged(arrived.elapsed().as_secs_f64() * 1000.0);
        }
        answer
    });
    let (status, _, payload) = match task.await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "Webhook handler task failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                ReceiveOutcome::Unavailable,
                json!({ "status": "error", "error": "internal error" }),
            )
        }
    };
    let mut response = (status, axum::Json(payload)).into_response();
    if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

type Answer = (StatusCode, ReceiveOutcome, serde_json::Value);

async fn handle(state: &AppState, client: IpAddr, headers: &HeaderMap, body: Body) -> Result<Answer, Rejection> {
    // 0. GitHub never compresses deliveries: an encoded body is refused before anything
    // reads it (and a signature over compressed bytes is no signature over the payload).
    if headers.contains_key(header::CONTENT_ENCODING) {
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReceiveOutcome::UnsupportedMediaType,
            "Content-Encoding is not accepted",
        ));
    }
    // 1. Size: refuse an announced oversize body at once, and never buffer past the limit.
    let too_large = || Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, ReceiveOutcome::TooLarge, "body too large");
    if let Some(length) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if length > state.max_body_bytes as u64 {
            return Err(too_large());
        }
    }
    let collected = tokio::time::timeout(state.body_read_timeout, Limited::new(body, state.max_body_bytes).collect());
    let body = match collected.await {
        Err(_) => {
            return Err(Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                ReceiveOutcome::Timeout,
                "timed out reading the body",
            ))
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(_)) => {
            return Err(Rejection::new(StatusCode::BAD_REQUEST, ReceiveOutcome::BadRequest, "failed to read the body"))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };

    // 2 and 3. Required headers, then the signature, before anything parses the body.
    let headers = required_headers(headers)?;
    let delivery = verify(state, client, headers, body).await?;

    // 4. Content type, then JSON validity (parsing only the routing fields).
    let json = match delivery.content_type {
        ContentKind::Json => delivery.body.clone(),
        ContentKind::Form => form_payload(&delivery.body)
            .map_err(|why| Rejection::new(StatusCode::BAD_REQUEST, ReceiveOutcome::BadRequest, why))?,
    };
    let routing = RoutingFields::parse(&json).map_err(|_| {
        Rejection::new(StatusCode::BAD_REQUEST, ReceiveOutcome::BadRequest, "body is not a valid JSON object")
    })?;
    let kind = WebhookEventType::parse(&delivery.event);
    let (repo_id, repo_name) = match &routing.repository {
        Some(r) => (r.id, r.full_name.as_deref()),
        None => (None, None),
    };
    let record = |initial| NewDelivery {
        delivery_id: delivery.delivery_id.clone(),
        event: delivery.event.clone(),
        action: routing.action.as_deref().map(str::to_owned),
        repository: repo_name.map(str::to_owned),
        repository_github_id: repo_id,
        hook_id: delivery.hook_id,
        received_at_ms: now_ms(),
        body: match state.compression {
            Compression::Lz4 => StoredBody::compress(&json),
            Compression::None => StoredBody::Raw(json.to_vec()),
        },
        initial,
    };
    let id = delivery.delivery_id.as_str();

    // 5. Ping: the hook is alive.
    if kind == WebhookEventType::Ping {
        let record = record(InitialStatus::Done);
        let at = record.received_at_ms;
        state.queue.enqueue(record).await.map_err(unavailable)?;
        if let Some(hook) = delivery.hook_id {
            state.registry.note_ping(hook, at).await.map_err(unavailable)?;
        }
        tracing::info!(delivery_id = %id, hook_id = ?delivery.hook_id, "Ping received");
        return Ok((
            StatusCode::OK,
            ReceiveOutcome::Ping,
            json!({ "status": "ok", "event": "ping", "delivery_id": id }),
        ));
    }

    // 6. Not enabled, or not about a tracked repository: kept for the record, not processed.
    let ignored_because = if !state.events.contains(&kind) {
        Some("event not enabled")
    } else if repo_id.is_none() && repo_name.is_none() {
        Some("payload names no repository")
    } else if !state.tracked.contains(repo_id, repo_name).await.map_err(unavailable)? {
        Some("repository not tracked")
    } else {
        None
    };
    if let Some(reason) = ignored_because {
        state.queue.enqueue(record(InitialStatus::Ignored(reason.to_owned()))).await.map_err(unavailable)?;
        tracing::debug!(delivery_id = %id, event = %delivery.event, repository = repo_name.unwrap_or("-"), reason, "Delivery ignored");
        return Ok((
            StatusCode::ACCEPTED,
            ReceiveOutcome::Ignored,
            json!({ "status": "ignored", "delivery_id": id, "reason": reason }),
        ));
    }

    // 7 and 8. Duplicate, or written durably; a full queue refuses new work.
    let duplicate = || (StatusCode::OK, ReceiveOutcome::Duplicate, json!({ "status": "duplicate", "delivery_id": id }));
    if state.queue.approximate_depth() >= state.max_queued {
        if state.queue.get(id).await.map_err(unavailable)?.is_some() {
            return Ok(duplicate());
        }
        tracing::warn!(delivery_id = %id, cap = state.max_queued, "Queue full; delivery refused");
        return Err(Rejection::new(StatusCode::SERVICE_UNAVAILABLE, ReceiveOutcome::QueueFull, "queue is full"));
    }
    match state.queue.enqueue(record(InitialStatus::Queued)).await.map_err(unavailable)? {
        EnqueueOutcome::Duplicate => Ok(duplicate()),
        EnqueueOutcome::Stored => {
            state.work_available.notify_one();
            tracing::debug!(delivery_id = %id, event = %delivery.event, repository = repo_name.unwrap_or("-"), "Delivery queued");
            Ok((StatusCode::ACCEPTED, ReceiveOutcome::Queued, json!({ "status": "queued", "delivery_id": id })))
        }
    }
}

/// The routing headers of a request, checked (step 2).
struct RequiredHeaders<'a> {
    event: &'a str,
    delivery_id: DeliveryId,
    hook_id: Option<u64>,
    signature: Option<&'a [u8]>,
    content_type: Option<&'a str>,
}

/// Headers that decide what a delivery is: each at most once. Two different
/// `X-GitHub-Delivery` values on one request would otherwise be read as the first here
/// and perhaps as the last by a proxy or log in front.
const SINGLE_HEADERS: [&str; 5] =
    ["x-github-event", "x-github-delivery", "x-github-hook-id", "x-hub-signature-256", "content-type"];

fn required_headers(headers: &HeaderMap) -> Result<RequiredHeaders<'_>, Rejection> {
    let bad = |message| Rejection::new(StatusCode::BAD_REQUEST, ReceiveOutcome::BadRequest, message);
    if SINGLE_HEADERS.iter().any(|name| headers.get_all(*name).iter().nth(1).is_some()) {
        return Err(bad("a routing header is repeated"));
    }
    let event = header_str(headers, "x-github-event").ok_or_else(|| bad("missing X-GitHub-Event header"))?;
    let delivery_id =
        header_str(headers, "x-github-delivery").ok_or_else(|| bad("missing X-GitHub-Delivery header"))?;
    let delivery_id = DeliveryId::parse(delivery_id).map_err(bad)?;
    if event.len() > 64 || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()) {
        return Err(bad("malformed X-GitHub-Event header"));
    }
    let hook_id = match header_str(headers, "x-github-hook-id") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| bad("malformed X-GitHub-Hook-ID header"))?),
    };
    Ok(RequiredHeaders {
        event,
        delivery_id,
        hook_id,
        signature: headers.get("x-hub-signature-256").map(HeaderValue::as_bytes),
        content_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
    })
}

/// Which secret verified a signature.
enum Verified {
    /// The `n`-th of the hook's own (or the global) secrets: 0 is the newest.
    Stored(usize),
    /// The secret of a `webhook enable` in progress.
    Pending,
}

fn check_signature(
    secrets: &SecretSet,
    hook_id: Option<u64>,
    body: &[u8],
    signature: Option<&[u8]>,
) -> Result<Verified, SignatureError> {
    match verify_any(secrets.for_hook(hook_id), body, signature) {
        Ok(index) => Ok(Verified::Stored(index)),
        Err(SignatureError::Mismatch) => verify_any(secrets.pending(), body, signature).map(|_| Verified::Pending),
        Err(e) => Err(e),
    }
}

/// Step 3: the signature, against the stored secrets as they are now (a secret the CLI
/// stored a moment ago included).
async fn verify(
    state: &AppState,
    client: IpAddr,
    headers: RequiredHeaders<'_>,
    body: Bytes,
) -> Result<VerifiedDelivery, Rejection> {
    let RequiredHeaders { event, delivery_id, hook_id, signature, content_type } = headers;
    if state.verify_signatures {
        // One `stat` says whether the CLI stored, rotated or removed a secret since they
        // were read; nothing else is read unless it did.
        state.refresh_secrets(Refresh::IfChanged).await;
        let mut secrets = state.secrets();
        let mut verdict = check_signature(&secrets, hook_id, &body, signature);
        if verdict.is_err() && state.unverified_limiter.check_key(&client).is_err() {
            // Over its budget of unverified requests: refused before any further work.
            return Err(Rejection::new(
                StatusCode::TOO_MANY_REQUESTS,
                ReceiveOutcome::RateLimited,
                "too many unverified requests",
            ));
        }
        if matches!(verdict, Err(SignatureError::Mismatch)) {
            // A hook whose keychain entry could not be read is tried again, at most once a
            // second however many requests name it; secrets shared through the database,
            // when its generation moved (asked at most four times a second).
            let why = if hook_id.is_some_and(|id| secrets.is_unreadable(id)) {
                Refresh::Unreadable
            } else {
                Refresh::Mismatch
            };
            if state.refresh_secrets(why).await {
                secrets = state.secrets();
                verdict = check_signature(&secrets, hook_id, &body, signature);
            }
        }
        if let (Ok(Verified::Stored(0)), Some(hook)) = (&verdict, hook_id) {
            // Signed with the newest of two secrets: GitHub has the rotated one.
            if secrets.is_rotating(hook) {
                state.rotation_confirmed.lock().unwrap_or_else(|p| p.into_inner()).insert(hook);
            }
        }
        if let Err(reason) = verdict {
            tracing::warn!(delivery_id = %delivery_id, event, client = %client, reason = %reason, "Delivery refused: bad signature");
            return Err(Rejection::new(StatusCode::UNAUTHORIZED, ReceiveOutcome::Unauthorized, "invalid signature"));
        }
    }
    let content_type = match content_type {
        Some(ct) if media_type(ct) == "application/json" => ContentKind::Json,
        Some(ct) if media_type(ct) == "application/x-www-form-urlencoded" => ContentKind::Form,
        _ => {
            return Err(Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ReceiveOutcome::UnsupportedMediaType,
                "content type must be application/json or application/x-www-form-urlencoded",
            ))
        }
    };
    Ok(VerifiedDelivery { event: event.to_owned(), delivery_id, hook_id, content_type, body })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The `payload` field of a form body (GitHub's default for hooks made in its web UI).
/// The `payload` field of a form body, decoded strictly: exactly one `payload` field, and
/// every escape in it well formed (`%` and two hex digits; `+` is a space). A second
/// `payload` or a bad escape is refused rather than read one way here and another way by
/// whatever else looks at the body (the signature covers the raw bytes, not a reading).
pub fn form_payload(body: &[u8]) -> Result<Bytes, &'static str> {
    let mut payload = None;
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let malformed = "form body has a malformed escape";
        let (name, value) =
            (percent_decode_strict(name).ok_or(malformed)?, percent_decode_strict(value).ok_or(malformed)?);
        if name != b"payload" {
            continue;
        }
        if payload.is_some() {
            return Err("form body has more than one payload field");
        }
        payload = Some(value);
    }
    payload.map(Bytes::from).ok_or("form body has no payload field")
}

/// `application/x-www-form-urlencoded` decoding that refuses what lenient decoders guess
/// at: `None` for a `%` not followed by two hex digits.
fn percent_decode_strict(input: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let (high, low) = (hex(*input.get(i + 1)?)?, hex(*input.get(i + 2)?)?);
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(out)
}

fn unavailable(e: StoreError) -> Rejection {
    // While the database is away every request lands here: one line a second, with the
    // number of requests answered 503 since the last one.
    static LAST_LOGGED_MS: AtomicI64 = AtomicI64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let last = LAST_LOGGED_MS.load(Ordering::Relaxed);
    if now - last >= 1000 && LAST_LOGGED_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        let also = SINCE.swap(0, Ordering::Relaxed);
        tracing::error!(error = %e, also_refused = also, "Could not store a delivery; answering 503");
    } else {
        SINCE.fetch_add(1, Ordering::Relaxed);
    }
    Rejection::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ReceiveOutcome::Unavailable,
        "temporarily unable to store deliveries",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_payload_is_decoded() {
        let body = b"foo=1&payload=%7B%22a%22%3A1%7D&bar=2";
        assert_eq!(form_payload(body).unwrap(), Bytes::from_static(br#"{"a":1}"#));
        assert_eq!(form_payload(b"payload=a+b%2B").unwrap(), Bytes::from_static(b"a b+"));
        assert_eq!(form_payload(b"foo=1"), Err("form body has no payload field"));
        // Parser differentials: answered 400, never read one way of several.
        assert_eq!(form_payload(b"payload=%7B%7D&payload=%5B%5D"), Err("form body has more than one payload field"));
        assert_eq!(form_payload(b"payload=1&pay%6Coad=2"), Err("form body has more than one payload field"));
        for bad in [&b"payload=%7B%ZZ%7D"[..], b"payload=%7", b"payload=%", b"x=%G0&payload=1"] {
            assert_eq!(form_payload(bad), Err("form body has a malformed escape"), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn media_types_ignore_parameters_and_case() {
        assert_eq!(media_type("Application/JSON; charset=utf-8"), "application/json");
        assert_eq!(media_type(""), "");
    }
}
