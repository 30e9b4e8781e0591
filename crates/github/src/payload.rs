//! Lenient payload types for the events futurnal handles.
//!
//! Only the fields the project uses are required; everything else is optional or
//! defaulted, and unknown fields are ignored. Real deliveries vary more than GitHub's
//! examples (older ones lack fields, newer ones add fields), and a receiver that refuses a
//! delivery over a field it does not use loses real events.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The few fields the receiver needs before it acknowledges a delivery. Parsing into this
/// type validates the whole document as JSON (skipped values are still checked) while
/// building nothing but these fields, which is about five times cheaper than a
/// `serde_json::Value`.
#[derive(Debug, Deserialize)]
pub struct RoutingFields<'a> {
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub repository: Option<RoutingRepository<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct RoutingRepository<'a> {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(borrow, default)]
    pub full_name: Option<Cow<'a, str>>,
}

impl<'a> RoutingFields<'a> {
    /// Parses the routing fields of a JSON payload; fails on anything that is not one
    /// well-formed JSON object.
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let fields = deserializer.deserialize_map(ObjectOnly(PhantomData))?;
        deserializer.end()?;
        Ok(fields)
    }
}

/// Reads a `T` from a JSON object only. A derived `Deserialize` also takes an array of the
/// fields in order (`[]` reads as every field missing), which is no payload.
struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

/// `null`, missing, or an object (see [`ObjectOnly`]).
fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    struct Object<T>(T);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(ObjectOnly(PhantomData)).map(Object)
        }
    }
    Ok(Option::<Object<T>>::deserialize(deserializer)?.map(|o| o.0))
}

/// A user or organization as it appears in payloads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Account {
    #[serde(default)]
    pub login: String,
    #[serde(default)]
    pub id: Option<u64>,
}

/// The `repository` object present in every repository event.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Repository {
    /// Missing only from hand-made deliveries (`webhook simulate --repo`); then the
    /// repository is matched by name.
    #[serde(default)]
    pub id: Option<u64>,
    pub full_name: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub owner: Option<Account>,
    #[serde(default)]
    pub private: Option<bool>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub archived: Option<bool>,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub clone_url: Option<String>,
}

/// A label, as the `label` event, the labels list and an issue's `labels` show it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    /// GitHub's id: it only grows, so of two labels that had one name the one with the
    /// higher id is the newer.
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub color: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// An issue's or pull request's `milestone`: only its number is read (the milestone
/// itself comes from `milestone` events and the milestones list).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MilestoneRef {
    #[serde(default)]
    pub number: Option<u64>,
}

/// A milestone, as the `milestone` event and the milestones list show it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Milestone {
    pub number: u64,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `open` or `closed`; missing from some deliveries (then the action says).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub due_on: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    pub updated_at: String,
    #[serde(default)]
    pub closed_at: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PushCommitAuthor {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PushCommit {
    pub id: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub author: Option<PushCommitAuthor>,
    #[serde(default)]
    pub added: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub modified: Vec<String>,
}

/// `push`: a branch or tag moved, appeared or disappeared.
#[derive(Debug, Clone, Deserialize)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub forced: bool,
    #[serde(default)]
    pub base_ref: Option<String>,
    #[serde(default)]
    pub commits: Vec<PushCommit>,
    #[serde(default)]
    pub head_commit: Option<PushCommit>,
    pub repository: Repository,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitRef {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    pub state: String,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub user: Option<Account>,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub assignees: Vec<Account>,
    #[serde(default)]
    pub milestone: Option<MilestoneRef>,
    pub base: GitRef,
    pub head: GitRef,
    #[serde(default)]
    pub created_at: Option<String>,
    pub updated_at: String,
    #[serde(default)]
    pub closed_at: Option<String>,
    #[serde(default)]
    pub merged_at: Option<String>,
}

/// `pull_request`: any change to a pull request.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub number: u64,
    pub pull_request: PullRequest,
    pub repository: Repository,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    pub number: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    /// Missing from some real deliveries (GitHub's own `unpinned` example lacks it).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub user: Option<Account>,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub assignees: Vec<Account>,
    #[serde(default)]
    pub milestone: Option<MilestoneRef>,
    #[serde(default)]
    pub comments: u64,
    #[serde(default)]
    pub created_at: Option<String>,
    pub updated_at: String,
    #[serde(default)]
    pub closed_at: Option<String>,
    /// Present when the issue is in fact a pull request (issue_comment on a PR).
    #[serde(default)]
    pub pull_request: Option<serde::de::IgnoredAny>,
}

/// `issues`: any change to an issue, including deletion and transfer.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuesEvent {
    pub action: String,
    pub issue: Issue,
    pub repository: Repository,
    /// For `transferred`: `new_repository` and `new_issue`.
    #[serde(default)]
    pub changes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub user: Option<Account>,
    #[serde(default)]
    pub created_at: Option<String>,
    pub updated_at: String,
}

