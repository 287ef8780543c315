"""The web application (Puma + Rails in Mastodon): middleware in Rails' order, then the controllers.

  1. ActionDispatch::HostAuthorization  403 (empty body) unless Host (and X-Forwarded-Host) is a permitted
                                        host; /health is excluded
  2. ActionDispatch::SSL (force_ssl)    301 (GET/HEAD) / 308 to https:// unless X-Forwarded-Proto is https;
                                        paths starting with /health and .onion/.i2p hosts are excluded
  3. ActionDispatch::RemoteIp           client address from the peer and X-Forwarded-For (remote_ip.py)
  4. Rack::Attack                       rate limits (rate_limit.py)
  5. routes                             /health, the API subset, / (500 until assets are precompiled)
Each request is logged in lograge's key=value format with the computed client address (remote_ip=...).
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
import uuid
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from typing import Callable, Optional
from urllib.parse import parse_qsl, quote, unquote, urlencode

from . import config as config_mod
from . import feeds, log, models, rate_limit, remote_ip, render, services
from .db import Database, utcnow

STATUS_TEXT = {200: "OK", 202: "Accepted", 206: "Partial Content", 301: "Moved Permanently",
               308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
               404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
               422: "Unprocessable Entity", 429: "Too Many Requests",
               500: "Internal Server Error", 503: "Service Unavailable"}
DEFAULT_LIMIT, MAX_LIMIT = 20, 40


class Response:
    def __init__(self, status: int = 200, body: bytes | str = b"", content_type: str | None = None,
                 headers: Optional[list[tuple[str, str]]] = None):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers: list[tuple[str, str]] = list(headers or [])
        if content_type:
            self.headers.append(("Content-Type", content_type))
        self.controller = ""
        self.action = ""
        self.error: str | None = None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set(self, name: str, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        self.headers.append((name, value))


def json_response(obj, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")), "application/json; charset=utf-8")


def error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Request:
    def __init__(self, method: str, target: str, headers, body: bytes, peer: str):
        self.method = method.upper()
        path, _, qs = target.partition("?")
        self.path = unquote(path) or "/"
        self.query_string = qs
        self.headers = headers          # email.message.Message-like: case-insensitive .get()
        self.body = body
        self.peer = peer
        self.request_id = str(uuid.uuid4())
        self.remote_ip = peer
        self._params: dict | None = None
        self._files: dict = {}
        self._auth_loaded = False
        self._auth: dict | None = None
        self.started = time.monotonic()

    def header(self, name: str) -> str | None:
        """A header; repeated lines are joined with ", " (as Rack does for X-Forwarded-For)."""
        get_all = getattr(self.headers, "get_all", None)
        if get_all is not None:
            vals = get_all(name)
            return ", ".join(str(v) for v in vals) if vals else None
        v = self.headers.get(name)
        return v if v is None else str(v)

    @property
    def host_header(self) -> str | None:
        return self.header("Host")

    def host(self) -> str:
        """Rack's request.host: X-Forwarded-Host (last) wins over Host; without the port."""
        raw = self.header("X-Forwarded-Host")
        raw = raw.split(",")[-1].strip() if raw else (self.host_header or "")
        return split_host(raw)[0]

    def port(self) -> int:
        raw = self.header("X-Forwarded-Host")
        raw = raw.split(",")[-1].strip() if raw else (self.host_header or "")
        port = split_host(raw)[1]
        if port:
            return port
        fwd_port = self.header("X-Forwarded-Port")
        if fwd_port and fwd_port.strip().isdigit():
            return int(fwd_port.strip())
        return 443 if self.ssl() else 80

    def ssl(self) -> bool:
        if (self.header("X-Forwarded-Ssl") or "").lower() == "on":
            return True
        scheme = self.header("X-Forwarded-Scheme")
        if scheme and scheme.strip().lower() == "https":
            return True
        proto = self.header("X-Forwarded-Proto")
        if proto:
            return proto.split(",")[0].strip().lower() == "https"
        return False

    @property
    def fullpath(self) -> str:
        return (quote(self.path, safe="/:@!$&'()*+,;=-._~")
                + (f"?{self.query_string}" if self.query_string else ""))

    @property
    def params(self) -> dict:
        if self._params is None:
            self._params = self._parse_params()
        return self._params

    @property
    def files(self) -> dict:
        _ = self.params  # parsing the parameters is what fills _files
        return self._files

    def _parse_params(self) -> dict:
        out: dict = {}

        def add(k: str, v):
            if k.endswith("[]"):
                out.setdefault(k[:-2], []).append(v)
            else:
                out[k] = v

        for k, v in parse_qsl(self.query_string, keep_blank_values=True):
            add(k, v)
        ctype = (self.header("Content-Type") or "").lower()
        if self.body:
            if ctype.startswith("application/json"):
                try:
                    data = json.loads(self.body.decode("utf-8") or "{}")
                except (ValueError, UnicodeDecodeError):
                    raise HttpError(400, "Error occurred while parsing request parameters") from None
                if isinstance(data, dict):
                    out.update(data)
            elif ctype.startswith("application/x-www-form-urlencoded"):
                for k, v in parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True):
                    add(k, v)
            elif ctype.startswith("multipart/form-data"):
                msg = BytesParser(policy=HTTP_POLICY).parsebytes(
                    b"Content-Type: " + (self.header("Content-Type") or "").encode() + b"\r\n\r\n"
                    + self.body)
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    if not name:
                        continue
                    filename = part.get_filename()
                    payload = part.get_payload(decode=True) or b""
                    if filename is not None:
                        self._files[name] = {"filename": filename, "content_type": part.get_content_type(),
                                             "data": payload}
                    else:
                        add(name, payload.decode("utf-8", "replace"))
        return out

    def bearer_token(self) -> str | None:
        """Doorkeeper access_token_methods: Authorization: Bearer, access_token and bearer_token params."""
        auth = self.header("Authorization") or ""
        m = re.match(r"\s*Bearer\s+(\S+)", auth, re.I)
        if m:
            return m.group(1)
        for k in ("access_token", "bearer_token"):
            v = dict(parse_qsl(self.query_string)).get(k)
            if v:
                return v
        if self.body and (self.header("Content-Type") or "").lower().startswith(
                ("application/x-www-form-urlencoded", "application/json", "multipart/form-data")):
            try:
                v = self.params.get("access_token") or self.params.get("bearer_token")
            except HttpError:
                v = None
            if isinstance(v, str) and v:
                return v
        return None


