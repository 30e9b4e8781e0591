//! Branch patterns: `*` matches within one path segment, `**` across segments, `?` one
//! character; everything else literally. `main`, `release/*`, `feature/**`.

pub fn matches(pattern: &str, name: &str) -> bool {
    matches_bytes(pattern.as_bytes(), name.as_bytes())
}

fn matches_bytes(p: &[u8], n: &[u8]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=n.len()).any(|i| matches_bytes(rest, &n[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            for i in 0..=n.len() {
                if matches_bytes(rest, &n[i..]) {
                    return true;
                }
                if i < n.len() && n[i] == b'/' {
                    return false;
                }
            }
            false
        }
        Some(b'?') => !n.is_empty() && n[0] != b'/' && matches_bytes(&p[1..], &n[1..]),
        Some(c) => n.first() == Some(c) && matches_bytes(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("main", "main"));
        assert!(!matches("main", "main2"));
        assert!(matches("release/*", "release/1.0"));
        assert!(!matches("release/*", "release/1.0/hotfix"));
        assert!(!matches("release/*", "releases/1.0"));
        assert!(matches("feature/**", "feature/a/b"));
        assert!(matches("*", "dev"));
        assert!(!matches("*", "a/b"));
        assert!(matches("v?.x", "v1.x"));
        assert!(matches("**", "any/thing"));
    }
}
