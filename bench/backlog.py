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

--queued-first: the whole backlog is queued before any worker runs, so the claim order
decides when the probe is served. `serve --role receiver` takes the 2,400 pushes and the
probe (all must be 202 `queued`) and is stopped with SIGTERM; then `serve --role worker`
starts, and probe_applied_s and drained_s are measured from the moment its `listening`
line is read (t0). Both processes' exit codes are reported (0 expected).
Usage: bench/backlog.py [--runs K] [--bin PATH] [--queued-first] [--deadline S]
       (default 3 runs, 120 s deadline; no --bin: cargo build)
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
    """One delivery on a keep-alive connection: (status, receive outcome, ack time).
    A fresh delivery id unless the headers carry one."""
    conn.request("POST", "/webhook/github", body, {"X-GitHub-Delivery": str(uuid.uuid4()), **headers})
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


def prepare(tmp, binary, data, env):
    """Track the 9 repositories (add clones them), then move the backlog remotes ahead.
    Returns the signed push per backlog repository and the signed probe delivery."""
    push_template = json.load(open(os.path.join(FIXTURES, "push", "payload.json")))
    issue_template = json.load(open(os.path.join(FIXTURES, "issues", "opened.payload.json")))
    repo_json = lambda i, full: dict(push_template["repository"], id=1001 + i, full_name=full, name=full.split("/")[1])
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
    return pushes, signed("issues", dict(issue_template, repository=repo_json(len(BACKLOG), PROBE)))


