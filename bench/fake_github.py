#!/usr/bin/env python3
"""A standalone fake of GitHub's REST API and GitHub's webhook sender, for running
futurnal by hand against a local stand-in for GitHub (stdlib only, python3.11).

It imitates the in-process Rust fake in tests/it/fake_github.rs (the reference): same
JSON shapes, status codes, secret masking, rate-limit headers, delivery log, and real,
signed deliveries sent the way GitHub sends them.

    python3 bench/fake_github.py --port 0 --repo octo/hello=4242 [--repo owner/name=ID ...]

prints `fake-github http://127.0.0.1:PORT` once ready and serves until SIGTERM/SIGINT.
Control endpoints (no token needed), for the person driving it:

    POST /_fake/trigger   {"repo": "octo/hello", "event": "issues", "payload": {...}}
                          -> {"guids": [...]}  (sent to every active hook wanting it)
    GET  /_fake/log       every delivery attempt of every hook, oldest first
    GET  /_fake/requests  API request counts by "METHOD /path/{pattern}", redeliveries
    GET  /_fake/hooks     every hook with its real (unmasked) secret
    POST /_fake/repos     {"full_name": "o/r", "id": 7}          add (or renumber) a repo
    POST /_fake/pulls     {"repo": "o/r", "items": [...]}         replace pulls (new ETag)
    POST /_fake/issues    {"repo": "o/r", "items": [...]}         replace issues (new ETag)
    POST /_fake/labels    {"repo": "o/r", "items": [...]}         replace labels (so /_fake/milestones)
    POST /_fake/reviews   {"repo": "o/r", "pull": 2, "items": [...]}  a pull request's reviews
                          (so /_fake/review_comments); these lists' ETags follow each page's content
    POST /_fake/fail      {"status": 502} or {"status": 429, "retry_after": 7}
                          the next API request gets that answer (calls queue up)
    POST /_fake/rate_limit {"remaining": 0, "reset": UNIX}       set the core bucket

Every request and every delivery attempt is logged to stderr, one line each.
"""

import argparse
import datetime
import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import signal
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATE_LIMIT = 5000
DOCS = "https://docs.github.com/rest"
MASK = "********"
DELIVERY_TIMEOUT = 10.0


# ---- Small helpers ----

def dumps(value):
    # serde_json without preserve_order: sorted keys, compact, UTF-8.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rfc3339_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_hash(text):
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def form_encode(pairs):
    """application/x-www-form-urlencoded exactly as Rust's form_urlencoded serializer."""
    def enc(s):
        out = []
        for b in s.encode():
            c = chr(b)
            if c.isascii() and (c.isalnum() or c in "*-._"):
                out.append(c)
            elif c == " ":
                out.append("+")
            else:
                out.append("%%%02X" % b)
        return "".join(out)
    return "&".join(f"{enc(k)}={enc(v)}" for k, v in pairs)


def get(obj, key):
    """serde_json's `value[key]`: None unless obj is an object holding key."""
    return obj.get(key) if isinstance(obj, dict) else None


def strings(value):
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else None


