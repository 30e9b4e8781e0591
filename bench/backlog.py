#!/usr/bin/env python3
"""Head-of-line blocking under a backlog: how long one repository's delivery waits while
eight other repositories have a deep queue of pushes.

Per run (fresh data dir, fresh local bare remotes): track 9 repositories, give the 8
"backlog" remotes a few new commits on `main`, start `serve --no-poll`, post 300 signed
push deliveries for each backlog repository (2,400, interleaved, from several threads on
keep-alive connections), then one `issues` delivery for the probe repository
`octo/zz-probe`. Polling the admin listener every ~5 ms, it measures:
  probe_applied_s  from the probe's 202 until its delivery is `done`, with the share
                   of the backlog still pending (`/health` queue_depth) at that moment;
  drained_s        from the last push's 202 until `/health` reports queue_depth 0;
  send_s, ack/s    how long posting the 2,400 pushes took.
After SIGTERM it counts the stored deliveries by status (read-only sqlite3).
Usage: bench/backlog.py [--runs K] [--bin PATH]   (default 3 runs; no --bin: cargo build)
"""
import argparse, hashlib, hmac, http.client, json, os, sqlite3, statistics, subprocess
import tempfile, threading, time, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "github-webhooks", "payloads")
SECRET = "bench-secret"
BACKLOG = ["octo/aa-repo%d" % n for n in range(1, 9)]  # sort before the probe
PROBE = "octo/zz-probe"
PUSHES_PER_REPO, THREADS, NEW_COMMITS = 300, 8, 3
DEADLINE_S, POLL_S = 120, 0.005


def git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="b@example.com")
    return subprocess.run(["git", "-C", cwd, "-c", "init.defaultBranch=main", *args], check=True,
                          capture_output=True, text=True, env=env).stdout.strip()


def make_remote(tmp, name):
    """A bare remote with one commit on main, and a work tree pushing to it."""
    bare, work = os.path.join(tmp, name + ".git"), os.path.join(tmp, name + ".work")
    os.makedirs(bare); os.makedirs(work)
    git(bare, "init", "--bare", "-q"); git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
    git(work, "init", "-q"); git(work, "remote", "add", "origin", bare)
    commit(work, "README.md", "hello\n", "init")
    return bare, work


def commit(work, path, text, message):
    with open(os.path.join(work, path), "w") as f:
        f.write(text)
    git(work, "add", "-A"); git(work, "commit", "-q", "-m", message); git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


def signed(event, payload):
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-GitHub-Event": event, "X-Hub-Signature-256": sig}


def post(conn, body, headers):
    """One delivery on a keep-alive connection: (status, receive outcome, ack time)."""
    conn.request("POST", "/webhook/github", body, dict(headers, **{"X-GitHub-Delivery": str(uuid.uuid4())}))
    response = conn.getresponse()
    text = response.read()
    try:
        outcome = json.loads(text).get("status")
    except ValueError:
        outcome = None
    return response.status, outcome, time.perf_counter()


def get_json(conn, path):
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


