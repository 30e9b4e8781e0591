//! Payload → effect, for the events whose payload is the data (pull requests, issues,
//! comments, releases, reviews, review comments, labels, milestones, repository changes).
//! Pure functions, tested on GitHub's examples. The REST API's objects are the same, so
//! polling goes through the `*_record` functions too.

use futurnal_github::payload::{
    Account, Issue, IssueCommentEvent, IssuesEvent, Label, LabelEvent, Milestone, MilestoneEvent, MilestoneRef,
    PullRequest, PullRequestEvent, PullRequestReviewCommentEvent, PullRequestReviewEvent, ReleaseEvent,
    RepositoryEvent, Review, ReviewComment,
};

use crate::storage::copy::{
    CommentRecord, Effect, IssueRecord, LabelNaming, LabelRecord, MilestoneRecord, PullRecord, ReleaseRecord,
    ReviewCommentRecord, ReviewRecord,
};
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

fn login(account: &Option<Account>) -> Option<String> {
    account.as_ref().map(|a| a.login.clone()).filter(|l| !l.is_empty())
}

fn milestone_number(milestone: &Option<MilestoneRef>) -> Option<u64> {
    milestone.as_ref().and_then(|m| m.number)
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
        milestone: milestone_number(&pr.milestone),
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
        milestone: milestone_number(&issue.milestone),
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

/// A review as a webhook or the reviews list shows it, on pull request `pull_number`.
/// States are stored lower case (the list says `APPROVED`, a webhook `approved`).
pub fn review_record(review: &Review, pull_number: u64) -> ReviewRecord {
    ReviewRecord {
        id: review.id,
        pull_number,
        author: login(&review.user),
        state: review.state.as_deref().unwrap_or_default().to_ascii_lowercase(),
        body: review.body.clone(),
        commit_id: review.commit_id.clone(),
        submitted_at: time(&review.submitted_at),
        html_url: review.html_url.clone(),
    }
}

pub fn pull_request_review(event: &PullRequestReviewEvent) -> Effect {
    let mut record = review_record(&event.review, event.pull_request.number);
    if event.action == "dismissed" {
        record.state = "dismissed".into();
    }
    Effect::Review(record)
}

/// A review comment as a webhook or the review comments list shows it.
pub fn review_comment_record(
    comment: &ReviewComment,
    pull_number: u64,
    deleted: bool,
) -> Result<ReviewCommentRecord, String> {
    Ok(ReviewCommentRecord {
        id: comment.id,
        review_id: comment.pull_request_review_id,
        pull_number,
        path: comment.path.clone(),
        line: comment.line,
        side: comment.side.clone(),
        body: comment.body.clone(),
        author: login(&comment.user),
        in_reply_to: comment.in_reply_to_id,
        commit_id: comment.commit_id.clone(),
        html_url: comment.html_url.clone(),
        created_at: time(&comment.created_at),
        updated_at: required_time(&comment.updated_at, "comment.updated_at")?,
        deleted,
    })
}

pub fn pull_request_review_comment(event: &PullRequestReviewCommentEvent) -> Result<Effect, String> {
    review_comment_record(&event.comment, event.pull_request.number, event.action == "deleted")
        .map(Effect::ReviewComment)
}

/// A label as the `label` event or the labels list shows it.
pub fn label_record(label: &Label, deleted: bool) -> LabelRecord {
    LabelRecord {
        name: label.name.clone(),
        github_id: label.id,
        color: label.color.clone(),
        description: label.description.clone(),
        deleted,
    }
}

/// A `label` event: `edited` with `changes.name.from` is a rename.
pub fn label(event: &LabelEvent) -> Effect {
    let renamed_from = (event.action == "edited")
        .then(|| event.changes.as_ref().and_then(|c| c["name"]["from"].as_str()))
        .flatten()
        .filter(|from| *from != event.label.name);
    let naming = match renamed_from {
        Some(from) => LabelNaming::RenamedFrom(from.to_owned()),
        None => LabelNaming::AsSent,
    };
    Effect::Label { label: label_record(&event.label, event.action == "deleted"), naming }
}

/// A milestone as the `milestone` event or the milestones list shows it.
pub fn milestone_record(milestone: &Milestone, deleted: bool) -> Result<MilestoneRecord, String> {
    Ok(MilestoneRecord {
        number: milestone.number,
        github_id: milestone.id,
        title: milestone.title.clone().unwrap_or_default(),
        // Missing from some deliveries: empty keeps the stored state.
        state: milestone.state.clone().unwrap_or_default(),
        description: milestone.description.clone(),
        due_on: time(&milestone.due_on),
        created_at: time(&milestone.created_at),
        updated_at: required_time(&milestone.updated_at, "milestone.updated_at")?,
        closed_at: time(&milestone.closed_at),
        html_url: milestone.html_url.clone(),
        deleted,
    })
}

pub fn milestone(event: &MilestoneEvent) -> Result<Effect, String> {
    let mut record = milestone_record(&event.milestone, event.action == "deleted")?;
    if record.state.is_empty() {
        record.state = match event.action.as_str() {
            "closed" => "closed".into(),
            "opened" | "created" => "open".into(),
            _ => String::new(),
        };
    }
    Ok(Effect::Milestone(record))
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
