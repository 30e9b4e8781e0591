//! The `X-GitHub-Event` header as a type.

use std::fmt;

/// The kind of a webhook delivery, from its `X-GitHub-Event` header.
///
/// Events futurnal does not handle parse to [`WebhookEventType::Other`], so an
/// unexpected event name never fails parsing; it is simply not enabled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WebhookEventType {
    Push,
    PullRequest,
    Issues,
    IssueComment,
    Release,
    Create,
    Delete,
    Repository,
    PullRequestReview,
    PullRequestReviewComment,
    Label,
    Milestone,
    Ping,
    Other(String),
}

impl WebhookEventType {
    /// Every event futurnal handles, ping included: the default set of enabled events.
    pub const HANDLED: [WebhookEventType; 13] = [
        WebhookEventType::Push,
        WebhookEventType::PullRequest,
        WebhookEventType::Issues,
        WebhookEventType::IssueComment,
        WebhookEventType::Release,
        WebhookEventType::Create,
        WebhookEventType::Delete,
        WebhookEventType::Repository,
        WebhookEventType::PullRequestReview,
        WebhookEventType::PullRequestReviewComment,
        WebhookEventType::Label,
        WebhookEventType::Milestone,
        WebhookEventType::Ping,
    ];

    /// Parses a header value. Never fails: unknown names become `Other`.
    pub fn parse(name: &str) -> Self {
        match name {
            "push" => Self::Push,
            "pull_request" => Self::PullRequest,
            "issues" => Self::Issues,
            "issue_comment" => Self::IssueComment,
            "release" => Self::Release,
            "create" => Self::Create,
            "delete" => Self::Delete,
            "repository" => Self::Repository,
            "pull_request_review" => Self::PullRequestReview,
            "pull_request_review_comment" => Self::PullRequestReviewComment,
            "label" => Self::Label,
            "milestone" => Self::Milestone,
            "ping" => Self::Ping,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The name GitHub uses in the `X-GitHub-Event` header.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Push => "push",
            Self::PullRequest => "pull_request",
            Self::Issues => "issues",
            Self::IssueComment => "issue_comment",
            Self::Release => "release",
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Repository => "repository",
            Self::PullRequestReview => "pull_request_review",
            Self::PullRequestReviewComment => "pull_request_review_comment",
            Self::Label => "label",
            Self::Milestone => "milestone",
            Self::Ping => "ping",
            Self::Other(name) => name,
        }
    }

    /// Whether futurnal has a handler for this event.
    pub fn is_handled(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_events_are_other() {
        for kind in WebhookEventType::HANDLED {
            assert_eq!(WebhookEventType::parse(kind.as_str()), kind);
            assert!(kind.is_handled());
        }
        let other = WebhookEventType::parse("workflow_run");
        assert_eq!(other, WebhookEventType::Other("workflow_run".into()));
        assert_eq!(other.as_str(), "workflow_run");
        assert!(!other.is_handled());
    }
}
