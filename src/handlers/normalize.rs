//! Payload → effect, for the events whose payload is the data (pull requests, issues,
//! comments, releases, repository changes). Pure functions, tested on GitHub's examples.

use futurnal_github::payload::{
    Account, Issue, IssueCommentEvent, IssuesEvent, Label, PullRequest, PullRequestEvent, ReleaseEvent, RepositoryEvent,
};

use crate::storage::copy::{CommentRecord, Effect, IssueRecord, PullRecord, ReleaseRecord};
use crate::time::parse_ms;

fn time(value: &Option<String>) -> Option<i64> {
    value.as_deref().and_then(parse_ms)
}

fn required_time(value: &str, what: &str) -> Result<i64, String> {
    parse_ms(value).ok_or_else(|| format!("{what} is not an RFC 3339 time: '{value}'"))
}

fn names(labels: &[Label]) -> Vec<String> {
    labels.iter().map(|l| l.name.clone()).collect()
}

fn logins(accounts: &[Account]) -> Vec<String> {
    accounts.iter().map(|a| a.login.clone()).collect()
}

pub fn pull_request(event: &PullRequestEvent) -> Result<Effect, String> {
    pull_record(&event.pull_request).map(Effect::Pull)
}

/// A pull request as a webhook or the REST API shows it (the same object).
pub fn pull_record(pr: &PullRequest) -> Result<PullRecord, String> {
    let merged_at = time(&pr.merged_at);
    Ok(PullRecord {
        number: pr.number,
        title: pr.title.clone(),
        body: pr.body.clone(),
        state: pr.state.clone(),
        draft: pr.draft.unwrap_or(false),
        merged: pr.merged.unwrap_or(false) || merged_at.is_some(),
        author: pr.user.as_ref().map(|u| u.login.clone()),
        labels: names(&pr.labels),
        assignees: logins(&pr.assignees),
        base_ref: pr.base.git_ref.clone(),
        base_sha: pr.base.sha.clone(),
        head_ref: pr.head.git_ref.clone(),
        head_sha: pr.head.sha.clone(),
        created_at: time(&pr.created_at),
        updated_at: required_time(&pr.updated_at, "pull_request.updated_at")?,
        closed_at: time(&pr.closed_at),
        merged_at,
    })
}

/// An issue as a webhook or the REST API shows it.
pub fn issue_record(issue: &Issue, deleted: bool, transferred_to: Option<String>) -> Result<IssueRecord, String> {
    Ok(IssueRecord {
        number: issue.number,
        title: issue.title.clone(),
        body: issue.body.clone(),
        // Missing from some deliveries: empty keeps the stored state (see the upsert).
        state: issue.state.clone().unwrap_or_default(),
        author: issue.user.as_ref().map(|u| u.login.clone()),
        labels: names(&issue.labels),
        assignees: logins(&issue.assignees),
        comments: issue.comments,
        created_at: time(&issue.created_at),
        updated_at: required_time(&issue.updated_at, "issue.updated_at")?,
        closed_at: time(&issue.closed_at),
        deleted,
        transferred_to,
    })
}

pub fn issues(event: &IssuesEvent) -> Result<Effect, String> {
    let transferred_to = (event.action == "transferred").then(|| {
        event
            .changes
            .as_ref()
            .and_then(|c| c["new_repository"]["full_name"].as_str())
            .unwrap_or("another repository")
            .to_owned()
    });
    Ok(Effect::Issue(issue_record(&event.issue, event.action == "deleted", transferred_to)?))
}

/// The comment, and the issue as the payload shows it (its comment count follows).
/// Comments on pull requests update no issue row.
pub fn issue_comment(event: &IssueCommentEvent) -> Result<Vec<Effect>, String> {
    let comment = &event.comment;
    let mut effects = vec![Effect::Comment(CommentRecord {
        id: comment.id,
        issue_number: event.issue.number,
        body: comment.body.clone(),
        author: comment.user.as_ref().map(|u| u.login.clone()),
        created_at: time(&comment.created_at),
        updated_at: required_time(&comment.updated_at, "comment.updated_at")?,
        deleted: event.action == "deleted",
    })];
    if event.issue.pull_request.is_none() {
        effects.push(Effect::Issue(issue_record(&event.issue, false, None)?));
    }
    Ok(effects)
}

