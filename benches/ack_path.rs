//! The CPU work the receiver does before it acknowledges: the signature check over the
//! raw body plus extracting the routing fields, for GitHub's 7 KB push example and for a
//! 1 MB push (many commits); and the check, made for every request, of whether the CLI
//! changed the stored hook secrets (one `stat`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futurnal_github::signature::verify_any;
use futurnal_github::{sign_sha256, RoutingFields, WebhookSecret};

fn push_example() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/github-webhooks/payloads/push/payload.json");
    std::fs::read(path).expect("the payload corpus under tests/fixtures")
}

fn big_push(target: usize) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(&push_example()).unwrap();
    let commit = serde_json::json!({
        "id": "7a1b9c9e1c4f5d0e8a3b2c6d4e5f60718293a4b5", "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
        "distinct": true, "message": "Update README.md with a longer explanation of the change",
        "timestamp": "2019-05-15T15:20:30-05:00",
        "author": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com", "username": "Codertocat"},
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": ["src/new_file.rs"], "removed": [], "modified": ["README.md", "src/lib.rs"]
    });
    let mut commits = Vec::new();
    while serde_json::to_vec(&commits).unwrap().len() < target {
        commits.push(commit.clone());
    }
    value["commits"] = serde_json::Value::Array(commits);
    serde_json::to_vec(&value).unwrap()
}

fn ack_path(c: &mut Criterion) {
    let secret = WebhookSecret::new("bench-secret");
    let mut group = c.benchmark_group("verify_and_route");
    for (name, body) in [("push_7KB", push_example()), ("push_1MB", big_push(1024 * 1024))] {
        let header = sign_sha256(&secret, &body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                verify_any([&secret], body, Some(header.as_bytes())).unwrap();
                let routing = RoutingFields::parse(body).unwrap();
                assert!(routing.repository.is_some());
                routing.repository.and_then(|r| r.id)
            })
        });
        group.bench_with_input(BenchmarkId::new("value_for_comparison", name), &body, |b, body| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(body).unwrap())
        });
    }
    group.finish();
}

fn secrets_stamp(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hook-secrets")).unwrap();
    std::fs::write(dir.path().join("hook-secrets/.generation"), "...").unwrap();
    let stamp = futurnal::secrets::SecretsStamp::read(dir.path());
    c.bench_function("secrets_stamp_is_stale", |b| b.iter(|| assert!(!stamp.is_stale(dir.path()))));
}

criterion_group!(benches, ack_path, secrets_stamp);
criterion_main!(benches);
