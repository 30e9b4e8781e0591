//! Local fakes of GitHub (REST API + real webhook deliveries), an ngrok agent and a smee channel, for tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futurnal_github::{sign_sha256, WebhookSecret};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// The token every fake accepts unless `set_valid_tokens` says otherwise.
pub const TEST_TOKEN: &str = "test-token";
const RATE_LIMIT: u32 = 5000;
const DOCS: &str = "https://docs.github.com/rest";
const MASK: &str = "********";

// ---- Small shared helpers ----

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn new_guid() -> String {
    futurnal::domain::DeliveryId::random().to_string()
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn json_response(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
}

fn github_error(status: u16, message: &str) -> Response {
    json_response(status, json!({"message": message, "documentation_url": DOCS}))
}

fn not_found() -> Response {
    github_error(404, "Not Found")
}

fn validation_failed(message: &str) -> Response {
    json_response(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{"resource": "Hook", "code": "custom", "message": message}],
            "documentation_url": "https://docs.github.com/rest/repos/webhooks",
        }),
    )
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn per_page(params: &[(String, String)]) -> usize {
    param(params, "per_page").and_then(|v| v.parse().ok()).unwrap_or(30).clamp(1, 100)
}

/// A JSON string or number as a string (GitHub accepts `insecure_ssl` as either).
fn string_or_number(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

fn timestamp(item: &Value, field: &str) -> Option<jiff::Timestamp> {
    item.get(field)?.as_str()?.parse().ok()
}

/// `Authorization: Bearer <t>` or `token <t>`; `Some("")` for any other scheme.
fn auth_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().unwrap_or("").trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    Some(if known { token.trim().to_owned() } else { String::new() })
}

/// Serves `router` on 127.0.0.1, port 0, in a spawned task.
async fn serve(router: Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, task)
}

/// Page/per_page pagination with GitHub's `Link` header (prev, next, last, first).
fn paginate(items: Vec<Value>, params: &[(String, String)], url: &str) -> (Vec<Value>, Option<String>) {
    let per_page = per_page(params);
    let page = param(params, "page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let slice = items.into_iter().skip((page - 1).saturating_mul(per_page)).take(per_page).collect();
    let link = |target: usize, rel: &str| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| k != "page") {
            query.append_pair(k, v);
        }
        query.append_pair("page", &target.to_string());
        format!("<{url}?{}>; rel=\"{rel}\"", query.finish())
    };
    let mut rels = Vec::new();
    if page > 1 {
        rels.push(link(page - 1, "prev"));
    }
    if page < last {
        rels.push(link(page + 1, "next"));
        rels.push(link(last, "last"));
    }
    if page > 1 {
        rels.push(link(1, "first"));
    }
    (slice, (!rels.is_empty()).then(|| rels.join(", ")))
}

// ---- FakeGitHub: state ----

/// A hook as the test sees it: the real secret, unmasked.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeHook {
    pub id: u64,
    pub url: String,
    pub secret: Option<String>,
    pub events: Vec<String>,
    pub active: bool,
    pub content_type: String,
    pub insecure_ssl: String,
}

enum Failure {
    RetryAfter { status: u16, secs: u64 },
    Status(u16),
}

impl Failure {
    fn response(&self) -> Response {
        match *self {
            Failure::RetryAfter { status, secs } => {
                let mut response = json_response(
                    status,
                    json!({
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    }),
                );
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                response
            }
            Failure::Status(status) => {
                let reason =
                    StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Server Error");
                github_error(status, reason)
            }
        }
    }
}

struct StoredDelivery {
    summary: Value,
    url: String,
    /// The JSON payload as sent, kept byte for byte for redelivery.
    body: String,
    request: Value,
    response: Value,
}

struct Hook {
    id: u64,
    active: bool,
    events: Vec<String>,
    url: String,
    content_type: String,
    secret: Option<String>,
    insecure_ssl: String,
    created_at: String,
    updated_at: String,
    last_response: Value,
    /// Oldest first.
    deliveries: Vec<StoredDelivery>,
}

impl Hook {
    fn config_json(&self) -> Value {
        let mut config = json!({"content_type": self.content_type, "insecure_ssl": self.insecure_ssl, "url": self.url});
        if self.secret.is_some() {
            config["secret"] = MASK.into();
        }
        config
    }

    fn json(&self, base: &str, full_name: &str) -> Value {
        let url = format!("{base}/repos/{full_name}/hooks/{}", self.id);
        json!({
            "type": "Repository",
            "id": self.id,
            "name": "web",
            "active": self.active,
            "events": self.events,
            "config": self.config_json(),
            "updated_at": self.updated_at,
            "created_at": self.created_at,
            "url": url,
            "test_url": format!("{url}/test"),
            "ping_url": format!("{url}/pings"),
            "deliveries_url": format!("{url}/deliveries"),
            "last_response": self.last_response,
        })
    }

    fn public(&self) -> FakeHook {
        FakeHook {
            id: self.id,
            url: self.url.clone(),
            secret: self.secret.clone(),
            events: self.events.clone(),
            active: self.active,
            content_type: self.content_type.clone(),
            insecure_ssl: self.insecure_ssl.clone(),
        }
    }

    fn wants(&self, event: &str) -> bool {
        self.active && self.events.iter().any(|e| e == event || e == "*")
    }
}

struct Repo {
    id: u64,
    full_name: String,
    default_branch: String,
    clone_url: String,
    hooks: Vec<Hook>,
    pulls: Vec<Value>,
    pulls_version: u64,
    issues: Vec<Value>,
    issues_version: u64,
    /// Each pull request's reviews and review comments. These lists' ETags, as GitHub's,
    /// follow each page's content only: a change on one page leaves the others' as they were.
    reviews: BTreeMap<u64, Vec<Value>>,
    review_comments: BTreeMap<u64, Vec<Value>>,
    labels: Vec<Value>,
    milestones: Vec<Value>,
}

impl Repo {
    /// Whether pull request `number` exists (listed, or given reviews or comments).
    fn has_pull(&self, number: u64) -> bool {
        self.pulls.iter().any(|p| p["number"].as_u64() == Some(number))
            || self.reviews.contains_key(&number)
            || self.review_comments.contains_key(&number)
    }

    fn owner(&self) -> &str {
        self.full_name.split('/').next().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.full_name.split('/').nth(1).unwrap_or_default()
    }

    fn owner_json(&self) -> Value {
        json!({"login": self.owner(), "id": hash_of(self.owner().to_lowercase()) % 100_000_000, "type": "User"})
    }

    /// `GET /repos/{owner}/{repo}`.
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "node_id": format!("R_fake{}", self.id),
            "name": self.name(),
            "full_name": self.full_name,
            "private": false,
            "owner": self.owner_json(),
            "default_branch": self.default_branch,
            "clone_url": self.clone_url,
            "html_url": format!("https://github.com/{}", self.full_name),
            "visibility": "public",
            "archived": false,
        })
    }

    /// The `repository` object merged into delivered payloads.
    fn payload_json(&self) -> Value {
        json!({"id": self.id, "full_name": self.full_name, "name": self.name(), "owner": self.owner_json()})
    }

    fn hook(&self, id: u64) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.id == id)
    }

    fn hook_mut(&mut self, id: u64) -> Option<&mut Hook> {
        self.hooks.iter_mut().find(|h| h.id == id)
    }
}

struct FakeState {
    valid_tokens: HashSet<String>,
    remaining: u32,
    reset: u64,
    /// When set, the rate limit's clock is tokio's (which a test can pause and advance):
    /// the Unix time at `.1`, and that instant.
    tokio_clock: Option<(u64, tokio::time::Instant)>,
    failures: VecDeque<Failure>,
    /// Failures for the next request to a path starting with the first field, each once.
    path_failures: Vec<(String, u16)>,
    requests: usize,
    quota_used: usize,
    allow_loopback: bool,
    ping_on_create: bool,
    /// What `GET /meta` lists as `hooks` (GitHub's real ranges unless a test sets some).
    meta_hooks: Option<Vec<String>>,
    /// Redeliveries asked for but not sent yet (GitHub sends them a while after the
    /// request), while a test holds them back; `None`: sent at once.
    held_redeliveries: Option<Vec<Outgoing>>,
    redelivery_requests: usize,
    /// Keyed by the lower-cased full name (GitHub's names are case-insensitive).
    repos: BTreeMap<String, Repo>,
    next_hook_id: u64,
    next_delivery_id: u64,
    version: u64,
}

impl FakeState {
    fn now(&self) -> u64 {
        match self.tokio_clock {
            Some((base, at)) => base + at.elapsed().as_secs(),
            None => unix_now(),
        }
    }

    fn refresh_rate(&mut self) {
        let now = self.now();
        if now >= self.reset {
            self.remaining = RATE_LIMIT;
            self.reset = now + 3600;
        }
    }

    fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos.get(&format!("{owner}/{name}").to_lowercase())
    }

    fn repo_mut(&mut self, owner: &str, name: &str) -> Option<&mut Repo> {
        self.repos.get_mut(&format!("{owner}/{name}").to_lowercase())
    }

    fn control_repo(&mut self, full_name: &str) -> &mut Repo {
        self.repos
            .get_mut(&full_name.to_lowercase())
            .unwrap_or_else(|| panic!("FakeGitHub: unknown repository {full_name}"))
    }

    fn find_hook(&self, hook_id: u64) -> Option<(&Repo, &Hook)> {
        self.repos.values().find_map(|r| r.hook(hook_id).map(|h| (r, h)))
    }

    fn find_hook_mut(&mut self, hook_id: u64) -> Option<&mut Hook> {
        self.repos.values_mut().find_map(|r| r.hook_mut(hook_id))
    }
}

struct Inner {
    base_url: String,
    client: reqwest::Client,
    state: Mutex<FakeState>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// ---- FakeGitHub: deliveries, really sent ----

struct Outgoing {
    hook_id: u64,
    event: String,
    guid: String,
    action: Value,
    /// The JSON payload.
    body: String,
    redelivery: bool,
}

impl Inner {
    /// Sends one delivery as GitHub does, then records it in the hook's log; `None` when
    /// the hook no longer exists.
    async fn deliver(&self, out: Outgoing) -> Option<Value> {
        let (url, content_type, secret, repository_id) = {
            let state = self.lock();
            let (repo, hook) = state.find_hook(out.hook_id)?;
            (hook.url.clone(), hook.content_type.clone(), hook.secret.clone(), repo.id)
        };
        let (wire, mime) = if content_type == "form" {
            let form = form_urlencoded::Serializer::new(String::new()).append_pair("payload", &out.body).finish();
            (form, "application/x-www-form-urlencoded")
        } else {
            (out.body.clone(), "application/json")
        };
        let mut headers: Vec<(&str, String)> = vec![
            ("Accept", "*/*".into()),
            ("Content-Type", mime.into()),
            ("User-Agent", "GitHub-Hookshot/fake".into()),
            ("X-GitHub-Delivery", out.guid.clone()),
            ("X-GitHub-Event", out.event.clone()),
            ("X-GitHub-Hook-ID", out.hook_id.to_string()),
            ("X-GitHub-Hook-Installation-Target-ID", repository_id.to_string()),
            ("X-GitHub-Hook-Installation-Target-Type", "repository".into()),
        ];
        if let Some(secret) = &secret {
            headers.push(("X-Hub-Signature-256", sign_sha256(&WebhookSecret::new(secret.as_str()), wire.as_bytes())));
        }
        let mut request = self.client.post(&url).body(wire);
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let started = Instant::now();
        let (status_code, status, response) = match request.send().await {
            Ok(answer) => {
                let code = answer.status().as_u16();
                let answer_headers: serde_json::Map<String, Value> = answer
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.to_str().unwrap_or_default().to_owned())))
                    .collect();
                let text = answer.text().await.unwrap_or_default();
                let status =
                    if (200..300).contains(&code) { "OK".to_owned() } else { format!("Invalid HTTP Response: {code}") };
                (code, status, json!({"headers": answer_headers, "payload": text}))
            }
            Err(error) => {
                let status = if error.is_timeout() { "timed out" } else { "failed to connect to host" };
                (0, status.to_owned(), json!({"headers": {}, "payload": null}))
            }
        };
        let duration = started.elapsed().as_secs_f64();
        let request_headers: serde_json::Map<String, Value> =
            headers.into_iter().map(|(k, v)| (k.to_owned(), Value::String(v))).collect();
        let payload: Value = serde_json::from_str(&out.body).unwrap_or(Value::Null);

        let mut state = self.lock();
        state.next_delivery_id += 1;
        let summary = json!({
            "id": state.next_delivery_id,
            "guid": out.guid,
            "delivered_at": rfc3339_now(),
            "redelivery": out.redelivery,
            "duration": duration,
            "status": status,
            "status_code": status_code,
            "event": out.event,
            "action": out.action,
            "installation_id": null,
            "repository_id": repository_id,
            "throttled_at": null,
        });
        if let Some(hook) = state.find_hook_mut(out.hook_id) {
            hook.last_response = if status_code == 0 {
                json!({"code": null, "status": "failed", "message": status})
            } else {
                json!({"code": status_code, "status": "active", "message": status})
            };
            hook.deliveries.push(StoredDelivery {
                summary: summary.clone(),
                url,
                body: out.body,
                request: json!({"headers": request_headers, "payload": payload}),
                response,
            });
        }
        Some(summary)
    }

    /// Sends the `ping` GitHub sends on creation and on `POST .../pings`.
    async fn ping(&self, hook_id: u64) -> Option<Value> {
        let payload = {
            let state = self.lock();
            let (repo, hook) = state.find_hook(hook_id)?;
            json!({
                "zen": "Keep it logically awesome.",
                "hook_id": hook_id,
                "hook": hook.json(&self.base_url, &repo.full_name),
                "repository": repo.json(),
                "sender": repo.owner_json(),
            })
        };
        let out = Outgoing {
            hook_id,
            event: "ping".into(),
            guid: new_guid(),
            action: Value::Null,
            body: payload.to_string(),
            redelivery: false,
        };
        self.deliver(out).await
    }
}

// ---- FakeGitHub: the public test API ----

/// A fake GitHub REST API on 127.0.0.1 that also sends real, signed webhook deliveries.
pub struct FakeGitHub {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    pub async fn start() -> FakeGitHub {
        futurnal::install_tls_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let state = FakeState {
            valid_tokens: HashSet::from([TEST_TOKEN.to_owned()]),
            remaining: RATE_LIMIT,
            reset: unix_now() + 3600,
            tokio_clock: None,
            failures: VecDeque::new(),
            path_failures: Vec::new(),
            requests: 0,
            quota_used: 0,
            allow_loopback: true,
            ping_on_create: false,
            meta_hooks: None,
            held_redeliveries: None,
            redelivery_requests: 0,
            repos: BTreeMap::new(),
            next_hook_id: 100_000,
            next_delivery_id: 1_000_000,
            version: 0,
        };
        let inner = Arc::new(Inner { base_url, client, state: Mutex::new(state) });
        let hook = "/repos/{owner}/{repo}/hooks/{hook_id}";
        let router = Router::new()
            .route("/meta", get(meta))
            .route("/rate_limit", get(rate_limit))
            .route("/repos/{owner}/{repo}", get(get_repo))
            .route("/repos/{owner}/{repo}/pulls", get(list_pulls))
            .route("/repos/{owner}/{repo}/issues", get(list_issues))
            .route("/repos/{owner}/{repo}/pulls/{number}/reviews", get(list_reviews))
            .route("/repos/{owner}/{repo}/pulls/{number}/comments", get(list_review_comments))
            .route("/repos/{owner}/{repo}/labels", get(list_labels))
            .route("/repos/{owner}/{repo}/milestones", get(list_milestones))
            .route("/repos/{owner}/{repo}/hooks", get(list_hooks).post(create_hook))
            .route(hook, get(get_hook).patch(update_hook).delete(delete_hook))
            .route(&format!("{hook}/config"), get(get_hook_config).patch(update_hook_config))
            .route(&format!("{hook}/pings"), post(ping_hook))
            .route(&format!("{hook}/deliveries"), get(list_deliveries))
            .route(&format!("{hook}/deliveries/{{delivery_id}}"), get(get_delivery))
            .route(&format!("{hook}/deliveries/{{delivery_id}}/attempts"), post(redeliver))
            .fallback(|| async { not_found() })
            .layer(middleware::from_fn_with_state(inner.clone(), api_gate))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeGitHub { inner, task }
    }

