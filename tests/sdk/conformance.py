"""//! What both SDK conformance scripts share: failing with one `FAIL:` line, reading the
//! simulator's channels.toml, its control API (plain HTTP, not part of any channel protocol), and
//! a notification receiver that keeps each POST exactly as it arrived.
"""

import json
import sys
import traceback
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Fail(Exception):
    """A conformance failure: printed as one `FAIL:` line, exit status 1."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def step(msg):
    print(f"ok   {msg}", flush=True)


def note(msg):
    print(f"     {msg}", flush=True)


def channel_table(state_dir, channel, keys):
    """`[channel]` of the state dir's channels.toml, checked to hold `keys`, and a reader of the
    files it names (relative paths are relative to the state dir)."""
    path = Path(state_dir) / "channels.toml"
    check(path.is_file(), f"{path} does not exist (is the simulator's state dir right?)")
    with open(path, "rb") as f:
        conf = tomllib.load(f)
    check(channel in conf, f"{path} has no [{channel}] table")
    table = conf[channel]
    for key in keys:
        check(key in table, f"{path} [{channel}] lacks `{key}`")

    def read(rel):
        p = Path(rel)
        if not p.is_absolute():
            p = Path(state_dir) / p
        check(p.is_file(), f"key file {p} does not exist")
        return p.read_text()

    return table, read


def sim_call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except urllib.error.URLError as e:
        raise Fail(f"control API {method} {path} unreachable: {e}")


def sim_pay(base, channel, out_trade_no):
    status, text = sim_call(base, "POST", "/sim/pay", {"channel": channel, "out_trade_no": out_trade_no})
    check(status == 200, f"POST /sim/pay {out_trade_no}: expected 200, got {status}: {text}")


def sim_order(base, channel, out_trade_no):
    q = urllib.parse.urlencode({"channel": channel, "out_trade_no": out_trade_no})
    status, text = sim_call(base, "GET", f"/sim/orders?{q}")
    check(status == 200, f"GET /sim/orders {out_trade_no}: expected 200, got {status}: {text}")
    try:
        return json.loads(text)
    except ValueError:
        raise Fail(f"GET /sim/orders {out_trade_no}: not JSON: {text!r}")


class Receiver:
    """Stores each POST to `http://127.0.0.1:PORT/notify/<channel>` (headers as a plain dict with
    the names as sent, as web frameworks hand them to an SDK; the raw body, chunked or not) and
    answers `status` with `body` — what the channel needs to stop retrying."""

    def __init__(self, channel, status=200, body=b""):
        self.notes = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    raw = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        raw += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.cond:
                    receiver.notes.append({"path": self.path, "headers": dict(self.headers.items()), "body": raw})
                    receiver.cond.notify_all()
                self.send_response(status)
                if body:
                    self.send_header("Content-Type", "text/plain;charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify/{channel}"

    def wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for n in self.notes:
                    if pred(n):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def matching(self, pred):
        with self.cond:
            return [n for n in self.notes if pred(n)]

    def summary(self):
        with self.cond:
            return [f"{n['path']} headers={n['headers']} body={n['body'][:300]!r}" for n in self.notes]


def run_script(main):
    """`main(STATE_DIR)` with the exit codes every conformance script promises: 0 passed,
    1 a `FAIL:` line naming the step, 2 a crash (traceback above)."""
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} STATE_DIR", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1])
    except Fail as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print("FAIL: unexpected error (traceback above)", flush=True)
        sys.exit(2)
    sys.exit(0)
