//! Payload → effects: the input read as each event the workers handle (as
//! `handlers::parse` reads a stored delivery) and, where it fits, handed to that event's
//! normalizer or ref parser. Nothing may panic; the effects are checked against the
//! payload where they copy it.
#![no_main]
#![forbid(unsafe_code)]

use futurnal::handlers::git::{created_ref, deleted_ref, push_ref};
use futurnal::handlers::normalize;
use futurnal::storage::copy::{Effect, LabelNaming};
use futurnal_github::payload::{
    IssueCommentEvent, IssuesEvent, LabelEvent, MilestoneEvent, PingEvent, PullRequestEvent,
    PullRequestReviewCommentEvent, PullRequestReviewEvent, PushEvent, RefEvent, ReleaseEvent, RepositoryEvent,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fn parse<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

fuzz_target!(|data: &[u8]| {
    if let Some(event) = parse::<PullRequestEvent>(data) {
        match normalize::pull_request(&event) {
            Ok(Effect::Pull(pr)) => {
                assert_eq!((pr.number, &pr.head_sha), (event.pull_request.number, &event.pull_request.head.sha));
                assert!(pr.merged || pr.merged_at.is_none(), "a merge time means merged");
            }
            Ok(other) => panic!("a pull request gave {other:?}"),
            Err(_) => {}
        }
    }
    if let Some(event) = parse::<IssuesEvent>(data) {
        match normalize::issues(&event) {
            Ok(Effect::Issue(issue)) => {
                assert_eq!(issue.number, event.issue.number);
                assert_eq!(issue.deleted, event.action == "deleted");
                assert_eq!(issue.transferred_to.is_some(), event.action == "transferred");
            }
            Ok(other) => panic!("an issue gave {other:?}"),
            Err(_) => {}
        }
    }
    if let Some(event) = parse::<IssueCommentEvent>(data) {
        if let Ok(effects) = normalize::issue_comment(&event) {
            assert!(matches!(effects.first(), Some(Effect::Comment(c)) if c.id == event.comment.id));
            assert_eq!(effects.len(), if event.issue.pull_request.is_some() { 1 } else { 2 });
        }
    }
    if let Some(event) = parse::<ReleaseEvent>(data) {
        let Effect::Release(release) = normalize::release(&event) else { panic!("a release gave another effect") };
        assert_eq!((release.id, &release.tag_name), (event.release.id, &event.release.tag_name));
    }
    if let Some(event) = parse::<RepositoryEvent>(data) {
        let Effect::Repository { full_name, github_id, .. } = normalize::repository(&event) else {
            panic!("a repository event gave another effect")
        };
        assert_eq!((full_name.as_deref(), github_id), (Some(event.repository.full_name.as_str()), event.repository.id));
    }
    if let Some(event) = parse::<PullRequestReviewEvent>(data) {
        let Effect::Review(review) = normalize::pull_request_review(&event) else {
            panic!("a review gave another effect")
        };
        assert_eq!((review.id, review.pull_number), (event.review.id, event.pull_request.number));
        assert_eq!(review.state, review.state.to_ascii_lowercase(), "states are stored lower case");
        assert!(event.action != "dismissed" || review.state == "dismissed");
    }
    if let Some(event) = parse::<PullRequestReviewCommentEvent>(data) {
        match normalize::pull_request_review_comment(&event) {
            Ok(Effect::ReviewComment(c)) => {
                assert_eq!(
                    (c.id, c.pull_number, c.line),
                    (event.comment.id, event.pull_request.number, event.comment.line)
                );
                assert_eq!(c.deleted, event.action == "deleted");
            }
            Ok(other) => panic!("a review comment gave {other:?}"),
            Err(_) => {}
        }
    }
    if let Some(event) = parse::<LabelEvent>(data) {
        let Effect::Label { label, naming } = normalize::label(&event) else { panic!("a label gave another effect") };
        assert_eq!((label.name.as_str(), label.github_id), (event.label.name.as_str(), event.label.id));
        assert_eq!(label.deleted, event.action == "deleted");
        if let LabelNaming::RenamedFrom(from) = naming {
            assert!(event.action == "edited" && from != label.name, "a rename from {from:?}");
        }
    }
    if let Some(event) = parse::<MilestoneEvent>(data) {
        match normalize::milestone(&event) {
            Ok(Effect::Milestone(m)) => {
                assert_eq!(m.number, event.milestone.number);
                assert_eq!(m.deleted, event.action == "deleted");
            }
            Ok(other) => panic!("a milestone gave {other:?}"),
            Err(_) => {}
        }
    }
    if let Some(event) = parse::<PushEvent>(data) {
        let change = push_ref(&event);
        let named = event.git_ref.starts_with("refs/heads/") || event.git_ref.starts_with("refs/tags/");
        assert_eq!(change.is_some(), named);
    }
    if let Some(event) = parse::<RefEvent>(data) {
        let known = matches!(event.ref_type.as_str(), "branch" | "tag");
        assert_eq!(created_ref(&event).is_some(), known);
        assert_eq!(deleted_ref(&event).is_some(), known);
        if known {
            assert_ne!(created_ref(&event), deleted_ref(&event), "a deletion reads as a creation");
        }
    }
    let _ = parse::<PingEvent>(data);
});