def start_serve(binary, data, env, *args):
    """Start `serve ARGS`; returns the process, its parsed `listening` banner and when it was read."""
    daemon = subprocess.Popen([binary, "--data-dir", data, "serve", *args, "--no-poll"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line, read_at = daemon.stdout.readline(), time.perf_counter()
    if not line.startswith("listening"):
        stop(daemon)
        raise SystemExit("serve %s: no listening line (got %r, exit %s)" % (" ".join(args), line, daemon.returncode))
    return daemon, dict(word.split("=", 1) for word in line.split()[1:]), read_at


def stop(daemon):
    """SIGTERM and wait; the exit code, or "killed" if it did not exit within 30 s."""
    daemon.terminate()  # a no-op once it has exited
    try:
        return daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill(); daemon.wait()
        return "killed"


def send_all(hook_host, pushes, probe):
    """2,400 pushes, repositories interleaved, each thread on its own connection; then the probe."""
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
    probe_id = "probe-" + str(uuid.uuid4())
    probe_answer = post(http.client.HTTPConnection(hook_host, timeout=60), probe[0],
                        dict(probe[1], **{"X-GitHub-Delivery": probe_id}))
    sent = {"sent": len(answers), "send_s": max(a[2] for a in answers) - start,
            "non_202": sum(1 for a in answers + [probe_answer] if a[0] != 202),
            "not_queued": sum(1 for a in answers + [probe_answer] if a[1] != "queued")}
    sent["ack_per_s"] = len(answers) / sent["send_s"]
    return sent, probe_id, max(a[2] for a in answers), probe_answer[2]


def watch(admin_host, probe_id, backlog, deadline_at):
    """Poll the admin listener every ~POLL_S until the probe is done and the queue is empty.
    Returns (when the probe was seen done, share of the backlog pending then, when drained)."""
    admin = http.client.HTTPConnection(admin_host, timeout=10)
    probe_path = "/api/deliveries?repository=%s&limit=5" % PROBE
    probe_at = pending_at_probe = drained_at = None
    while probe_at is None or drained_at is None:
        if time.perf_counter() > deadline_at:
            raise SystemExit("deadline: probe %s, drained %s" % (probe_at is not None, drained_at is not None))
        if probe_at is None:
            rows = get_json(admin, probe_path)
            if any(r["delivery_id"] == probe_id and r["status"] == "done" for r in rows):
                probe_at = time.perf_counter()
                pending_at_probe = get_json(admin, "/health")["queue_depth"] / backlog
        if drained_at is None and get_json(admin, "/health")["queue_depth"] == 0:
            drained_at = time.perf_counter()
        time.sleep(POLL_S)
    return probe_at, pending_at_probe, drained_at


def one_run(binary, queued_first, deadline_s):
    tmp = tempfile.mkdtemp(prefix="futurnal-backlog-")
    data = os.path.join(tmp, "data")
    env = dict(os.environ, FUTURNAL_WEBHOOK_SECRET=SECRET, FUTURNAL_LOG="warn")
    pushes, probe = prepare(tmp, binary, data, env)
    listen = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    if not queued_first:
        # Default: one `serve` (role all) receives and works at the same time.
        daemon, banner, _ = start_serve(binary, data, env, *listen)
        try:
            r, probe_id, last_push_ack, probe_ack = send_all(banner["webhook"], pushes, probe)
            probe_at, r["pending_at_probe"], drained_at = watch(banner["admin"], probe_id, r["sent"],
                                                                 probe_ack + deadline_s)
        finally:
            stop(daemon)
        r.update(probe_applied_s=probe_at - probe_ack, drained_s=drained_at - last_push_ack)
    else:
        # 1. A receiver alone queues everything; no worker runs while it does.
        receiver, banner, _ = start_serve(binary, data, env, "--role", "receiver", *listen)
        try:
            r, probe_id, _, _ = send_all(banner["webhook"], pushes, probe)
            r["queued_at_stop"] = get_json(http.client.HTTPConnection(banner["admin"], timeout=10),
                                           "/health")["queue_depth"]
        finally:
            r_exit = stop(receiver)
        # 2. A worker alone starts on the full queue; t0 is when its banner is read.
        worker, banner, t0 = start_serve(binary, data, env, "--role", "worker", "--admin-listen", "127.0.0.1:0")
        try:
            if banner.get("webhook") != "none":
                raise SystemExit("worker unexpectedly listens for webhooks: %s" % banner)
            probe_at, r["pending_at_probe"], drained_at = watch(banner["admin"], probe_id, r["sent"], t0 + deadline_s)
        finally:
            w_exit = stop(worker)
        r.update(probe_applied_s=probe_at - t0, drained_s=drained_at - t0, receiver_exit=r_exit, worker_exit=w_exit)
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "futurnal.db"), uri=True)
    r["statuses"] = dict(db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
    db.close()
    return r


def describe(r):
    """One run's line; in queued-first mode also the receiver's leftover queue and both exit codes."""
    line = "sent %d (non-202 %d, not queued %d) send %.2f s (%.0f ack/s)" % (
        r["sent"], r["non_202"], r["not_queued"], r["send_s"], r["ack_per_s"])
    timing = "probe applied %.3f s with %.1f%% of the backlog pending" % (r["probe_applied_s"],
                                                                          100 * r["pending_at_probe"])
    if "worker_exit" not in r:
        return line + " | %s | drained %.3f s | stored %s" % (timing, r["drained_s"], r["statuses"])
    return line + (", receiver left queue_depth %d, exit %s | from worker start: %s, drained %.3f s | worker exit %s"
                   " | stored %s" % (r["queued_at_stop"], r["receiver_exit"], timing, r["drained_s"],
                                     r["worker_exit"], r["statuses"]))


def unexpected(r):
    """Not every delivery stored and done/ignored; in queued-first mode also: an answer not 202 `queued`,
    the receiver stopping with less than the whole backlog queued, or an exit code other than 0."""
    bad = sum(r["statuses"].values()) != r["sent"] + 1 or not set(r["statuses"]) <= {"done", "ignored"}
    return bad or ("worker_exit" in r and (r["non_202"] or r["not_queued"] or r["queued_at_stop"] != r["sent"] + 1
                                           or r["receiver_exit"] != 0 or r["worker_exit"] != 0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bin", help="futurnal binary (nothing is built when given)")
    parser.add_argument("--queued-first", action="store_true",
                        help="queue everything with a receiver, then measure a worker started on the full queue")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds to wait for probe and drain")
    args = parser.parse_args()
    binary = args.bin
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "futurnal")
    label = "queued-first " if args.queued_first else ""
    runs = []
    for k in range(args.runs):
        runs.append(one_run(binary, args.queued_first, args.deadline))
        flag = "  <-- UNEXPECTED" if unexpected(runs[-1]) else ""
        print("%srun %d: %s%s" % (label, k + 1, describe(runs[-1]), flag), flush=True)
    med = lambda key: statistics.median(r[key] for r in runs)
    since = " after worker start" if args.queued_first else ""
    print("%smedian of %d: send %.2f s (%.0f ack/s) | probe applied %.3f s%s with %.1f%% of the backlog pending | "
          "drained %.3f s%s" % (label, len(runs), med("send_s"), med("ack_per_s"), med("probe_applied_s"), since,
                                 100 * med("pending_at_probe"), med("drained_s"), since))


if __name__ == "__main__":
    main()
