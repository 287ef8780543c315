from email.message import Message

from standin import webapp


def make(path="/", **headers):
    msg = Message()
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    return webapp.Request("GET", path, msg, b"", "127.0.0.1")


def test_host_permitted_any_port_case_insensitive():
    hosts = ["social.test"]
    assert webapp.host_permitted("social.test", hosts)
    assert webapp.host_permitted("Social.Test:3000", hosts)
    assert not webapp.host_permitted("evil.test", hosts)
    assert not webapp.host_permitted(None, hosts)
    assert not webapp.host_permitted("", hosts)
    assert webapp.split_host("[::1]:3000") == ("::1", 3000)


def test_ssl_detection_and_redirect_target():
    assert make(X_Forwarded_Proto="https").ssl()
    assert make(X_Forwarded_Proto="https, http").ssl()
    assert not make(X_Forwarded_Proto="http").ssl()
    assert make(X_Forwarded_Ssl="on").ssl()
    assert not make().ssl()
    r = make("/api/v1/instance?x=1", Host="social.test:3000")
    assert (r.host(), r.port(), r.fullpath) == ("social.test", 3000, "/api/v1/instance?x=1")
    r = make("/", Host="social.test", X_Forwarded_Host="other.test")
    assert r.host() == "other.test" and r.port() == 80


def test_repeated_forwarded_for_lines_are_joined():
    msg = Message()
    msg["X-Forwarded-For"] = "1.1.1.1"
    msg["X-Forwarded-For"] = "203.0.113.9"
    r = webapp.Request("GET", "/", msg, b"", "127.0.0.1")
    assert r.header("X-Forwarded-For") == "1.1.1.1, 203.0.113.9"


def test_params_form_json_and_arrays():
    msg = Message()
    msg["Content-Type"] = "application/x-www-form-urlencoded"
    r = webapp.Request("POST", "/api/v1/statuses?x=1", msg, b"status=hi&media_ids[]=1&media_ids[]=2",
                       "127.0.0.1")
    assert r.params == {"x": "1", "status": "hi", "media_ids": ["1", "2"]}
    msg = Message()
    msg["Content-Type"] = "application/json"
    msg["Authorization"] = "Bearer abc"
    r = webapp.Request("POST", "/api/v1/statuses", msg, b'{"status": "hi"}', "127.0.0.1")
    assert r.params["status"] == "hi" and r.bearer_token() == "abc"
    r = webapp.Request("GET", "/api/v1/statuses/1?access_token=tok", Message(), b"", "127.0.0.1")
    assert r.bearer_token() == "tok"