def split_host(raw: str) -> tuple[str, int | None]:
    raw = raw.strip()
    if raw.startswith("["):
        end = raw.find("]")
        host, rest = raw[1:end], raw[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    else:
        host, port = raw, ""
    return host.lower(), int(port) if port.isdigit() else None


def host_permitted(raw: str | None, permitted: list[str]) -> bool:
    """HostAuthorization::Permissions#allows?: the host, any port, case-insensitive."""
    if not raw:
        return False
    host, _ = split_host(raw)
    return host in permitted


class App:
    def __init__(self, cfg: config_mod.Config, log_fn: Callable[[str], None] = log.rails):
        self.cfg = cfg
        self.root = cfg.root
        self.domain = cfg.local_domain
        self.permitted = cfg.permitted_hosts()
        self.proxies = cfg.trusted_proxies()
        self.force_ssl = cfg.production
        self.serve_static = cfg.truthy("RAILS_SERVE_STATIC_FILES")
        from .redisconn import for_config as redis_for

        self.db = Database(cfg.db_params(), cfg.prepared_statements)
        replica = cfg.replica_params()
        # with_read_replica: timelines read from REPLICA_DB_* when Mastodon 4.3 would (REPLICA_DB_NAME or
        # REPLICA_DATABASE_URL set); everything else, and all writes, use the primary
        self.replica_db = Database(replica, cfg.prepared_statements) if replica else self.db
        self.redis = redis_for(cfg, "base")
        self.sidekiq_redis = redis_for(cfg, "sidekiq", name=f"Sidekiq-client-PID-{os.getpid()}")
        # Rails' RedisCacheStore: 1 s timeouts, errors swallowed (rate limiting fails open); its namespace
        # (`cache`, or `<REDIS_NAMESPACE>_cache`) is in its keys
        self.cache_redis = redis_for(cfg, "cache", socket_timeout=1.0, connect_timeout=1.0)
        self.limiter = rate_limit.RateLimiter(rate_limit.RedisStore(self.cache_redis, cfg.cache_namespace),
                                              rate_limit.configured_throttles(cfg.present))
        self.log = log_fn
        self._pack_manifest: dict | None = None   # Webpacker's cache_manifest: loaded once per boot
        self.version = config_mod.mastodon_version(self.root)
        self.routes = [
            ("GET", r"/health", self.health, "HealthController#show"),
            ("GET", r"/", self.home, "HomeController#index"),
            ("GET", r"/api/v1/instance", self.instance_v1, "Api::V1::InstancesController#show"),
            ("GET", r"/api/v2/instance", self.instance_v2, "Api::V2::InstancesController#show"),
            ("GET", r"/api/v1/accounts/verify_credentials", self.verify_credentials,
             "Api::V1::Accounts::CredentialsController#show"),
            ("GET", r"/api/v1/accounts/lookup", self.account_lookup,
             "Api::V1::Accounts::LookupController#show"),
            ("GET", r"/api/v1/accounts/relationships", self.relationships,
             "Api::V1::Accounts::RelationshipsController#index"),
            ("GET", r"/api/v1/accounts/(\d+)", self.account_show, "Api::V1::AccountsController#show"),
            ("GET", r"/api/v1/accounts/(\d+)/statuses", self.account_statuses,
             "Api::V1::Accounts::StatusesController#index"),
            ("POST", r"/api/v1/accounts/(\d+)/follow", self.follow, "Api::V1::AccountsController#follow"),
            ("POST", r"/api/v1/accounts/(\d+)/unfollow", self.unfollow,
             "Api::V1::AccountsController#unfollow"),
            ("POST", r"/api/v1/statuses", self.create_status, "Api::V1::StatusesController#create"),
            ("GET", r"/api/v1/statuses/(\d+)", self.show_status, "Api::V1::StatusesController#show"),
            ("GET", r"/api/v1/timelines/home", self.home_timeline, "Api::V1::Timelines::HomeController#show"),
            ("POST", r"/api/v2/media", self.create_media_v2, "Api::V2::MediaController#create"),
            ("POST", r"/api/v1/media", self.create_media_v1, "Api::V1::MediaController#create"),
            ("GET", r"/api/v1/media/(\d+)", self.show_media, "Api::V1::MediaController#show"),
        ]

    def close(self):
        self.db.close_all()
        self.replica_db.close_all()
        for r in (self.redis, self.sidekiq_redis, self.cache_redis):
            try:
                r.close()
            except Exception:
                pass

    # -- request pipeline --------------------------------------------------------------------------------
    def __call__(self, req: Request) -> Response:
        resp = self._pipeline(req)
        resp.set("X-Request-Id", req.request_id)
        self._log(req, resp)
        return resp

    def _pipeline(self, req: Request) -> Response:
        # 1. host authorization
        if req.path != "/health":
            blocked = []
            if not host_permitted(req.host_header, self.permitted):
                blocked.append(req.host_header or "")
            fwd = req.header("X-Forwarded-Host")
            if fwd:
                last = fwd.split(",")[-1].strip()
                if last and not host_permitted(last, self.permitted):
                    blocked.append(last)
            if blocked:
                self.log(f"[ActionDispatch::HostAuthorization::DefaultResponseApp] Blocked hosts: "
                         f"{', '.join(blocked)}")
                r = Response(403, b"", "text/html; charset=utf-8")
                r.controller, r.action = "ActionDispatch::HostAuthorization", "blocked"
                return r
        # 2. force_ssl
        if self.force_ssl and not req.ssl():
            hosthdr = req.host_header or ""
            excluded = (req.path.startswith("/health") or hosthdr.endswith(".onion")
                        or hosthdr.endswith(".i2p"))
            if not excluded:
                host, port = req.host(), req.port()
                location = f"https://{host}" + (f":{port}" if port not in (80, 443) else "") + req.fullpath
                r = Response(301 if req.method in ("GET", "HEAD") else 308, b"", "text/html; charset=utf-8",
                             [("Location", location)])
                r.controller, r.action = "ActionDispatch::SSL", "redirect"
                return r
        # 3. remote ip
        try:
            req.remote_ip = remote_ip.calculate_ip(req.peer, req.header("X-Forwarded-For"),
                                                   req.header("Client-Ip"), self.proxies)
        except remote_ip.IpSpoofAttackError as e:
            r = Response(400, b"", "text/html; charset=utf-8")
            r.error = f"ActionDispatch::RemoteIp::IpSpoofAttackError: {e}"
            return r
        try:
            # 4. Rack::Attack
            info = _LazyRequestInfo(self, req)
            decision = self.limiter.check(info)
            if decision.throttled:
                r = error(429, "Too many requests")
                for k, v in decision.headers().items():
                    r.set(k, v)
                r.controller, r.action = "Rack::Attack", "throttled"
                return r
            # 5. routes
            resp = self._route(req)
            if req.path.startswith("/api/"):
                for k, v in decision.headers().items():
                    resp.set(k, v)
        except HttpError as e:
            resp = error(e.status, e.message) if req.path.startswith("/api/") else Response(
                e.status, self._public_page(e.status), "text/html; charset=utf-8")
        except Exception as e:  # unhandled → 500, like Rails' ShowExceptions in production
            resp = self._server_error(req)
            resp.error = f"{type(e).__module__}.{type(e).__name__}: {str(e).strip()}"
            self.log(f"[{req.request_id}] {resp.error}\n" + "".join(traceback.format_exc(limit=8)).rstrip())
        if req.ssl():
            resp.set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        if req.path.startswith("/api/"):
            resp.set("Cache-Control", "private, no-store")
        elif resp.header("Cache-Control") is None and resp.status == 200:
            resp.set("Cache-Control", "max-age=0, private, must-revalidate")
        return resp

    def _route(self, req: Request) -> Response:
        method = "GET" if req.method == "HEAD" else req.method
        path_matched = False
        for m, pattern, handler, name in self.routes:
            match = re.fullmatch(pattern, req.path)
            if not match:
                continue
            path_matched = True
            if m != method:
                continue
            resp = handler(req, *match.groups())
            resp.controller, _, resp.action = name.partition("#")
            return resp
        if self.serve_static and method == "GET":
            static = self._static(req.path)
            if static is not None:
                return static
        if path_matched:
            raise HttpError(404, "Record not found") if req.path.startswith("/api/") else HttpError(404, "")
        raise HttpError(404, "Record not found") if req.path.startswith("/api/") else HttpError(404, "")

    def _static(self, path: str) -> Response | None:
        public = (self.root / "public").resolve()
        try:
            p = (public / path.lstrip("/")).resolve()
        except OSError:
            return None
        if public not in p.parents or not p.is_file():
            return None
        ctype = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".jpeg": "image/jpeg",
                 ".json": "application/json", ".html": "text/html"}.get(p.suffix, "application/octet-stream")
        return Response(200, p.read_bytes(), ctype)

    def _public_page(self, status: int) -> bytes:
        for name in (f"{status}.html", "500.html"):
            p = self.root / "public" / name
            if p.exists():
                return p.read_bytes()
        return f"<html><body><h1>{status}</h1></body></html>".encode()

    def _server_error(self, req: Request) -> Response:
        if req.path.startswith("/api/"):
            return json_response({"error": "Internal Server Error"}, 500)
        return Response(500, self._public_page(500), "text/html; charset=utf-8")

    def _log(self, req: Request, resp: Response) -> None:
        dur = (time.monotonic() - req.started) * 1000
        fmt = "json" if req.path.startswith("/api/") else "html"
        parts = [f"[{req.request_id}] method={req.method} path={req.path} format={fmt}"]
        if resp.controller:
            parts.append(f"controller={resp.controller} action={resp.action}")
        parts.append(f"status={resp.status} duration={dur:.2f} remote_ip={req.remote_ip} peer={req.peer}")
        if resp.error:
            parts.append(f"error='{resp.error}'")
        self.log(" ".join(parts))

    # -- auth ------------------------------------------------------------------------------------------
    def auth(self, req: Request) -> dict | None:
        if not req._auth_loaded:
            req._auth_loaded = True
            token = req.bearer_token()
            req._auth = models.token_owner(self.db.session(), token) if token else None
        return req._auth

    def require_user(self, req: Request, *accepted: str) -> dict:
        """doorkeeper_authorize!(*scopes) + require_user! + AccessTokenTrackingConcern."""
        a = self.auth(req)
        if a is None:
            raise HttpError(401, "The access token is invalid")
        scopes = set((a.get("scopes") or "").split())
        if not scopes & set(accepted):
            raise HttpError(403, "This action is outside the authorized scopes")
        if a.get("disabled") or a.get("suspended_at"):
            raise HttpError(403, "Your login is currently disabled")
        if not a.get("confirmed_at"):
            raise HttpError(403, "Your login is missing a confirmed e-mail address")
        if not a.get("approved", True):
            raise HttpError(403, "Your login is currently pending approval")
        self._track_token(req, a)
        return a

    def _track_token(self, req: Request, a: dict) -> None:
        """Api::BaseController's AccessTokenTrackingConcern: a write at most once a day per token."""
        last = a.get("last_used_at")
        if last is None or (utcnow() - last).total_seconds() > 24 * 3600:
            ip = req.remote_ip
            self.db.session().execute(
                "UPDATE oauth_access_tokens SET last_used_at = %s, last_used_ip = %s WHERE id = %s",
                (utcnow(), ip if _is_ip(ip) else None, a["token_id"]))

    def viewer(self, req: Request) -> int | None:
        """authorize_if_got_token!: anonymous is fine, an invalid token is not."""
        if not req.bearer_token():
            return None
        a = self.auth(req)
        if a is None:
            raise HttpError(401, "The access token is invalid")
        self._track_token(req, a)
        return a["account_id"]

    # -- controllers -----------------------------------------------------------------------------------
    def health(self, req: Request) -> Response:
        return Response(200, b"OK", "text/plain; charset=utf-8")

    def home(self, req: Request) -> Response:
        manifest = self._packs()
        entry = manifest.get("application.js") if manifest else None
        if not entry:
            raise RuntimeError("Webpacker::Manifest::MissingEntryError: Webpacker can't find application.js "
                               f"in {self.root}/public/packs/manifest.json. Run `rails assets:precompile`.")
        css = manifest.get("common.css") or manifest.get("application.css") or ""
        page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{self.domain}</title>"
                f"<link rel=\"stylesheet\" href=\"{css}\"><script src=\"{entry}\" defer></script></head>"
                f"<body class=\"app-body\"><div class=\"app-holder\" id=\"mastodon\" data-props=\"{{}}\">"
                f"<noscript>To use the Mastodon web application, please enable JavaScript.</noscript></div>"
                f"</body></html>\n")
        return Response(200, page, "text/html; charset=utf-8")

    def _packs(self) -> dict:
        if self._pack_manifest is None:
            try:
                self._pack_manifest = json.loads(
                    (self.root / "public" / "packs" / "manifest.json").read_text())
            except (OSError, ValueError):
                self._pack_manifest = {}
            sprockets = list((self.root / "public" / "assets").glob(".sprockets-manifest-*.json"))
            if not sprockets:
                self._pack_manifest = {}
        return self._pack_manifest

    def instance_v1(self, req: Request) -> Response:
        sess = self.db.session()
        users = sess.scalar("SELECT count(*) FROM users u JOIN accounts a ON a.id = u.account_id "
                            "WHERE a.suspended_at IS NULL")
        statuses = sess.scalar("SELECT COALESCE(sum(statuses_count), 0) FROM account_stats")
        return json_response({
            "uri": self.domain, "title": "Mastodon", "short_description": "", "description": "",
            "email": "", "version": self.version, "urls": {"streaming_api": f"wss://{self.domain}"},
            "stats": {"user_count": int(users or 0), "status_count": int(statuses or 0), "domain_count": 0},
            "thumbnail": None, "languages": ["en"], "registrations": False, "approval_required": False,
            "invites_enabled": False, "configuration": {"statuses": {"max_characters": services.MAX_CHARS,
                                                                      "max_media_attachments": 4}},
            "contact_account": None, "rules": [],
        })

    def instance_v2(self, req: Request) -> Response:
        return json_response({
            "domain": self.domain, "title": "Mastodon", "version": self.version,
            "source_url": "https://github.com/mastodon/mastodon", "description": "",
            "usage": {"users": {"active_month": 0}}, "thumbnail": {"url": None}, "languages": ["en"],
            "configuration": {"urls": {"streaming": f"wss://{self.domain}"},
                              "statuses": {"max_characters": services.MAX_CHARS, "max_media_attachments": 4}},
            "registrations": {"enabled": False, "approval_required": False, "message": None},
            "contact": {"email": "", "account": None}, "rules": [],
        })

    def verify_credentials(self, req: Request) -> Response:
        a = self.require_user(req, "read", "read:accounts")
        acc = models.find_account(self.db.session(), a["account_id"])
        out = render.account_json(acc, self.domain)
        out["source"] = {"privacy": "public", "sensitive": False, "language": None, "note": "", "fields": [],
                         "follow_requests_count": 0}
        return json_response(out)

    def account_lookup(self, req: Request) -> Response:
        self.viewer(req)
        acct = str(req.params.get("acct") or "").lstrip("@")
        username, _, domain = acct.partition("@")
        if domain and domain.lower() not in self.permitted:
            raise HttpError(404, "Record not found")
        acc = models.find_local_account(self.db.session(), username)
        if not acc or acc.get("suspended_at"):
            raise HttpError(404, "Record not found")
        return json_response(render.account_json(acc, self.domain))

    def account_show(self, req: Request, account_id: str) -> Response:
        self.viewer(req)
        acc = models.find_account(self.db.session(), account_id)
        if not acc:
            raise HttpError(404, "Record not found")
        return json_response(render.account_json(acc, self.domain))

    def relationships(self, req: Request) -> Response:
        a = self.require_user(req, "read", "read:follows")
        ids = req.params.get("id") or []
        ids = [ids] if isinstance(ids, str) else ids
        sess = self.db.session()
        return json_response([services.relationship(sess, a["account_id"], int(i))
                              for i in ids if str(i).isdigit()])

    def account_statuses(self, req: Request, account_id: str) -> Response:
        viewer = self.viewer(req)
        sess = self.replica_db.session()
        acc = models.find_account(sess, account_id)
        if not acc:
            raise HttpError(404, "Record not found")
        limit = _limit(req)
        ids = models.account_status_ids(sess, acc["id"], limit, req.params.get("max_id"),
                                        req.params.get("since_id"), req.params.get("min_id"))
        rows = models.load_statuses(sess, ids)
        resp = json_response([render.status_json(s, a, m, self.domain, viewer) for s, a, m in rows])
        self._link(resp, req, f"/api/v1/accounts/{acc['id']}/statuses", ids)
        return resp

    def follow(self, req: Request, target: str) -> Response:
        a = self.require_user(req, "follow", "write", "write:follows")
        sess = self.db.session()
        acc = models.find_account(sess, target)
        if not acc or acc["id"] == a["account_id"]:
            raise HttpError(404 if not acc else 403,
                            "Record not found" if not acc else "This action is not allowed")
        services.follow(sess, self.sidekiq_redis, a["account_id"], acc["id"])
        return json_response(services.relationship(sess, a["account_id"], acc["id"]))

    def unfollow(self, req: Request, target: str) -> Response:
        a = self.require_user(req, "follow", "write", "write:follows")
        sess = self.db.session()
        acc = models.find_account(sess, target)
        if not acc:
            raise HttpError(404, "Record not found")
        services.unfollow(sess, self.sidekiq_redis, a["account_id"], acc["id"])
        return json_response(services.relationship(sess, a["account_id"], acc["id"]))

    def create_status(self, req: Request) -> Response:
        a = self.require_user(req, "write", "write:statuses")
        sess = self.db.session()
        account = models.find_account(sess, a["account_id"])
        try:
            kind, value = services.post_status(sess, self.redis, self.sidekiq_redis, account, req.params,
                                               req.header("Idempotency-Key"))
        except services.ValidationError as e:
            raise HttpError(422, f"Validation failed: {e}") from e
        if kind == "scheduled":
            media = models.media_for_ids(sess, a["account_id"],
                                         (value["params"] or {}).get("media_ids") or [])
            return json_response(render.scheduled_status_json(value, media, self.domain))
        rows = models.load_statuses(sess, [value])
        if not rows:
            raise HttpError(404, "Record not found")
        s, acc, media = rows[0]
        return json_response(render.status_json(s, acc, media, self.domain, a["account_id"]))

    def show_status(self, req: Request, status_id: str) -> Response:
        viewer = self.viewer(req)
        rows = models.load_statuses(self.db.session(), [status_id])
        if not rows:
            raise HttpError(404, "Record not found")
        s, acc, media = rows[0]
        if s["visibility"] >= 2 and viewer != acc["id"]:
            raise HttpError(404, "Record not found")
        return json_response(render.status_json(s, acc, media, self.domain, viewer))

    def home_timeline(self, req: Request) -> Response:
        a = self.require_user(req, "read", "read:statuses")
        sess = self.replica_db.session()
        limit = _limit(req)
        ids = feeds.home_ids(self.redis, a["account_id"], limit, req.params.get("max_id"),
                             req.params.get("since_id"), req.params.get("min_id"))
        rows = models.load_statuses(sess, ids)
        regenerating = bool(self.redis.exists(feeds.regeneration_key(a["account_id"])))
        resp = json_response([render.status_json(s, acc, m, self.domain, a["account_id"])
                              for s, acc, m in rows],
                             206 if regenerating else 200)
        self._link(resp, req, "/api/v1/timelines/home", [s["id"] for s, _, _ in rows])
        return resp

    def create_media_v2(self, req: Request) -> Response:
        return self._create_media(req, v2=True)

    def create_media_v1(self, req: Request) -> Response:
        return self._create_media(req, v2=False)

    def _create_media(self, req: Request, v2: bool) -> Response:
        a = self.require_user(req, "write", "write:media")
        if self.cfg.s3_enabled:
            raise RuntimeError("S3_ENABLED=true: the stand-in stores media only under public/system")
        f = req.files.get("file")
        if not f:
            raise HttpError(422, "Validation failed: File can't be blank")
        try:
            m = services.store_media(self.db.session(), self.root, a["account_id"], f["data"],
                                     f["content_type"], f["filename"], req.params.get("description"))
        except services.ValidationError as e:
            raise HttpError(422, f"Validation failed: {e}") from e
        return json_response(render.media_json(m, self.domain), 200)

    def show_media(self, req: Request, media_id: str) -> Response:
        a = self.require_user(req, "read", "read:statuses")
        rows = models.media_for_ids(self.db.session(), a["account_id"], [media_id])
        if not rows:
            raise HttpError(404, "Record not found")
        return json_response(render.media_json(rows[0], self.domain))

    def _link(self, resp: Response, req: Request, path: str, ids: list[int]) -> None:
        if not ids:
            return
        base = f"https://{self.domain}{path}"
        limit = req.params.get("limit")
        extra = {"limit": limit} if limit else {}
        nxt = base + "?" + urlencode({**extra, "max_id": min(ids)})
        prev = base + "?" + urlencode({**extra, "min_id": max(ids)})
        resp.set("Link", f'<{nxt}>; rel="next", <{prev}>; rel="prev"')


class _LazyRequestInfo(rate_limit.RequestInfo):
    """RequestInfo whose user/token lookup (a DB query) runs only when a throttle asks for it."""

    def __init__(self, app: App, req: Request):
        self._app, self._req = app, req
        params = {}
        for k in ("page", "min_id", "max_id", "since_id"):
            v = dict(parse_qsl(req.query_string)).get(k)
            if v:
                params[k] = v
        super().__init__(req.method, req.path, req.remote_ip, remote_ip.throttleable(req.remote_ip),
                         params=params)

    @property
    def user_id(self):
        a = self._app.auth(self._req) if self._req.bearer_token() else None
        return a["user_id"] if a else None

    @user_id.setter
    def user_id(self, v):
        pass

    @property
    def token_id(self):
        a = self._app.auth(self._req) if self._req.bearer_token() else None
        return a["token_id"] if a else None

    @token_id.setter
    def token_id(self, v):
        pass


def _limit(req: Request) -> int:
    try:
        n = int(req.params.get("limit") or DEFAULT_LIMIT)
    except (TypeError, ValueError):
        n = DEFAULT_LIMIT
    return max(1, min(n, MAX_LIMIT))


def _is_ip(s: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False
