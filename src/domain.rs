//! Newtypes for the identifiers that cross the edges: raw strings stop here.

use std::fmt;

use anyhow::bail;

/// `owner/name` of a GitHub repository, as typed by a user or sent by GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        let value = value.trim();
        let Some((owner, name)) = value.split_once('/') else {
            bail!("'{value}' is not a repository name: expected OWNER/NAME");
        };
        let valid_part = |part: &str| {
            !part.is_empty()
                && part.len() <= 100
                && part != "."
                && part != ".."
                && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid_part(owner) || !valid_part(name) {
            bail!("'{value}' is not a repository name: expected OWNER/NAME with letters, digits, '-', '_' or '.'");
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `X-GitHub-Delivery` header: a GUID from GitHub, any short printable token from
/// other senders. Unique per delivery; GitHub reuses it on redelivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryId(String);

impl DeliveryId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.is_empty() {
            return Err("empty X-GitHub-Delivery header");
        }
        if value.len() > Self::MAX_LEN {
            return Err("X-GitHub-Delivery header is too long");
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("X-GitHub-Delivery header has characters other than printable ASCII");
        }
        Ok(Self(value.to_owned()))
    }

    /// A new random version-4 UUID, the shape GitHub uses.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("the operating system's random source works");
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        Self(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the queue keeps per-repository order: GitHub's numeric repository id when the
/// payload has one (it survives renames and transfers), else the lower-cased full name.
pub fn repo_key(github_id: Option<u64>, full_name: Option<&str>) -> Option<String> {
    match (github_id, full_name) {
        (Some(id), _) => Some(format!("id:{id}")),
        (None, Some(name)) => Some(format!("name:{}", name.to_ascii_lowercase())),
        (None, None) => None,
    }
}

/// The two ordering domains of a repository. Deliveries of one domain are processed one
/// after another in acknowledgement order; the two domains (and other repositories') run
/// in parallel, so a failing git sync never holds back pull requests or issues and the
/// reverse. Git events read the mirror (push, create, delete); everything else carries its
/// data in the payload and is order-safe by `updated_at` guards and sticky deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainKind {
    Git,
    Metadata,
}

impl DomainKind {
    pub fn of_event(event: &str) -> Self {
        match event {
            "push" | "create" | "delete" => DomainKind::Git,
            _ => DomainKind::Metadata,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            DomainKind::Git => "/git",
            DomainKind::Metadata => "/meta",
        }
    }

    /// The kind of a stored domain key.
    pub fn of_domain(domain: &str) -> Self {
        if domain.ends_with(DomainKind::Git.suffix()) {
            DomainKind::Git
        } else {
            DomainKind::Metadata
        }
    }
}

/// The ordering domain of a delivery: its repository's key and the domain kind of its
/// event, e.g. `id:42/git`.
pub fn ordering_domain(repo_key: &str, event: &str) -> String {
    format!("{repo_key}{}", DomainKind::of_event(event).suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        assert_eq!(RepoName::parse(" octo/Hello-World.rs ").unwrap().as_str(), "octo/Hello-World.rs");
        for bad in ["", "octo", "/x", "x/", "a/b/c", "a b/c", "../x", "o/.."] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delivery_ids() {
        assert!(DeliveryId::parse("72d3162e-cc78-11e3-81ab-4c9367dc0958").is_ok());
        assert!(DeliveryId::parse("").is_err());
        assert!(DeliveryId::parse("a b").is_err());
        assert!(DeliveryId::parse(&"x".repeat(129)).is_err());
        let a = DeliveryId::random();
        assert_eq!(a.as_str().len(), 36);
        assert_eq!(&a.as_str()[14..15], "4");
        assert_ne!(a, DeliveryId::random());
    }

    #[test]
    fn repo_keys_prefer_the_numeric_id() {
        assert_eq!(repo_key(Some(5), Some("O/R")).as_deref(), Some("id:5"));
        assert_eq!(repo_key(None, Some("O/R")).as_deref(), Some("name:o/r"));
        assert_eq!(repo_key(None, None), None);
    }

    #[test]
    fn git_events_and_metadata_fall_into_two_domains() {
        assert_eq!(ordering_domain("id:5", "push"), "id:5/git");
        assert_eq!(ordering_domain("id:5", "create"), "id:5/git");
        assert_eq!(ordering_domain("id:5", "delete"), "id:5/git");
        for event in [
            "pull_request",
            "issues",
            "issue_comment",
            "release",
            "repository",
            "pull_request_review",
            "pull_request_review_comment",
            "label",
            "milestone",
        ] {
            assert_eq!(ordering_domain("id:5", event), "id:5/meta", "{event}");
        }
        assert_eq!(DomainKind::of_domain("id:5/git"), DomainKind::Git);
        assert_eq!(DomainKind::of_domain("name:o/git/meta"), DomainKind::Metadata);
    }
}