def one_run(binary):
    tmp = tempfile.mkdtemp(prefix="futurnal-backlog-")
    data = os.path.join(tmp, "data")
    env = dict(os.environ, FUTURNAL_WEBHOOK_SECRET=SECRET, FUTURNAL_LOG="warn")
    push_template = json.load(open(os.path.join(FIXTURES, "push", "payload.json")))
    issue_template = json.load(open(os.path.join(FIXTURES, "issues", "opened.payload.json")))
    repo_json = lambda i, full: dict(push_template["repository"], id=1001 + i, full_name=full, name=full.split("/")[1])

    # Track the 9 repositories (add clones them), then move the backlog remotes ahead.
    pushes = []  # (body, headers) per backlog repository
    for i, full in enumerate(BACKLOG + [PROBE]):
        bare, work = make_remote(tmp, full.split("/")[1])
        subprocess.run([binary, "--data-dir", data, "sources", "github", "add", full, "--clone-url", bare],
                       check=True, env=env, capture_output=True)
        if full == PROBE:
            continue
        before = git(work, "rev-parse", "HEAD")
        for c in range(NEW_COMMITS):
            after = commit(work, "file.txt", "change %d\n" % c, "change %d" % c)
        payload = dict(push_template, ref="refs/heads/main", before=before, after=after, created=False,
                       deleted=False, forced=False, commits=[], head_commit=None, repository=repo_json(i, full))
        pushes.append(signed("push", payload))
    probe = signed("issues", dict(issue_template, repository=repo_json(len(BACKLOG), PROBE)))

    daemon = subprocess.Popen([binary, "--data-dir", data, "serve", "--listen", "127.0.0.1:0",
                               "--admin-listen", "127.0.0.1:0", "--no-poll"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        banner = dict(word.split("=", 1) for word in daemon.stdout.readline().split()[1:])
        hook_host, admin_host = banner["webhook"], banner["admin"]

        # Send phase: 2,400 pushes, repositories interleaved, each thread on its own connection.
        order = [r for _ in range(PUSHES_PER_REPO) for r in range(len(BACKLOG))]
        results = [[] for _ in range(THREADS)]

        def sender(t):
            conn = http.client.HTTPConnection(hook_host, timeout=60)
            for r in order[t::THREADS]:
                results[t].append(post(conn, *pushes[r]))
            conn.close()

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(THREADS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answers = [a for rs in results for a in rs]
        last_push_ack = max(a[2] for a in answers)
        hook = http.client.HTTPConnection(hook_host, timeout=60)
        probe_headers = dict(probe[1], **{"X-GitHub-Delivery": "probe-" + str(uuid.uuid4())})
        hook.request("POST", "/webhook/github", probe[0], probe_headers)
        probe_response = hook.getresponse(); probe_response.read()
        probe_ack = time.perf_counter()
        non_202 = sum(1 for a in answers if a[0] != 202) + (probe_response.status != 202)
        not_queued = sum(1 for a in answers if a[1] != "queued")

        # Poll the admin listener until the probe is done and the queue is empty.
        admin = http.client.HTTPConnection(admin_host, timeout=10)
        probe_path = "/api/deliveries?repository=%s&limit=5" % PROBE
        probe_applied = pending_at_probe = drained = None
        while probe_applied is None or drained is None:
            now = time.perf_counter()
            if now - probe_ack > DEADLINE_S:
                raise SystemExit("deadline: probe %s, drained %s" % (probe_applied, drained))
            if probe_applied is None:
                rows = get_json(admin, probe_path)
                if any(r["delivery_id"] == probe_headers["X-GitHub-Delivery"] and r["status"] == "done" for r in rows):
                    probe_applied = time.perf_counter() - probe_ack
                    pending_at_probe = get_json(admin, "/health")["queue_depth"] / len(answers)
            if drained is None and get_json(admin, "/health")["queue_depth"] == 0:
                drained = time.perf_counter() - last_push_ack
            time.sleep(POLL_S)
    finally:
        daemon.terminate(); daemon.wait(timeout=30)

    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "futurnal.db"), uri=True)
    statuses = dict(db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
    db.close()
    send_s = last_push_ack - start
    return {"sent": len(answers), "non_202": non_202, "not_queued": not_queued, "send_s": send_s,
            "ack_per_s": len(answers) / send_s, "probe_applied_s": probe_applied,
            "pending_at_probe": pending_at_probe, "drained_s": drained, "statuses": statuses}


def describe(r):
    return ("sent %d (non-202 %d, not queued %d) send %.2f s (%.0f ack/s) | probe applied %.3f s with %.1f%% "
            "of the backlog pending | drained %.3f s | stored %s"
            % (r["sent"], r["non_202"], r["not_queued"], r["send_s"], r["ack_per_s"], r["probe_applied_s"],
               100 * r["pending_at_probe"], r["drained_s"], r["statuses"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bin", help="futurnal binary (nothing is built when given)")
    args = parser.parse_args()
    binary = args.bin
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "futurnal")
    runs = []
    for k in range(args.runs):
        runs.append(one_run(binary))
        expected = {"done", "ignored"}
        stored = sum(runs[-1]["statuses"].values())
        flag = "" if stored == runs[-1]["sent"] + 1 and set(runs[-1]["statuses"]) <= expected else "  <-- UNEXPECTED"
        print("run %d: %s%s" % (k + 1, describe(runs[-1]), flag), flush=True)
    med = lambda key: statistics.median(r[key] for r in runs)
    print("median of %d: send %.2f s (%.0f ack/s) | probe applied %.3f s with %.1f%% of the backlog pending | "
          "drained %.3f s" % (len(runs), med("send_s"), med("ack_per_s"), med("probe_applied_s"),
                               100 * med("pending_at_probe"), med("drained_s")))


if __name__ == "__main__":
    main()
