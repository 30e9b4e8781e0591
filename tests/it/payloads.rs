//! Every example payload GitHub documents parses into its typed struct, and the fields
//! futurnal routes and orders by come out equal to the raw document's.

use std::path::{Path, PathBuf};

use futurnal_github::payload::{
    IssueCommentEvent, IssuesEvent, PingEvent, PullRequestEvent, PushEvent, RefEvent, ReleaseEvent, RepositoryEvent,
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
            }
            WebhookEventType::Issues => {
                let p: IssuesEvent = parse(&bytes, file);
                repo_matches(&p.repository, &raw, file);
                assert_eq!(p.issue.number, raw["issue"]["number"].as_u64().unwrap());
                assert_eq!(p.issue.updated_at, raw["issue"]["updated_at"].as_str().unwrap());
                assert_eq!(p.issue.state.as_deref(), raw["issue"]["state"].as_str());
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
}
