//! Reviews, review comments, labels and milestones: their normalized records and the rules
//! that decide what an effect leaves stored, once for both backends.
//!
//! Each backend reads the stored row (or rows), asks the rule here what to write, writes
//! exactly that, and reads it back for the change log: the order-safety of these
//! entities is decided in plain Rust, not in two dialects of SQL.
//!
//! - Review comments and milestones carry `updated_at`: an older one never overwrites a
//!   newer one, and a deleted one stays deleted whatever arrives after.
//! - Reviews carry no `updated_at`, only `submitted_at` (set once, when the review is
//!   submitted): one submitted earlier than the stored one is refused, and a dismissed
//!   review stays dismissed (GitHub cannot undo a dismissal). Two edits of one review's
//!   body cannot be ordered: the one processed last wins.
//! - Labels carry no time at all, only GitHub's id, which only grows: of two labels that
//!   had one name, the higher id is the newer label; a deleted id never comes back (GitHub
//!   never reuses ids). A rename (`changes.name.from`, or the labels list showing an id
//!   under a new name) moves the id to its new name; an event that still names the id by
//!   a name it has left since was sent before the rename and changes nothing. Without ids
//!   (hand-made deliveries) labels go by name, and a deletion sticks against anything but
//!   a label with an id. Two edits of one label cannot be ordered: the one processed last
//!   wins.

/// A pull request review. `state` is lower case: `approved`, `changes_requested`,
/// `commented` or `dismissed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRecord {
    pub id: u64,
    pub pull_number: u64,
    pub author: Option<String>,
    pub state: String,
    pub body: Option<String>,
    pub commit_id: Option<String>,
    pub submitted_at: Option<i64>,
    pub html_url: Option<String>,
}

/// A comment on a pull request's diff. `line` is `None` once the line is outdated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewCommentRecord {
    pub id: u64,
    pub review_id: Option<u64>,
    pub pull_number: u64,
    pub path: Option<String>,
    pub line: Option<u64>,
    pub side: Option<String>,
    pub body: Option<String>,
    pub author: Option<String>,
    pub in_reply_to: Option<u64>,
    pub commit_id: Option<String>,
    pub html_url: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    pub deleted: bool,
}

/// A repository's label, keyed by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRecord {
    pub name: String,
    /// GitHub's id (missing from hand-made deliveries).
    pub github_id: Option<u64>,
    pub color: Option<String>,
    pub description: Option<String>,
    pub deleted: bool,
}

/// How an effect names its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelNaming {
    /// By its name when the event was sent (`created`, an `edited` that kept the name,
    /// `deleted`): if the id has another name by now, the event predates that rename.
    AsSent,
    /// Renamed from this name (`edited` with `changes.name.from`).
    RenamedFrom(String),
    /// By its name now (the labels list): wherever else the id is stored, it was renamed.
    Current,
}

/// A repository's milestone, keyed by its number. An empty `state` (missing from the
/// payload) keeps the stored one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilestoneRecord {
    pub number: u64,
    pub github_id: Option<u64>,
    pub title: String,
    pub state: String,
    pub description: Option<String>,
    pub due_on: Option<i64>,
    pub created_at: Option<i64>,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub html_url: Option<String>,
    pub deleted: bool,
}

/// Which milestones a query lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilestoneState {
    Open,
    Closed,
    All,
}

/// What a review effect leaves stored: `None` when the stored row stays as it is.
pub fn merge_review(stored: Option<&ReviewRecord>, incoming: &ReviewRecord) -> Option<ReviewRecord> {
    let Some(stored) = stored else { return Some(incoming.clone()) };
    if incoming.submitted_at.unwrap_or(i64::MIN) < stored.submitted_at.unwrap_or(i64::MIN) {
        return None;
    }
    let mut merged = incoming.clone();
    if stored.state == "dismissed" || merged.state.is_empty() {
        merged.state = stored.state.clone();
    }
    merged.pull_number = stored.pull_number;
    merged.author = merged.author.or_else(|| stored.author.clone());
    merged.commit_id = merged.commit_id.or_else(|| stored.commit_id.clone());
    merged.submitted_at = merged.submitted_at.or(stored.submitted_at);
    merged.html_url = merged.html_url.or_else(|| stored.html_url.clone());
    (merged != *stored).then_some(merged)
}

