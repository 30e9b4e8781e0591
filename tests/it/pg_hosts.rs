//! One PostgreSQL database, two hosts: the database is the truth, a host's git mirrors
//! are a cache on its own disk. A host that has never mirrored a repository (a new
//! worker host, or one whose disk was replaced) clones it on first need and goes on from
//! what the database says.

use futurnal::storage::queue::DeliveryStatus;
use futurnal::storage::registry::RepoRef;

use crate::contract::PgSchema;
use crate::helpers::*;

const REPO: &str = "octo/hello";
const ID: u64 = 4242;

async fn push_and_wait(app: &TestApp, before: &str, after: &str) {
    let d = Delivery::new("push", push_payload(REPO, ID, "refs/heads/main", before, after));
    let id = d.id.clone();
    let (status, answer) = app.post(d).await;
    assert_eq!(status, 202, "{answer}");
    app.wait_for_status(&id, DeliveryStatus::Done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_the_mirror_clones_it_on_first_need_and_goes_on_from_the_database() {
    let Some(schema) = PgSchema::new().await else { return };
    let toml = format!("[postgres]\nschema = \"{}\"\n", schema.schema);
    let options = || AppOptions { toml: toml.clone(), database_url: Some(schema.url.clone()), ..Default::default() };

    // Host A tracks the repository and follows a push: its mirror is made.
    let a = spawn_app(options()).await;
    let remote = GitRemote::existing(a.dir.path(), REPO);
    let first = remote.head();
    let second = remote.commit("a.txt", "a\n", "Pushed while host A worked");
    remote.push("main");
    push_and_wait(&a, &first, &second).await;
    let repo = a.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap();
    assert!(a.dir.path().join("mirrors").join(format!("{}.git", repo.id)).exists(), "host A mirrored it");
    let dir_a = a.stop().await;

    // Host B: the same database, a disk of its own with no mirror at all.
    let b = spawn_app(options()).await;
    let mirror_b = b.dir.path().join("mirrors").join(format!("{}.git", repo.id));
    assert!(!mirror_b.exists());
    let third = remote.commit("b.txt", "b\n", "Pushed while host B worked");
    remote.push("main");
    push_and_wait(&b, &second, &third).await;
    assert!(mirror_b.exists(), "host B cloned the mirror when it first needed it");
    let shas: Vec<String> =
        b.copy.commits(repo.id, Some("main".into()), 100).await.unwrap().into_iter().map(|c| c.sha).collect();
    let expected: Vec<String> = git(&remote.bare, &["rev-list", "main"]).lines().map(str::to_owned).collect();
    assert_eq!(shas, expected, "the branch's history is whole, as git has it");
    let branch = b.copy.branches(repo.id).await.unwrap().into_iter().find(|br| br.name == "main").unwrap();
    assert_eq!(branch.head_sha, third);
    b.stop().await;
    drop(dir_a);
    schema.drop_schema().await;
}
