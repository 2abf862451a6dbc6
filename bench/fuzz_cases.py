"""The malformed requests of ``bench/fuzz_server.py``, as data (one line per kind). Not a test.

``HTTP_CASES`` are sent with httpx: (name, method, path, body, headers). ``RAW_CASES`` are bytes written to a socket
as they are, for what httpx will not send (lying or broken framing, oversized heads, garbage): (name, bytes, whether
the connection is then left stalled). ``large_bodies`` builds bodies of exactly the size limit that parse as far as
their last bytes and are then refused.
"""

from __future__ import annotations

import json

MODEL = "m"
INFER = f"/v2/models/{MODEL}/infer"
SHAPE = [1, 3, 32, 32]
VALUES = 3 * 32 * 32


def _tensor(**changes: object) -> dict:
    tensor = {"name": "images", "datatype": "FP32", "shape": SHAPE, "data": [0.5] * VALUES}
    for key, value in changes.items():
        if value is _DROP:
            tensor.pop(key)
        else:
            tensor[key] = value
    return tensor


_DROP = object()


def _infer(**changes: object) -> bytes:
    return json.dumps({"inputs": [_tensor(**changes)]}).encode()


def _top(**fields: object) -> bytes:
    return json.dumps({"inputs": [_tensor()], **fields}).encode()


def _raw_data(values: str) -> bytes:
    return ('{"inputs":[{"name":"images","datatype":"FP32","shape":[1,3,32,32],"data":[' + values + "]}]}").encode()


JSON = {"content-type": "application/json"}

