#!/usr/bin/env python3
"""Follows futurnal's change feed and keeps its cursor in a file.

    examples/follow_changes.py [--url http://127.0.0.1:8766] [--cursor changes.cursor]
                               [--repository OWNER/NAME] [--kind KIND]

Each change is handed to `handle` (here: printed as one JSON line), and only then is the
cursor file moved past it (written to a temporary file and renamed, so a crash leaves
the old cursor or the new one, never half of one). Stop it and start it again: it goes
on after the last change it handled, with no gap and nothing twice (at most the change
being handled when it was killed is handled again: make `handle` idempotent, which
changes make easy, since each carries the entity's whole new state).

A cursor older than the feed keeps (`[changes] retention_days`) gets 410: the script
then loads `/api/snapshot` for the repository (each entity as an upsert) and follows
from the snapshot's `seq`.

Uses the long-poll JSON API (`/api/changes?since=…&wait=30`); the same feed is served as
Server-Sent Events with `Accept: text/event-stream`. With an admin token configured, set
FUTURNAL_ADMIN_TOKEN. Standard library only.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def handle(change):
    """What a consumer does with a change: index it, notify, update a graph..."""
    print(json.dumps(change), flush=True)


def read_cursor(path):
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def write_cursor(path, seq):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{seq}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def get(url, timeout):
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    token = os.environ.get("FUTURNAL_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def resync(base, repository, cursor_path):
    """Loads a snapshot and returns the seq to follow from."""
    if not repository:
        sys.exit("follow_changes: the cursor is older than the feed keeps; resync needs --repository")
    query = urllib.parse.urlencode({"repository": repository})
    snapshot = get(f"{base}/api/snapshot?{query}", timeout=300)
    for entity in snapshot["entities"]:
        handle({"seq": None, "repository": snapshot["repository"], "op": "upsert", **entity, "cause": "snapshot"})
    write_cursor(cursor_path, snapshot["seq"])
    return snapshot["seq"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8766", help="the admin listener")
    parser.add_argument("--cursor", default="changes.cursor", help="where the cursor is kept")
    parser.add_argument("--repository", help="only this repository's changes (OWNER/NAME)")
    parser.add_argument("--kind", help="only changes of this kind")
    args = parser.parse_args()
    base = args.url.rstrip("/")
    since = read_cursor(args.cursor)
    pause = 0.5
    while True:
        query = {"since": since, "limit": 500, "wait": 30}
        if args.repository:
            query["repository"] = args.repository
        if args.kind:
            query["kind"] = args.kind
        try:
            page = get(f"{base}/api/changes?{urllib.parse.urlencode(query)}", timeout=45)
        except urllib.error.HTTPError as e:
            if e.code == 410:
                print(f"follow_changes: {json.load(e)['error']}", file=sys.stderr)
                since = resync(base, args.repository, args.cursor)
                continue
            if e.code < 500:
                sys.exit(f"follow_changes: {e.code}: {e.read().decode(errors='replace')}")
            print(f"follow_changes: {e.code}; retrying in {pause:.1f} s", file=sys.stderr)
            time.sleep(pause)
            pause = min(pause * 2, 10)
            continue
        except (urllib.error.URLError, OSError) as e:
            # The daemon restarting: try again, from the same cursor.
            print(f"follow_changes: {e}; retrying in {pause:.1f} s", file=sys.stderr)
            time.sleep(pause)
            pause = min(pause * 2, 10)
            continue
        pause = 0.5
        for change in page["changes"]:
            handle(change)
            write_cursor(args.cursor, change["seq"])
        if page["next"] != since:
            since = page["next"]
            write_cursor(args.cursor, since)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
