#!/usr/bin/env python3
"""A loopback stand-in for the Hugging Face Hub and the dataset hosts, for kvgrid's tests.

Serves one model repository in the Hub's URL layout and with the Hub's headers:
  HEAD/GET /{org}/{name}/resolve/{revision}/{file}
    regular file: 200, ETag "<git blob sha1>", X-Repo-Commit, Content-Length
    LFS file:     302 to /_lfs/<sha256>, X-Linked-Etag "<sha256>", X-Linked-Size, X-Repo-Commit
    unknown repo: 401 X-Error-Code: RepoNotFound; unknown revision/file: 404 *NotFound
  HEAD/GET /datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip
                                        the wikitext zip below as a Hub dataset file (LFS)
  GET /_lfs/<sha256>                    the LFS blob (Range requests answered with 206)
  GET /wikitext-2-raw-v1.zip            a zip with wikitext-2-raw/wiki.{test,valid,train}.raw whose
                                        test member is rebuilt from the joined-rows fixture
  GET /pg19/test/10146.txt              --pg19-book's bytes (PG-19 test book 10146, CRLF); other ids 404
Revisions (or their commit shas):
  main         config.json, model.safetensors, tokenizer.json (--model-dir)
  v1.0         the same files as main at another commit
  step143000   config.json, pytorch_model.bin, tokenizer.json (--bin-model-dir), like Pythia's
               step branches: no model.safetensors
  sharded      main's weights as model.safetensors.index.json + model-0000{1,2}-of-00002.safetensors

Control (for fault injection), all GET:
  /_control?action=reset                       clear faults and the request log
  /_control?action=fail404&file=F              resolve of F answers 404 EntryNotFound
  /_control?action=drop_once&file=F            next body of F stops half-way (connection closed)
  /_control?action=wrong_sha&file=F            X-Linked-Etag of F is the sha256 of other bytes
  /_control?action=fail503_once&file=F         next resolve request for F answers 503
  /_control?action=no_range                    ignore Range headers (always 200, whole body)
  /_control?action=require_token&token=T       every request needs "Authorization: Bearer T"
  /_log                                        JSON list of requests {method, path, range, auth}

Writes the port it listens on (127.0.0.1, chosen by the OS) to --port-file, and exits by itself
after --lifetime seconds or when its parent process goes away.
"""
import argparse
import hashlib
import io
import json
import os
import struct
import sys
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = "EleutherAI/pythia-70m-deduped"
REVISIONS = {name: hashlib.sha1(b"kvgrid-fake-" + name.encode()).hexdigest()
             for name in ("main", "v1.0", "step143000", "sharded")}
LFS_SUFFIXES = (".safetensors", ".bin", ".zip", "tokenizer.json")
# The Hub dataset repository llama.cpp (and kvgrid) take the wikitext zip from.
DATASET_REPO = "datasets/ggml-org/ci"
DATASET_COMMIT = hashlib.sha1(b"kvgrid-fake-ggml-org-ci").hexdigest()
PG19_BOOK_ID = "10146"


# A wikitext-2-raw zip written by hand, independent of kvgrid's row rule: its expected joined
# text (Hugging Face's rows — a blank line is "", any other line keeps its "\n" — joined by
# "\n\n") is spelled out in tests/datasets/dataset_test.cc.
WIKITEXT_FIXED_RAW = " \n = Title = \n \n Line one . \n Line two @-@ b . \n \n  \n = = Part = = \n"


def wikitext_raw_from_joined(text):
    """Inverse of HF's rows: rows joined by "\\n\\n"; a row is "" or one line ending in "\\n"."""
    rows, p, n = [], 0, len(text)
    while True:
        if p < n and text[p] != "\n":
            e = text.index("\n", p) + 1
            rows.append(text[p:e])
            p = e
        else:
            rows.append("")
        if p >= n:
            break
        assert text[p:p + 2] == "\n\n", f"separator expected at {p}"
        p += 2
    raw = "".join(r if r else " \n" for r in rows)
    # Check the round trip with the same rule kvgrid implements.
    rebuilt = "\n\n".join(("" if not line.strip() else line) for line in raw.splitlines(True))
    assert rebuilt == text, "wikitext inverse does not round-trip"
    return raw, len(rows)


