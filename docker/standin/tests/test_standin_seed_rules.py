import hashlib

from standin import render, seed


def test_token_formula_and_usernames():
    assert seed.token_for("user0001") == hashlib.sha256(b"standin-token:user0001").hexdigest()
    assert seed.username(1, 50) == "user0001"
    assert seed.username(12345, 20000) == "user12345"
    assert seed.username(7, 123456) == "user000007"


def test_plan_rules_small():
    p = seed.Plan(seed.resolve_size("small"), "social.test", 100)
    assert (p.accounts, p.statuses, p.follows) == (50, 1000, 10)
    assert p.followees(0) == list(range(1, 11))            # user0001 follows user0002..user0011
    assert p.followees(49)[0] == 0                          # wraps around
    assert p.inactive(9) and not p.inactive(0)              # user0010 inactive, user0001 active
    ids = [p.status_id(g) for g in range(p.statuses)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert sum(p.status_count(i) for i in range(p.accounts)) == p.statuses
    newest = list(p.newest_ids(1, 5))
    assert newest == sorted(newest, reverse=True) and newest[0] == p.status_id(p.last_g(1))
    assert len({p.account_id(i) for i in range(p.accounts)}) == p.accounts


def test_sizes_and_numbers():
    assert seed.resolve_size("7")["accounts"] == 7
    assert seed.resolve_size("large")["statuses"] == 5_000_000


def test_png_is_deterministic_and_valid():
    a, b = seed.png_bytes("x", 5000), seed.png_bytes("x", 5000)
    assert a == b and a.startswith(b"\x89PNG\r\n\x1a\n") and 4000 < len(a) < 7000
    assert seed.png_bytes("y", 5000) != a


def test_render_helpers():
    assert render.id_partition(109876543210987654) == "109/876/543/210/987/654"
    assert render.media_path(12, "original", "a.png") == "media_attachments/files/000/000/012/original/a.png"
    assert render.html_content("a <b>\nc\n\nd") == "<p>a &lt;b&gt;<br />c</p><p>d</p>"


def test_a_long_status_text_is_words_then_incompressible_base64():
    import base64
    import random
    import zlib

    from standin.seed import status_text

    short = status_text(random.Random(1), 180)
    assert 180 <= len(short) < 200 and short.endswith(".")
    long = status_text(random.Random(1), 10_000)
    assert 9_900 <= len(long) <= 10_100
    tail = long.rsplit(" ", 1)[1]
    assert len(base64.b64decode(tail)) > 7_000
    assert len(zlib.compress(long.encode())) > 0.7 * len(long)  # takes its size on disk, as TOAST would find
