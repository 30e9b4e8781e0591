//! Every example payload GitHub documents parses into its typed struct, and the fields
//! futurnal routes and orders by come out equal to the raw document's.

use std::path::{Path, PathBuf};

use futurnal_github::payload::{
    IssueCommentEvent, IssuesEvent, LabelEvent, MilestoneEvent, PingEvent, PullRequestEvent,
    PullRequestReviewCommentEvent, PullRequestReviewEvent, PushEvent, RefEvent, ReleaseEvent, RepositoryEvent,
};
use futurnal_github::{RoutingFields, WebhookEventType};
use serde_json::Value;

use crate::helpers::fixture;

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn repo_matches(typed: &futurnal_github::payload::Repository, raw: &Value, file: &Path) {
    assert_eq!(typed.id, raw["repository"]["id"].as_u64(), "{}", file.display());
    assert!(typed.id.is_some(), "{}", file.display());
    assert_eq!(Some(typed.full_name.as_str()), raw["repository"]["full_name"].as_str(), "{}", file.display());
    assert!(typed.full_name.contains('/'), "{}", file.display());
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &Path) -> T {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn every_documented_payload_parses_with_the_fields_that_matter() {
    let mut files = Vec::new();
    json_files(&fixture("payloads"), &mut files);
    json_files(&fixture("payloads-enterprise"), &mut files);
    assert!(files.len() > 150, "expected the whole corpus, found {} files", files.len());
    let mut per_event = std::collections::BTreeMap::<String, usize>::new();
    for file in &files {
        let event = file.parent().unwrap().file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(file).unwrap();
        let raw: Value = serde_json::from_slice(&bytes).unwrap();
        *per_event.entry(event.to_owned()).or_default() += 1;

        // The routing fields the receiver reads before acknowledging.
        let routing = RoutingFields::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(routing.action.as_deref(), raw["action"].as_str(), "{}", file.display());
        let repo = routing.repository.as_ref();
        assert_eq!(repo.and_then(|r| r.id), raw["repository"]["id"].as_u64(), "{}", file.display());
        assert_eq!(repo.and_then(|r| r.full_name.as_deref()), raw["repository"]["full_name"].as_str());

        match WebhookEventType::parse(event) {
            WebhookEventType::Push => {
                let p: PushEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.git_ref, raw["ref"].as_str().unwrap());
                assert_eq!(p.before, raw["before"].as_str().unwrap());
                assert_eq!(p.after, raw["after"].as_str().unwrap());
                assert_eq!(p.before.len(), 40);
                assert_eq!(
                    (p.created, p.deleted, p.forced),
                    (raw["created"] == true, raw["deleted"] == true, raw["forced"] == true)
                );
                assert_eq!(p.commits.len(), raw["commits"].as_array().unwrap().len());
            }
            WebhookEventType::PullRequest => {
                let p: PullRequestEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.action, raw["action"].as_str().unwrap());
                assert_eq!(p.number, raw["number"].as_u64().unwrap());
                assert_eq!(p.pull_request.number, p.number);
                assert_eq!(p.pull_request.updated_at, raw["pull_request"]["updated_at"].as_str().unwrap());
                assert_eq!(p.pull_request.head.sha, raw["pull_request"]["head"]["sha"].as_str().unwrap());
                assert_eq!(p.pull_request.base.git_ref, raw["pull_request"]["base"]["ref"].as_str().unwrap());
                assert_eq!(p.pull_request.labels.len(), raw["pull_request"]["labels"].as_array().map_or(0, Vec::len));
                let milestone = p.pull_request.milestone.and_then(|m| m.number);
                assert_eq!(milestone, raw["pull_request"]["milestone"]["number"].as_u64(), "{}", file.display());
            }
            WebhookEventType::Issues => {
                let p: IssuesEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.issue.number, raw["issue"]["number"].as_u64().unwrap());
                assert_eq!(p.issue.updated_at, raw["issue"]["updated_at"].as_str().unwrap());
                assert_eq!(p.issue.state.as_deref(), raw["issue"]["state"].as_str());
                let milestone = p.issue.milestone.and_then(|m| m.number);
                assert_eq!(milestone, raw["issue"]["milestone"]["number"].as_u64(), "{}", file.display());
                let labels: Vec<&str> = p.issue.labels.iter().map(|l| l.name.as_str()).collect();
                let raw_labels: Vec<&str> = raw["issue"]["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["name"].as_str())
                    .collect();
                assert_eq!(labels, raw_labels, "{}", file.display());
                let assignees: Vec<&str> = p.issue.assignees.iter().map(|a| a.login.as_str()).collect();
                let raw_assignees: Vec<&str> = raw["issue"]["assignees"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["login"].as_str())
                    .collect();
                assert_eq!(assignees, raw_assignees, "{}", file.display());
            }
            WebhookEventType::IssueComment => {
                let p: IssueCommentEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.issue.number, raw["issue"]["number"].as_u64().unwrap());
                assert_eq!(p.comment.id, raw["comment"]["id"].as_u64().unwrap());
                assert_eq!(p.comment.updated_at, raw["comment"]["updated_at"].as_str().unwrap());
            }
            WebhookEventType::Release => {
                let p: ReleaseEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.release.tag_name, raw["release"]["tag_name"].as_str().unwrap());
                assert_eq!(p.release.id, raw["release"]["id"].as_u64().unwrap());
            }
            WebhookEventType::Create | WebhookEventType::Delete => {
                let p: RefEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.git_ref, raw["ref"].as_str().unwrap());
                assert!(p.ref_type == "branch" || p.ref_type == "tag", "{}", file.display());
            }
            WebhookEventType::Repository => {
                let p: RepositoryEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.action, raw["action"].as_str().unwrap());
            }
            WebhookEventType::PullRequestReview => {
                let p: PullRequestReviewEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.review.id, raw["review"]["id"].as_u64().unwrap());
                assert_eq!(p.pull_request.number, raw["pull_request"]["number"].as_u64().unwrap());
                assert_eq!(p.review.state.as_deref(), raw["review"]["state"].as_str());
                assert_eq!(p.review.submitted_at.as_deref(), raw["review"]["submitted_at"].as_str());
                assert_eq!(p.review.commit_id.as_deref(), raw["review"]["commit_id"].as_str());
            }
            WebhookEventType::PullRequestReviewComment => {
                let p: PullRequestReviewCommentEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                let c = &raw["comment"];
                assert_eq!(p.comment.id, c["id"].as_u64().unwrap());
                assert_eq!(p.comment.pull_request_review_id, c["pull_request_review_id"].as_u64());
                assert_eq!(p.pull_request.number, raw["pull_request"]["number"].as_u64().unwrap());
                assert_eq!(p.comment.updated_at, c["updated_at"].as_str().unwrap());
                assert_eq!((p.comment.path.as_deref(), p.comment.line), (c["path"].as_str(), c["line"].as_u64()));
                assert_eq!(p.comment.side.as_deref(), c["side"].as_str());
                assert_eq!(p.comment.in_reply_to_id, c["in_reply_to_id"].as_u64());
            }
            WebhookEventType::Label => {
                let p: LabelEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.label.name, raw["label"]["name"].as_str().unwrap());
                assert_eq!(p.label.id, raw["label"]["id"].as_u64());
                assert_eq!(p.label.color.as_deref(), raw["label"]["color"].as_str());
                assert_eq!(p.label.description.as_deref(), raw["label"]["description"].as_str());
            }
            WebhookEventType::Milestone => {
                let p: MilestoneEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                let m = &raw["milestone"];
                assert_eq!(p.milestone.number, m["number"].as_u64().unwrap());
                assert_eq!(p.milestone.updated_at, m["updated_at"].as_str().unwrap());
                assert_eq!(p.milestone.state.as_deref(), m["state"].as_str());
                assert_eq!(p.milestone.due_on.as_deref(), m["due_on"].as_str());
                assert_eq!(p.milestone.closed_at.as_deref(), m["closed_at"].as_str());
            }
            WebhookEventType::Ping => {
                let p: PingEvent = parse(&bytes, file);
                assert_eq!(p.hook_id, raw["hook_id"].as_u64());
                assert_eq!(p.repository.and_then(|r| r.id), raw["repository"]["id"].as_u64());
            }
            WebhookEventType::Other(name) => panic!("unexpected event folder {name} ({})", file.display()),
        }
    }
    for kind in WebhookEventType::HANDLED {
        assert!(per_event.get(kind.as_str()).copied().unwrap_or(0) > 0, "no example for {kind}: {per_event:?}");
    }
}