    /// The API base URL, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    pub fn set_valid_tokens<I, S>(&self, tokens: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner.lock().valid_tokens = tokens.into_iter().map(Into::into).collect();
    }

    /// The rate limit follows tokio's clock from now on, so a test under
    /// `tokio::time::pause()` sees the reset come when virtual time reaches it. Returns the
    /// fake's current Unix time.
    pub fn use_tokio_clock(&self) -> u64 {
        let now = unix_now();
        self.inner.lock().tokio_clock = Some((now, tokio::time::Instant::now()));
        now
    }

    /// Sets the core bucket; once the clock reaches `reset_unix`, remaining is back to 5000.
    pub fn set_rate_limit(&self, remaining: u32, reset_unix: u64) {
        let mut state = self.inner.lock();
        state.remaining = remaining;
        state.reset = reset_unix;
    }

    /// The next API request gets `status` (403 or 429) with `Retry-After`. Calls queue up.
    pub fn fail_next_with_retry_after(&self, status: u16, retry_after_secs: u64) {
        self.inner.lock().failures.push_back(Failure::RetryAfter { status, secs: retry_after_secs });
    }

    /// The next API request gets `status` (e.g. 502) with a GitHub error body. Calls queue up.
    pub fn fail_next_with_status(&self, status: u16) {
        self.inner.lock().failures.push_back(Failure::Status(status));
    }

    /// The next API request to a path starting with `prefix` (no query) gets `status`.
    pub fn fail_next_request_to(&self, prefix: &str, status: u16) {
        self.inner.lock().path_failures.push((prefix.to_owned(), status));
    }

    /// Every API request received, whatever its answer.
    pub fn requests(&self) -> usize {
        self.inner.lock().requests
    }

    /// The requests that cost quota (authenticated, not a 304, not refused for the primary limit).
    pub fn quota_used(&self) -> usize {
        self.inner.lock().quota_used
    }

    /// Adds (or renumbers) a public repository with default branch `main`.
    pub fn add_repo(&self, full_name: &str, id: u64) {
        let mut state = self.inner.lock();
        let repo = state.repos.entry(full_name.to_lowercase()).or_insert_with(|| Repo {
            id,
            full_name: full_name.to_owned(),
            default_branch: "main".into(),
            clone_url: format!("https://github.com/{full_name}.git"),
            hooks: Vec::new(),
            pulls: Vec::new(),
            pulls_version: 0,
            issues: Vec::new(),
            issues_version: 0,
            reviews: BTreeMap::new(),
            review_comments: BTreeMap::new(),
            labels: Vec::new(),
            milestones: Vec::new(),
        });
        repo.id = id;
    }

    /// Points `clone_url` somewhere local (tests never clone from github.com).
    pub fn set_clone_url(&self, repo: &str, url: &str) {
        self.inner.lock().control_repo(repo).clone_url = url.to_owned();
    }

    pub fn set_default_branch(&self, repo: &str, branch: &str) {
        self.inner.lock().control_repo(repo).default_branch = branch.to_owned();
    }

    /// When false, creating a hook whose URL host is loopback is refused with 422, as on GitHub.
    pub fn allow_loopback_hooks(&self, allow: bool) {
        self.inner.lock().allow_loopback = allow;
    }

    /// When true, creating a hook sends it a `ping` (before answering), as GitHub does (default false).
    /// The ranges `GET /meta` lists as `hooks` from now on.
    pub fn set_meta_hooks(&self, ranges: &[&str]) {
        self.inner.lock().meta_hooks = Some(ranges.iter().map(|r| (*r).to_owned()).collect());
    }

    pub fn ping_on_create(&self, enabled: bool) {
        self.inner.lock().ping_on_create = enabled;
    }

    /// Holds back redeliveries asked for from now on (GitHub sends them later, not while
    /// answering the request) until `release_redeliveries`.
    pub fn hold_redeliveries(&self) {
        self.inner.lock().held_redeliveries.get_or_insert_with(Vec::new);
    }

    /// Sends the redeliveries held back, and sends later ones at once again.
    pub async fn release_redeliveries(&self) {
        let held = self.inner.lock().held_redeliveries.take().unwrap_or_default();
        for out in held {
            self.inner.deliver(out).await;
        }
    }

    /// How many redeliveries were asked for.
    pub fn redelivery_requests(&self) -> usize {
        self.inner.lock().redelivery_requests
    }

    /// The repository's hooks with their real secrets.
    pub fn hooks(&self, repo: &str) -> Vec<FakeHook> {
        self.inner.lock().control_repo(repo).hooks.iter().map(Hook::public).collect()
    }

    /// Adds a hook directly (as if someone created it on GitHub); returns its id.
    pub fn add_hook(&self, repo: &str, url: &str, secret: Option<&str>, events: &[&str]) -> u64 {
        let mut state = self.inner.lock();
        state.next_hook_id += 1;
        let id = state.next_hook_id;
        let now = rfc3339_now();
        state.control_repo(repo).hooks.push(Hook {
            id,
            active: true,
            events: events.iter().map(|e| e.to_string()).collect(),
            url: url.to_owned(),
            content_type: "json".into(),
            secret: secret.map(str::to_owned),
            insecure_ssl: "0".into(),
            created_at: now.clone(),
            updated_at: now,
            last_response: json!({"code": null, "status": "unused", "message": null}),
            deliveries: Vec::new(),
        });
        id
    }

    /// Deletes a hook as if someone did it on GitHub; false when there was none.
    pub fn delete_hook(&self, repo: &str, hook_id: u64) -> bool {
        let mut state = self.inner.lock();
        let hooks = &mut state.control_repo(repo).hooks;
        let before = hooks.len();
        hooks.retain(|h| h.id != hook_id);
        hooks.len() != before
    }

    /// Sends `payload` (with `repository` merged in) to every active hook of `repo` subscribed
    /// to `event` (or `*`), one after the other; returns the deliveries' GUIDs.
    pub async fn trigger(&self, repo: &str, event: &str, mut payload: Value) -> Vec<String> {
        let (repository, hook_ids) = {
            let mut state = self.inner.lock();
            let repo = state.control_repo(repo);
            let ids: Vec<u64> = repo.hooks.iter().filter(|h| h.wants(event)).map(|h| h.id).collect();
            (repo.payload_json(), ids)
        };
        if !payload.is_object() {
            payload = json!({});
        }
        match payload.get_mut("repository").and_then(Value::as_object_mut) {
            Some(existing) => existing.extend(repository.as_object().unwrap().clone()),
            None => payload["repository"] = repository,
        }
        let action = payload.get("action").filter(|a| a.is_string()).cloned().unwrap_or(Value::Null);
        let body = payload.to_string();
        let mut guids = Vec::new();
        for hook_id in hook_ids {
            let guid = new_guid();
            let out = Outgoing {
                hook_id,
                event: event.to_owned(),
                guid: guid.clone(),
                action: action.clone(),
                body: body.clone(),
                redelivery: false,
            };
            if self.inner.deliver(out).await.is_some() {
                guids.push(guid);
            }
        }
        guids
    }

    /// The hook's delivery log, newest first, each entry in the detailed shape of
    /// `GET .../deliveries/{id}` (summary fields plus `url`, `request` and `response`).
    pub fn deliveries(&self, hook_id: u64) -> Vec<Value> {
        let state = self.inner.lock();
        let Some((_, hook)) = state.find_hook(hook_id) else { return Vec::new() };
        hook.deliveries.iter().rev().map(delivery_detail).collect()
    }

    /// Replaces the repository's pull requests (GitHub's JSON objects); the ETag changes.
    pub fn set_pulls(&self, repo: &str, pulls: Vec<Value>) {
        let mut state = self.inner.lock();
        state.version += 1;
        let version = state.version;
        let repo = state.control_repo(repo);
        repo.pulls = pulls;
        repo.pulls_version = version;
    }

    /// Replaces the repository's issues (GitHub's JSON objects); the ETag changes.
    pub fn set_issues(&self, repo: &str, issues: Vec<Value>) {
        let mut state = self.inner.lock();
        state.version += 1;
        let version = state.version;
        let repo = state.control_repo(repo);
        repo.issues = issues;
        repo.issues_version = version;
    }

    /// Replaces pull request `number`'s reviews (GitHub's JSON objects).
    pub fn set_reviews(&self, repo: &str, number: u64, reviews: Vec<Value>) {
        self.inner.lock().control_repo(repo).reviews.insert(number, reviews);
    }

    /// Replaces pull request `number`'s review comments (GitHub's JSON objects).
    pub fn set_review_comments(&self, repo: &str, number: u64, comments: Vec<Value>) {
        self.inner.lock().control_repo(repo).review_comments.insert(number, comments);
    }

    /// Replaces the repository's labels (GitHub's JSON objects).
    pub fn set_labels(&self, repo: &str, labels: Vec<Value>) {
        self.inner.lock().control_repo(repo).labels = labels;
    }

    /// Replaces the repository's milestones, open and closed (GitHub's JSON objects).
    pub fn set_milestones(&self, repo: &str, milestones: Vec<Value>) {
        self.inner.lock().control_repo(repo).milestones = milestones;
    }
}

fn delivery_detail(delivery: &StoredDelivery) -> Value {
    let mut detail = delivery.summary.clone();
    detail["url"] = delivery.url.clone().into();
    detail["request"] = delivery.request.clone();
    detail["response"] = delivery.response.clone();
    detail
}

// ---- FakeGitHub: authentication, rate limits and injected failures ----

async fn api_gate(State(inner): State<Arc<Inner>>, request: Request, next: Next) -> Response {
    enum Gate {
        Pass,
        Unauthorized,
        Limited,
        Injected(Failure),
    }
    let path = request.uri().path().to_owned();
    let free = path == "/rate_limit";
    let anonymous_ok = free || path == "/meta";
    let token = auth_token(request.headers());
    let gate = {
        let mut state = inner.lock();
        state.requests += 1;
        state.refresh_rate();
        let authorized = match &token {
            Some(token) => state.valid_tokens.contains(token),
            None => anonymous_ok,
        };
        if !authorized {
            Gate::Unauthorized
        } else if free {
            Gate::Pass
        } else if state.remaining == 0 {
            Gate::Limited
        } else if let Some(failure) = state.failures.pop_front() {
            Gate::Injected(failure)
        } else if let Some(at) = state.path_failures.iter().position(|(prefix, _)| path.starts_with(prefix.as_str())) {
            Gate::Injected(Failure::Status(state.path_failures.remove(at).1))
        } else {
            Gate::Pass
        }
    };
    let (mut response, chargeable) = match gate {
        Gate::Pass => (next.run(request).await, !free),
        Gate::Unauthorized => (github_error(401, "Bad credentials"), false),
        Gate::Limited => (github_error(403, "API rate limit exceeded for user ID 1."), false),
        Gate::Injected(failure) => (failure.response(), true),
    };
    let mut state = inner.lock();
    if chargeable && response.status() != StatusCode::NOT_MODIFIED {
        state.remaining = state.remaining.saturating_sub(1);
        state.quota_used += 1;
    }
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(state.remaining));
    headers.insert("x-ratelimit-used", HeaderValue::from(RATE_LIMIT.saturating_sub(state.remaining)));
    headers.insert("x-ratelimit-reset", HeaderValue::from(state.reset));
    headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    response
}

