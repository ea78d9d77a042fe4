#!/usr/bin/env python3
"""gen_client_seeds.py - writes the seed corpus of fuzz_client.

    python3 fuzz/gen_client_seeds.py fuzz/corpus/client

Each seed is FLAGS PIECE PATH "\\n" RESPONSE [SEPARATOR RESPONSE]
(fuzz_client.c has the format): the answers a leader really gives a
relaying follower (JSON with Content-Length, 307 with Location, 503 with
Retry-After, X-Raftkv-* headers), the framings an HTTP/1.1 peer may use
(chunked, until close, 204, interim 100), a second request on a kept
connection, and broken answers.  Files are written afresh, named by what
they exercise; rerun after changing the harness's format and commit.
"""
import os
import sys

SEP = b"\n--next-response--\n"
GET, PUT, POST, DELETE = 0, 1, 2, 3
HANG_UP_EACH = 4


def resp(status, headers=(), body=b"", length=True, version="HTTP/1.1"):
    """A response with a Content-Length (unless length=False)."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s" % (version, status)] + list(headers)
    if length:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(status, parts, headers=(), trailer=b""):
    head = "HTTP/1.1 %s\r\n" % status + "".join(h + "\r\n" for h in headers)
    head += "Transfer-Encoding: chunked\r\n\r\n"
    out = head.encode()
    for p in parts:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


def seed(flags, piece, path, *responses):
    if isinstance(path, str):
        path = path.encode()
    return bytes([flags, piece]) + path + b"\n" + SEP.join(responses)


JSON = "Content-Type: application/json"
SEEDS = {
    "put-ok": seed(PUT, 0, "v1/kv/a", resp("200 OK", [JSON], '{"index":12}')),
    "get-value": seed(GET, 0, "v1/kv/a?consistency=linearizable",
                      resp("200 OK", ["Content-Type: application/octet-stream",
                                      "X-Raftkv-Index: 12",
                                      "X-Raftkv-Consistency: linearizable"], "bar")),
    "get-value-piecewise": seed(GET, 1, "v1/kv/a",
                                resp("200 OK", ["X-Raftkv-Index: 3"], "value")),
    "redirect": seed(GET, 7, "v1/kv/a?redirect",
                     resp("307 Temporary Redirect",
                          ["Location: http://127.0.0.1:8001/v1/kv/a", JSON],
                          '{"error":"not the leader"}')),
    "busy": seed(POST, 0, "v1/txn",
                 resp("503 Service Unavailable", ["Retry-After: 1", JSON],
                      '{"error":"no leader"}')),
    "not-found": seed(DELETE, 0, "v1/kv/missing",
                      resp("404 Not Found", [JSON], '{"error":"key not found"}')),
    "readindex": seed(GET, 3, "v1/internal/readindex?cluster=abc",
                      resp("200 OK", [JSON], '{"index":1234}')),
    "chunked": seed(GET, 0, "v1/kv?prefix=a",
                    chunked("200 OK", [b'{"kvs":', b"[]}"], [JSON])),
    "chunked-piecewise": seed(GET, 2, "x",
                              chunked("200 OK", [b"abc", b"defghij", b"k"])),
    "chunked-extension-trailer": seed(GET, 0, "x",
                                      resp("200 OK", ["Transfer-Encoding: chunked"],
                                           b"3;name=v\r\nabc\r\n0\r\nX-Tail: 1\r\n\r\n",
                                           length=False)),
    "interim-100": seed(PUT, 0, "v1/kv/a",
                        b"HTTP/1.1 100 Continue\r\n\r\n" + resp("200 OK", [JSON], "{}")),
    "until-close": seed(GET, 4, "x", resp("200 OK", [], "all of it", length=False)),
    "http10": seed(GET, 0, "x", resp("200 OK", [], "old", version="HTTP/1.0")),
    "connection-close": seed(GET, 0, "x", resp("200 OK", ["Connection: close"], "bye")),
    "no-content": seed(DELETE, 0, "v1/kv/a", resp("204 No Content", [], length=False)),
    "two-on-one-connection": seed(PUT, 0, "v1/kv/a",
                                  resp("200 OK", [JSON], '{"index":1}'),
                                  resp("200 OK", [JSON], '{"index":2}')),
    "two-hang-up-between": seed(PUT | HANG_UP_EACH, 0, "v1/kv/a",
                                resp("200 OK", [JSON], '{"index":1}'),
                                resp("200 OK", [JSON], '{"index":2}')),
    "two-chunked-then-length": seed(GET, 5, "x",
                                    chunked("200 OK", [b"first"]),
                                    resp("200 OK", [], "second")),
    "extra-bytes-after-body": seed(GET, 0, "x", resp("200 OK", [], "ok") + b"junk",
                                   resp("200 OK", [], "next")),
    "short-body": seed(GET, 0, "x", resp("200 OK", ["Content-Length: 10"], "abc",
                                         length=False)),
    "no-head-end": seed(GET, 0, "x", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"),
    "empty-response": seed(GET, 0, "x", b""),
    "bad-status-line": seed(GET, 0, "x", b"HTTP/2 200 OK\r\n\r\n"),
    "bad-status-code": seed(GET, 0, "x", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
    "bad-content-length": seed(GET, 0, "x", resp("200 OK", ["Content-Length: 1x"], "",
                                                 length=False)),
    "two-content-lengths": seed(GET, 0, "x", resp("200 OK", ["Content-Length: 1",
                                                              "Content-Length: 1"], "a",
                                                  length=False)),
    "length-and-chunked": seed(GET, 0, "x",
                               resp("200 OK", ["Content-Length: 5",
                                               "Transfer-Encoding: chunked"],
                                    b"0\r\n\r\n", length=False)),
    "bad-chunk-size": seed(GET, 0, "x", resp("200 OK", ["Transfer-Encoding: chunked"],
                                             b"zz\r\nabc\r\n0\r\n\r\n", length=False)),
    "huge-chunk-size": seed(GET, 0, "x", resp("200 OK", ["Transfer-Encoding: chunked"],
                                              b"ffffffffffffffff\r\nabc\r\n", length=False)),
    "huge-content-length": seed(GET, 0, "x",
                                resp("200 OK", ["Content-Length: 99999999999"], "",
                                     length=False)),
    "folded-header": seed(GET, 0, "x", b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\n"
                                       b"Content-Length: 0\r\n\r\n"),
    "gzip-encoding": seed(GET, 0, "x", resp("200 OK", ["Transfer-Encoding: gzip"], "",
                                            length=False)),
    "path-with-query-and-escapes": seed(GET, 0, "v1/kv/a%2Fb?x=1&y=%20#frag",
                                        resp("200 OK", [], "")),
    "path-with-space": seed(GET, 0, "v1/kv/a b", resp("200 OK", [], "")),
    "path-with-crlf": seed(GET, 0, "v1/kv/a\rX-Injected: 1", resp("200 OK", [], "")),
}


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(SEEDS), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
