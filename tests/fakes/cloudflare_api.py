"""A fake Cloudflare API v4, for tests only: an HTTP server on 127.0.0.1 (a free port) with the
endpoints the dns code uses, Cloudflare's response envelope and error codes.

  GET   /client/v4/zones?name=ZONE
  GET   /client/v4/zones/{zone}/dns_records?type=A&name.exact=NAME   (the older name=NAME too)
  PATCH /client/v4/zones/{zone}/dns_records/{id}   changes only the fields sent
  PUT   /client/v4/zones/{zone}/dns_records/{id}   replaces the record: an omitted `proxied` becomes
                                                   false, the origin-leaking mistake the code avoids

A wrong token gets 403 (code 9109). `fail_next` queues answers such as 429 with retry-after.
Every request is recorded (method, path, query, body, headers) for tests to assert on.
"""
from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PREFIX = "/client/v4"
NOT_FOUND = (404, 7003, "Could not route to the path, perhaps your object identifier is invalid?")


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class FakeCloudflare:
    def __init__(self, token: str, zone: str = "example.social", name_servers=("127.0.0.1",)):
        self.token = token
        self.zone = {"id": uuid.uuid4().hex, "name": zone, "status": "active",
                     "name_servers": list(name_servers)}
        self.records: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.faults: list[ApiError] = []
        self.on_change = None  # called with the record after each PATCH or PUT
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{PREFIX}"

    def __enter__(self) -> FakeCloudflare:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_record(self, name: str, rtype: str, content: str, ttl: int = 3600, proxied: bool = False) -> dict:
        record = {"id": uuid.uuid4().hex, "zone_id": self.zone["id"], "zone_name": self.zone["name"],
                  "name": name, "type": rtype, "content": content, "ttl": 1 if proxied else ttl,
                  "proxied": proxied, "proxiable": True, "comment": None, "tags": [], "settings": {},
                  "meta": {}}
        self.records[record["id"]] = record
        return record

    def record(self, name: str, rtype: str) -> dict:
        return next(r for r in self.records.values() if r["name"] == name and r["type"] == rtype)

    def fail_next(self, status: int, code: int, message: str, headers: dict | None = None,
                  times: int = 1) -> None:
        self.faults += [ApiError(status, code, message, headers)] * times

    def calls(self, method: str | None = None) -> list[dict]:
        return [r for r in self.requests if method in (None, r["method"])]

    # --- the API ------------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict, body, headers: dict) -> dict:
        """The envelope's success part: `result`, and `result_info` for lists."""
        self.requests.append({"method": method, "path": path, "query": query, "body": body,
                              "headers": headers})
        if headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(403, 9109, "Invalid access token")
        if self.faults:
            raise self.faults.pop(0)
        parts = path.removeprefix(PREFIX).strip("/").split("/")
        if parts == ["zones"] and method == "GET":
            matches = query.get("name", self.zone["name"]) == self.zone["name"]
            return self._page([self.zone] if matches else [], query)
        if (len(parts) < 3 or parts[:1] != ["zones"] or parts[1] != self.zone["id"]
                or parts[2] != "dns_records"):
            raise ApiError(*NOT_FOUND)
        if len(parts) == 3 and method == "GET":
            name = query.get("name.exact", query.get("name"))
            return self._page([r for r in self.records.values()
                               if name in (None, r["name"]) and query.get("type") in (None, r["type"])],
                              query)
        if len(parts) == 4 and method in ("PATCH", "PUT"):
            if parts[3] not in self.records:
                raise ApiError(404, 81044, "Record does not exist.")
            return {"result": self._write(self.records[parts[3]], body or {}, replace=method == "PUT")}
        raise ApiError(*NOT_FOUND)

    def _write(self, record: dict, body: dict, replace: bool) -> dict:
        if replace:
            missing = [k for k in ("type", "name", "content", "ttl") if k not in body]
            if missing:
                raise ApiError(400, 1004, f"DNS Validation Error: {', '.join(missing)} required")
            body = {"proxied": False, "comment": None, "tags": [], **body}  # PUT: what is omitted is reset
        ttl = body.get("ttl", record["ttl"])
        if not (ttl == 1 or 60 <= ttl <= 86400):
            raise ApiError(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, "
                                      "or 1 for Automatic.")
        record.update(body)
        if record["proxied"]:
            record["ttl"] = 1
        if self.on_change:
            self.on_change(dict(record))
        return record

    @staticmethod
    def _page(results: list, query: dict) -> dict:
        """One page of a list; past the last page the result is empty (where the SDK's paging stops)."""
        page, per_page = int(query.get("page", 1)), int(query.get("per_page", 20))
        shown = results[(page - 1) * per_page:page * per_page]
        info = {"page": page, "per_page": per_page, "count": len(shown), "total_count": len(results),
                "total_pages": max(1, -(-len(results) // per_page))}
        return {"result": shown, "result_info": info}


def _handler(fake: FakeCloudflare):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

        def _serve(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                answer = fake.answer(self.command, url.path, query, json.loads(raw) if raw else None, headers)
                status, extra = 200, {}
                envelope = {"success": True, "errors": [], "messages": [], **answer}
            except ApiError as error:
                status, extra = error.status, error.headers
                envelope = {"success": False, "errors": [{"code": error.code, "message": str(error)}],
                            "messages": [], "result": None}
            data = json.dumps(envelope).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, *_):  # quiet: tests assert on `requests`
            pass

    return Handler