/// What a review comment effect leaves stored: newer wins, deletion sticks.
pub fn merge_review_comment(
    stored: Option<&ReviewCommentRecord>,
    incoming: &ReviewCommentRecord,
) -> Option<ReviewCommentRecord> {
    let Some(stored) = stored else { return Some(incoming.clone()) };
    if stored.deleted {
        return None;
    }
    let mut merged = if incoming.updated_at >= stored.updated_at {
        let mut newer = incoming.clone();
        // What never changes once known.
        newer.pull_number = stored.pull_number;
        newer.review_id = stored.review_id.or(newer.review_id);
        newer.in_reply_to = stored.in_reply_to.or(newer.in_reply_to);
        newer.created_at = stored.created_at.or(newer.created_at);
        newer.author = newer.author.or_else(|| stored.author.clone());
        newer
    } else if incoming.deleted {
        stored.clone()
    } else {
        return None;
    };
    merged.deleted = incoming.deleted;
    (merged != *stored).then_some(merged)
}

/// What a milestone effect leaves stored: newer wins, deletion sticks.
pub fn merge_milestone(stored: Option<&MilestoneRecord>, incoming: &MilestoneRecord) -> Option<MilestoneRecord> {
    let Some(stored) = stored else {
        let mut new = incoming.clone();
        if new.state.is_empty() {
            new.state = "open".into();
        }
        return Some(new);
    };
    if stored.deleted {
        return None;
    }
    let mut merged = if incoming.updated_at >= stored.updated_at {
        let mut newer = incoming.clone();
        if newer.state.is_empty() {
            newer.state = stored.state.clone();
        }
        newer.github_id = newer.github_id.or(stored.github_id);
        newer.created_at = stored.created_at.or(newer.created_at);
        newer
    } else if incoming.deleted {
        stored.clone()
    } else {
        return None;
    };
    merged.deleted = incoming.deleted;
    (merged != *stored).then_some(merged)
}

/// One row a label effect writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelWrite {
    /// Insert or replace the row of this label's name.
    Upsert(LabelRecord),
    /// Remove the row of this name: its label was renamed.
    Remove(String),
}

/// The stored rows a label effect is decided on.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredLabels<'a> {
    /// The row of the incoming label's name.
    pub same_name: Option<&'a LabelRecord>,
    /// Rows of other names with the incoming label's id (none when it has no id).
    pub same_id: &'a [LabelRecord],
    /// The row of the name it was renamed from, when that is another name.
    pub renamed_from: Option<&'a LabelRecord>,
}