#: (name, method, path, body, headers)
HTTP_CASES: list[tuple[str, str, str, bytes, dict]] = [
    ("empty body", "POST", INFER, b"", JSON),
    ("broken JSON", "POST", INFER, b"{not json", JSON),
    ("JSON cut short", "POST", INFER, _infer()[:-3], JSON),
    ("trailing garbage", "POST", INFER, _infer() + b" }}garbage", JSON),
    ("top-level list", "POST", INFER, b"[1, 2]", JSON),
    ("top-level null", "POST", INFER, b"null", JSON),
    ("top-level string", "POST", INFER, b'"images"', JSON),
    ("top-level number", "POST", INFER, b"42", JSON),
    ("top-level true", "POST", INFER, b"true", JSON),
    ("empty object", "POST", INFER, b"{}", JSON),
    ("inputs null", "POST", INFER, b'{"inputs": null}', JSON),
    ("inputs an object", "POST", INFER, b'{"inputs": {}}', JSON),
    ("inputs empty", "POST", INFER, b'{"inputs": []}', JSON),
    ("two inputs", "POST", INFER, json.dumps({"inputs": [_tensor(), _tensor()]}).encode(), JSON),
    ("input not an object", "POST", INFER, b'{"inputs": [[1, 2]]}', JSON),
    ("input name missing", "POST", INFER, _infer(name=_DROP), JSON),
    ("wrong input name", "POST", INFER, _infer(name="input__0"), JSON),
    ("input name a number", "POST", INFER, _infer(name=7), JSON),
    ("datatype missing", "POST", INFER, _infer(datatype=_DROP), JSON),
    ("datatype INT8", "POST", INFER, _infer(datatype="INT8"), JSON),
    ("datatype fp32 lowercase", "POST", INFER, _infer(datatype="fp32"), JSON),
    ("datatype BYTES", "POST", INFER, _infer(datatype="BYTES", data=["a"] * VALUES), JSON),
    ("shape missing", "POST", INFER, _infer(shape=_DROP), JSON),
    ("shape a string", "POST", INFER, _infer(shape="1,3,32,32"), JSON),
    ("shape rank 3", "POST", INFER, _infer(shape=[3, 32, 32]), JSON),
    ("shape wrong size", "POST", INFER, _infer(shape=[1, 3, 16, 16]), JSON),
    ("shape with true", "POST", INFER, _infer(shape=[True, 3, 32, 32]), JSON),
    ("shape with floats", "POST", INFER, _infer(shape=[1.0, 3.0, 32, 32]), JSON),
    ("shape with null", "POST", INFER, _infer(shape=[None, 3, 32, 32]), JSON),
    ("batch -1", "POST", INFER, _infer(shape=[-1, 3, 32, 32]), JSON),
    ("batch 0", "POST", INFER, _infer(shape=[0, 3, 32, 32], data=[]), JSON),
    ("batch 10^30", "POST", INFER, _infer(shape=[10**30, 3, 32, 32]), JSON),
    ("batch 1025", "POST", INFER, _infer(shape=[1025, 3, 32, 32]), JSON),
    ("shape 10^400", "POST", INFER, _raw_data("0.5").replace(b"[1,3,32,32]", b"[1" + b"0" * 400 + b",3,32,32]"), JSON),
    ("data missing", "POST", INFER, _infer(data=_DROP), JSON),
    ("data null", "POST", INFER, _infer(data=None), JSON),
    ("data a string", "POST", INFER, _infer(data="0.5 0.5"), JSON),
    ("data an object", "POST", INFER, _infer(data={"0": 0.5}), JSON),
    ("data too short", "POST", INFER, _infer(data=[0.5] * 10), JSON),
    ("data too long", "POST", INFER, _infer(data=[0.5] * (VALUES + 1)), JSON),
    ("numbers as strings", "POST", INFER, _infer(data=["0.5"] * VALUES), JSON),
    ("booleans as data", "POST", INFER, _infer(data=[True] * VALUES), JSON),
    ("nulls in data", "POST", INFER, _infer(data=[0.5] * (VALUES - 1) + [None]), JSON),
    ("NaN literal", "POST", INFER, _raw_data("NaN" + ",0.5" * (VALUES - 1)), JSON),
    ("Infinity literal", "POST", INFER, _raw_data("Infinity" + ",0.5" * (VALUES - 1)), JSON),
    ("-Infinity literal", "POST", INFER, _raw_data("-Infinity" + ",0.5" * (VALUES - 1)), JSON),
    ("1e39 (beyond FP32)", "POST", INFER, _raw_data("1e39" + ",0.5" * (VALUES - 1)), JSON),
    ("1e400 (beyond float)", "POST", INFER, _raw_data("1e400" + ",0.5" * (VALUES - 1)), JSON),
    ("int of 401 digits", "POST", INFER, _raw_data("9" * 401 + ",0.5" * (VALUES - 1)), JSON),
    ("int of 5000 digits", "POST", INFER, _raw_data("9" * 5000 + ",0.5" * (VALUES - 1)), JSON),
    ("ragged nesting", "POST", INFER, _infer(data=[[0.5] * 3000, [0.5] * 72]), JSON),
    ("objects among numbers", "POST", INFER, _infer(data=[{}] + [0.5] * (VALUES - 1)), JSON),
    ("arrays 5000 deep", "POST", INFER, b"[" * 5000 + b"]" * 5000, JSON),
    ("objects 5000 deep", "POST", INFER, b'{"a":' * 5000 + b"1" + b"}" * 5000, JSON),
    ("data 40 deep", "POST", INFER, _raw_data("[" * 40 + "0.5" + "]" * 40), JSON),
    ("unclosed 100000 brackets", "POST", INFER, b"[" * 100_000, JSON),
    ("empty-list bomb", "POST", INFER, b"[" + b"[]," * 2_000_000 + b"[]]", JSON),
    ("comma bomb", "POST", INFER, b"[" + b"0," * 4_000_000 + b"0]", JSON),
    ("whitespace only", "POST", INFER, b" " * 2**20, JSON),
    ("id an object", "POST", INFER, _top(id={"a": [1, 2]}), JSON),
    ("id of 10 MB", "POST", INFER, _top(id="x" * 10_000_000), JSON),
    ("outputs a string", "POST", INFER, _top(outputs="probabilities"), JSON),
    ("outputs empty", "POST", INFER, _top(outputs=[]), JSON),
    ("unknown output", "POST", INFER, _top(outputs=[{"name": "logits"}]), JSON),
    ("output name a list", "POST", INFER, _top(outputs=[{"name": ["probabilities"]}]), JSON),
    ("not UTF-8", "POST", INFER, b'{"inputs": "\xff\xfe\xfd"}', JSON),
    ("UTF-16 JSON", "POST", INFER, _infer().decode().encode("utf-16"), JSON),
    ("UTF-8 BOM (allowed)", "POST", INFER, b"\xef\xbb\xbf" + _infer(), JSON),
    ("two UTF-8 BOMs", "POST", INFER, b"\xef\xbb\xbf\xef\xbb\xbf" + _infer(), JSON),
    ("lone surrogate escape", "POST", INFER, _top(id="\ud800"), JSON),
    ("form content type", "POST", INFER, b"a=1&b=2", {"content-type": "application/x-www-form-urlencoded"}),
    ("GET on infer", "GET", INFER, b"", {}),
    ("PUT on infer", "PUT", INFER, _infer(), JSON),
    ("DELETE on /v2", "DELETE", "/v2", b"", {}),
    ("PATCH on metadata", "PATCH", f"/v2/models/{MODEL}", b"{}", JSON),
    ("OPTIONS", "OPTIONS", INFER, b"", {}),
    ("unknown model infer", "POST", "/v2/models/other/infer", _infer(), JSON),
    ("unknown model metadata", "GET", "/v2/models/other", b"", {}),
    ("unknown model stats", "GET", "/v2/models/other/stats", b"", {}),
    ("unknown route", "GET", "/nowhere", b"", {}),
    ("odd version", "POST", f"/v2/models/{MODEL}/versions/..%2F..%2Fetc/infer", _infer(), JSON),
    ("path of 8 KB", "GET", "/v2/models/" + "a" * 8000, b"", {}),
    ("/docs", "GET", "/docs", b"", {}),
    ("/redoc", "GET", "/redoc", b"", {}),
    ("/openapi.json", "GET", "/openapi.json", b"", {}),
    ("query-string garbage", "GET", "/v2/health/live?%%%&&==", b"", {}),
]