def string_or_number(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def parse_ts(value):
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else None


def param(params, name):
    return next((v for k, v in params if k == name), None)


def per_page(params):
    try:
        n = int(param(params, "per_page"))
        if n < 0:
            raise ValueError
    except (TypeError, ValueError):
        n = 30
    return min(max(n, 1), 100)


def paginate(items, params, url):
    """page/per_page pagination with GitHub's Link header (prev, next, last, first)."""
    pp = per_page(params)
    try:
        page = max(int(param(params, "page")), 1)
    except (TypeError, ValueError):
        page = 1
    last = max(-(-len(items) // pp), 1)
    sliced = items[(page - 1) * pp:(page - 1) * pp + pp]
    kept = [(k, v) for k, v in params if k != "page"]

    def link(target, rel):
        return f'<{url}?{form_encode(kept + [("page", str(target))])}>; rel="{rel}"'
    rels = []
    if page > 1:
        rels.append(link(page - 1, "prev"))
    if page < last:
        rels += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        rels.append(link(1, "first"))
    return sliced, (", ".join(rels) if rels else None)


def check_hook_url(url, allow_loopback):
    """The 422 message GitHub gives for a URL it cannot deliver to, or None."""
    try:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname
        parsed.port  # raises on a bad port
    except ValueError:
        host = None
    if parsed.scheme not in ("http", "https") or not host:
        return "url is not a valid URL"
    lower = host.lower()
    loopback = lower == "localhost" or lower.endswith(".localhost")
    try:
        ip = ipaddress.ip_address(host)
        loopback = loopback or ip.is_loopback or ip.is_unspecified
    except ValueError:
        pass
    if loopback and not allow_loopback:
        return f"Sorry, the URL host {host} is not supported because it isn't reachable over the public Internet"
    return None


class Answer:
    def __init__(self, status, body=None, headers=None, raw=None, content_type="application/json"):
        self.status = status
        self.headers = dict(headers or {})
        if raw is None and body is not None:
            raw = dumps(body).encode()
        self.raw = raw
        if raw is not None:
            self.headers.setdefault("Content-Type", content_type)


def github_error(status, message):
    return Answer(status, {"message": message, "documentation_url": DOCS})


def not_found():
    return github_error(404, "Not Found")


def validation_failed(message):
    return Answer(422, {
        "message": "Validation Failed",
        "errors": [{"resource": "Hook", "code": "custom", "message": message}],
        "documentation_url": "https://docs.github.com/rest/repos/webhooks",
    })


class BadJson(Exception):
    pass


def parse_body(raw):
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise BadJson()


def log(line):
    sys.stderr.write(f"{datetime.datetime.now().strftime('%H:%M:%S.%f')[:-3]} {line}\n")
    sys.stderr.flush()


# ---- State ----

class Hook:
    def __init__(self, hook_id, url, secret, events, active=True, content_type="json", insecure_ssl="0"):
        now = rfc3339_now()
        self.id, self.url, self.secret, self.events = hook_id, url, secret, events
        self.active, self.content_type, self.insecure_ssl = active, content_type, insecure_ssl
        self.created_at = self.updated_at = now
        self.last_response = {"code": None, "status": "unused", "message": None}
        self.deliveries = []  # oldest first: dicts with summary, url, body, request, response

    def config_json(self):
        config = {"content_type": self.content_type, "insecure_ssl": self.insecure_ssl, "url": self.url}
        if self.secret is not None:
            config["secret"] = MASK
        return config

    def json(self, base, full_name):
        url = f"{base}/repos/{full_name}/hooks/{self.id}"
        return {
            "type": "Repository", "id": self.id, "name": "web", "active": self.active,
            "events": self.events, "config": self.config_json(),
            "updated_at": self.updated_at, "created_at": self.created_at, "url": url,
            "test_url": f"{url}/test", "ping_url": f"{url}/pings", "deliveries_url": f"{url}/deliveries",
            "last_response": self.last_response,
        }

    def wants(self, event):
        return self.active and any(e == event or e == "*" for e in self.events)


class Repo:
    def __init__(self, full_name, repo_id):
        self.id, self.full_name = repo_id, full_name
        self.default_branch = "main"
        self.clone_url = f"https://github.com/{full_name}.git"
        self.hooks = []
        self.pulls, self.pulls_version = [], 0
        self.issues, self.issues_version = [], 0
        self.labels, self.milestones = [], []
        self.reviews, self.review_comments = {}, {}  # pull number -> items

    owner = property(lambda self: self.full_name.split("/")[0])
    name = property(lambda self: (self.full_name.split("/") + [""])[1])

    def owner_json(self):
        return {"login": self.owner, "id": stable_hash(self.owner.lower()) % 100_000_000, "type": "User"}

    def json(self):
        return {
            "id": self.id, "node_id": f"R_fake{self.id}", "name": self.name, "full_name": self.full_name,
            "private": False, "owner": self.owner_json(), "default_branch": self.default_branch,
            "clone_url": self.clone_url, "html_url": f"https://github.com/{self.full_name}",
            "visibility": "public", "archived": False,
        }

    def payload_json(self):
        return {"id": self.id, "full_name": self.full_name, "name": self.name, "owner": self.owner_json()}

    def hook(self, hook_id):
        return next((h for h in self.hooks if h.id == hook_id), None)


class Fake:
    def __init__(self, base_url, tokens, allow_loopback, ping_on_create):
        self.base_url = base_url
        self.lock = threading.RLock()
        self.tokens = tokens  # None: any non-empty token is valid
        self.allow_loopback, self.ping_on_create = allow_loopback, ping_on_create
        self.remaining, self.reset = RATE_LIMIT, int(time.time()) + 3600
        self.failures = []
        self.requests, self.quota_used, self.redelivery_requests = 0, 0, 0
        self.counts = {}
        self.repos = {}  # lower-cased full name -> Repo
        self.next_hook_id, self.next_delivery_id, self.version = 100_000, 1_000_000, 0
        self.log = []  # every delivery attempt, oldest first

    def add_repo(self, full_name, repo_id):
        with self.lock:
            repo = self.repos.setdefault(full_name.lower(), Repo(full_name, repo_id))
            repo.id = repo_id
            return repo

    def repo(self, owner, name):
        return self.repos.get(f"{owner}/{name}".lower())

    def find_hook(self, hook_id):
        for repo in self.repos.values():
            hook = repo.hook(hook_id)
            if hook:
                return repo, hook
        return None, None

    def refresh_rate(self):
        now = int(time.time())
        if now >= self.reset:
            self.remaining, self.reset = RATE_LIMIT, now + 3600

    # ---- Deliveries, really sent ----

    def deliver(self, hook_id, event, guid, action, body, redelivery):
        """Sends one delivery as GitHub does and records it; None when the hook is gone."""
        with self.lock:
            repo, hook = self.find_hook(hook_id)
            if hook is None:
                return None
            url, content_type, secret, insecure = hook.url, hook.content_type, hook.secret, hook.insecure_ssl
            repository_id = repo.id
        if content_type == "form":
            wire, mime = form_encode([("payload", body)]), "application/x-www-form-urlencoded"
        else:
            wire, mime = body, "application/json"
        wire_bytes = wire.encode()
        headers = [
            ("Accept", "*/*"), ("Content-Type", mime), ("User-Agent", "GitHub-Hookshot/fake"),
            ("X-GitHub-Delivery", guid), ("X-GitHub-Event", event), ("X-GitHub-Hook-ID", str(hook_id)),
            ("X-GitHub-Hook-Installation-Target-ID", str(repository_id)),
            ("X-GitHub-Hook-Installation-Target-Type", "repository"),
        ]
        if secret is not None:
            digest = hmac.new(secret.encode(), wire_bytes, hashlib.sha256).hexdigest()
            headers.append(("X-Hub-Signature-256", f"sha256={digest}"))
        started = time.monotonic()
        code, status, response = self.post(url, headers, wire_bytes, insecure)
        duration = time.monotonic() - started
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        with self.lock:
            self.next_delivery_id += 1
            summary = {
                "id": self.next_delivery_id, "guid": guid, "delivered_at": rfc3339_now(),
                "redelivery": redelivery, "duration": duration, "status": status, "status_code": code,
                "event": event, "action": action, "installation_id": None,
                "repository_id": repository_id, "throttled_at": None,
            }
            repo, hook = self.find_hook(hook_id)
            if hook is not None:
                hook.last_response = ({"code": None, "status": "failed", "message": status} if code == 0
                                      else {"code": code, "status": "active", "message": status})
                hook.deliveries.append({
                    "summary": summary, "url": url, "body": body, "response": response,
                    "request": {"headers": dict(headers), "payload": payload},
                })
            self.log.append(dict(summary, hook_id=hook_id, repo=repo.full_name if repo else None, url=url))
        log(f"deliver hook={hook_id} event={event} guid={guid} redelivery={str(redelivery).lower()} "
            f"{url} -> {code} {status} ({duration * 1000:.0f} ms)")
        return summary

    @staticmethod
    def post(url, headers, body, insecure_ssl):
        """POSTs without proxy or redirects: (status_code, status, response)."""
        parts = urllib.parse.urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            if parts.scheme == "https":
                context = ssl.create_default_context()
                if insecure_ssl == "1":
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=DELIVERY_TIMEOUT,
                                                   context=context)
            else:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=DELIVERY_TIMEOUT)
            try:
                conn.putrequest("POST", path, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                answer = conn.getresponse()
                text = answer.read().decode("utf-8", "replace")
            finally:
                conn.close()
        except TimeoutError:
            return 0, "timed out", {"headers": {}, "payload": None}
        except (OSError, http.client.HTTPException):
            return 0, "failed to connect to host", {"headers": {}, "payload": None}
        code = answer.status
        status = "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}"
        return code, status, {"headers": {k.lower(): v for k, v in answer.getheaders()}, "payload": text}

    def ping(self, hook_id):
        with self.lock:
            repo, hook = self.find_hook(hook_id)
            if hook is None:
                return None
            payload = {
                "zen": "Keep it logically awesome.", "hook_id": hook_id,
                "hook": hook.json(self.base_url, repo.full_name),
                "repository": repo.json(), "sender": repo.owner_json(),
            }
        return self.deliver(hook_id, "ping", str(uuid.uuid4()), None, dumps(payload), False)

    def trigger(self, full_name, event, payload):
        with self.lock:
            repo = self.repos.get(full_name.lower())
            if repo is None:
                return None
            hook_ids = [h.id for h in repo.hooks if h.wants(event)]
            repository, sender = repo.payload_json(), repo.owner_json()
        if not isinstance(payload, dict):
            payload = {}
        if isinstance(payload.get("repository"), dict):
            payload["repository"].update(repository)
        else:
            payload["repository"] = repository
        if not isinstance(payload.get("sender"), dict):
            payload["sender"] = sender  # GitHub always sends one (the Rust fake does not add it)
        action = payload["action"] if isinstance(payload.get("action"), str) else None
        body = dumps(payload)
        guids = []
        for hook_id in hook_ids:
            guid = str(uuid.uuid4())
            if self.deliver(hook_id, event, guid, action, body, False) is not None:
                guids.append(guid)
        return guids


# ---- API handlers (each gets fake, match groups, params, headers, raw body) ----

def h_meta(fake, m, params, headers, raw):
    return Answer(200, {"verifiable_password_authentication": False,
                        "hooks": ["192.30.252.0/22", "185.199.108.0/22"],
                        "api": ["192.30.252.0/22"], "git": ["192.30.252.0/22"]})


def h_rate_limit(fake, m, params, headers, raw):
    with fake.lock:
        core = {"limit": RATE_LIMIT, "remaining": fake.remaining, "reset": fake.reset,
                "used": RATE_LIMIT - fake.remaining, "resource": "core"}
    return Answer(200, {"resources": {"core": core}, "rate": core})


def h_get_repo(fake, m, params, headers, raw):
    with fake.lock:
        repo = fake.repo(m["owner"], m["repo"])
        return Answer(200, repo.json()) if repo else not_found()


def list_items(kind):
    def handler(fake, m, params, headers, raw):
        issues = kind == "issues"
        with fake.lock:
            repo = fake.repo(m["owner"], m["repo"])
            if repo is None:
                return not_found()
            full_name = repo.full_name
            items = list(repo.issues if issues else repo.pulls)
            version = repo.issues_version if issues else repo.pulls_version
        wanted = param(params, "state") or "open"
        if wanted != "all":
            items = [i for i in items if (get(i, "state") if isinstance(get(i, "state"), str) else "open") == wanted]
        since = parse_ts(param(params, "since")) if issues else None
        if since is not None:
            items = [i for i in items if parse_ts(get(i, "updated_at")) is None or parse_ts(get(i, "updated_at")) >= since]
        sort = param(params, "sort")
        field = {"created": "created_at", "updated": "updated_at"}.get(sort or "created")
        default_direction = "desc" if issues or sort in (None, "created") else "asc"
        if field:
            def key(item):
                ts = parse_ts(get(item, field))
                return (ts is not None, ts or 0)
            items.sort(key=key)
            if (param(params, "direction") or default_direction) == "desc":
                items.reverse()
        page, link = paginate(items, params, f"{fake.base_url}/repos/{full_name}/{kind}")
        body = dumps(page).encode()
        query = urllib.parse.urlencode(params)
        etag = '"%s"' % hashlib.sha256(f"{kind}|{full_name}|{query}|{version}|".encode() + body).hexdigest()[:16]
        fresh = any(v.strip().removeprefix("W/") in (etag, "*")
                    for value in headers.get_all("If-None-Match", []) for v in value.split(","))
        if fresh:
            return Answer(304, headers={"ETag": etag})
        out = {"ETag": etag}
        if link:
            out["Link"] = link
        return Answer(200, raw=body, headers=out, content_type="application/json; charset=utf-8")
    return handler


def list_page(fake, resource, items, params, headers):
    """One page with `Link` and an ETag of the page's content (304 for a match)."""
    page, link = paginate(items, params, f"{fake.base_url}/{resource}")
    body = dumps(page).encode()
    query = urllib.parse.urlencode(params)
    etag = '"%s"' % hashlib.sha256(f"{resource}|{query}|".encode() + body).hexdigest()[:16]
    fresh = any(v.strip().removeprefix("W/") in (etag, "*")
                for value in headers.get_all("If-None-Match", []) for v in value.split(","))
    if fresh:
        return Answer(304, headers={"ETag": etag})
    out = {"ETag": etag}
    if link:
        out["Link"] = link
    return Answer(200, raw=body, headers=out, content_type="application/json; charset=utf-8")


def h_list_labels(fake, m, params, headers, raw):
    with fake.lock:
        repo = fake.repo(m["owner"], m["repo"])
        if repo is None:
            return not_found()
        items, full_name = sorted(repo.labels, key=lambda l: get(l, "id") or 0), repo.full_name
    return list_page(fake, f"repos/{full_name}/labels", items, params, headers)


def h_list_milestones(fake, m, params, headers, raw):
    with fake.lock:
        repo = fake.repo(m["owner"], m["repo"])
        if repo is None:
            return not_found()
        items, full_name = list(repo.milestones), repo.full_name
    wanted = param(params, "state") or "open"
    if wanted != "all":
        items = [i for i in items if (get(i, "state") or "open") == wanted]
    items.sort(key=lambda i: (parse_ts(get(i, "due_on")) is None, parse_ts(get(i, "due_on")) or 0, get(i, "number") or 0))
    if param(params, "direction") == "desc":
        items.reverse()
    return list_page(fake, f"repos/{full_name}/milestones", items, params, headers)


def pull_list(kind):
    def handler(fake, m, params, headers, raw):
        with fake.lock:
            repo = fake.repo(m["owner"], m["repo"])
            number = int(m["number"]) if m["number"].isdigit() else None
            known = repo is not None and number is not None and (
                any(get(p, "number") == number for p in repo.pulls)
                or number in repo.reviews or number in repo.review_comments)
            if not known:
                return not_found()
            items = list((repo.reviews if kind == "reviews" else repo.review_comments).get(number, []))
            full_name = repo.full_name
        if kind == "reviews":
            items.sort(key=lambda i: get(i, "id") or 0)
        else:
            def created(item):
                ts = parse_ts(get(item, "created_at"))
                return (ts is not None, ts.timestamp() if ts else 0, get(item, "id") or 0)
            items.sort(key=created)
        return list_page(fake, f"repos/{full_name}/pulls/{number}/{kind}", items, params, headers)
    return handler


def h_list_hooks(fake, m, params, headers, raw):
    with fake.lock:
        repo = fake.repo(m["owner"], m["repo"])
        if repo is None:
            return not_found()
        hooks = [h.json(fake.base_url, repo.full_name) for h in repo.hooks]
        page, link = paginate(hooks, params, f"{fake.base_url}/repos/{repo.full_name}/hooks")
    return Answer(200, page, headers={"Link": link} if link else {})


def h_create_hook(fake, m, params, headers, raw):
    with fake.lock:
        if fake.repo(m["owner"], m["repo"]) is None:
            return not_found()
    data = parse_body(raw)
    config = get(data, "config")
    url = get(config, "url")
    if not isinstance(url, str) or not url:
        return validation_failed("Config must contain URL for webhooks")
    with fake.lock:
        message = check_hook_url(url, fake.allow_loopback)
        if message:
            return validation_failed(message)
        repo = fake.repo(m["owner"], m["repo"])
        if repo is None:
            return not_found()
        if any(h.url == url for h in repo.hooks):
            return validation_failed("Hook already exists on this repository")
        fake.next_hook_id += 1
        secret = get(config, "secret")
        active = get(data, "active")
        content_type = get(config, "content_type")
        events = strings(get(data, "events"))
        hook = Hook(fake.next_hook_id, url,
                    secret if isinstance(secret, str) and secret else None,
                    ["push"] if events is None else events,
                    active if isinstance(active, bool) else True,
                    content_type if isinstance(content_type, str) else "form",
                    string_or_number(get(config, "insecure_ssl")) or "0")
        created = hook.json(fake.base_url, repo.full_name)
        repo.hooks.append(hook)
        ping = fake.ping_on_create
    if ping:
        # GitHub queues this ping as it creates the hook; it may reach the receiver before
        # the API's answer reaches the caller. Like the Rust fake, always take that worst case.
        fake.ping(hook.id)
    return Answer(201, created, headers={"Location": created["url"]})


def hook_in(fake, m):
    """(repo, hook) for the path's owner/repo/hook_id, or (repo or None, None)."""
    repo = fake.repo(m["owner"], m["repo"])
    if repo is None or not m["hook_id"].isdigit():
        return repo, None
    return repo, repo.hook(int(m["hook_id"]))


def h_get_hook(fake, m, params, headers, raw):
    with fake.lock:
        repo, hook = hook_in(fake, m)
        return Answer(200, hook.json(fake.base_url, repo.full_name)) if hook else not_found()


def set_config_fields(hook, config):
    if isinstance(get(config, "url"), str):
        hook.url = config["url"]
    if isinstance(get(config, "content_type"), str):
        hook.content_type = config["content_type"]
    insecure = string_or_number(get(config, "insecure_ssl"))
    if insecure is not None:
        hook.insecure_ssl = insecure


def h_update_hook(fake, m, params, headers, raw):
    with fake.lock:
        repo, hook = hook_in(fake, m)
        if hook is None:
            return not_found()
        data = parse_body(raw)
        url = get(get(data, "config"), "url")
        if isinstance(url, str):
            message = check_hook_url(url, fake.allow_loopback)
            if message:
                return validation_failed(message)
            if any(h.id != hook.id and h.url == url for h in repo.hooks):
                return validation_failed("Hook already exists on this repository")
        if isinstance(get(data, "active"), bool):
            hook.active = data["active"]
        if strings(get(data, "events")) is not None:
            hook.events = strings(data["events"])
        for event in strings(get(data, "add_events")) or []:
            if event not in hook.events:
                hook.events.append(event)
        removed = strings(get(data, "remove_events")) or []
        hook.events = [e for e in hook.events if e not in removed]
        config = get(data, "config")
        if isinstance(config, dict):
            # As on GitHub, `config` here replaces the whole configuration: a secret not
            # sent again is dropped (PATCH .../config is the one that merges).
            set_config_fields(hook, config)
            secret = config.get("secret")
            hook.secret = secret if isinstance(secret, str) and secret else None
        hook.updated_at = rfc3339_now()
        return Answer(200, hook.json(fake.base_url, repo.full_name))


def h_delete_hook(fake, m, params, headers, raw):
    with fake.lock:
        repo, hook = hook_in(fake, m)
        if hook is None:
            return not_found()
        repo.hooks.remove(hook)
        return Answer(204)


def h_get_hook_config(fake, m, params, headers, raw):
    with fake.lock:
        _, hook = hook_in(fake, m)
        return Answer(200, hook.config_json()) if hook else not_found()


def h_update_hook_config(fake, m, params, headers, raw):
    with fake.lock:
        _, hook = hook_in(fake, m)
        if hook is None:
            return not_found()
        config = parse_body(raw)
        if isinstance(get(config, "url"), str):
            message = check_hook_url(config["url"], fake.allow_loopback)
            if message:
                return validation_failed(message)
        set_config_fields(hook, config)
        if isinstance(get(config, "secret"), str):
            hook.secret = config["secret"] or None
        hook.updated_at = rfc3339_now()
        return Answer(200, hook.config_json())


def h_ping(fake, m, params, headers, raw):
    with fake.lock:
        _, hook = hook_in(fake, m)
    if hook is None:
        return not_found()
    fake.ping(hook.id)  # sent before answering, as the Rust fake does
    return Answer(204)


def h_list_deliveries(fake, m, params, headers, raw):
    pp = per_page(params)
    cursor = param(params, "cursor")
    cursor = cursor.removeprefix("v1_") if cursor else None
    cursor = int(cursor) if cursor and cursor.isdigit() else None
    with fake.lock:
        repo, hook = hook_in(fake, m)
        if hook is None:
            return not_found()
        newest_first = [d["summary"] for d in reversed(hook.deliveries)
                        if cursor is None or d["summary"]["id"] <= cursor]
        out = {}
        if len(newest_first) > pp:
            out["Link"] = (f"<{fake.base_url}/repos/{repo.full_name}/hooks/{hook.id}/deliveries"
                           f"?per_page={pp}&cursor=v1_{newest_first[pp]['id']}>; rel=\"next\"")
        return Answer(200, newest_first[:pp], headers=out)


def find_delivery(fake, m):
    _, hook = hook_in(fake, m)
    if hook is None or not m["delivery_id"].isdigit():
        return None
    return next((d for d in hook.deliveries if d["summary"]["id"] == int(m["delivery_id"])), None)


def detail(delivery):
    return dict(delivery["summary"], url=delivery["url"], request=delivery["request"],
                response=delivery["response"])


def h_get_delivery(fake, m, params, headers, raw):
    with fake.lock:
        found = find_delivery(fake, m)
        return Answer(200, detail(found)) if found else not_found()


def h_redeliver(fake, m, params, headers, raw):
    with fake.lock:
        found = find_delivery(fake, m)
        if found is None:
            return not_found()
        s = found["summary"]
        out = (int(m["hook_id"]), s["event"], s["guid"], s["action"], found["body"], True)
        fake.redelivery_requests += 1
    fake.deliver(*out)  # sent before answering, as the Rust fake does
    return Answer(202, {})


def pattern(path):
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")


HOOK = "/repos/{owner}/{repo}/hooks/{hook_id}"
ROUTES = [(p, pattern(p), methods) for p, methods in [
    ("/meta", {"GET": h_meta}),
    ("/rate_limit", {"GET": h_rate_limit}),
    ("/repos/{owner}/{repo}", {"GET": h_get_repo}),
    ("/repos/{owner}/{repo}/pulls", {"GET": list_items("pulls")}),
    ("/repos/{owner}/{repo}/issues", {"GET": list_items("issues")}),
    ("/repos/{owner}/{repo}/pulls/{number}/reviews", {"GET": pull_list("reviews")}),
    ("/repos/{owner}/{repo}/pulls/{number}/comments", {"GET": pull_list("comments")}),
    ("/repos/{owner}/{repo}/labels", {"GET": h_list_labels}),
    ("/repos/{owner}/{repo}/milestones", {"GET": h_list_milestones}),
    ("/repos/{owner}/{repo}/hooks", {"GET": h_list_hooks, "POST": h_create_hook}),
    (HOOK, {"GET": h_get_hook, "PATCH": h_update_hook, "DELETE": h_delete_hook}),
    (HOOK + "/config", {"GET": h_get_hook_config, "PATCH": h_update_hook_config}),
    (HOOK + "/pings", {"POST": h_ping}),
    (HOOK + "/deliveries", {"GET": h_list_deliveries}),
    (HOOK + "/deliveries/{delivery_id}", {"GET": h_get_delivery}),
    (HOOK + "/deliveries/{delivery_id}/attempts", {"POST": h_redeliver}),
]]


def auth_token(headers):
    """`Bearer <t>` or `token <t>`; "" for another scheme; None without the header."""
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "token") else ""


def api(fake, method, path, params, headers, raw):
    """The Rust fake's api_gate (auth, rate limit, injected failures) around the routes."""
    free = path == "/rate_limit"
    anonymous_ok = free or path == "/meta"
    token = auth_token(headers)
    route, methods, groups = None, {}, None
    for name, regex, route_methods in ROUTES:
        match = regex.match(path)
        if match:
            route, methods, groups = name, route_methods, match.groupdict()
            break
    handler = methods.get(method)
    with fake.lock:
        fake.requests += 1
        key = f"{method} {route or path}"
        fake.counts[key] = fake.counts.get(key, 0) + 1
        fake.refresh_rate()
        if token is None:
            authorized = anonymous_ok
        else:
            authorized = bool(token) and (fake.tokens is None or token in fake.tokens)
        gate, failure = "pass", None
        if not authorized:
            gate = "unauthorized"
        elif not free and fake.remaining == 0:
            gate = "limited"
        elif not free and fake.failures:
            gate, failure = "injected", fake.failures.pop(0)
    chargeable = False
    if gate == "pass":
        chargeable = not free
        if route is None:
            answer = not_found()
        elif handler is None:
            answer = Answer(405, headers={"Allow": ", ".join(methods)})
        else:
            try:
                answer = handler(fake, groups, params, headers, raw)
            except BadJson:
                answer = github_error(400, "Problems parsing JSON")
    elif gate == "unauthorized":
        answer = github_error(401, "Bad credentials")
    elif gate == "limited":
        answer = github_error(403, "API rate limit exceeded for user ID 1.")
    else:
        chargeable = True
        status, retry_after = failure
        if retry_after is not None:
            answer = Answer(status, {
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            }, headers={"Retry-After": str(retry_after)})
        else:
            answer = github_error(status, http.client.responses.get(status, "Server Error"))
    with fake.lock:
        if chargeable and answer.status != 304:
            fake.remaining = max(fake.remaining - 1, 0)
            fake.quota_used += 1
        answer.headers.update({
            "X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Remaining": str(fake.remaining),
            "X-RateLimit-Used": str(RATE_LIMIT - fake.remaining), "X-RateLimit-Reset": str(fake.reset),
            "X-RateLimit-Resource": "core",
        })
    return answer


# ---- Control endpoints ----

def control(fake, method, path, raw):
    try:
        data = parse_body(raw)
    except BadJson:
        return github_error(400, "Problems parsing JSON")

    def repo_of():
        name = get(data, "repo")
        return fake.repos.get(name.lower()) if isinstance(name, str) else None
    if (method, path) == ("POST", "/_fake/trigger"):
        event = get(data, "event")
        if not isinstance(get(data, "repo"), str) or not isinstance(event, str) or not event:
            return Answer(400, {"message": "want {\"repo\": \"o/r\", \"event\": \"...\", \"payload\": {...}}"})
        guids = fake.trigger(data["repo"], event, get(data, "payload"))
        return Answer(200, {"guids": guids}) if guids is not None else not_found()
    if (method, path) == ("GET", "/_fake/log"):
        with fake.lock:
            return Answer(200, list(fake.log))
    if (method, path) == ("GET", "/_fake/requests"):
        with fake.lock:
            return Answer(200, {"total": fake.requests, "quota_used": fake.quota_used,
                                "redelivery_requests": fake.redelivery_requests, "by_route": dict(fake.counts)})
    if (method, path) == ("GET", "/_fake/hooks"):
        with fake.lock:
            return Answer(200, [{"repo": r.full_name, "id": h.id, "url": h.url, "secret": h.secret,
                                 "events": h.events, "active": h.active, "content_type": h.content_type,
                                 "insecure_ssl": h.insecure_ssl, "deliveries": len(h.deliveries)}
                                for r in fake.repos.values() for h in r.hooks])
    if (method, path) == ("POST", "/_fake/repos"):
        if not isinstance(get(data, "full_name"), str) or not isinstance(get(data, "id"), int):
            return Answer(400, {"message": "want {\"full_name\": \"o/r\", \"id\": 7}"})
        return Answer(200, fake.add_repo(data["full_name"], data["id"]).json())
    if method == "POST" and path in ("/_fake/pulls", "/_fake/issues"):
        with fake.lock:
            repo = repo_of()
            if repo is None or not isinstance(get(data, "items"), list):
                return not_found() if repo is None else Answer(400, {"message": "want {\"items\": [...]}"})
            fake.version += 1
            if path.endswith("pulls"):
                repo.pulls, repo.pulls_version = data["items"], fake.version
            else:
                repo.issues, repo.issues_version = data["items"], fake.version
            return Answer(204)
    if method == "POST" and path in ("/_fake/labels", "/_fake/milestones"):
        with fake.lock:
            repo = repo_of()
            if repo is None or not isinstance(get(data, "items"), list):
                return not_found() if repo is None else Answer(400, {"message": "want {\"items\": [...]}"})
            if path.endswith("labels"):
                repo.labels = data["items"]
            else:
                repo.milestones = data["items"]
            return Answer(204)
    if method == "POST" and path in ("/_fake/reviews", "/_fake/review_comments"):
        with fake.lock:
            repo = repo_of()
            if repo is None or not isinstance(get(data, "items"), list) or not isinstance(get(data, "pull"), int):
                return not_found() if repo is None else Answer(400, {"message": "want {\"pull\": 2, \"items\": [...]}"})
            target = repo.reviews if path.endswith("reviews") else repo.review_comments
            target[data["pull"]] = data["items"]
            return Answer(204)
    if (method, path) == ("POST", "/_fake/fail"):
        if not isinstance(get(data, "status"), int):
            return Answer(400, {"message": "want {\"status\": 502} or {\"status\": 429, \"retry_after\": 7}"})
        with fake.lock:
            fake.failures.append((data["status"], get(data, "retry_after")))
        return Answer(204)
    if (method, path) == ("POST", "/_fake/rate_limit"):
        with fake.lock:
            if isinstance(get(data, "remaining"), int):
                fake.remaining = data["remaining"]
            if isinstance(get(data, "reset"), int):
                fake.reset = data["reset"]
        return Answer(204)
    return not_found()


# ---- HTTP plumbing ----

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-github"
    sys_version = ""
    fake = None  # set in main

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_any(self):
        started = time.monotonic()
        raw = self.read_body()
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        params = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        try:
            if path.startswith("/_fake/"):
                answer = control(self.fake, self.command, path, raw)
            else:
                answer = api(self.fake, self.command, path, params, self.headers, raw)
        except Exception as error:  # a bug in the fake: say so rather than hang up
            log(f"error: {error!r}")
            answer = Answer(500, {"message": f"fake-github error: {error!r}"})
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.status not in (204, 304):
            self.send_header("Content-Length", str(len(answer.raw or b"")))
        self.end_headers()
        if answer.raw and self.command != "HEAD" and answer.status not in (204, 304):
            self.wfile.write(answer.raw)
        log(f"{self.command} {self.path} -> {answer.status} ({(time.monotonic() - started) * 1000:.0f} ms)")

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = handle_any

    def log_message(self, format, *args):
        pass  # handle_any logs one line per request


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME=ID",
                        help="a repository to serve (repeatable); ID defaults to a hash of the name")
    parser.add_argument("--token", action="append", metavar="TOKEN",
                        help="accept only these tokens (repeatable); default: any non-empty token")
    parser.add_argument("--refuse-loopback", action="store_true",
                        help="refuse loopback hook URLs with 422, as github.com does")
    parser.add_argument("--no-ping-on-create", action="store_true",
                        help="do not send the ping GitHub sends when a hook is created")
    args = parser.parse_args()

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    fake = Fake(f"http://{shown}:{port}", set(args.token) if args.token else None,
                not args.refuse_loopback, not args.no_ping_on_create)
    for spec in args.repo:
        name, _, repo_id = spec.partition("=")
        if name.count("/") != 1 or (repo_id and not repo_id.isdigit()):
            parser.error(f"--repo {spec}: want OWNER/NAME=ID")
        fake.add_repo(name, int(repo_id) if repo_id else stable_hash(name.lower()) % 1_000_000_000)
    Handler.fake = fake

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with `&`, which ignores SIGINT
    print(f"fake-github {fake.base_url}", flush=True)
    log(f"serving {', '.join(r.full_name + '=' + str(r.id) for r in fake.repos.values()) or 'no repositories'}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log("stopped")


if __name__ == "__main__":
    main()