/// What a label effect writes, in order (see the module's comment for the rules).
pub fn label_writes(incoming: &LabelRecord, naming: &LabelNaming, stored: StoredLabels<'_>) -> Vec<LabelWrite> {
    let id = incoming.github_id;
    let same_label = |row: &LabelRecord| match (id, row.github_id) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    // GitHub never reuses an id: once deleted, it is gone for good.
    let id_deleted = id.is_some()
        && (stored.same_id.iter().any(|l| l.deleted)
            || stored.same_name.is_some_and(|l| l.deleted && l.github_id == id));
    if id_deleted {
        return Vec::new();
    }
    let live_elsewhere: Vec<&LabelRecord> = stored.same_id.iter().filter(|l| !l.deleted).collect();
    // The stored name belongs to a newer label (a higher id): this one is older.
    let name_taken_by_newer = matches!(
        (id, stored.same_name.and_then(|l| l.github_id)),
        (Some(a), Some(b)) if a < b
    );
    let mut writes = Vec::new();
    if incoming.deleted {
        for row in live_elsewhere {
            writes.push(LabelWrite::Upsert(LabelRecord { deleted: true, ..row.clone() }));
        }
        if !name_taken_by_newer {
            let tombstone = match stored.same_name.filter(|l| same_label(l)) {
                Some(row) => LabelRecord { deleted: true, github_id: id.or(row.github_id), ..row.clone() },
                None => incoming.clone(),
            };
            if stored.same_name != Some(&tombstone) {
                writes.push(LabelWrite::Upsert(tombstone));
            }
        }
        return writes;
    }
    if name_taken_by_newer {
        return writes;
    }
    // A deletion stored without an id: only a label with an id (GitHub's events and
    // lists carry one) can be told apart from the deleted one and takes the name back.
    if id.is_none() && stored.same_name.is_some_and(|l| l.deleted) {
        return writes;
    }
    match naming {
        LabelNaming::AsSent if !live_elsewhere.is_empty() => return writes,
        LabelNaming::AsSent => {}
        LabelNaming::RenamedFrom(_) | LabelNaming::Current => {
            for row in live_elsewhere {
                writes.push(LabelWrite::Remove(row.name.clone()));
            }
            if let Some(old) = stored.renamed_from.filter(|l| !l.deleted && same_label(l) && l.name != incoming.name) {
                if !writes.contains(&LabelWrite::Remove(old.name.clone())) {
                    writes.push(LabelWrite::Remove(old.name.clone()));
                }
            }
        }
    }
    let mut merged = incoming.clone();
    if let Some(row) = stored.same_name.filter(|l| same_label(l)) {
        merged.github_id = merged.github_id.or(row.github_id);
    }
    if stored.same_name != Some(&merged) {
        writes.push(LabelWrite::Upsert(merged));
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(submitted_at: Option<i64>, state: &str, body: &str) -> ReviewRecord {
        ReviewRecord {
            id: 1,
            pull_number: 2,
            author: Some("mona".into()),
            state: state.into(),
            body: Some(body.into()),
            commit_id: Some("c".into()),
            submitted_at,
            html_url: None,
        }
    }

    #[test]
    fn reviews_submitted_earlier_are_refused_and_a_dismissal_sticks() {
        let stored = review(Some(10), "approved", "first");
        assert_eq!(merge_review(None, &stored), Some(stored.clone()));
        assert_eq!(merge_review(Some(&stored), &stored), None, "the same again");
        assert_eq!(merge_review(Some(&stored), &review(Some(9), "commented", "older")), None);
        let edited = merge_review(Some(&stored), &review(Some(10), "approved", "edited")).unwrap();
        assert_eq!(edited.body.as_deref(), Some("edited"));
        let dismissed = merge_review(Some(&edited), &review(Some(10), "dismissed", "edited")).unwrap();
        assert_eq!(dismissed.state, "dismissed");
        let late = merge_review(Some(&dismissed), &review(Some(10), "approved", "late edit")).unwrap();
        assert_eq!((late.state.as_str(), late.body.as_deref()), ("dismissed", Some("late edit")));
    }

    fn comment(updated_at: i64, body: &str, deleted: bool) -> ReviewCommentRecord {
        ReviewCommentRecord {
            id: 5,
            review_id: Some(1),
            pull_number: 2,
            path: Some("README.md".into()),
            line: Some(3),
            side: Some("RIGHT".into()),
            body: Some(body.into()),
            author: Some("mona".into()),
            in_reply_to: None,
            commit_id: None,
            html_url: None,
            created_at: Some(1),
            updated_at,
            deleted,
        }
    }

    #[test]
    fn review_comments_newer_wins_and_deletion_sticks() {
        let stored = comment(10, "v10", false);
        assert_eq!(merge_review_comment(Some(&stored), &comment(9, "v9", false)), None);
        assert_eq!(merge_review_comment(Some(&stored), &stored), None);
        let newer = merge_review_comment(Some(&stored), &comment(11, "v11", false)).unwrap();
        assert_eq!(newer.body.as_deref(), Some("v11"));
        // A deletion seen with an older updated_at still deletes (and keeps the newer body).
        let deleted = merge_review_comment(Some(&newer), &comment(10, "v10", true)).unwrap();
        assert!(deleted.deleted && deleted.body.as_deref() == Some("v11"));
        assert_eq!(merge_review_comment(Some(&deleted), &comment(12, "after", false)), None, "stays deleted");
    }

    fn milestone(updated_at: i64, state: &str, deleted: bool) -> MilestoneRecord {
        MilestoneRecord {
            number: 1,
            github_id: Some(7),
            title: format!("v{updated_at}"),
            state: state.into(),
            description: None,
            due_on: None,
            created_at: Some(1),
            updated_at,
            closed_at: None,
            html_url: None,
            deleted,
        }
    }

    #[test]
    fn milestones_newer_wins_and_deletion_sticks() {
        assert_eq!(merge_milestone(None, &milestone(1, "", false)).unwrap().state, "open");
        let stored = milestone(10, "open", false);
        assert_eq!(merge_milestone(Some(&stored), &milestone(9, "closed", false)), None);
        let closed = merge_milestone(Some(&stored), &milestone(11, "closed", false)).unwrap();
        assert_eq!(closed.state, "closed");
        assert_eq!(merge_milestone(Some(&closed), &milestone(12, "", false)).unwrap().state, "closed");
        let deleted = merge_milestone(Some(&closed), &milestone(5, "open", true)).unwrap();
        assert!(deleted.deleted && deleted.state == "closed");
        assert_eq!(merge_milestone(Some(&deleted), &milestone(20, "open", false)), None);
    }

    fn label(name: &str, id: Option<u64>, color: &str, deleted: bool) -> LabelRecord {
        LabelRecord { name: name.into(), github_id: id, color: Some(color.into()), description: None, deleted }
    }

    fn upsert(name: &str, id: Option<u64>, color: &str, deleted: bool) -> LabelWrite {
        LabelWrite::Upsert(label(name, id, color, deleted))
    }

    #[test]
    fn labels_deleted_ids_never_come_back_and_higher_ids_are_newer() {
        let none = StoredLabels::default();
        let bug = label("bug", Some(10), "red", false);
        assert_eq!(label_writes(&bug, &LabelNaming::AsSent, none), [upsert("bug", Some(10), "red", false)]);
        let stored = StoredLabels { same_name: Some(&bug), ..none };
        assert!(label_writes(&bug, &LabelNaming::AsSent, stored).is_empty(), "the same again");
        let recolored = label("bug", Some(10), "blue", false);
        assert_eq!(label_writes(&recolored, &LabelNaming::AsSent, stored), [upsert("bug", Some(10), "blue", false)]);
        // Deleted, then an older edit: stays deleted.
        let deleted = label("bug", Some(10), "red", true);
        assert_eq!(label_writes(&deleted, &LabelNaming::AsSent, stored), [upsert("bug", Some(10), "red", true)]);
        let tomb = StoredLabels { same_name: Some(&deleted), ..none };
        assert!(label_writes(&recolored, &LabelNaming::AsSent, tomb).is_empty());
        assert!(label_writes(&recolored, &LabelNaming::Current, tomb).is_empty());
        // A new label of the same name (a higher id) takes the name back; an older one does not.
        let newer = label("bug", Some(11), "green", false);
        assert_eq!(label_writes(&newer, &LabelNaming::AsSent, tomb), [upsert("bug", Some(11), "green", false)]);
        let newer_stored = StoredLabels { same_name: Some(&newer), ..none };
        assert!(label_writes(&recolored, &LabelNaming::AsSent, newer_stored).is_empty());
        assert!(label_writes(&deleted, &LabelNaming::AsSent, newer_stored).is_empty());
        // A deletion seen first leaves a tombstone: the late creation does not bring it back.
        assert_eq!(label_writes(&deleted, &LabelNaming::AsSent, none), [upsert("bug", Some(10), "red", true)]);
    }

    #[test]
    fn labels_renames_move_the_id_and_events_from_before_a_rename_change_nothing() {
        let old = label("bug", Some(10), "red", false);
        let renamed = label("defect", Some(10), "red", false);
        let same_id = [old.clone()];
        let stored = StoredLabels { same_name: None, same_id: &same_id, renamed_from: Some(&old) };
        let naming = LabelNaming::RenamedFrom("bug".into());
        assert_eq!(
            label_writes(&renamed, &naming, stored),
            [LabelWrite::Remove("bug".into()), upsert("defect", Some(10), "red", false)]
        );
        // The labels list shows the id under its new name: the same.
        let stored = StoredLabels { same_name: None, same_id: &same_id, renamed_from: None };
        assert_eq!(
            label_writes(&renamed, &LabelNaming::Current, stored),
            [LabelWrite::Remove("bug".into()), upsert("defect", Some(10), "red", false)]
        );
        // An edit sent before the rename (it names the old name) arrives after it: nothing.
        let same_id = [renamed.clone()];
        let stored = StoredLabels { same_name: None, same_id: &same_id, renamed_from: None };
        assert!(label_writes(&label("bug", Some(10), "blue", false), &LabelNaming::AsSent, stored).is_empty());
        // Deleting the id removes it under every name.
        let deleted = label("bug", Some(10), "red", true);
        assert_eq!(
            label_writes(&deleted, &LabelNaming::AsSent, stored),
            [upsert("defect", Some(10), "red", true), upsert("bug", Some(10), "red", true)]
        );
        // Without ids: a deletion sticks against events without one, not against a label with one.
        let tomb = label("bug", None, "red", true);
        let stored = StoredLabels { same_name: Some(&tomb), ..StoredLabels::default() };
        assert!(label_writes(&label("bug", None, "red", false), &LabelNaming::AsSent, stored).is_empty());
        assert_eq!(
            label_writes(&label("bug", Some(3), "red", false), &LabelNaming::Current, stored),
            [upsert("bug", Some(3), "red", false)]
        );
        // Without ids, a rename goes by the old name's row.
        let old = label("bug", None, "red", false);
        let stored = StoredLabels { same_name: None, same_id: &[], renamed_from: Some(&old) };
        assert_eq!(
            label_writes(&label("defect", None, "red", false), &LabelNaming::RenamedFrom("bug".into()), stored),
            [LabelWrite::Remove("bug".into()), upsert("defect", None, "red", false)]
        );
    }
}
