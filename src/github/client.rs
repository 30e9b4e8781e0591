//! A small GitHub REST client on reqwest: token auth, GitHub's recommended headers,
//! waiting (not failing) when the rate limit is out, honouring `Retry-After` on secondary
//! limits, retrying 5xx with backoff, following `Link` pagination, and conditional
//! requests with remembered ETags (a 304 costs no quota). Errors are one clear line.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH, LINK, RETRY_AFTER, USER_AGENT,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const API_VERSION: &str = "2022-11-28";
/// Retries of one request for 5xx, secondary limits and transport errors.
const MAX_RETRIES: u32 = 4;
/// Pages `get_conditional_all` reads at most (100 items each): a bound, should GitHub's
/// `Link` headers ever loop.
const MAX_PAGES: usize = 1_000;
/// Longest wait for a rate-limit reset or `Retry-After` before giving up with an error.
const MAX_WAIT: Duration = Duration::from_secs(3700);

/// A token; `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// `GITHUB_TOKEN`, then `GH_TOKEN`, then the OS keychain (`sources github token set`).
    pub fn from_env() -> Option<Self> {
        Self::discover().map(|(token, _)| token)
    }

    /// The token and where it came from (for `token status`; never the token itself).
    pub fn discover() -> Option<(Self, &'static str)> {
        for var in ["GITHUB_TOKEN", "GH_TOKEN"] {
            if let Some(token) = std::env::var(var).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
                return Some((Self(token), var));
            }
        }
        crate::keychain::stored_token().map(|token| (Self(token), "the OS keychain"))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(
        "no GitHub token: set GITHUB_TOKEN (or GH_TOKEN), or store one with `futurnal sources github token set`, \
         a token that can administer the repository's hooks"
    )]
    NoToken,
    #[error("GitHub API {method} {path}: {status} {message}{hint}")]
    Status { method: String, path: String, status: u16, message: String, hint: String },
    #[error("GitHub API {method} {path}: {reason}")]
    Transport { method: String, path: String, reason: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The result of a conditional GET.
#[derive(Debug, Clone, PartialEq)]
pub enum Conditional {
    Modified(Value),
    /// 304: nothing changed since the remembered ETag (no quota spent).
    NotModified,
}

pub struct GitHubClient {
    http: reqwest::Client,
    base: String,
    token: Option<Token>,
    /// Sends no token, and needs none (`GET /meta`).
    anonymous: bool,
    etags: Mutex<HashMap<String, String>>,
    /// Lists read page by page with a conditional request each (see
    /// [`GitHubClient::get_conditional_all`]): every page as last read, by the list's path.
    pages: Mutex<HashMap<String, Vec<CachedPage>>>,
}

/// One page of a list as last read: where, its ETag, its items and the next page's URL.
#[derive(Debug, Clone)]
struct CachedPage {
    url: String,
    etag: String,
    items: Vec<Value>,
    next: Option<String>,
}

impl GitHubClient {
    pub fn new(base_url: &str, token: Option<Token>) -> anyhow::Result<Self> {
        crate::install_tls_provider();
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/vnd.github+json"));
        headers.insert("X-GitHub-Api-Version", HeaderValue::from_static(API_VERSION));
        headers.insert(USER_AGENT, HeaderValue::from_str(&format!("futurnal/{}", env!("CARGO_PKG_VERSION")))?);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| anyhow::anyhow!("failed to build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token,
            anonymous: false,
            etags: Mutex::default(),
            pages: Mutex::default(),
        })
    }

    /// A client without a token, for what GitHub answers anyone (`GET /meta`).
    pub fn anonymous(base_url: &str) -> anyhow::Result<Self> {
        Ok(Self { anonymous: true, ..Self::new(base_url, None)? })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.request(Method::GET, path, None).await.map(|(v, _)| v)
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        self.request(Method::POST, path, Some(body)).await.map(|(v, _)| v)
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        self.request(Method::PATCH, path, Some(body)).await.map(|(v, _)| v)
    }

    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.request(Method::DELETE, path, None).await.map(drop)
    }

    /// One page of a list and the `rel="next"` link, for callers that stop early.
    pub async fn get_page(&self, path: &str) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let (value, next) = self.request(Method::GET, path, None).await?;
        Ok((value.as_array().cloned().unwrap_or_default(), next))
    }

    /// Every page of a list, following `Link: rel="next"`.
    pub async fn get_all(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(page) = next.take() {
            let (value, link) = self.request(Method::GET, &page, None).await?;
            match value {
                Value::Array(list) => items.extend(list),
                other => items.push(other),
            }
            next = link;
        }
        Ok(items)
    }

    /// GET with `If-None-Match` when this client has seen the resource before.
    pub async fn get_conditional(&self, path: &str) -> Result<Conditional, ApiError> {
        Ok(match self.send_conditional(path).await? {
            None => Conditional::NotModified,
            Some(reply) => Conditional::Modified(reply.body),
        })
    }

    /// The conditional GET itself: `None` for a 304; a new ETag is kept for next time.
    async fn send_conditional(&self, path: &str) -> Result<Option<Reply>, ApiError> {
        let etag = self.etags.lock().unwrap_or_else(|p| p.into_inner()).get(path).cloned();
        let response = self.send(Method::GET, path, None, etag.as_deref()).await?;
        if response.status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if let Some(etag) = response.etag.clone() {
            self.etags.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_owned(), etag);
        }
        Ok(Some(response))
    }

    /// A list read with a conditional first page: `None` when GitHub answers 304 (no
    /// quota spent), else that page and, while `more(page)` says the list may still hold
    /// wanted items, the pages after it (`Link: rel="next"`).
    pub async fn get_conditional_list(
        &self,
        path: &str,
        more: impl Fn(&[Value]) -> bool,
    ) -> Result<Option<Vec<Value>>, ApiError> {
        let Some(first) = self.send_conditional(path).await? else { return Ok(None) };
        let mut items = first.body.as_array().cloned().unwrap_or_default();
        let mut next = first.next;
        let mut last_page_len = items.len();
        while let Some(page) = next.take() {
            if !more(&items[items.len() - last_page_len..]) {
                break;
            }
            let (list, link) = self.get_page(&page).await?;
            last_page_len = list.len();
            items.extend(list);
            next = link;
        }
        Ok(Some(items))
    }

    /// A whole list read with a conditional request for every page: `None` when every page
    /// answered 304 (no quota spent), else every item. For lists whose order does not put
    /// what changed first (labels, milestones, a pull request's reviews): a change on a
    /// later page leaves the first page's ETag as it was, so the first page alone cannot
    /// say that nothing changed. The pages are kept in memory to answer the unchanged ones.
    pub async fn get_conditional_all(&self, path: &str) -> Result<Option<Vec<Value>>, ApiError> {
        let cached = self.pages.lock().unwrap_or_else(|p| p.into_inner()).get(path).cloned().unwrap_or_default();
        let mut pages = Vec::with_capacity(cached.len().max(1));
        let mut changed = false;
        let mut next = Some(path.to_owned());
        while let Some(url) = next.take() {
            if pages.len() > MAX_PAGES {
                break;
            }
            let known = cached.iter().find(|p| p.url == url);
            let reply = self.send(Method::GET, &url, None, known.map(|p| p.etag.as_str())).await?;
            let page = match known {
                Some(known) if reply.status == StatusCode::NOT_MODIFIED => known.clone(),
                _ => {
                    changed = true;
                    let items = match reply.body {
                        Value::Array(items) => items,
                        Value::Null => Vec::new(),
                        other => vec![other],
                    };
                    CachedPage { url, etag: reply.etag.unwrap_or_default(), items, next: reply.next }
                }
            };
            next = page.next.clone();
            pages.push(page);
        }
        if !changed && pages.len() == cached.len() {
            return Ok(None);
        }
        let items = pages.iter().flat_map(|p| p.items.iter().cloned()).collect();
        self.pages.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_owned(), pages);
        Ok(Some(items))
    }

    /// Forgets what the conditional reads of `path` remembered, so that the next read
    /// fetches it whole: for a caller that could not store what it read.
    pub fn forget_conditional(&self, path: &str) {
        self.etags.lock().unwrap_or_else(|p| p.into_inner()).remove(path);
        self.pages.lock().unwrap_or_else(|p| p.into_inner()).remove(path);
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, Option<String>), ApiError> {
        let response = self.send(method, path, body, None).await?;
        Ok((response.body, response.next))
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// One logical request: waits out rate limits, retries 5xx and transport errors.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        etag: Option<&str>,
    ) -> Result<Reply, ApiError> {
        let token = match self.anonymous {
            true => None,
            false => Some(self.token.as_ref().ok_or(ApiError::NoToken)?),
        };
        let display_path = path.strip_prefix(&self.base).unwrap_or(path).to_owned();
        let transport =
            |reason: String| ApiError::Transport { method: method.to_string(), path: display_path.clone(), reason };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.http.request(method.clone(), self.url(path));
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, format!("Bearer {}", token.0));
            }
            if let Some(etag) = etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(body) = body.as_ref().filter(|b| !b.is_null()) {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if attempt <= MAX_RETRIES => {
                    tracing::warn!(path = %display_path, attempt, error = %without_url(e), "GitHub API unreachable; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(transport(without_url(e))),
            };
            let status = response.status();
            let headers = response.headers().clone();
            if let Some(wait) = rate_limit_wait(status, &headers) {
                if wait > MAX_WAIT || attempt > MAX_RETRIES + 2 {
                    let body = response.text().await.unwrap_or_default();
                    return Err(status_error(&method, &display_path, status, &body));
                }
                tracing::warn!(path = %display_path, wait_secs = wait.as_secs(), "GitHub rate limit reached; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() && attempt <= MAX_RETRIES {
                tracing::warn!(path = %display_path, status = status.as_u16(), attempt, "GitHub API server error; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            let next = headers.get(LINK).and_then(|v| v.to_str().ok()).and_then(next_link);
            let etag = headers.get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if status == StatusCode::NOT_MODIFIED {
                return Ok(Reply { status, body: Value::Null, next, etag });
            }
            let text = response.text().await.map_err(|e| transport(without_url(e)))?;
            if !status.is_success() {
                return Err(status_error(&method, &display_path, status, &text));
            }
            let body =
                if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
            return Ok(Reply { status, body, next, etag });
        }
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
    next: Option<String>,
    etag: Option<String>,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(attempt.min(6)))
}

/// How long to wait before retrying, when the answer is a rate limit.
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(seconds) =
        headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(seconds.max(1)));
    }
    if header("x-ratelimit-remaining") == Some(0) {
        let reset = header("x-ratelimit-reset")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
    }
    None
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

