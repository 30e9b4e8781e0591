//! Reviews, review comments, labels and milestones end to end: GitHub's example deliveries
//! (and variants built from them in code: the corpus is used as it is) through the
//! receiver and the workers, read back through the store and the query commands. Order
//! safety: an older delivery handled later never overwrites newer state, and what was
//! deleted stays deleted.

use std::path::Path;

use futurnal::storage::copy::{IssueState, MilestoneState, PullState};
use futurnal::storage::queue::DeliveryStatus;
use futurnal::storage::registry::{RepoRef, TrackedRepository};
use serde_json::{json, Value};

use crate::helpers::*;

const REPO: &str = "octo/hello";
const ID: u64 = 4242;

/// A fixture payload, retargeted at the tracked repository.
fn example(path: &str) -> Value {
    let mut value: Value =
        serde_json::from_slice(&std::fs::read(fixture(&format!("payloads/{path}"))).unwrap()).unwrap();
    value["repository"]["id"] = ID.into();
    value["repository"]["full_name"] = REPO.into();
    value
}

/// Delivers `body` as `event` and waits until it is handled.
async fn deliver(app: &TestApp, event: &str, body: &Value) -> String {
    let d = Delivery::new(event, serde_json::to_vec(body).unwrap());
    let id = d.id.clone();
    let (status, answer) = app.post(d).await;
    assert_eq!(status, 202, "{event}: {answer}");
    assert_eq!(answer["status"], "queued", "{event}: {answer}");
    app.wait_for_status(&id, DeliveryStatus::Done).await;
    id
}