/// `issue_comment`: a comment on an issue or pull request created, edited or deleted.
#[derive(Debug, Clone, Deserialize)]
pub struct IssueCommentEvent {
    pub action: String,
    pub issue: Issue,
    pub comment: Comment,
    pub repository: Repository,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub id: u64,
    pub tag_name: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub published_at: Option<String>,
}

/// `release`: a release created, edited, published, deleted and so on.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleaseEvent {
    pub action: String,
    pub release: Release,
    pub repository: Repository,
}

/// The pull request a review or review comment belongs to (GitHub's "simple" pull
/// request): only its number is read.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestRef {
    pub number: u64,
}

/// A pull request review, as the `pull_request_review` event and the reviews list show it.
/// The event's `state` is lower case (`approved`), the list's upper case (`APPROVED`).
#[derive(Debug, Clone, Deserialize)]
pub struct Review {
    pub id: u64,
    #[serde(default)]
    pub user: Option<Account>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub commit_id: Option<String>,
    /// `null` for a pending review (which only its author sees).
    #[serde(default)]
    pub submitted_at: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

/// `pull_request_review`: a review submitted, edited or dismissed.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestReviewEvent {
    pub action: String,
    pub review: Review,
    pub pull_request: PullRequestRef,
    pub repository: Repository,
}

/// A comment on a pull request's diff, as the `pull_request_review_comment` event and the
/// review comments list show it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReviewComment {
    pub id: u64,
    #[serde(default)]
    pub pull_request_review_id: Option<u64>,
    #[serde(default)]
    pub path: Option<String>,
    /// `null` once the line is outdated.
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub side: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub user: Option<Account>,
    #[serde(default)]
    pub in_reply_to_id: Option<u64>,
    #[serde(default)]
    pub commit_id: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    pub updated_at: String,
}

/// `pull_request_review_comment`: a diff comment created, edited or deleted.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestReviewCommentEvent {
    pub action: String,
    pub comment: ReviewComment,
    pub pull_request: PullRequestRef,
    pub repository: Repository,
}

/// `label`: a repository's label created, edited (maybe renamed: `changes.name.from`)
/// or deleted.
#[derive(Debug, Clone, Deserialize)]
pub struct LabelEvent {
    pub action: String,
    pub label: Label,
    #[serde(default)]
    pub changes: Option<serde_json::Value>,
    pub repository: Repository,
}

/// `milestone`: created, edited, closed, opened or deleted.
#[derive(Debug, Clone, Deserialize)]
pub struct MilestoneEvent {
    pub action: String,
    pub milestone: Milestone,
    pub repository: Repository,
}

/// `create` and `delete`: a branch or tag appeared or disappeared.
#[derive(Debug, Clone, Deserialize)]
pub struct RefEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub ref_type: String,
    pub repository: Repository,
}

/// `repository`: renamed, transferred, archived, deleted, visibility changed.
#[derive(Debug, Clone, Deserialize)]
pub struct RepositoryEvent {
    pub action: String,
    pub repository: Repository,
    #[serde(default)]
    pub changes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PingHook {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub events: Vec<String>,
}

/// `ping`: sent when a hook is created and on request.
#[derive(Debug, Clone, Deserialize)]
pub struct PingEvent {
    #[serde(default)]
    pub zen: Option<String>,
    #[serde(default)]
    pub hook_id: Option<u64>,
    #[serde(default)]
    pub hook: Option<PingHook>,
    #[serde(default)]
    pub repository: Option<Repository>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_fields_borrow_and_tolerate_missing_parts() {
        let body = br#"{"action":"opened","repository":{"id":7,"full_name":"o/r","extra":[1,2]},"x":{}}"#;
        let r = RoutingFields::parse(body).unwrap();
        assert_eq!(r.action.as_deref(), Some("opened"));
        let repo = r.repository.unwrap();
        assert_eq!((repo.id, repo.full_name.as_deref()), (Some(7), Some("o/r")));

        let r = RoutingFields::parse(br#"{"zen":"hi"}"#).unwrap();
        assert!(r.action.is_none() && r.repository.is_none());
    }

    #[test]
    fn routing_fields_reject_invalid_json() {
        for bad in [&b""[..], b"{", b"[1,2]", b"{\"a\":1} trailing", b"{\"a\":tru}", b"null"] {
            assert!(RoutingFields::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Arrays, which a derived Deserialize reads field by field (found by fuzzing).
        for bad in [&b"[]"[..], b"[null]", br#"["opened",{"id":7,"full_name":"o/r"}]"#, br#"{"repository":[7,"o/r"]}"#]
        {
            assert!(RoutingFields::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