// ---- FakeGitHub: handlers ----

type Fake = State<Arc<Inner>>;

async fn meta(State(inner): Fake) -> Response {
    let hooks = inner.lock().meta_hooks.clone();
    let hooks = hooks.unwrap_or_else(|| vec!["192.30.252.0/22".into(), "185.199.108.0/22".into()]);
    json_response(
        200,
        json!({
            "verifiable_password_authentication": false,
            "hooks": hooks,
            "api": ["192.30.252.0/22"],
            "git": ["192.30.252.0/22"],
        }),
    )
}

async fn rate_limit(State(inner): Fake) -> Response {
    let state = inner.lock();
    let core = json!({
        "limit": RATE_LIMIT,
        "remaining": state.remaining,
        "reset": state.reset,
        "used": RATE_LIMIT.saturating_sub(state.remaining),
        "resource": "core",
    });
    json_response(200, json!({"resources": {"core": core}, "rate": core}))
}

async fn get_repo(State(inner): Fake, Path((owner, name)): Path<(String, String)>) -> Response {
    match inner.lock().repo(&owner, &name) {
        Some(repo) => json_response(200, repo.json()),
        None => not_found(),
    }
}

async fn list_pulls(
    State(inner): Fake,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    list_items(&inner, &owner, &name, query, &headers, false)
}

async fn list_issues(
    State(inner): Fake,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    list_items(&inner, &owner, &name, query, &headers, true)
}

/// Pulls or issues: state, since (issues), sort, direction, pagination, ETag / 304.
fn list_items(
    inner: &Inner,
    owner: &str,
    name: &str,
    query: Option<String>,
    headers: &HeaderMap,
    issues: bool,
) -> Response {
    let (full_name, mut items, version) = {
        let state = inner.lock();
        let Some(repo) = state.repo(owner, name) else { return not_found() };
        if issues {
            (repo.full_name.clone(), repo.issues.clone(), repo.issues_version)
        } else {
            (repo.full_name.clone(), repo.pulls.clone(), repo.pulls_version)
        }
    };
    let params = parse_query(query.as_deref());
    let wanted_state = param(&params, "state").unwrap_or("open");
    if wanted_state != "all" {
        items.retain(|item| item.get("state").and_then(Value::as_str).unwrap_or("open") == wanted_state);
    }
    if let Some(since) = param(&params, "since").filter(|_| issues).and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        items.retain(|item| timestamp(item, "updated_at").is_none_or(|t| t >= since));
    }
    let sort = param(&params, "sort");
    let field = match sort.unwrap_or("created") {
        "created" => Some("created_at"),
        "updated" => Some("updated_at"),
        _ => None,
    };
    let default_direction = if issues || matches!(sort, None | Some("created")) { "desc" } else { "asc" };
    if let Some(field) = field {
        items.sort_by_key(|item| timestamp(item, field));
        if param(&params, "direction").unwrap_or(default_direction) == "desc" {
            items.reverse();
        }
    }
    let kind = if issues { "issues" } else { "pulls" };
    list_page(inner, &format!("repos/{full_name}/{kind}"), items, query, version, headers)
}

/// One page of a list as GitHub serves it: pagination (`Link`), a strong ETag of the
/// page (with `version`: 0 for lists whose ETags follow their pages' content only), 304
/// for a match.
fn list_page(
    inner: &Inner,
    resource: &str,
    items: Vec<Value>,
    query: Option<String>,
    version: u64,
    headers: &HeaderMap,
) -> Response {
    let params = parse_query(query.as_deref());
    let (page, link) = paginate(items, &params, &format!("{}/{resource}", inner.base_url));
    let body = serde_json::to_vec(&page).unwrap();
    let etag = format!("\"{:016x}\"", hash_of((resource, &query, version, &body)));
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().trim_start_matches("W/"))
        .any(|v| v == etag || v == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = (StatusCode::OK, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        if let Some(link) = link {
            response.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).unwrap());
        }
        response
    };
    response.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
    response
}

async fn list_reviews(
    State(inner): Fake,
    Path((owner, name, number)): Path<(String, String, u64)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (full_name, mut items, version) = {
        let state = inner.lock();
        let Some(repo) = state.repo(&owner, &name).filter(|r| r.has_pull(number)) else { return not_found() };
        (repo.full_name.clone(), repo.reviews.get(&number).cloned().unwrap_or_default(), 0)
    };
    // Chronological, as GitHub lists them.
    items.sort_by_key(|r| r["id"].as_u64());
    list_page(&inner, &format!("repos/{full_name}/pulls/{number}/reviews"), items, query, version, &headers)
}

async fn list_review_comments(
    State(inner): Fake,
    Path((owner, name, number)): Path<(String, String, u64)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (full_name, mut items, version) = {
        let state = inner.lock();
        let Some(repo) = state.repo(&owner, &name).filter(|r| r.has_pull(number)) else { return not_found() };
        (repo.full_name.clone(), repo.review_comments.get(&number).cloned().unwrap_or_default(), 0)
    };
    let params = parse_query(query.as_deref());
    let field = if param(&params, "sort") == Some("updated") { "updated_at" } else { "created_at" };
    items.sort_by_key(|item| (timestamp(item, field), item["id"].as_u64()));
    if param(&params, "direction") == Some("desc") {
        items.reverse();
    }
    list_page(&inner, &format!("repos/{full_name}/pulls/{number}/comments"), items, query, version, &headers)
}

async fn list_labels(
    State(inner): Fake,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (full_name, mut items, version) = {
        let state = inner.lock();
        let Some(repo) = state.repo(&owner, &name) else { return not_found() };
        (repo.full_name.clone(), repo.labels.clone(), 0)
    };
    items.sort_by_key(|l| l["id"].as_u64());
    list_page(&inner, &format!("repos/{full_name}/labels"), items, query, version, &headers)
}

/// `state` (open by default, closed, all); sorted by `due_on` (the default) or
/// `completeness`, ascending unless `direction=desc`.
async fn list_milestones(
    State(inner): Fake,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (full_name, mut items, version) = {
        let state = inner.lock();
        let Some(repo) = state.repo(&owner, &name) else { return not_found() };
        (repo.full_name.clone(), repo.milestones.clone(), 0)
    };
    let params = parse_query(query.as_deref());
    let wanted = param(&params, "state").unwrap_or("open");
    if wanted != "all" {
        items.retain(|m| m.get("state").and_then(Value::as_str).unwrap_or("open") == wanted);
    }
    // Milestones without a due date come last, as on GitHub.
    items.sort_by_key(|m| (timestamp(m, "due_on").is_none(), timestamp(m, "due_on"), m["number"].as_u64()));
    if param(&params, "direction") == Some("desc") {
        items.reverse();
    }
    list_page(&inner, &format!("repos/{full_name}/milestones"), items, query, version, &headers)
}

async fn list_hooks(
    State(inner): Fake,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let state = inner.lock();
    let Some(repo) = state.repo(&owner, &name) else { return not_found() };
    let hooks = repo.hooks.iter().map(|h| h.json(&inner.base_url, &repo.full_name)).collect();
    let params = parse_query(query.as_deref());
    let (page, link) = paginate(hooks, &params, &format!("{}/repos/{}/hooks", inner.base_url, repo.full_name));
    let mut response = json_response(200, Value::Array(page));
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).unwrap());
    }
    response
}

/// The 422 GitHub gives for a URL it cannot deliver to, if any.
fn check_hook_url(url: &str, allow_loopback: bool) -> Result<(), String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() => parsed,
        _ => return Err("url is not a valid URL".into()),
    };
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if loopback && !allow_loopback {
        return Err(format!(
            "Sorry, the URL host {host} is not supported because it isn't reachable over the public Internet"
        ));
    }
    Ok(())
}

/// The request's JSON object, or GitHub's 400.
fn parse_body(body: &Bytes) -> Result<Value, Box<Response>> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| Box::new(github_error(400, "Problems parsing JSON")))
}

fn hook_id(raw: &str) -> Option<u64> {
    raw.parse().ok()
}

