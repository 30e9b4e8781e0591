#!/usr/bin/env python3
"""Writes the fuzz targets' seeds under fuzz/seeds/<target>/ from GitHub's example payloads
(tests/fixtures/github-webhooks/payloads) and the README's configuration keys.

Deterministic: run it again after changing it (or the fixtures) and commit what changed.
The router seeds are signed with the secrets the `router` target's fixture uses."""

import hashlib
import hmac
import json
import os
import shutil
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "tests/fixtures/github-webhooks/payloads"
SEEDS = ROOT / "fuzz/seeds"

# The router target's secrets (fuzz_targets/router.rs).
SECRET = b"fuzz-global-secret"
PREVIOUS_SECRET = b"fuzz-previous-secret"
HOOK_ID, HOOK_SECRET = 4242, b"fuzz-hook-secret"
ROTATING_HOOK_ID, ROTATING_NEW, ROTATING_OLD = 77, b"fuzz-hook-new", b"fuzz-hook-old"
# The signature target's secrets (fuzz_targets/signature.rs).
SIGNATURE_SECRETS = [b"fuzz-old-secret", b"It's a Secret to Everybody", b""]

# The fields the payload types of crates/github/src/payload.rs read, per object.
ACCOUNT = {"login": None, "id": None}
REPOSITORY = {
    "id": None, "full_name": None, "name": None, "owner": ACCOUNT, "private": None, "visibility": None,
    "archived": None, "default_branch": None, "clone_url": None,
}
LABEL = {"name": None, "id": None, "color": None, "description": None}
MILESTONE = {
    "number": None, "id": None, "title": None, "description": None, "state": None, "due_on": None,
    "created_at": None, "updated_at": None, "closed_at": None, "html_url": None,
}
GIT_REF = {"ref": None, "sha": None}
COMMIT = {
    "id": None, "message": None, "timestamp": None, "author": {"name": None, "email": None},
    "added": None, "removed": None, "modified": None,
}
ISSUE = {
    "number": None, "title": None, "body": None, "state": None, "user": ACCOUNT, "labels": [LABEL],
    "assignees": [ACCOUNT], "milestone": {"number": None}, "comments": None, "created_at": None,
    "updated_at": None, "closed_at": None, "pull_request": {"url": None},
}
LEAN = {
    "action": None, "number": None, "ref": None, "before": None, "after": None, "created": None, "deleted": None,
    "forced": None, "base_ref": None, "ref_type": None, "zen": None, "hook_id": None,
    "hook": {"id": None, "active": None, "events": None},
    "repository": REPOSITORY,
    "commits": [COMMIT], "head_commit": COMMIT,
    "pull_request": {
        "number": None, "title": None, "body": None, "state": None, "draft": None, "merged": None, "user": ACCOUNT,
        "labels": [LABEL], "assignees": [ACCOUNT], "milestone": {"number": None}, "base": GIT_REF, "head": GIT_REF,
        "created_at": None, "updated_at": None, "closed_at": None, "merged_at": None,
    },
    "issue": ISSUE,
    "comment": {
        "id": None, "body": None, "user": ACCOUNT, "created_at": None, "updated_at": None,
        "pull_request_review_id": None, "path": None, "line": None, "side": None, "in_reply_to_id": None,
        "commit_id": None, "html_url": None,
    },
    "review": {
        "id": None, "user": ACCOUNT, "body": None, "state": None, "commit_id": None, "submitted_at": None,
        "html_url": None,
    },
    "label": LABEL,
    "milestone": MILESTONE,
    "release": {
        "id": None, "tag_name": None, "name": None, "draft": None, "prerelease": None, "created_at": None,
        "published_at": None,
    },
    "changes": {
        "new_repository": {"full_name": None}, "new_issue": {"number": None}, "repository": None,
        "name": {"from": None},
    },
}


