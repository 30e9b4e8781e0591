//! Reading the local copy: `branches`, `commits`, `pulls`, `issues`, `releases`,
//! `reviews`, `review-comments`, `labels` and `milestones`, as a table or (with `--json`)
//! one JSON array.

use anyhow::bail;
use serde_json::Value;

use super::args::{GithubCommand, MilestoneStateArg};
use super::repos::find_repo;
use crate::config::Config;
use crate::output::{self, print_json, print_table};
use crate::storage::backend::Backend;

fn print_rows<T>(config: &Config, rows: &[T], to_json: fn(&T) -> Value, headers: &[&str], row: fn(&T) -> Vec<String>) {
    if config.json {
        print_json(&Value::Array(rows.iter().map(to_json).collect()));
    } else if rows.is_empty() {
        crate::outln!("Nothing recorded yet.");
    } else {
        print_table(headers, &rows.iter().map(row).collect::<Vec<_>>());
    }
}

/// A table cell for a text that may run over lines: its first line.
fn first_line(text: Option<&str>) -> String {
    text.and_then(|t| t.lines().next()).unwrap_or_default().to_owned()
}

pub(super) async fn query(config: &Config, backend: &Backend, command: GithubCommand) -> anyhow::Result<()> {
    use crate::storage::copy::{IssueState, MilestoneState, PullState};
    use crate::time::{rfc3339, rfc3339_opt};
    match command {
        GithubCommand::Branches { repo } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.branches(repo.id).await?;
            print_rows(config, &rows, output::branch_json, &["BRANCH", "HEAD", "SYNCED"], |b| {
                vec![b.name.clone(), b.head_sha.clone(), rfc3339(b.synced_at)]
            });
        }
        GithubCommand::Commits { repo, branch, limit } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.commits(repo.id, branch, limit.clamp(1, 100_000)).await?;
            print_rows(config, &rows, output::commit_json, &["SHA", "AUTHOR", "COMMITTED", "MESSAGE"], |c| {
                vec![
                    c.sha[..12.min(c.sha.len())].to_owned(),
                    c.author_name.clone(),
                    rfc3339(c.committed_at * 1000),
                    c.message.lines().next().unwrap_or("").to_owned(),
                ]
            });
        }
        GithubCommand::Pulls { repo, state, limit } => {
            let state = match state.as_str() {
                "open" => PullState::Open,
                "closed" => PullState::Closed,
                "merged" => PullState::Merged,
                "all" => PullState::All,
                other => bail!("unknown state '{other}': expected open, closed, merged or all"),
            };
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.pulls(repo.id, state, limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::pull_json,
                &["#", "STATE", "MERGED", "AUTHOR", "UPDATED", "TITLE"],
                |p| {
                    vec![
                        p.number.to_string(),
                        p.state.clone(),
                        p.merged.to_string(),
                        p.author.clone().unwrap_or_default(),
                        rfc3339(p.updated_at),
                        p.title.clone(),
                    ]
                },
            );
        }
        GithubCommand::Issues { repo, state, limit } => {
            let state = match state.as_str() {
                "open" => IssueState::Open,
                "closed" => IssueState::Closed,
                "all" => IssueState::All,
                other => bail!("unknown state '{other}': expected open, closed or all"),
            };
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.issues(repo.id, state, limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::issue_json,
                &["#", "STATE", "COMMENTS", "AUTHOR", "UPDATED", "TITLE"],
                |i| {
                    vec![
                        i.number.to_string(),
                        i.state.clone(),
                        i.comments.to_string(),
                        i.author.clone().unwrap_or_default(),
                        rfc3339(i.updated_at),
                        i.title.clone(),
                    ]
                },
            );
        }
        GithubCommand::Releases { repo, limit } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.releases(repo.id, limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::release_json,
                &["TAG", "NAME", "DRAFT", "PRERELEASE", "PUBLISHED"],
                |r| {
                    vec![
                        r.tag_name.clone(),
                        r.name.clone().unwrap_or_default(),
                        r.draft.to_string(),
                        r.prerelease.to_string(),
                        rfc3339_opt(r.published_at).unwrap_or_default(),
                    ]
                },
            );
        }
        GithubCommand::Reviews { repo, pull, limit } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.reviews(repo.id, pull, limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::review_json,
                &["ID", "PULL", "STATE", "AUTHOR", "SUBMITTED", "BODY"],
                |r| {
                    vec![
                        r.id.to_string(),
                        r.pull_number.to_string(),
                        r.state.clone(),
                        r.author.clone().unwrap_or_default(),
                        rfc3339_opt(r.submitted_at).unwrap_or_default(),
                        first_line(r.body.as_deref()),
                    ]
                },
            );
        }
        GithubCommand::ReviewComments { repo, pull, limit } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.review_comments(repo.id, Some(pull), limit.clamp(1, 100_000)).await?;
            print_rows(
                config,
                &rows,
                output::review_comment_json,
                &["ID", "REVIEW", "PATH", "LINE", "AUTHOR", "UPDATED", "BODY"],
                |c| {
                    vec![
                        c.id.to_string(),
                        c.review_id.map(|id| id.to_string()).unwrap_or_default(),
                        c.path.clone().unwrap_or_default(),
                        c.line.map(|l| l.to_string()).unwrap_or_default(),
                        c.author.clone().unwrap_or_default(),
                        rfc3339(c.updated_at),
                        first_line(c.body.as_deref()),
                    ]
                },
            );
        }
        GithubCommand::Labels { repo, limit } => {
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.labels(repo.id, limit.clamp(1, 100_000)).await?;
            print_rows(config, &rows, output::label_json, &["NAME", "COLOR", "DESCRIPTION"], |l| {
                vec![l.name.clone(), l.color.clone().unwrap_or_default(), first_line(l.description.as_deref())]
            });
        }
        GithubCommand::Milestones { repo, state, limit } => {
            let state = match state {
                MilestoneStateArg::Open => MilestoneState::Open,
                MilestoneStateArg::Closed => MilestoneState::Closed,
                MilestoneStateArg::All => MilestoneState::All,
            };
            let repo = find_repo(backend, &repo).await?;
            let rows = backend.copy.milestones(repo.id, state, limit.clamp(1, 100_000)).await?;
            print_rows(config, &rows, output::milestone_json, &["#", "STATE", "DUE", "UPDATED", "TITLE"], |m| {
                vec![
                    m.number.to_string(),
                    m.state.clone(),
                    rfc3339_opt(m.due_on).unwrap_or_default(),
                    rfc3339(m.updated_at),
                    m.title.clone(),
                ]
            });
        }
        _ => unreachable!("only query commands reach here"),
    }
    Ok(())
}