def split_safetensors(data, parts):
    """A safetensors image as `parts` shard files plus model.safetensors.index.json, the way
    transformers' save_pretrained(max_shard_size=...) writes them."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    out, weight_map = {}, {}
    for p in range(parts):
        shard = f"model-{p + 1:05d}-of-{parts:05d}.safetensors"
        chunk, h, off = [], {"__metadata__": {"format": "pt"}}, 0
        for name in names[p::parts]:
            info = header[name]
            a, b = info["data_offsets"]
            chunk.append(body[a:b])
            h[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [off, off + b - a]}
            off += b - a
            weight_map[name] = shard
        hb = json.dumps(h).encode()
        hb += b" " * (-len(hb) % 8)
        out[shard] = struct.pack("<Q", len(hb)) + hb + b"".join(chunk)
    index = {"metadata": {"total_size": len(body)}, "weight_map": dict(sorted(weight_map.items()))}
    out["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return out


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.fail404 = set()
        self.drop_once = set()
        self.wrong_sha = set()
        self.fail503_once = set()
        self.no_range = False
        self.token = None
        self.log = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-hub/1.0"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fake_hub: " + (fmt % args) + "\n")

    # -- helpers --
    def send(self, status, headers=None, body=b"", head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def error(self, status, code, message, head=False):
        body = json.dumps({"error": message}).encode()
        self.send(status, {"X-Error-Code": code, "X-Error-Message": message,
                           "Content-Type": "application/json"}, body, head)

    def serve_bytes(self, data, key, head, extra=None):
        """Whole or ranged body, with the drop_once / no_range faults."""
        st = self.server.state
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        headers.update(extra or {})
        rng = self.headers.get("Range")
        with st.lock:
            ignore_range = st.no_range
        start = 0
        status = 200
        if rng and not ignore_range and rng.startswith("bytes="):
            spec = rng[len("bytes="):].split(",")[0]
            a, _, b = spec.partition("-")
            start = int(a) if a else 0
            end = int(b) if b else len(data) - 1
            if start >= len(data):
                self.send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
                return
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            status = 206
            data = data[start:end + 1]
        drop = False
        if not head:
            with st.lock:
                if key in st.drop_once:
                    st.drop_once.discard(key)
                    drop = True
        if drop:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send(status, headers, data, head)

    # -- routing --
    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    def route(self, head):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query)
        if path == "/_control":
            self.control(query)
            return
        if path == "/_log":
            with st.lock:
                body = json.dumps(st.log).encode()
            self.send(200, {"Content-Type": "application/json"}, body, head)
            return
        auth = self.headers.get("Authorization", "")
        with st.lock:
            st.log.append({"method": self.command, "path": path,
                           "range": self.headers.get("Range", ""), "auth": auth})
            token = st.token
        if token is not None and auth != f"Bearer {token}":
            self.error(401, "Unauthorized", "Invalid credentials in Authorization header", head)
            return
        if path.startswith("/_lfs/"):
            sha = path[len("/_lfs/"):]
            entry = self.server.blobs.get(sha)
            if entry is None:
                self.error(404, "EntryNotFound", "No such LFS object", head)
                return
            name, data = entry
            self.serve_bytes(data, name, head, {"ETag": f'"{sha}"'})
            return
        if path == "/wikitext-2-raw-v1.zip":
            self.serve_bytes(self.server.wikitext_zip, "wikitext-2-raw-v1.zip", head)
            return
        if path == "/wikitext-fixed.zip":
            self.serve_bytes(self.server.wikitext_fixed_zip, "wikitext-fixed.zip", head)
            return
        if path.startswith("/pg19/"):
            if path == f"/pg19/test/{PG19_BOOK_ID}.txt":
                self.serve_bytes(self.server.pg19, f"{PG19_BOOK_ID}.txt", head,
                                 {"Content-Type": "text/plain"})
            else:
                self.send(404, {"Content-Type": "application/xml"},
                          b"<Error><Code>NoSuchKey</Code></Error>", head)
            return
        if "/resolve/" in path:
            self.resolve(path, head)
            return
        self.error(404, "NotFound", f"no route for {path}", head)

    def resolve(self, path, head):
        st = self.server.state
        repo, _, rest = path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        if repo == DATASET_REPO:
            if revision not in ("main", DATASET_COMMIT):
                self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                return
            commit = DATASET_COMMIT
            revision_files = {"wikitext-2-raw-v1.zip": self.server.wikitext_zip}
        elif repo != REPO:
            self.error(401, "RepoNotFound", "Repository not found", head)
            return
        else:
            commit = REVISIONS.get(revision, revision if revision in REVISIONS.values() else None)
            if commit is None:
                self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                return
            by_commit = {c: r for r, c in REVISIONS.items()}
            revision_files = self.server.files[by_commit[commit]]
        with st.lock:
            failing = filename in st.fail404
            fail503 = filename in st.fail503_once
            st.fail503_once.discard(filename)
            wrong = filename in st.wrong_sha
        if fail503:
            self.send(503, {"Retry-After": "0"}, b"busy", head)
            return
        data = revision_files.get(filename)
        if data is None or failing:
            self.error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"", head)
            return
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            advertised = hashlib.sha256(b"not the content").hexdigest() if wrong else sha
            host = self.headers.get("Host", f"127.0.0.1:{self.server.server_address[1]}")
            self.send(302, {
                "Location": f"http://{host}/_lfs/{sha}",
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{advertised}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
            }, b"", head)
            return
        blob_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.serve_bytes(data, filename, head,
                         {"X-Repo-Commit": commit, "ETag": f'"{blob_sha1}"'})

    def control(self, query):
        st = self.server.state
        action = query.get("action", [""])[0]
        f = query.get("file", [""])[0]
        with st.lock:
            if action == "reset":
                st.reset()
            elif action == "fail404":
                st.fail404.add(f)
            elif action == "drop_once":
                st.drop_once.add(f)
            elif action == "wrong_sha":
                st.wrong_sha.add(f)
            elif action == "fail503_once":
                st.fail503_once.add(f)
            elif action == "no_range":
                st.no_range = True
            elif action == "require_token":
                st.token = query.get("token", [""])[0]
            else:
                self.send(400, {}, b"unknown action")
                return
        self.send(200, {"Content-Type": "text/plain"}, b"ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--model-dir", required=True, help="config.json + model.safetensors")
    ap.add_argument("--bin-model-dir", required=True, help="config.json + pytorch_model.bin")
    ap.add_argument("--tokenizer", required=True, help="served as tokenizer.json")
    ap.add_argument("--wikitext-text", required=True, help="joined-rows wikitext test text")
    ap.add_argument("--pg19-book", required=True, help="served as PG-19 test book 10146")
    ap.add_argument("--lifetime", type=float, default=120.0, help="seconds before exiting")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    main_files = {name: read(os.path.join(args.model_dir, name))
                  for name in ("config.json", "model.safetensors")}
    main_files["tokenizer.json"] = read(args.tokenizer)
    step_files = {name: read(os.path.join(args.bin_model_dir, name))
                  for name in ("config.json", "pytorch_model.bin")}
    step_files["tokenizer.json"] = main_files["tokenizer.json"]
    sharded_files = {k: v for k, v in main_files.items() if k != "model.safetensors"}
    sharded_files.update(split_safetensors(main_files["model.safetensors"], 2))
    files = {"main": main_files, "v1.0": dict(main_files), "step143000": step_files,
             "sharded": sharded_files}
    with open(args.wikitext_text, "rb") as f:
        joined = f.read().decode("utf-8")
    raw, _ = wikitext_raw_from_joined(joined)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("wikitext-2-raw/wiki.test.raw", raw.encode("utf-8"))
        z.writestr("wikitext-2-raw/wiki.valid.raw", " \n = Valid = \n \n Valid text . \n")
        z.writestr("wikitext-2-raw/wiki.train.raw", " \n = Train = \n \n Train text . \n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.verbose = args.verbose
    server.state = State()
    server.files = files
    server.blobs = {hashlib.sha256(d).hexdigest(): (n, d) for rev in files.values()
                    for n, d in rev.items() if n.endswith(LFS_SUFFIXES)}
    server.wikitext_zip = buf.getvalue()
    server.blobs[hashlib.sha256(server.wikitext_zip).hexdigest()] = ("wikitext-2-raw-v1.zip",
                                                                     server.wikitext_zip)
    fixed = io.BytesIO()
    with zipfile.ZipFile(fixed, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("wikitext-2-raw/wiki.test.raw", WIKITEXT_FIXED_RAW.encode("utf-8"))
        z.writestr("wikitext-2-raw/wiki.valid.raw", " \n")
        z.writestr("wikitext-2-raw/wiki.train.raw", " \n")
    server.wikitext_fixed_zip = fixed.getvalue()
    server.pg19 = read(args.pg19_book)

    parent = os.getppid()
    deadline = time.monotonic() + args.lifetime

    def watchdog():
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