fn status_error(method: &Method, path: &str, status: StatusCode, body: &str) -> ApiError {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut message =
        json["message"].as_str().unwrap_or_else(|| status.canonical_reason().unwrap_or("error")).to_owned();
    let details: Vec<&str> =
        json["errors"].as_array().into_iter().flatten().filter_map(|e| e["message"].as_str()).collect();
    if !details.is_empty() {
        message = format!("{message}: {}", details.join("; "));
    }
    let hint = match status.as_u16() {
        401 => " (the token is missing, expired or revoked: set GITHUB_TOKEN to a valid token)",
        403 => " (the token lacks permission: hooks need the admin:repo_hook scope or repository administration)",
        404 => " (check OWNER/NAME, and that the token can see the repository: private ones answer 404 without access)",
        422 => " (GitHub refused the request as sent)",
        _ => "",
    };
    ApiError::Status {
        method: method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        message,
        hint: hint.to_owned(),
    }
}

/// reqwest's errors can include the URL; ours never carry credentials, but keep messages
/// short and free of it anyway.
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_and_limits() {
        let link = r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#;
        assert_eq!(next_link(link).as_deref(), Some("https://api.github.com/x?page=2"));
        assert_eq!(next_link(r#"<https://a/x?page=1>; rel="prev""#), None);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &headers), Some(Duration::from_secs(7)));
        assert_eq!(rate_limit_wait(StatusCode::OK, &headers), None);
        let err = status_error(
            &Method::POST,
            "/repos/o/r/hooks",
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"message":"Validation Failed","errors":[{"message":"Hook already exists on this repository"}]}"#,
        );
        assert_eq!(
            err.to_string(),
            "GitHub API POST /repos/o/r/hooks: 422 Validation Failed: Hook already exists on this repository (GitHub refused the request as sent)"
        );
        assert!(!format!("{:?}", Token::new("ghp_secret")).contains("ghp_secret"));
    }
}