#[test]
fn parsing_is_lenient_about_missing_and_unknown_fields() {
    // A minimal pull_request delivery: only what futurnal uses, plus fields nobody knows.
    let body = br#"{"action":"opened","number":3,"future_field":{"x":[1]},
        "pull_request":{"number":3,"state":"open","updated_at":"2026-01-01T00:00:00Z",
          "base":{"ref":"main","sha":"a"},"head":{"ref":"f","sha":"b"},"user_view_type":"public"},
        "repository":{"id":1,"full_name":"o/r"}}"#;
    let p: PullRequestEvent = serde_json::from_slice(body).unwrap();
    assert_eq!(p.pull_request.title, "");
    assert!(p.pull_request.labels.is_empty() && p.pull_request.merged.is_none());
    assert!(p.pull_request.milestone.is_none());
}

/// The new events' payloads with only what futurnal uses, `null` where GitHub may send
/// it, and fields nobody knows: they parse, and what is missing reads as missing.
#[test]
fn review_label_and_milestone_payloads_are_parsed_leniently() {
    let repo = r#""repository":{"id":1,"full_name":"o/r"},"sender":null,"future":{"x":[1]}"#;
    let review: PullRequestReviewEvent = serde_json::from_str(&format!(
        r#"{{"action":"submitted","review":{{"id":9,"user":null,"body":null,"state":"approved","submitted_at":null,
            "commit_id":null,"new_field":true}},"pull_request":{{"number":3,"whatever":1}},{repo}}}"#
    ))
    .unwrap();
    assert_eq!((review.review.id, review.pull_request.number), (9, 3));
    assert!(review.review.user.is_none() && review.review.body.is_none() && review.review.submitted_at.is_none());
    let minimal: PullRequestReviewEvent = serde_json::from_str(&format!(
        r#"{{"action":"dismissed","review":{{"id":9}},"pull_request":{{"number":3}},{repo}}}"#
    ))
    .unwrap();
    assert!(minimal.review.state.is_none() && minimal.review.html_url.is_none());

    let comment: PullRequestReviewCommentEvent = serde_json::from_str(&format!(
        r#"{{"action":"created","comment":{{"id":5,"updated_at":"2026-01-01T00:00:00Z","line":null,"side":null,
            "pull_request_review_id":null,"in_reply_to_id":4,"subject_type":"line"}},"pull_request":{{"number":3}},{repo}}}"#
    ))
    .unwrap();
    assert_eq!((comment.comment.line, comment.comment.in_reply_to_id, comment.comment.path), (None, Some(4), None));

    let label: LabelEvent =
        serde_json::from_str(&format!(r#"{{"action":"created","label":{{"name":"bug","default":false}},{repo}}}"#))
            .unwrap();
    assert_eq!((label.label.id, label.label.color, label.changes), (None, None, None));
    let label: LabelEvent = serde_json::from_str(&format!(
        r#"{{"action":"edited","label":{{"name":"bug","id":1,"color":"fff","description":null}},
            "changes":{{"name":{{"from":"defect"}}}},{repo}}}"#
    ))
    .unwrap();
    assert_eq!(label.changes.unwrap()["name"]["from"], "defect");

    let milestone: MilestoneEvent = serde_json::from_str(&format!(
        r#"{{"action":"opened","milestone":{{"number":2,"updated_at":"2026-01-01T00:00:00Z","title":null,
            "due_on":null,"creator":null,"open_issues":3}},{repo}}}"#
    ))
    .unwrap();
    assert_eq!((milestone.milestone.number, milestone.milestone.title, milestone.milestone.state), (2, None, None));

    // An issue whose milestone is null, or an object without a number, still parses.
    for milestone in ["null", r#"{"title":"v1"}"#] {
        let issue: IssuesEvent = serde_json::from_str(&format!(
            r#"{{"action":"demilestoned","issue":{{"number":1,"updated_at":"2026-01-01T00:00:00Z","milestone":{milestone}}},{repo}}}"#
        ))
        .unwrap();
        assert_eq!(issue.issue.milestone.and_then(|m| m.number), None);
    }
    // What the events cannot do without is required: the review's pull request number.
    let missing = format!(r#"{{"action":"submitted","review":{{"id":9}},"pull_request":{{}},{repo}}}"#);
    assert!(serde_json::from_str::<PullRequestReviewEvent>(&missing).is_err());
}
