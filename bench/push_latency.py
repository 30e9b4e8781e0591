#!/usr/bin/env python3
"""Push-to-queryable latency: the time from posting a signed push delivery to the moment
the new commit is in the local copy, for 1-commit pushes to a local remote.

Starts the release binary on a fresh data dir, tracks a local bare repository, then N
times: commit and push with git (GitHub's side, before it sends the webhook), post the
push delivery GitHub would send, and poll the store until `commits` would list the new
commit. Prints p50/p95/max. Usage: bench/push_latency.py [N]   (default 50)
"""
import hashlib, hmac, json, os, sqlite3, subprocess, sys, tempfile, time, urllib.request, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "futurnal")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
SECRET = "bench-secret"


def git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="b@example.com")
    return subprocess.run(["git", "-C", cwd, "-c", "init.defaultBranch=main", *args], check=True,
                          capture_output=True, text=True, env=env).stdout.strip()


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="futurnal-latency-")
    data, bare, work = (os.path.join(tmp, d) for d in ("data", "remote.git", "work"))
    os.makedirs(bare); os.makedirs(work)
    git(bare, "init", "--bare", "-q"); git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
    git(work, "init", "-q"); git(work, "remote", "add", "origin", bare)
    with open(os.path.join(work, "README.md"), "w") as f:
        f.write("hello\n")
    git(work, "add", "-A"); git(work, "commit", "-q", "-m", "init"); git(work, "push", "-q", "origin", "HEAD:main")

    env = dict(os.environ, FUTURNAL_WEBHOOK_SECRET=SECRET, FUTURNAL_LOG="warn")
    subprocess.run([BIN, "--data-dir", data, "sources", "github", "add", "octo/bench", "--clone-url", bare],
                   check=True, env=env, capture_output=True)
    daemon = subprocess.Popen([BIN, "--data-dir", data, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        banner = daemon.stdout.readline().split()
        url = "http://%s/webhook/github" % banner[1].split("=", 1)[1]
        template = json.load(open(os.path.join(ROOT, "tests", "fixtures", "github-webhooks", "payloads", "push", "payload.json")))
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "futurnal.db"), uri=True)
        samples = []
        for i in range(N):
            before = git(work, "rev-parse", "HEAD")
            with open(os.path.join(work, "file.txt"), "w") as f:
                f.write("change %d\n" % i)
            git(work, "add", "-A"); git(work, "commit", "-q", "-m", "change %d" % i)
            after = git(work, "rev-parse", "HEAD")
            git(work, "push", "-q", "origin", "HEAD:main")
            payload = dict(template, ref="refs/heads/main", before=before, after=after, created=False, deleted=False,
                           forced=False, commits=[], head_commit=None)
            payload["repository"] = dict(template["repository"], id=77, full_name="octo/bench", name="bench")
            body = json.dumps(payload).encode()
            sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json", "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig})
            start = time.perf_counter()
            with urllib.request.urlopen(request) as response:
                assert response.status == 202, response.status
            deadline = start + 10
            while True:
                row = db.execute("SELECT 1 FROM branch_commits WHERE branch = 'main' AND sha = ?", (after,)).fetchone()
                if row:
                    break
                if time.perf_counter() > deadline:
                    raise SystemExit("commit %s never appeared" % after)
                time.sleep(0.001)
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        pct = lambda p: samples[min(len(samples) - 1, int(round(p / 100 * (len(samples) - 1))))]
        print("push-to-queryable latency over %d one-commit pushes: p50 %.1f ms, p95 %.1f ms, max %.1f ms"
              % (N, pct(50), pct(95), samples[-1]))
        out = subprocess.run([BIN, "--data-dir", data, "--json", "sources", "github", "commits", "octo/bench", "--limit", "1"],
                             check=True, env=env, capture_output=True, text=True).stdout
        assert json.loads(out)[0]["message"] == "change %d" % (N - 1), out
        print("the CLI lists the last commit: ok")
    finally:
        daemon.terminate(); daemon.wait(timeout=30)


if __name__ == "__main__":
    main()