async fn tracked(app: &TestApp) -> TrackedRepository {
    app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_and_review_comments_from_githubs_examples_older_ones_and_deleted_ones() {
    let app = spawn_app(AppOptions::default()).await;
    let repo = tracked(&app).await;
    let reviews = || async { app.copy.reviews(repo.id, None, 100).await.unwrap() };

    // Submitted: the review as GitHub describes it.
    let submitted = example("pull_request_review/submitted.payload.json");
    deliver(&app, "pull_request_review", &submitted).await;
    let stored = reviews().await;
    assert_eq!(stored.len(), 1);
    let review = &stored[0];
    let raw = &submitted["review"];
    assert_eq!(review.id, raw["id"].as_u64().unwrap());
    assert_eq!(review.pull_number, submitted["pull_request"]["number"].as_u64().unwrap());
    assert_eq!((review.state.as_str(), review.author.as_deref()), ("commented", Some("Codertocat")));
    assert_eq!(review.commit_id.as_deref(), raw["commit_id"].as_str());
    assert_eq!(review.submitted_at, futurnal::time::parse_ms(raw["submitted_at"].as_str().unwrap()));
    assert_eq!(review.body, None);
    assert_eq!(app.copy.reviews(repo.id, Some(review.pull_number), 100).await.unwrap().len(), 1);
    assert!(app.copy.reviews(repo.id, Some(999), 100).await.unwrap().is_empty(), "--pull filters");

    // Edited (GitHub has no example: built from the submitted one), then dismissed.
    let mut edited = submitted.clone();
    edited["action"] = "edited".into();
    edited["review"]["body"] = "Looks good, with one nit.".into();
    edited["changes"] = json!({"body": {"from": ""}});
    deliver(&app, "pull_request_review", &edited).await;
    assert_eq!(reviews().await[0].body.as_deref(), Some("Looks good, with one nit."));
    let mut dismissed = example("pull_request_review/dismissed.payload.json");
    dismissed["review"]["body"] = "Looks good, with one nit.".into();
    deliver(&app, "pull_request_review", &dismissed).await;
    assert_eq!(reviews().await[0].state, "dismissed");
    // The submission delivered again, late: a dismissal sticks.
    deliver(&app, "pull_request_review", &edited).await;
    assert_eq!(reviews().await[0].state, "dismissed", "a late delivery does not undo a dismissal");
    // A review submitted earlier than the stored one (an older state of it) is refused.
    let mut older = submitted.clone();
    older["review"]["submitted_at"] = "2019-05-15T15:00:00Z".into();
    older["review"]["body"] = "older".into();
    deliver(&app, "pull_request_review", &older).await;
    assert_eq!(reviews().await[0].body.as_deref(), Some("Looks good, with one nit."));

    // Review comments: created, edited (newer), an older edit after it, deleted, an edit after that.
    let created = example("pull_request_review_comment/created.payload.json");
    let pull = created["pull_request"]["number"].as_u64().unwrap();
    deliver(&app, "pull_request_review_comment", &created).await;
    let comments = || async { app.copy.review_comments(repo.id, Some(pull), 100).await.unwrap() };
    let stored = comments().await;
    assert_eq!(stored.len(), 1);
    let (c, raw) = (&stored[0], &created["comment"]);
    assert_eq!(c.id, raw["id"].as_u64().unwrap());
    assert_eq!(c.review_id, raw["pull_request_review_id"].as_u64());
    assert_eq!((c.path.as_deref(), c.line, c.side.as_deref()), (Some("README.md"), Some(265), Some("RIGHT")));
    assert_eq!(c.body.as_deref(), raw["body"].as_str());
    assert_eq!((c.author.as_deref(), c.in_reply_to), (Some("Codertocat"), None));
    assert_eq!(c.updated_at, futurnal::time::parse_ms("2019-05-15T15:20:38Z").unwrap());
    assert!(app.copy.review_comments(repo.id, Some(pull + 1), 100).await.unwrap().is_empty());

    let mut newer = example("pull_request_review_comment/edited.payload.json");
    newer["comment"]["body"] = "Edited: even more emoji".into();
    newer["comment"]["updated_at"] = "2019-05-16T00:00:00Z".into();
    deliver(&app, "pull_request_review_comment", &newer).await;
    assert_eq!(comments().await[0].body.as_deref(), Some("Edited: even more emoji"));
    // The corpus's own edit is older than the one stored: nothing changes.
    deliver(&app, "pull_request_review_comment", &example("pull_request_review_comment/edited.payload.json")).await;
    assert_eq!(comments().await[0].body.as_deref(), Some("Edited: even more emoji"), "an older edit is ignored");

    // A reply to it, then the first one deleted (its payload carries its last update).
    let mut reply = created.clone();
    reply["comment"]["id"] = 284312631u64.into();
    reply["comment"]["in_reply_to_id"] = raw["id"].clone();
    reply["comment"]["created_at"] = "2019-05-17T00:00:00Z".into();
    reply["comment"]["updated_at"] = "2019-05-17T00:00:00Z".into();
    deliver(&app, "pull_request_review_comment", &reply).await;
    let listed = comments().await;
    assert_eq!(listed.iter().map(|c| c.id).collect::<Vec<_>>(), [284312631, 284312630], "newest first");
    assert_eq!(listed[0].in_reply_to, Some(284312630));
    deliver(&app, "pull_request_review_comment", &example("pull_request_review_comment/deleted.payload.json")).await;
    assert_eq!(comments().await.iter().map(|c| c.id).collect::<Vec<_>>(), [284312631]);
    let mut after_delete = newer.clone();
    after_delete["comment"]["updated_at"] = "2019-06-01T00:00:00Z".into();
    deliver(&app, "pull_request_review_comment", &after_delete).await;
    assert_eq!(comments().await.len(), 1, "a deleted review comment stays deleted");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_milestones_from_githubs_examples_renames_and_deletions() {
    let app = spawn_app(AppOptions::default()).await;
    let repo = tracked(&app).await;
    let labels = || async {
        let labels = app.copy.labels(repo.id, 100).await.unwrap();
        labels.into_iter().map(|l| (l.name, l.color, l.description)).collect::<Vec<_>>()
    };
    let bugfix = |color: &str| (":bug: Bugfix".to_owned(), Some(color.to_owned()), Some("Fixes a bug".to_owned()));

    deliver(&app, "label", &example("label/created.payload.json")).await;
    assert_eq!(labels().await, [bugfix("cb1f00")]);
    deliver(&app, "label", &example("label/edited.payload.json")).await;
    assert_eq!(labels().await, [bugfix("cceeaa")]);
    // Renamed (`changes.name.from`): the old name is gone, the new one has the label.
    let mut renamed = example("label/edited.payload.json");
    renamed["label"]["name"] = "bug".into();
    renamed["changes"] = json!({"name": {"from": ":bug: Bugfix"}});
    deliver(&app, "label", &renamed).await;
    let renamed_label = ("bug".to_owned(), Some("cceeaa".to_owned()), Some("Fixes a bug".to_owned()));
    assert_eq!(labels().await, std::slice::from_ref(&renamed_label));
    // An edit sent before the rename (it still names the old name) arrives after it: nothing.
    deliver(&app, "label", &example("label/edited.payload.json")).await;
    assert_eq!(labels().await, [renamed_label], "an event from before a rename changes nothing");
    // Deleted (by its old name, sent before the rename: the id is what is deleted).
    deliver(&app, "label", &example("label/deleted.payload.json")).await;
    assert_eq!(labels().await, []);
    // The creation delivered again, late: a deleted label stays deleted.
    deliver(&app, "label", &example("label/created.payload.json")).await;
    assert_eq!(labels().await, [], "a deleted label is not brought back");
    // A new label of that name (GitHub gives it a new, higher id) is a label again.
    let mut new_one = example("label/created.payload.json");
    new_one["label"]["id"] = 1362937999u64.into();
    new_one["label"]["color"] = "00ff00".into();
    deliver(&app, "label", &new_one).await;
    assert_eq!(labels().await, [bugfix("00ff00")]);

    // Milestones: created (open), closed, reopened and edited (built), an older edit, deleted.
    let copy = app.copy.clone();
    let milestones = |state| {
        let copy = copy.clone();
        async move { copy.milestones(repo.id, state, 100).await.unwrap() }
    };
    let created = example("milestone/created.payload.json");
    deliver(&app, "milestone", &created).await;
    let open = milestones(MilestoneState::Open).await;
    assert_eq!(open.len(), 1);
    let (m, raw) = (&open[0], &created["milestone"]);
    assert_eq!((m.number, m.title.as_str(), m.state.as_str()), (1, "v1.0", "open"));
    assert_eq!(m.description.as_deref(), raw["description"].as_str());
    assert_eq!(m.due_on, futurnal::time::parse_ms(raw["due_on"].as_str().unwrap()));
    assert_eq!(m.created_at, futurnal::time::parse_ms(raw["created_at"].as_str().unwrap()));
    assert_eq!(m.closed_at, None);
    let closed = example("milestone/closed.payload.json");
    deliver(&app, "milestone", &closed).await;
    assert!(milestones(MilestoneState::Open).await.is_empty());
    let listed = milestones(MilestoneState::Closed).await;
    assert_eq!(listed[0].state, "closed");
    assert_eq!(listed[0].closed_at, futurnal::time::parse_ms(closed["milestone"]["closed_at"].as_str().unwrap()));
    let mut opened = closed.clone();
    opened["action"] = "opened".into();
    opened["milestone"]["state"] = "open".into();
    opened["milestone"]["closed_at"] = Value::Null;
    opened["milestone"]["updated_at"] = "2019-05-15T15:20:30Z".into();
    deliver(&app, "milestone", &opened).await;
    assert_eq!(milestones(MilestoneState::Open).await.len(), 1);
    let mut edited = opened.clone();
    edited["action"] = "edited".into();
    edited["milestone"]["title"] = "v1.0 (the big one)".into();
    edited["milestone"]["updated_at"] = "2019-05-15T15:20:31Z".into();
    edited["changes"] = json!({"title": {"from": "v1.0"}});
    deliver(&app, "milestone", &edited).await;
    // The close delivered again, late: older than what is stored, it changes nothing.
    deliver(&app, "milestone", &closed).await;
    let all = milestones(MilestoneState::All).await;
    assert_eq!((all[0].title.as_str(), all[0].state.as_str()), ("v1.0 (the big one)", "open"));
    deliver(&app, "milestone", &example("milestone/deleted.payload.json")).await;
    assert!(milestones(MilestoneState::All).await.is_empty());
    let mut late = edited.clone();
    late["milestone"]["updated_at"] = "2019-06-01T00:00:00Z".into();
    deliver(&app, "milestone", &late).await;
    assert!(milestones(MilestoneState::All).await.is_empty(), "a deleted milestone stays deleted");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_and_pull_request_actions_move_labels_assignees_and_the_milestone() {
    let app = spawn_app(AppOptions::default()).await;
    let repo = tracked(&app).await;
    let copy = app.copy.clone();
    let issue = |number: u64| {
        let copy = copy.clone();
        async move {
            let issues = copy.issues(repo.id, IssueState::All, 100).await.unwrap();
            issues.into_iter().find(|i| i.number == number).unwrap()
        }
    };
    // Each of GitHub's examples stores the issue as its payload shows it.
    for action in ["assigned", "labeled", "unassigned", "unlabeled", "milestoned", "demilestoned"] {
        let body = example(&format!("issues/{action}.payload.json"));
        deliver(&app, "issues", &body).await;
        let raw = &body["issue"];
        let stored = issue(raw["number"].as_u64().unwrap()).await;
        let names = |key: &str, field: &str| -> Vec<String> {
            raw[key].as_array().unwrap().iter().map(|v| v[field].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(stored.labels, names("labels", "name"), "{action}");
        assert_eq!(stored.assignees, names("assignees", "login"), "{action}");
        assert_eq!(stored.milestone, raw["milestone"]["number"].as_u64(), "{action}");
    }
    // milestoned, then demilestoned (the same updated_at: the later delivery wins).
    assert_eq!(issue(2).await.milestone, None);
    let mut milestoned = example("issues/milestoned.payload.json");
    milestoned["issue"]["updated_at"] = "2019-05-15T15:21:00Z".into();
    deliver(&app, "issues", &milestoned).await;
    assert_eq!(issue(2).await.milestone, Some(1));
    // The demilestoned delivery again, late (older than what is stored): ignored.
    deliver(&app, "issues", &example("issues/demilestoned.payload.json")).await;
    assert_eq!(issue(2).await.milestone, Some(1), "an older demilestoned delivery is ignored");
    // A label and an assignee removed (GitHub's own examples still list them).
    let mut unlabeled = example("issues/unlabeled.payload.json");
    unlabeled["issue"]["labels"] = json!([]);
    unlabeled["issue"]["assignees"] = json!([]);
    unlabeled["issue"]["updated_at"] = "2019-05-15T15:22:00Z".into();
    deliver(&app, "issues", &unlabeled).await;
    let one = issue(1).await;
    assert!(one.labels.is_empty() && one.assignees.is_empty(), "{one:?}");
    // An older labeled delivery handled after that: ignored.
    deliver(&app, "issues", &example("issues/labeled.payload.json")).await;
    assert!(issue(1).await.labels.is_empty(), "an older labeled delivery is ignored");

    // Pull requests: the same actions, and the milestone (GitHub has no example of a
    // pull request's milestoned: built from labeled, whose pull request has milestone 1).
    let pull = || async { app.copy.pulls(repo.id, PullState::All, 100).await.unwrap().remove(0) };
    for action in ["assigned", "labeled", "unassigned", "unlabeled"] {
        let body = example(&format!("pull_request/{action}.payload.json"));
        deliver(&app, "pull_request", &body).await;
        let stored = pull().await;
        let raw = &body["pull_request"];
        assert_eq!(stored.milestone, raw["milestone"]["number"].as_u64(), "{action}");
        assert_eq!(stored.labels.len(), raw["labels"].as_array().unwrap().len(), "{action}");
        assert_eq!(stored.assignees.len(), raw["assignees"].as_array().unwrap().len(), "{action}");
    }
    let mut milestoned = example("pull_request/labeled.payload.json");
    milestoned["action"] = "milestoned".into();
    milestoned["pull_request"]["milestone"] = json!({"number": 7, "title": "v7"});
    milestoned["pull_request"]["updated_at"] = "2019-05-15T15:30:00Z".into();
    deliver(&app, "pull_request", &milestoned).await;
    assert_eq!(pull().await.milestone, Some(7));
    let mut demilestoned = milestoned.clone();
    demilestoned["action"] = "demilestoned".into();
    demilestoned["pull_request"]["milestone"] = Value::Null;
    demilestoned["pull_request"]["updated_at"] = "2019-05-15T15:31:00Z".into();
    deliver(&app, "pull_request", &demilestoned).await;
    assert_eq!(pull().await.milestone, None);
    app.stop().await;
}

/// The CLI off the async threads (the daemon under test shares the runtime).
async fn cli(dir: &Path, args: &[&str]) -> CliOutput {
    // The dir's PostgreSQL schema (in that run) belongs to the test's thread.
    crate::pg_mode::schema_for(dir);
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        futurnal(&dir, &args)
    })
    .await
    .unwrap()
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_commands_print_productmd_keys_tables_and_clear_errors() {
    let app = spawn_app(AppOptions::default()).await;
    let dir = app.dir.path().to_owned();
    deliver(&app, "pull_request_review", &example("pull_request_review/submitted.payload.json")).await;
    deliver(&app, "pull_request_review_comment", &example("pull_request_review_comment/created.payload.json")).await;
    deliver(&app, "label", &example("label/created.payload.json")).await;
    deliver(&app, "milestone", &example("milestone/created.payload.json")).await;
    deliver(&app, "issues", &example("issues/milestoned.payload.json")).await;
    deliver(&app, "pull_request", &example("pull_request/labeled.payload.json")).await;

    let json = |args: &'static [&'static str]| {
        let dir = dir.clone();
        async move {
            let mut all = vec!["--json", "sources", "github"];
            all.extend_from_slice(args);
            let out = cli(&dir, &all).await;
            assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
            let list = out.json();
            assert_eq!(list.as_array().map(Vec::len), Some(1), "{args:?}: {list}");
            list[0].clone()
        }
    };
    let review = json(&["reviews", REPO]).await;
    for key in ["id", "pull_number", "author", "state", "body", "commit_id", "submitted_at"] {
        assert!(review.get(key).is_some(), "reviews lacks {key}: {review}");
    }
    assert_eq!(review["submitted_at"], "2019-05-15T15:20:38Z");
    assert_eq!(review["state"], "commented");
    assert_eq!(json(&["reviews", REPO, "--pull", "2"]).await, review);
    let comment = json(&["review-comments", REPO, "--pull", "2"]).await;
    for key in
        ["id", "review_id", "pull_number", "path", "line", "body", "author", "in_reply_to", "created_at", "updated_at"]
    {
        assert!(comment.get(key).is_some(), "review-comments lacks {key}: {comment}");
    }
    assert_eq!(
        (&comment["line"], &comment["side"], &comment["in_reply_to"]),
        (&json!(265), &json!("RIGHT"), &Value::Null)
    );
    let label = json(&["labels", REPO]).await;
    assert_eq!(keys(&label), ["color", "description", "id", "name"]);
    assert_eq!((&label["name"], &label["color"]), (&json!(":bug: Bugfix"), &json!("cb1f00")));
    let milestone = json(&["milestones", REPO]).await;
    for key in ["number", "title", "state", "due_on", "created_at", "updated_at", "closed_at"] {
        assert!(milestone.get(key).is_some(), "milestones lacks {key}: {milestone}");
    }
    assert_eq!(
        (&milestone["due_on"], &milestone["closed_at"]),
        (&json!("2019-05-23T07:00:00Z"), &Value::Null),
        "RFC 3339 UTC times"
    );
    assert_eq!(json(&["milestones", REPO, "--state", "all"]).await, milestone);
    let none = cli(&dir, &["--json", "sources", "github", "milestones", REPO, "--state", "closed"]).await;
    assert_eq!(none.json(), json!([]));
    assert_eq!(json(&["issues", REPO, "--state", "all"]).await["milestone"], 1);
    assert_eq!(json(&["pulls", REPO, "--state", "all"]).await["milestone"], 1);

    // Tables: a header and a row each.
    for (args, header, cell) in [
        (&["reviews", REPO][..], "ID", "commented"),
        (&["review-comments", REPO, "--pull", "2"][..], "PATH", "README.md"),
        (&["labels", REPO][..], "NAME", "cb1f00"),
        (&["milestones", REPO][..], "#", "v1.0"),
    ] {
        let mut all = vec!["sources", "github"];
        all.extend_from_slice(args);
        let out = cli(&dir, &all).await;
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {}", out.stdout);
        assert!(
            lines[0].split_whitespace().any(|h| h == header) && lines[1].contains(cell),
            "{args:?}: {}",
            out.stdout
        );
    }

    // Bad input: an unknown repository fails (1, one line); bad flags are usage errors (2).
    for query in [&["reviews", "octo/nope"][..], &["labels", "octo/nope"], &["milestones", "octo/nope"]] {
        let mut all = vec!["sources", "github"];
        all.extend_from_slice(query);
        let out = cli(&dir, &all).await;
        assert_eq!(out.code, 1, "{query:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: ") && out.stderr.contains("not tracked"), "{}", out.stderr);
        assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
    }
    for usage in [
        &["milestones", REPO, "--state", "merged"][..],
        &["review-comments", REPO],
        &["reviews", REPO, "--pull", "two"],
        &["labels"],
    ] {
        let mut all = vec!["sources", "github"];
        all.extend_from_slice(usage);
        let out = cli(&dir, &all).await;
        assert_eq!(out.code, 2, "{usage:?}: {}", out.stderr);
    }
    let out = cli(&dir, &["sources", "github", "milestones", REPO, "--state", "merged"]).await;
    assert!(
        out.stderr.contains("open") && out.stderr.contains("closed") && out.stderr.contains("all"),
        "{}",
        out.stderr
    );
    app.stop().await;
}

/// The snapshot a consumer resyncs from (`/api/snapshot`) holds reviews, review comments,
/// labels and milestones exactly as folding their changes builds them: renames and
/// deletions included, so resyncing then following the feed loses and repeats nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_holds_the_new_entities_as_their_changes_build_them() {
    use std::collections::BTreeMap;
    let app = spawn_app(AppOptions::default()).await;
    let repo = tracked(&app).await;
    deliver(&app, "pull_request_review", &example("pull_request_review/submitted.payload.json")).await;
    deliver(&app, "pull_request_review", &example("pull_request_review/dismissed.payload.json")).await;
    let created = example("pull_request_review_comment/created.payload.json");
    deliver(&app, "pull_request_review_comment", &created).await;
    let mut reply = created.clone();
    reply["comment"]["id"] = 1.into();
    reply["comment"]["in_reply_to_id"] = created["comment"]["id"].clone();
    deliver(&app, "pull_request_review_comment", &reply).await;
    deliver(&app, "pull_request_review_comment", &example("pull_request_review_comment/deleted.payload.json")).await;
    deliver(&app, "label", &example("label/created.payload.json")).await;
    let mut renamed = example("label/edited.payload.json");
    renamed["label"]["name"] = "bug".into();
    renamed["changes"] = json!({"name": {"from": ":bug: Bugfix"}});
    deliver(&app, "label", &renamed).await;
    let mut other = example("label/created.payload.json");
    other["label"]["name"] = "wontfix".into();
    other["label"]["id"] = 5.into();
    deliver(&app, "label", &other).await;
    other["action"] = "deleted".into();
    deliver(&app, "label", &other).await;
    deliver(&app, "milestone", &example("milestone/created.payload.json")).await;
    deliver(&app, "milestone", &example("milestone/closed.payload.json")).await;
    let mut second = example("milestone/created.payload.json");
    second["milestone"]["number"] = 2.into();
    deliver(&app, "milestone", &second).await;
    second["action"] = "deleted".into();
    deliver(&app, "milestone", &second).await;

    let kinds = ["review", "review_comment", "label", "milestone"];
    let all = futurnal::storage::changes::ChangeFilter { since: 0, limit: 10_000, repository: None, kind: None };
    let mut folded = BTreeMap::new();
    for change in app.copy.changes(all).await.unwrap().into_iter().filter(|c| kinds.contains(&c.kind.as_str())) {
        match change.state {
            Some(state) => folded.insert((change.kind, change.key), state),
            None => folded.remove(&(change.kind, change.key)),
        };
    }
    let (_, entities) = futurnal::feed::snapshot(&*app.copy, repo.id, None).await.unwrap();
    let snapshot: BTreeMap<(String, String), Value> = entities
        .into_iter()
        .filter(|e| kinds.contains(&e["kind"].as_str().unwrap()))
        .map(|e| ((e["kind"].as_str().unwrap().to_owned(), e["key"].as_str().unwrap().to_owned()), e["state"].clone()))
        .collect();
    assert_eq!(snapshot, folded);
    let keys: Vec<&str> = snapshot.keys().map(|(_, key)| key.as_str()).collect();
    assert_eq!(keys, ["label:bug", "milestone#1", "review#237895671", "review_comment#1"]);
    assert_eq!(snapshot[&("review".to_owned(), "review#237895671".to_owned())]["state"], "dismissed");
    let (_, only) = futurnal::feed::snapshot(&*app.copy, repo.id, Some("label")).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["kind"], "label");
    app.stop().await;
}