_HEAD = f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"

#: (name, bytes, stalled: the client then sends nothing more and waits for the server to close)
RAW_CASES: list[tuple[str, bytes, bool]] = [
    ("garbage request line", b"HELLO WORLD\r\n\r\n", False),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
    ("binary garbage", bytes(range(256)) * 4, False),
    ("bad method characters", b"P(ST / HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ("no Host, HTTP/1.1", b"GET /v2/health/live HTTP/1.1\r\n\r\n", False),
    ("HTTP/1.0 without Host", b"GET /v2/health/live HTTP/1.0\r\n\r\n", False),
    ("absolute-form target", b"GET http://evil.example/v2 HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ("non-ASCII path", "GET /v2/models/é HTTP/1.1\r\nHost: x\r\n\r\n".encode(), False),
    ("header of 64 KB", b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n", False),
    ("2000 headers", b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 2000 + b"\r\n", False),
    ("header without colon", b"GET /v2 HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", False),
    ("Content-Length negative", (_HEAD + "Content-Length: -5\r\n\r\n{}").encode(), False),
    ("Content-Length not a number", (_HEAD + "Content-Length: ten\r\n\r\n{}").encode(), False),
    ("two different Content-Lengths", (_HEAD + "Content-Length: 2\r\nContent-Length: 9\r\n\r\n{}").encode(), False),
    ("Content-Length shorter than the body", (_HEAD + "Content-Length: 5\r\n\r\n").encode() + _infer(), False),
    ("Content-Length of 10 GB declared", (_HEAD + f"Content-Length: {10 * 2**30}\r\n\r\n").encode() + b"{", False),
    ("chunk size not hex", (_HEAD + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n").encode(), False),
    ("chunked and Content-Length",
     (_HEAD + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\n{}\r\n0\r\n\r\n").encode(), False),
    ("unknown Transfer-Encoding", (_HEAD + "Transfer-Encoding: gzip\r\n\r\n{}").encode(), False),
    ("Content-Length longer than the body", (_HEAD + "Content-Length: 5000\r\n\r\n").encode() + b'{"inputs": [', True),
    ("Expect: 100-continue, no body", (_HEAD + "Content-Length: 100\r\nExpect: 100-continue\r\n\r\n").encode(), True),
    ("chunked body that stops", (_HEAD + "Transfer-Encoding: chunked\r\n\r\nf\r\n{\"inputs\": [1,2\r\n").encode(), True),
    ("head never finished", f"POST {INFER} HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n".encode(), True),
    ("connection that sends nothing", b"", True),
]


def large_bodies(size: int, count: int) -> list[bytes]:
    """``count`` bodies of exactly ``size`` bytes, of kinds that parse (nearly) whole and are then refused."""
    value = "0.12345678901234567890"
    numbers = ",".join([value] * ((size - 400) // (len(value) + 1)))
    head = '{"inputs":[{"name":"images","datatype":"FP32","shape":[1024,3,32,32],"data":['
    kinds = [head + numbers + "]}]}",            # too few values for the shape
             head + numbers + ",NaN]}]}",        # a NaN among them
             head + numbers + "]}]",             # JSON cut short
             head + numbers + ',"0.5"]}]}',      # a string among the numbers
             head + numbers + ",true]}]}"]       # a boolean among the numbers
    made = [(text + " " * (size - len(text))).encode() for text in kinds]
    return [made[i % len(made)] for i in range(count)]