pub fn release(event: &ReleaseEvent) -> Effect {
    let r = &event.release;
    Effect::Release(ReleaseRecord {
        id: r.id,
        tag_name: r.tag_name.clone(),
        name: r.name.clone(),
        draft: r.draft,
        prerelease: r.prerelease,
        created_at: time(&r.created_at),
        published_at: time(&r.published_at),
        deleted: event.action == "deleted",
    })
}

pub fn repository(event: &RepositoryEvent) -> Effect {
    let repo = &event.repository;
    let (archived, deleted, visibility) = match event.action.as_str() {
        "archived" => (Some(true), None, None),
        "unarchived" => (Some(false), None, None),
        "deleted" => (None, Some(true), None),
        "privatized" => (None, None, Some("private".to_owned())),
        "publicized" => (None, None, Some("public".to_owned())),
        _ => (repo.archived, None, repo.visibility.clone()),
    };
    Effect::Repository {
        full_name: Some(repo.full_name.clone()),
        github_id: repo.id,
        archived,
        deleted,
        visibility,
        default_branch: repo.default_branch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example<T: serde::de::DeserializeOwned>(path: &str) -> T {
        let full = format!("{}/tests/fixtures/github-webhooks/payloads/{path}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(&full).unwrap()).unwrap()
    }

    #[test]
    fn pull_requests_from_githubs_examples() {
        let event: PullRequestEvent = example("pull_request/opened.payload.json");
        let Effect::Pull(pr) = pull_request(&event).unwrap() else { panic!("not a pull") };
        assert_eq!((pr.number, pr.state.as_str(), pr.merged), (event.number, "open", false));
        assert_eq!(pr.updated_at, parse_ms(&event.pull_request.updated_at).unwrap());
        assert_eq!(pr.head_sha, event.pull_request.head.sha);
        assert_eq!(pr.author.as_deref(), Some("Codertocat"));

        let mut closed: PullRequestEvent = example("pull_request/closed.payload.json");
        closed.pull_request.merged = None;
        closed.pull_request.merged_at = Some("2019-05-15T15:20:40Z".into());
        let Effect::Pull(pr) = pull_request(&closed).unwrap() else { panic!("not a pull") };
        assert!(pr.merged, "merged_at alone means merged");
        assert_eq!(pr.state, "closed");

        closed.pull_request.updated_at = "not a time".into();
        assert!(pull_request(&closed).unwrap_err().contains("updated_at"));
    }

    #[test]
    fn issues_comments_releases_and_repository_changes() {
        let transferred: IssuesEvent = example("issues/transferred.payload.json");
        let Effect::Issue(issue) = issues(&transferred).unwrap() else { panic!("not an issue") };
        assert!(issue.transferred_to.is_some());
        let deleted: IssuesEvent = example("issues/deleted.payload.json");
        let Effect::Issue(issue) = issues(&deleted).unwrap() else { panic!("not an issue") };
        assert!(issue.deleted);
        let unpinned: IssuesEvent = example("issues/unpinned.payload.json");
        let Effect::Issue(issue) = issues(&unpinned).unwrap() else { panic!("not an issue") };
        assert_eq!(issue.state, "", "a missing state keeps the stored one");

        let comment: IssueCommentEvent = example("issue_comment/deleted.payload.json");
        let effects = issue_comment(&comment).unwrap();
        assert!(matches!(&effects[0], Effect::Comment(c) if c.deleted && c.issue_number == comment.issue.number));

        let release_deleted: ReleaseEvent = example("release/deleted.payload.json");
        assert!(matches!(release(&release_deleted), Effect::Release(r) if r.deleted));

        let renamed: RepositoryEvent = example("repository/renamed.payload.json");
        assert!(
            matches!(repository(&renamed), Effect::Repository { full_name: Some(n), .. } if n == renamed.repository.full_name)
        );
        let privatized: RepositoryEvent = example("repository/privatized.payload.json");
        assert!(matches!(repository(&privatized), Effect::Repository { visibility: Some(v), .. } if v == "private"));
    }
}