def lean(value, shape):
    """`value` with only the keys `shape` names (strings shortened, lists to two items)."""
    if shape is None:
        if isinstance(value, str):
            return value[:40]
        if isinstance(value, list):
            return [lean(v, None) for v in value[:2]]
        if isinstance(value, dict):
            return {}
        return value
    if isinstance(shape, list):
        return [lean(v, shape[0]) for v in value[:2]] if isinstance(value, list) else value
    if isinstance(value, dict):
        return {k: lean(value[k], shape[k]) for k in shape if k in value}
    return value


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def write(target, name, data):
    path = SEEDS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def sign(secret, body):
    return b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()


def examples():
    """(event, file stem, payload) for every example, sorted."""
    for path in sorted(PAYLOADS.glob("*/*.json")):
        yield path.parent.name, path.name.removesuffix(".json").removesuffix(".payload"), json.loads(path.read_text())


def http_request(event, body, signature=None, delivery="00000000-0000-4000-8000-000000000001",
                 content_type=b"application/json", hook_id=None, extra=b""):
    head = [
        b"POST /webhook/github HTTP/1.1",
        b"Host: 127.0.0.1:8765",
        b"User-Agent: GitHub-Hookshot/044aadd",
        b"Content-Type: " + content_type,
        b"Content-Length: " + str(len(body)).encode(),
        b"X-GitHub-Event: " + event.encode(),
        b"X-GitHub-Delivery: " + delivery.encode(),
    ]
    if hook_id is not None:
        head.append(b"X-GitHub-Hook-ID: " + str(hook_id).encode())
    if signature is not None:
        head.append(b"X-Hub-Signature-256: " + signature)
    return b"\r\n".join(head) + b"\r\n" + extra + b"\r\n" + body


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    all_examples = list(examples())
    # One whole example per event (the first in name order), the rest lean and distinct.
    whole, lean_ones, seen = {}, {}, set()
    for event, stem, payload in all_examples:
        whole.setdefault(event, (stem, compact(payload)))
        small = compact(lean(payload, LEAN))
        if small not in seen:
            seen.add(small)
            lean_ones[f"{event}.{stem}"] = (event, small)
    first_lean = {}
    for event, data in lean_ones.values():
        first_lean.setdefault(event, data)

    for target in ("routing", "normalize"):
        for event, (stem, data) in whole.items():
            write(target, f"{event}.{stem}.whole.json", data)
        for name, (_, data) in lean_ones.items():
            write(target, f"{name}.json", data)
    for name, data in {
        "empty-object.json": b"{}",
        "null-repository.json": b'{"action":null,"repository":null}',
        "name-only.json": b'{"repository":{"full_name":"o/r"}}',
        "escapes.json": b'{"action":"op\\u0065ned","repository":{"id":1,"full_name":"o\\/r"}}',
        # Found by the fuzzer: arrays read as structs field by field (now refused).
        "crash-array.json": b"[]",
        "array-of-fields.json": b'["opened",{"id":7,"full_name":"o/r"}]',
        "repository-array.json": b'{"repository":[7,"o/r"]}',
    }.items():
        write("routing", name, data)

    # signature: header, newline, body.
    bodies = [b"Hello, World!", b"", first_lean["push"], b"\n\x00\xff"]
    for i, body in enumerate(bodies):
        for j, secret in enumerate(SIGNATURE_SECRETS):
            write("signature", f"signed-{i}-by-{j}", sign(secret, body) + b"\n" + body)
    good = sign(SIGNATURE_SECRETS[1], b"Hello, World!")
    for name, header in {
        "uppercase": good.upper(), "sha1": b"sha1=" + good[7:47], "short": good[:-2], "long": good + b"00",
        "upper-hex": b"sha256=" + good[7:].upper(), "wrong": good[:-1] + b"0", "prefix-only": b"sha256=",
    }.items():
        write("signature", f"malformed-{name}", header + b"\nHello, World!")

    # form: a form body, then NUL and a payload for the round trip.
    for name in ("push", "ping", "issues"):
        data = first_lean[name]
        body = b"payload=" + urllib.parse.quote_plus(data).encode()
        write("form", f"{name}.form", body)
        write("form", f"{name}.form-and-payload", b"zen=hi&" + body + b"\x00" + data)
    for name, body in {
        "plus-and-escapes": b"payload=a+b%2B%7B%7D&x=%20",
        "two-payloads": b"payload=%7B%7D&payload=%5B%5D",
        "encoded-name": b"pay%6Coad=%7B%7D",
        "bad-escape": b"payload=%7B%ZZ",
        "no-value": b"payload&payload=",
        "round-trip-only": b"\x00\x00\xff&=%+ payload",
    }.items():
        write("form", name, body)

    # config: the README's example, pieces of it, and an environment after %%.
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```toml", readme.index("## Configuration")) + len("```toml\n")
    example = readme[start:readme.index("```", start)]
    write("config", "readme-example.toml", example.encode())
    for name, text in {
        "empty.toml": "",
        "secrets.toml": '[webhook]\nsecret = "s1"\nprevious_secret = "s0"\nhook_secrets = { "42" = "h" }\n'
                        'secret_store = "file"\nevents = ["push", "ping"]\n',
        "postgres.toml": 'database_url = "postgres://futurnal:pw@db.example:5432/futurnal?sslmode=disable&password=x"\n'
                         '[postgres]\nschema = "futurnal"\npool_size = 4\n',
        "sqlite.toml": 'data_dir = "/var/lib/futurnal"\ndatabase_url = "sqlite:/tmp/f.db"\n'
                       '[sqlite]\nsynchronous = "normal"\nmax_database_mb = 10\n[queue]\nretention_days = 1\n',
        "old-queue-keys.toml": '[queue]\nsynchronous = "normal"\nmax_database_mb = 3\ncompression = "none"\n',
        "unverified.toml": '[webhook]\nverify_signatures = false\n[serve]\nlisten = "0.0.0.0:8765"\n',
        "poll.toml": '[poll]\ninterval_secs = 60\nreconcile_secs = 600\nwebhook_quiet_secs = 5\n'
                     '[poll.repositories]\n"Octo/Hello" = { interval_secs = 30 }\n"octo/other" = {}\n',
        "serve-role.toml": '[serve]\nrole = "receiver"\ninstance = " eu-1 "\nleader_lease_secs = 0\n'
                           '[workers]\nconcurrency = 0\nlease_secs = 0\ntest_handler_delay_ms = 5\n'
                           'test_effect_audit = true\n[tunnel]\nngrok_api_url = "http://127.0.0.1:4040/"\n'
                           'check_secs = 1\n',
        "with-env.toml": '[webhook]\nsecret = "from-file"\n\n%%\nFUTURNAL_WEBHOOK_SECRET=from-env\n'
                         'FUTURNAL_LISTEN=127.0.0.1:2000\nFUTURNAL_ADMIN_LISTEN=[::1]:2001\n'
                         'FUTURNAL_SECRET_STORE=keychain\nFUTURNAL_INSTANCE=box-1\n'
                         'FUTURNAL_DATABASE_URL=postgresql://u@h/db\nFUTURNAL_GITHUB_API_URL=http://127.0.0.1:9/\n',
        "bad-env.toml": '\n%%\nFUTURNAL_LISTEN=nowhere\nFUTURNAL_SECRET_STORE=vault\n',
        # Overflowed in Config::resolve (now refused).
        "crash-retention-days.toml": "[queue]\nretention_days = 300000000000000\n",
        "crash-max-database-mb.toml": "[sqlite]\nmax_database_mb = 30000000000000\n",
    }.items():
        write("config", name, text.encode())

    # router: whole requests to the verifying and the unverifying listener alike.
    n = 0

    def request(name, data):
        nonlocal n
        n += 1
        write("router", f"{n:02}-{name}.http", data)

    def delivery(i):
        return f"00000000-0000-4000-8000-{i:012}"

    for i, (name, (event, body)) in enumerate(sorted(lean_ones.items())):
        if i % 3 == 0 or event in ("ping", "repository", "release"):
            request(name, http_request(event, body, sign(SECRET, body), delivery(i)))
    push = first_lean["push"]
    issue = first_lean["issues"]
    ping = first_lean["ping"]
    request("push-whole", http_request("push", whole["push"][1], sign(SECRET, whole["push"][1]), delivery(900)))
    request("previous-secret", http_request("push", push, sign(PREVIOUS_SECRET, push), delivery(901)))
    request("hook-secret", http_request("issues", issue, sign(HOOK_SECRET, issue), delivery(902), hook_id=HOOK_ID))
    request("rotating-new", http_request("ping", ping, sign(ROTATING_NEW, ping), delivery(903),
                                         hook_id=ROTATING_HOOK_ID))
    request("rotating-old", http_request("push", push, sign(ROTATING_OLD, push), delivery(904),
                                         hook_id=ROTATING_HOOK_ID))
    request("wrong-secret", http_request("push", push, sign(b"not the secret", push), delivery(905)))
    request("no-signature", http_request("push", push, None, delivery(906)))
    form = b"payload=" + urllib.parse.quote_plus(issue).encode()
    request("form", http_request("issues", form, sign(SECRET, form), delivery(907),
                                 content_type=b"application/x-www-form-urlencoded"))
    request("json-charset", http_request("issues", issue, sign(SECRET, issue), delivery(908),
                                         content_type=b"Application/JSON; charset=utf-8"))
    request("text-plain", http_request("push", push, sign(SECRET, push), delivery(909), content_type=b"text/plain"))
    request("gzip", http_request("push", push, sign(SECRET, push), delivery(910), extra=b"Content-Encoding: gzip\r\n"))
    untracked = push.replace(b"Codertocat", b"someone").replace(b"186853002", b"1")
    request("untracked", http_request("push", untracked, sign(SECRET, untracked), delivery(911)))
    other = b'{"action":"completed","repository":{"id":186853002,"full_name":"Codertocat/Hello-World"}}'
    request("other-event", http_request("workflow_run", other, sign(SECRET, other), delivery(912)))
    not_json = b'{"action":"opened",'
    request("not-json", http_request("issues", not_json, sign(SECRET, not_json), delivery(913)))
    request("duplicate-header", http_request("push", push, sign(SECRET, push), delivery(914),
                                             extra=b"X-GitHub-Event: issues\r\n"))
    request("too-large", http_request("push", push, sign(SECRET, push), delivery(915))
            .replace(b"Content-Length: " + str(len(push)).encode(), b"Content-Length: 99999999999"))
    chunked_head = http_request("push", b"", sign(SECRET, push), delivery(916)).replace(
        b"Content-Length: 0", b"Transfer-Encoding: chunked")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(push[k:k + 100]), push[k:k + 100]) for k in range(0, len(push), 100))
    request("chunked", chunked_head + chunks + b"0\r\n\r\n")
    request("two-on-one-connection",
            http_request("ping", ping, sign(SECRET, ping), delivery(917))
            + http_request("issues", issue, sign(SECRET, issue), delivery(918)))
    request("health", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n\r\n")
    request("not-found", b"GET /webhook/github/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    request("expect-continue", http_request("ping", ping, sign(SECRET, ping), delivery(919),
                                            extra=b"Expect: 100-continue\r\n"))
    request("array-body", http_request("ping", b"[]", sign(SECRET, b"[]"), delivery(921)))
    request("http10", http_request("ping", ping, sign(SECRET, ping), delivery(920)).replace(b"HTTP/1.1", b"HTTP/1.0", 1))


if __name__ == "__main__":
    main()