async fn create_hook(State(inner): Fake, Path((owner, name)): Path<(String, String)>, body: Bytes) -> Response {
    if inner.lock().repo(&owner, &name).is_none() {
        return not_found();
    }
    let input = match parse_body(&body) {
        Ok(input) => input,
        Err(response) => return *response,
    };
    let config = &input["config"];
    let Some(url) = config["url"].as_str().filter(|u| !u.is_empty()) else {
        return validation_failed("Config must contain URL for webhooks");
    };
    let (created, ping) = {
        let mut state = inner.lock();
        if let Err(message) = check_hook_url(url, state.allow_loopback) {
            return validation_failed(&message);
        }
        state.next_hook_id += 1;
        let id = state.next_hook_id;
        let ping = state.ping_on_create;
        let Some(repo) = state.repo_mut(&owner, &name) else { return not_found() };
        if repo.hooks.iter().any(|h| h.url == url) {
            return validation_failed("Hook already exists on this repository");
        }
        let now = rfc3339_now();
        let hook = Hook {
            id,
            active: input["active"].as_bool().unwrap_or(true),
            events: strings(&input["events"]).unwrap_or_else(|| vec!["push".into()]),
            url: url.to_owned(),
            content_type: config["content_type"].as_str().unwrap_or("form").to_owned(),
            secret: config["secret"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
            insecure_ssl: string_or_number(&config["insecure_ssl"]).unwrap_or_else(|| "0".into()),
            created_at: now.clone(),
            updated_at: now,
            last_response: json!({"code": null, "status": "unused", "message": null}),
            deliveries: Vec::new(),
        };
        let created = hook.json(&inner.base_url, &repo.full_name);
        repo.hooks.push(hook);
        (created, ping.then_some(id))
    };
    if let Some(id) = ping {
        // GitHub queues this ping as it creates the hook; it may reach the receiver before
        // the API's answer reaches the caller. The fake takes that worst case every time:
        // the ping is answered before the create call is.
        inner.ping(id).await;
    }
    let mut response = json_response(201, created.clone());
    if let Some(location) = created["url"].as_str() {
        response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
    }
    response
}

async fn get_hook(State(inner): Fake, Path((owner, name, id)): Path<(String, String, String)>) -> Response {
    let state = inner.lock();
    match state.repo(&owner, &name).and_then(|r| Some((r, r.hook(hook_id(&id)?)?))) {
        Some((repo, hook)) => json_response(200, hook.json(&inner.base_url, &repo.full_name)),
        None => not_found(),
    }
}

async fn update_hook(
    State(inner): Fake,
    Path((owner, name, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let mut state = inner.lock();
    let allow_loopback = state.allow_loopback;
    let Some(repo) = state.repo_mut(&owner, &name) else { return not_found() };
    let Some(id) = hook_id(&id).filter(|id| repo.hook(*id).is_some()) else { return not_found() };
    let input = match parse_body(&body) {
        Ok(input) => input,
        Err(response) => return *response,
    };
    let new_url = input["config"]["url"].as_str();
    if let Some(url) = new_url {
        if let Err(message) = check_hook_url(url, allow_loopback) {
            return validation_failed(&message);
        }
        if repo.hooks.iter().any(|h| h.id != id && h.url == url) {
            return validation_failed("Hook already exists on this repository");
        }
    }
    let full_name = repo.full_name.clone();
    let hook = repo.hook_mut(id).unwrap();
    if let Some(active) = input["active"].as_bool() {
        hook.active = active;
    }
    if let Some(events) = strings(&input["events"]) {
        hook.events = events;
    }
    for event in strings(&input["add_events"]).unwrap_or_default() {
        if !hook.events.contains(&event) {
            hook.events.push(event);
        }
    }
    let removed = strings(&input["remove_events"]).unwrap_or_default();
    hook.events.retain(|e| !removed.contains(e));
    if let Some(config) = input.get("config").filter(|c| c.is_object()) {
        // As on GitHub, `config` here replaces the whole configuration: a secret not
        // sent again is dropped (PATCH .../config is the one that merges).
        set_config_fields(hook, config);
        hook.secret = config["secret"].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    }
    hook.updated_at = rfc3339_now();
    json_response(200, hook.json(&inner.base_url, &full_name))
}

/// The `config` fields both hook updates set the same way (the secret they treat apart).
fn set_config_fields(hook: &mut Hook, config: &Value) {
    if let Some(url) = config["url"].as_str() {
        hook.url = url.to_owned();
    }
    if let Some(content_type) = config["content_type"].as_str() {
        hook.content_type = content_type.to_owned();
    }
    if let Some(insecure_ssl) = string_or_number(&config["insecure_ssl"]) {
        hook.insecure_ssl = insecure_ssl;
    }
}

async fn delete_hook(State(inner): Fake, Path((owner, name, id)): Path<(String, String, String)>) -> Response {
    let mut state = inner.lock();
    let Some(repo) = state.repo_mut(&owner, &name) else { return not_found() };
    let Some(id) = hook_id(&id).filter(|id| repo.hook(*id).is_some()) else { return not_found() };
    repo.hooks.retain(|h| h.id != id);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_hook_config(State(inner): Fake, Path((owner, name, id)): Path<(String, String, String)>) -> Response {
    let state = inner.lock();
    match state.repo(&owner, &name).and_then(|r| r.hook(hook_id(&id)?)) {
        Some(hook) => json_response(200, hook.config_json()),
        None => not_found(),
    }
}

async fn update_hook_config(
    State(inner): Fake,
    Path((owner, name, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let mut state = inner.lock();
    let allow_loopback = state.allow_loopback;
    let Some(repo) = state.repo_mut(&owner, &name) else { return not_found() };
    let Some(id) = hook_id(&id).filter(|id| repo.hook(*id).is_some()) else { return not_found() };
    let config = match parse_body(&body) {
        Ok(config) => config,
        Err(response) => return *response,
    };
    if let Some(url) = config["url"].as_str() {
        if let Err(message) = check_hook_url(url, allow_loopback) {
            return validation_failed(&message);
        }
    }
    let hook = repo.hook_mut(id).unwrap();
    set_config_fields(hook, &config);
    if let Some(secret) = config["secret"].as_str() {
        hook.secret = Some(secret.to_owned()).filter(|s| !s.is_empty());
    }
    hook.updated_at = rfc3339_now();
    json_response(200, hook.config_json())
}

/// The hook's id if it belongs to `owner/name`.
fn hook_of(inner: &Inner, owner: &str, name: &str, id: &str) -> Option<u64> {
    let id = hook_id(id)?;
    inner.lock().repo(owner, name)?.hook(id).map(|h| h.id)
}

async fn ping_hook(State(inner): Fake, Path((owner, name, id)): Path<(String, String, String)>) -> Response {
    let Some(id) = hook_of(&inner, &owner, &name, &id) else { return not_found() };
    // Sent before answering, so a test sees the ping as soon as the call returns.
    inner.ping(id).await;
    StatusCode::NO_CONTENT.into_response()
}

async fn list_deliveries(
    State(inner): Fake,
    Path((owner, name, id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = parse_query(query.as_deref());
    let per_page = per_page(&params);
    let cursor: Option<u64> = param(&params, "cursor").and_then(|c| c.trim_start_matches("v1_").parse().ok());
    let state = inner.lock();
    let Some((repo, hook)) = state.repo(&owner, &name).and_then(|r| Some((r, r.hook(hook_id(&id)?)?))) else {
        return not_found();
    };
    let mut newest_first = hook
        .deliveries
        .iter()
        .rev()
        .map(|d| &d.summary)
        .filter(|s| cursor.is_none_or(|c| s["id"].as_u64().unwrap_or(0) <= c));
    let page: Vec<Value> = newest_first.by_ref().take(per_page).cloned().collect();
    let mut response = json_response(200, Value::Array(page));
    if let Some(next) = newest_first.next() {
        let link = format!(
            "<{}/repos/{}/hooks/{}/deliveries?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
            inner.base_url, repo.full_name, hook.id, next["id"]
        );
        response.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).unwrap());
    }
    response
}

fn find_delivery<'a>(
    state: &'a FakeState,
    owner: &str,
    name: &str,
    id: &str,
    delivery: &str,
) -> Option<&'a StoredDelivery> {
    let delivery: u64 = delivery.parse().ok()?;
    let hook = state.repo(owner, name)?.hook(hook_id(id)?)?;
    hook.deliveries.iter().find(|d| d.summary["id"].as_u64() == Some(delivery))
}

async fn get_delivery(
    State(inner): Fake,
    Path((owner, name, id, delivery)): Path<(String, String, String, String)>,
) -> Response {
    let state = inner.lock();
    match find_delivery(&state, &owner, &name, &id, &delivery) {
        Some(found) => json_response(200, delivery_detail(found)),
        None => not_found(),
    }
}

async fn redeliver(
    State(inner): Fake,
    Path((owner, name, id, delivery)): Path<(String, String, String, String)>,
) -> Response {
    let out = {
        let state = inner.lock();
        let Some(found) = find_delivery(&state, &owner, &name, &id, &delivery) else { return not_found() };
        Outgoing {
            hook_id: hook_id(&id).unwrap(),
            event: found.summary["event"].as_str().unwrap_or_default().to_owned(),
            guid: found.summary["guid"].as_str().unwrap_or_default().to_owned(),
            action: found.summary["action"].clone(),
            body: found.body.clone(),
            redelivery: true,
        }
    };
    {
        let mut state = inner.lock();
        state.redelivery_requests += 1;
        if let Some(held) = state.held_redeliveries.as_mut() {
            held.push(out);
            return json_response(202, json!({}));
        }
    }
    // Sent before answering, so a test sees the attempt as soon as the call returns.
    inner.deliver(out).await;
    json_response(202, json!({}))
}

// ---- FakeNgrok ----

struct NgrokState {
    public_url: String,
    forwards_to: String,
}

/// A fake ngrok agent API (`GET /api/tunnels`), as on http://127.0.0.1:4040.
pub struct FakeNgrok {
    addr: SocketAddr,
    state: Arc<Mutex<NgrokState>>,
    task: JoinHandle<()>,
}

impl Drop for FakeNgrok {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ngrok_tunnel(state: &NgrokState) -> Value {
    let proto = if state.public_url.starts_with("http://") { "http" } else { "https" };
    json!({
        "name": "command_line",
        "uri": "/api/tunnels/command_line",
        "public_url": state.public_url,
        "proto": proto,
        "config": {"addr": state.forwards_to, "inspect": true},
        "metrics": {},
    })
}

impl FakeNgrok {
    /// `forwards_to` is echoed as the tunnel's `config.addr` (e.g. `http://localhost:8080`).
    pub async fn start(public_url: &str, forwards_to: &str) -> FakeNgrok {
        let state =
            Arc::new(Mutex::new(NgrokState { public_url: public_url.to_owned(), forwards_to: forwards_to.to_owned() }));
        let router = Router::new()
            .route(
                "/api/tunnels",
                get(|State(state): State<Arc<Mutex<NgrokState>>>| async move {
                    let state = state.lock().unwrap();
                    let tunnels: Vec<Value> =
                        if state.public_url.is_empty() { vec![] } else { vec![ngrok_tunnel(&state)] };
                    axum::Json(json!({"tunnels": tunnels, "uri": "/api/tunnels"}))
                }),
            )
            .route(
                "/api/tunnels/{name}",
                get(|State(state): State<Arc<Mutex<NgrokState>>>, Path(name): Path<String>| async move {
                    let state = state.lock().unwrap();
                    if name == "command_line" && !state.public_url.is_empty() {
                        json_response(200, ngrok_tunnel(&state))
                    } else {
                        json_response(
                            404,
                            json!({"error_code": 102, "status_code": 404, "msg": "tunnel not found", "details": {}}),
                        )
                    }
                }),
            )
            .with_state(state.clone());
        let (addr, task) = serve(router).await;
        FakeNgrok { addr, state, task }
    }

    /// The agent API base, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the tunnel's public URL; an empty string means no tunnel is up.
    pub fn set_public_url(&self, url: &str) {
        self.state.lock().unwrap().public_url = url.to_owned();
    }
}

// ---- FakeSmee ----

/// A fake smee.io channel: `GET /fakechannel` streams Server-Sent Events; `send` (or a
/// `POST /fakechannel`, as GitHub would do) broadcasts one message to every listener.
pub struct FakeSmee {
    addr: SocketAddr,
    events: broadcast::Sender<String>,
    task: JoinHandle<()>,
}

impl Drop for FakeSmee {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response body fed from a channel, one chunk per event.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}

fn millis_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn smee_stream(State(events): State<broadcast::Sender<String>>, headers: HeaderMap) -> Response {
    let wants_stream =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        return ([(header::CONTENT_TYPE, "text/html")], "<h1>fake smee channel</h1>").into_response();
    }
    // Subscribe before `ready` goes out, so nothing sent after the client saw it is lost.
    let mut messages = events.subscribe();
    let (chunks, body) = mpsc::channel::<Bytes>(64);
    let _ = chunks.try_send(Bytes::from_static(b"event: ready\ndata: {}\n\n"));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = chunks.closed() => break,
                message = messages.recv() => match message {
                    Ok(text) => {
                        if chunks.send(Bytes::from(format!("event: message\ndata: {text}\n\n"))).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::new(ChannelBody(body)))
        .unwrap()
}

/// What smee does with a POST to the channel: headers (lower-cased) + body + timestamp.
async fn smee_post(State(events): State<broadcast::Sender<String>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut message: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.to_str().unwrap_or_default().to_owned())))
        .collect();
    let parsed = serde_json::from_slice(&body).unwrap_or_else(|_| {
        let pairs: serde_json::Map<String, Value> =
            form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect();
        Value::Object(pairs)
    });
    message.insert("body".into(), parsed);
    message.insert("query".into(), json!({}));
    message.insert("timestamp".into(), millis_now().into());
    let _ = events.send(Value::Object(message).to_string());
    (StatusCode::OK, "OK").into_response()
}

impl FakeSmee {
    pub async fn start() -> FakeSmee {
        let (events, _) = broadcast::channel(256);
        let router = Router::new().route("/fakechannel", get(smee_stream).post(smee_post)).with_state(events.clone());
        let (addr, task) = serve(router).await;
        FakeSmee { addr, events, task }
    }

    pub fn channel_url(&self) -> String {
        format!("http://{}/fakechannel", self.addr)
    }

    /// How many clients are listening to the stream right now.
    pub fn listeners(&self) -> usize {
        self.events.receiver_count()
    }

    /// Broadcasts one webhook delivery to every connected client (dropped when none is).
    pub fn send(&self, event: &str, delivery_id: &str, payload: Value, signature: Option<String>) {
        let mut message = json!({
            "x-github-event": event,
            "x-github-delivery": delivery_id,
            "content-type": "application/json",
            "body": payload,
            "query": {},
            "timestamp": millis_now(),
        });
        if let Some(signature) = signature {
            message["x-hub-signature-256"] = signature.into();
        }
        let _ = self.events.send(message.to_string());
    }
}

// ---- Self-tests ----

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

fn test_client() -> reqwest::Client {
    futurnal::install_tls_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One API call with the test token; `url` may be a path (`/repos/...`) or a full URL.
async fn call(fake: &FakeGitHub, method: &str, url: &str, body: Option<Value>) -> Answer {
    call_with(fake, method, url, body, &[("authorization", "Bearer test-token")]).await
}

async fn call_with(
    fake: &FakeGitHub,
    method: &str,
    url: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let url = if url.starts_with("http") { url.to_owned() } else { format!("{}{url}", fake.url()) };
    let mut request = test_client().request(method.parse().unwrap(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Answer { status, headers, body }
}

type Inbox = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook receiver on 127.0.0.1 answering `status` and keeping what it got.
async fn start_receiver(status: u16) -> (String, Inbox, JoinHandle<()>) {
    let inbox: Inbox = Arc::default();
    let router = Router::new()
        .route(
            "/hook",
            post(|State((inbox, status)): State<(Inbox, u16)>, headers: HeaderMap, body: Bytes| async move {
                inbox.lock().unwrap().push((headers, body));
                (StatusCode::from_u16(status).unwrap(), "thanks")
            }),
        )
        .with_state((inbox.clone(), status));
    let (addr, task) = serve(router).await;
    (format!("http://{addr}/hook"), inbox, task)
}

fn hook_request(url: &str, secret: &str, events: &[&str]) -> Value {
    json!({
        "name": "web",
        "active": true,
        "events": events,
        "config": {"url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0"},
    })
}

/// A fake with `octo/hello` (id 4242) and one JSON hook to a receiver answering `status`.
async fn fake_with_hook(status: u16) -> (FakeGitHub, u64, Inbox, JoinHandle<()>) {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 4242);
    let (url, inbox, task) = start_receiver(status).await;
    let created = call(&fake, "POST", "/repos/octo/hello/hooks", Some(hook_request(&url, "s3cret", &["push"]))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    (fake, created.body["id"].as_u64().unwrap(), inbox, task)
}

fn header_of<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_same_hook_twice_is_422_and_listing_masks_the_secret() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 4242);
    let request = hook_request("https://example.invalid/webhook", "s3cret", &["push", "pull_request"]);
    let created = call(&fake, "POST", "/repos/octo/hello/hooks", Some(request.clone())).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["type"], "Repository");
    assert_eq!(created.body["config"]["secret"], MASK);
    assert_eq!(created.body["last_response"], json!({"code": null, "status": "unused", "message": null}));
    let id = created.body["id"].as_u64().unwrap();
    assert_eq!(created.body["ping_url"], format!("{}/repos/octo/hello/hooks/{id}/pings", fake.url()));

    let duplicate = call(&fake, "POST", "/repos/octo/hello/hooks", Some(request)).await;
    assert_eq!(duplicate.status, 422);
    assert_eq!(duplicate.body["message"], "Validation Failed");
    assert_eq!(duplicate.body["errors"][0]["message"], "Hook already exists on this repository");

    let listed = call(&fake, "GET", "/repos/octo/hello/hooks", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(listed.body[0]["config"]["secret"], MASK);
    assert!(!listed.body.to_string().contains("s3cret"));
    let hooks = fake.hooks("octo/hello");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].secret.as_deref(), Some("s3cret"));
    assert_eq!(hooks[0].events, ["push", "pull_request"]);

    let missing =
        call(&fake, "POST", "/repos/octo/nope/hooks", Some(json!({"config": {"url": "https://x.test"}}))).await;
    assert_eq!((missing.status, missing.body["message"].as_str()), (404, Some("Not Found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_hook_urls_are_refused_only_when_loopback_is_not_allowed() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 1);
    fake.allow_loopback_hooks(false);
    let refused =
        call(&fake, "POST", "/repos/octo/hello/hooks", Some(hook_request("http://localhost:9/hook", "s", &["*"])))
            .await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.body["errors"][0]["message"],
        "Sorry, the URL host localhost is not supported because it isn't reachable over the public Internet"
    );
    fake.allow_loopback_hooks(true);
    let accepted =
        call(&fake, "POST", "/repos/octo/hello/hooks", Some(hook_request("http://127.0.0.1:9/hook", "s", &["*"])))
            .await;
    assert_eq!(accepted.status, 201, "{}", accepted.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_the_config_keeps_the_secret_and_a_hook_deleted_on_github_is_404() {
    let (fake, id, _inbox, _receiver) = fake_with_hook(200).await;
    let path = format!("/repos/octo/hello/hooks/{id}");
    let config =
        call(&fake, "PATCH", &format!("{path}/config"), Some(json!({"url": "https://example.invalid/new"}))).await;
    assert_eq!(config.status, 200, "{}", config.body);
    assert_eq!(config.body["url"], "https://example.invalid/new");
    assert_eq!(config.body["secret"], MASK);
    let patched = call(&fake, "PATCH", &path, Some(json!({"add_events": ["issues"], "remove_events": ["push"]}))).await;
    assert_eq!(patched.body["events"], json!(["issues"]));
    assert_eq!(fake.hooks("octo/hello")[0].secret.as_deref(), Some("s3cret"));

    assert!(fake.delete_hook("octo/hello", id));
    assert_eq!(call(&fake, "GET", &path, None).await.status, 404);
    let other = fake.add_hook("octo/hello", "https://example.invalid/other", None, &["*"]);
    assert_eq!(call(&fake, "DELETE", &format!("/repos/octo/hello/hooks/{other}"), None).await.status, 204);
    assert!(fake.hooks("octo/hello").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_list_answers_304_without_costing_quota() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 1);
    let pull = |n: u64, updated: &str| json!({"number": n, "state": "open", "created_at": "2024-01-01T00:00:00Z", "updated_at": updated});
    fake.set_pulls("octo/hello", vec![pull(1, "2024-02-01T00:00:00Z"), pull(2, "2024-03-01T00:00:00Z")]);
    let path = "/repos/octo/hello/pulls?state=all&sort=updated&direction=desc&per_page=100&page=1";
    let first = call(&fake, "GET", path, None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body[0]["number"], 2, "newest update first");
    let etag = first.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "strong ETag: {etag}");
    assert_eq!(first.header("x-ratelimit-remaining"), "4999");
    let used = fake.quota_used();

    let auth = ("authorization", "token test-token");
    let again = call_with(&fake, "GET", path, None, &[auth, ("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert_eq!(again.body, Value::Null);
    assert_eq!(again.header("x-ratelimit-remaining"), "4999");
    assert_eq!(fake.quota_used(), used, "a 304 is free");
    assert_eq!(fake.requests(), 2);

    fake.set_pulls("octo/hello", vec![pull(1, "2024-02-01T00:00:00Z")]);
    let changed = call_with(&fake, "GET", path, None, &[auth, ("if-none-match", &etag)]).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), etag);
    assert_eq!(fake.quota_used(), used + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_filter_by_since_and_page_with_next_and_last_links() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 1);
    let issues = (1..=5)
        .map(|n| json!({"number": n, "state": "open", "updated_at": format!("2024-01-0{n}T00:00:00Z")}))
        .collect();
    fake.set_issues("octo/hello", issues);
    let first =
        call(&fake, "GET", "/repos/octo/hello/issues?state=all&since=2024-01-02T00:00:00Z&per_page=2", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body.as_array().unwrap().len(), 2);
    let link = first.header("link").to_owned();
    assert!(link.contains("page=2>; rel=\"next\""), "{link}");
    assert!(link.contains("page=2>; rel=\"last\""), "4 issues since the 2nd, 2 per page: {link}");
    let next = link.split(';').next().unwrap().trim_matches(|c| c == '<' || c == '>');
    let second = call(&fake, "GET", next, None).await;
    assert_eq!(second.body.as_array().unwrap().len(), 2);
    assert!(second.header("link").contains("rel=\"prev\""));
    assert!(!second.header("link").contains("rel=\"next\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_comments_labels_and_milestones_page_with_an_etag_per_page() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 1);
    let label = |n: u64, color: &str| json!({"id": n, "name": format!("l{n}"), "color": color});
    fake.set_labels("octo/hello", (1..=3).map(|n| label(n, "000000")).collect());
    let auth = ("authorization", "token test-token");
    let first = call(&fake, "GET", "/repos/octo/hello/labels?per_page=2", None).await;
    assert_eq!(first.body.as_array().unwrap().len(), 2);
    let next = first.header("link").split(';').next().unwrap().trim_matches(|c| c == '<' || c == '>').to_owned();
    let second = call(&fake, "GET", &next, None).await;
    assert_eq!(second.body[0]["name"], "l3");
    let (etag1, etag2) = (first.header("etag").to_owned(), second.header("etag").to_owned());
    assert_ne!(etag1, etag2, "each page has its own ETag");
    // The last label changes: the first page is the same (304, free), the second is not.
    fake.set_labels("octo/hello", vec![label(1, "000000"), label(2, "000000"), label(3, "ffffff")]);
    let used = fake.quota_used();
    let path = "/repos/octo/hello/labels?per_page=2";
    let again = call_with(&fake, "GET", path, None, &[auth, ("if-none-match", &etag1)]).await;
    assert_eq!(again.status, 304);
    let changed = call_with(&fake, "GET", &next, None, &[auth, ("if-none-match", &etag2)]).await;
    assert_eq!((changed.status, &changed.body[0]["color"]), (200, &json!("ffffff")));
    assert_eq!(fake.quota_used(), used + 1);

    // Milestones: open by default, `state=all` for both; reviews and comments per pull request.
    let milestone = |n: u64, state: &str| json!({"number": n, "state": state, "updated_at": "2024-01-01T00:00:00Z"});
    fake.set_milestones("octo/hello", vec![milestone(1, "closed"), milestone(2, "open")]);
    let open = call(&fake, "GET", "/repos/octo/hello/milestones", None).await;
    assert_eq!(open.body, json!([milestone(2, "open")]));
    let all = call(&fake, "GET", "/repos/octo/hello/milestones?state=all", None).await;
    assert_eq!(all.body.as_array().unwrap().len(), 2);
    fake.set_reviews(
        "octo/hello",
        5,
        vec![json!({"id": 9, "state": "APPROVED"}), json!({"id": 8, "state": "COMMENTED"})],
    );
    let reviews = call(&fake, "GET", "/repos/octo/hello/pulls/5/reviews", None).await;
    assert_eq!((reviews.body[0]["id"].as_u64(), reviews.body[1]["id"].as_u64()), (Some(8), Some(9)), "oldest first");
    let comments = call(&fake, "GET", "/repos/octo/hello/pulls/5/comments", None).await;
    assert_eq!((comments.status, comments.body.clone()), (200, json!([])), "a pull request without comments");
    assert_eq!(call(&fake, "GET", "/repos/octo/hello/pulls/6/reviews", None).await.status, 404, "no such pull");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_rate_limit_is_403_until_the_reset_time() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 1);
    // The fake's rate-limit clock follows tokio's, which is paused: the reset comes when
    // virtual time reaches it, at no real cost.
    let reset = fake.use_tokio_clock() + 2;
    fake.set_rate_limit(0, reset);
    let limited = call(&fake, "GET", "/repos/octo/hello", None).await;
    assert_eq!(limited.status, 403);
    assert_eq!(limited.body["message"], "API rate limit exceeded for user ID 1.");
    assert_eq!(limited.header("x-ratelimit-remaining"), "0");
    assert_eq!(limited.header("x-ratelimit-reset"), reset.to_string());
    assert_eq!(limited.header("x-ratelimit-resource"), "core");
    let status = call(&fake, "GET", "/rate_limit", None).await;
    assert_eq!(status.body["resources"]["core"]["remaining"], 0);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let ok = call(&fake, "GET", "/repos/octo/hello", None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-ratelimit-remaining"), "4999");
    assert_eq!(ok.header("x-ratelimit-used"), "1");
    assert_eq!(ok.body["default_branch"], "main");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_limit_answers_retry_after_then_the_next_call_succeeds() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 1);
    fake.fail_next_with_retry_after(429, 7);
    fake.fail_next_with_status(502);
    let limited = call(&fake, "GET", "/repos/octo/hello", None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), "7");
    assert!(limited.body["message"].as_str().unwrap().starts_with("You have exceeded a secondary rate limit"));
    let broken = call(&fake, "GET", "/repos/octo/hello", None).await;
    assert_eq!(broken.status, 502);
    let ok = call(&fake, "GET", "/repos/octo/hello", None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(fake.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_token_is_401_bad_credentials() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hello", 1);
    let bad = call_with(&fake, "GET", "/repos/octo/hello", None, &[("authorization", "Bearer nope")]).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body, json!({"message": "Bad credentials", "documentation_url": DOCS}));
    assert_eq!(call_with(&fake, "GET", "/repos/octo/hello", None, &[]).await.status, 401);
    assert_eq!(fake.quota_used(), 0);

    fake.set_valid_tokens(["other"]);
    let other = call_with(&fake, "GET", "/repos/octo/hello", None, &[("authorization", "token other")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(call(&fake, "GET", "/repos/octo/hello", None).await.status, 401);
    let meta = call_with(&fake, "GET", "/meta", None, &[]).await;
    assert_eq!(meta.body["hooks"][0], "192.30.252.0/22");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_delivers_a_correctly_signed_request_and_logs_ok() {
    let (fake, id, inbox, _receiver) = fake_with_hook(200).await;
    let guids = fake.trigger("octo/hello", "push", json!({"ref": "refs/heads/main"})).await;
    assert_eq!(guids.len(), 1);
    assert!(fake.trigger("octo/hello", "issues", json!({"action": "opened"})).await.is_empty(), "not subscribed");

    let received = inbox.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (headers, body) = &received[0];
    futurnal_github::signature::verify_any(
        [&WebhookSecret::new("s3cret")],
        body,
        headers.get("x-hub-signature-256").map(|v| v.as_bytes()),
    )
    .expect("signed with the hook's secret");
    assert_eq!(header_of(headers, "x-github-event"), "push");
    assert_eq!(header_of(headers, "x-github-delivery"), guids[0]);
    assert_eq!(header_of(headers, "x-github-hook-id"), id.to_string());
    assert_eq!(header_of(headers, "x-github-hook-installation-target-type"), "repository");
    assert_eq!(header_of(headers, "x-github-hook-installation-target-id"), "4242");
    assert_eq!(header_of(headers, "content-type"), "application/json");
    assert!(header_of(headers, "user-agent").starts_with("GitHub-Hookshot/"));
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["ref"], "refs/heads/main");
    assert_eq!(
        (payload["repository"]["id"].as_u64(), payload["repository"]["full_name"].as_str()),
        (Some(4242), Some("octo/hello"))
    );

    let log = fake.deliveries(id);
    assert_eq!(log.len(), 1);
    assert_eq!((log[0]["status"].as_str(), log[0]["status_code"].as_u64()), (Some("OK"), Some(200)));
    assert_eq!((log[0]["guid"].as_str(), log[0]["redelivery"].as_bool()), (Some(guids[0].as_str()), Some(false)));
    assert_eq!(log[0]["repository_id"], 4242);
    assert_eq!(log[0]["action"], Value::Null);
    let hook = call(&fake, "GET", &format!("/repos/octo/hello/hooks/{id}"), None).await;
    assert_eq!(hook.body["last_response"], json!({"code": 200, "status": "active", "message": "OK"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_failing_hooks_are_logged_like_github() {
    let (fake, failing, _inbox, _receiver) = fake_with_hook(503).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let unreachable = fake.add_hook("octo/hello", &format!("http://{closed}/hook"), None, &["push"]);
    let guids = fake.trigger("octo/hello", "push", json!({})).await;
    assert_eq!(guids.len(), 2);

    let failed = &fake.deliveries(failing)[0];
    assert_eq!(
        (failed["status"].as_str(), failed["status_code"].as_u64()),
        (Some("Invalid HTTP Response: 503"), Some(503))
    );
    assert_eq!(failed["response"]["payload"], "thanks");
    let lost = &fake.deliveries(unreachable)[0];
    assert_eq!(lost["status_code"], 0);
    assert_eq!(lost["status"], "failed to connect to host");
    assert!(lost["request"]["headers"].get("X-Hub-Signature-256").is_none(), "no secret, no signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_pages_newest_first_with_a_cursor_link() {
    let (fake, id, _inbox, _receiver) = fake_with_hook(200).await;
    for n in 0..5 {
        fake.trigger("octo/hello", "push", json!({"n": n})).await;
    }
    let mut url = format!("/repos/octo/hello/hooks/{id}/deliveries?per_page=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = call(&fake, "GET", &url, None).await;
        assert_eq!(page.status, 200);
        pages += 1;
        seen.extend(page.body.as_array().unwrap().iter().map(|d| d["id"].as_u64().unwrap()));
        let link = page.header("link");
        if link.is_empty() {
            break;
        }
        assert!(link.ends_with("; rel=\"next\"") && link.contains("cursor="), "{link}");
        url = link.split(';').next().unwrap().trim_matches(|c| c == '<' || c == '>').to_owned();
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first: {seen:?}");

    let detail = call(&fake, "GET", &format!("/repos/octo/hello/hooks/{id}/deliveries/{}", seen[0]), None).await;
    assert_eq!(detail.body["request"]["payload"]["n"], 4);
    assert_eq!(detail.body["request"]["headers"]["X-GitHub-Event"], "push");
    assert_eq!(detail.body["response"]["payload"], "thanks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_resends_the_same_guid_as_a_new_attempt() {
    let (fake, id, inbox, _receiver) = fake_with_hook(200).await;
    let guid = fake.trigger("octo/hello", "push", json!({"action": "x"})).await.remove(0);
    let original = fake.deliveries(id)[0]["id"].as_u64().unwrap();
    let attempt =
        call(&fake, "POST", &format!("/repos/octo/hello/hooks/{id}/deliveries/{original}/attempts"), None).await;
    assert_eq!((attempt.status, &attempt.body), (202, &json!({})));

    let received = inbox.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    assert_eq!(header_of(&received[1].0, "x-github-delivery"), guid);
    assert_eq!(received[0].1, received[1].1, "the same payload");
    let log = fake.deliveries(id);
    assert_eq!(log[0]["guid"], guid.as_str());
    assert_eq!(log[0]["redelivery"], true);
    assert_eq!(log[0]["action"], "x");
    assert!(log[0]["id"].as_u64().unwrap() > original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_sent_to_the_hook_with_its_id() {
    let (fake, id, inbox, _receiver) = fake_with_hook(200).await;
    let pinged = call(&fake, "POST", &format!("/repos/octo/hello/hooks/{id}/pings"), None).await;
    assert_eq!(pinged.status, 204);
    let received = inbox.lock().unwrap().clone();
    assert_eq!(header_of(&received[0].0, "x-github-event"), "ping");
    let payload: Value = serde_json::from_slice(&received[0].1).unwrap();
    assert_eq!(payload["hook_id"], id);
    assert_eq!(payload["hook"]["config"]["secret"], MASK);
    assert_eq!(payload["repository"]["full_name"], "octo/hello");
    assert!(payload["zen"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngrok_lists_its_tunnel_and_follows_the_public_url() {
    let ngrok = FakeNgrok::start("https://abc123.ngrok-free.app", "http://localhost:8080").await;
    let get = || async { test_client().get(format!("{}/api/tunnels", ngrok.url())).send().await.unwrap() };
    let body: Value = get().await.json().await.unwrap();
    assert_eq!(body["uri"], "/api/tunnels");
    let tunnel = &body["tunnels"][0];
    assert_eq!(tunnel["name"], "command_line");
    assert_eq!(tunnel["public_url"], "https://abc123.ngrok-free.app");
    assert_eq!(tunnel["proto"], "https");
    assert_eq!(tunnel["config"], json!({"addr": "http://localhost:8080", "inspect": true}));
    ngrok.set_public_url("https://other.ngrok-free.app");
    let body: Value = get().await.json().await.unwrap();
    assert_eq!(body["tunnels"][0]["public_url"], "https://other.ngrok-free.app");
}

/// Reads the event stream until `text` holds `count` complete events (or panics after 5 s).
async fn read_events(response: &mut reqwest::Response, text: &mut String, count: usize) {
    let read = async {
        while text.matches("\n\n").count() < count {
            let chunk = response.chunk().await.unwrap().expect("the stream stays open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("events arrive in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smee_streams_ready_then_a_message_with_headers_and_body() {
    let smee = FakeSmee::start().await;
    let mut response =
        test_client().get(smee.channel_url()).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    read_events(&mut response, &mut text, 1).await;
    assert_eq!(text, "event: ready\ndata: {}\n\n");
    assert_eq!(smee.listeners(), 1);

    smee.send("push", "guid-1", json!({"ref": "refs/heads/main"}), Some("sha256=abc".into()));
    read_events(&mut response, &mut text, 2).await;
    let all = text.clone();
    let data = all.split("event: message\ndata: ").nth(1).unwrap().trim_end();
    let message: Value = serde_json::from_str(data).unwrap();
    assert_eq!(message["x-github-event"], "push");
    assert_eq!(message["x-github-delivery"], "guid-1");
    assert_eq!(message["x-hub-signature-256"], "sha256=abc");
    assert_eq!(message["content-type"], "application/json");
    assert_eq!(message["body"]["ref"], "refs/heads/main");
    assert!(message["timestamp"].as_u64().unwrap() > 0);
}
