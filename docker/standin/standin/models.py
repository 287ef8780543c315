"""Queries on Mastodon's tables (the subset the stand-in models)."""

from __future__ import annotations

from datetime import timedelta

from .db import Session, utcnow

ACTIVE_DURATION = timedelta(days=7)   # User::ACTIVE_DURATION

ACCOUNT_COLS = (
    "a.id, a.username, a.domain, a.display_name, a.note, a.locked, a.discoverable, a.actor_type, "
    "a.suspended_at, a.created_at, COALESCE(st.statuses_count, 0) AS statuses_count, "
    "COALESCE(st.following_count, 0) AS following_count, COALESCE(st.followers_count, 0) AS followers_count, "
    "st.last_status_at"
)
ACCOUNT_FROM = "accounts a LEFT JOIN account_stats st ON st.account_id = a.id"


def find_account(sess: Session, account_id) -> dict | None:
    try:
        account_id = int(account_id)
    except (TypeError, ValueError):
        return None
    return sess.one(f"SELECT {ACCOUNT_COLS} FROM {ACCOUNT_FROM} WHERE a.id = %s", (account_id,))


def find_local_account(sess: Session, username: str) -> dict | None:
    return sess.one(
        f"SELECT {ACCOUNT_COLS} FROM {ACCOUNT_FROM} WHERE lower(a.username) = lower(%s) AND a.domain IS NULL",
        (username,),
    )


def accounts_by_ids(sess: Session, ids) -> dict[int, dict]:
    ids = list({int(i) for i in ids})
    if not ids:
        return {}
    rows = sess.all(f"SELECT {ACCOUNT_COLS} FROM {ACCOUNT_FROM} WHERE a.id = ANY(%s)", (ids,))
    return {r["id"]: r for r in rows}


def token_owner(sess: Session, token: str) -> dict | None:
    """Doorkeeper: an accessible token (not revoked, not expired) and its resource owner (users.id)."""
    return sess.one(
        "SELECT t.id AS token_id, t.scopes, t.last_used_at, t.expires_in, t.created_at AS token_created_at, "
        "u.id AS user_id, u.account_id, u.disabled, u.confirmed_at, u.approved, a.suspended_at "
        "FROM oauth_access_tokens t JOIN users u ON u.id = t.resource_owner_id "
        "JOIN accounts a ON a.id = u.account_id "
        "WHERE t.token = %s AND t.revoked_at IS NULL "
        "AND (t.expires_in IS NULL "
        "OR t.created_at + make_interval(secs => t.expires_in) > (now() AT TIME ZONE 'utc'))",
        (token,),
    )


def load_statuses(sess: Session, ids) -> list[tuple[dict, dict, list[dict]]]:
    """Statuses (not deleted) with their accounts and media, in the order of `ids`; missing ids are
    dropped."""
    ids = [int(i) for i in ids]
    if not ids:
        return []
    rows = sess.all("SELECT * FROM statuses WHERE id = ANY(%s) AND deleted_at IS NULL", (ids,))
    by_id = {r["id"]: r for r in rows}
    accounts = accounts_by_ids(sess, [r["account_id"] for r in rows])
    media: dict[int, list] = {}
    if rows:
        for m in sess.all("SELECT * FROM media_attachments WHERE status_id = ANY(%s) ORDER BY id",
                          (list(by_id),)):
            media.setdefault(m["status_id"], []).append(m)
    out = []
    for i in ids:
        s = by_id.get(i)
        if s is None or s["account_id"] not in accounts:
            continue
        out.append((s, accounts[s["account_id"]], media.get(i, [])))
    return out


def account_status_ids(sess: Session, account_id: int, limit: int, max_id=None, since_id=None, min_id=None,
                       visibilities=(0, 1)) -> list[int]:
    where = ["account_id = %s", "deleted_at IS NULL", "visibility = ANY(%s)"]
    params: list = [account_id, list(visibilities)]
    if max_id:
        where.append("id < %s")
        params.append(int(max_id))
    if since_id:
        where.append("id > %s")
        params.append(int(since_id))
    order = "DESC"
    if min_id:
        where.append("id > %s")
        params.append(int(min_id))
        order = "ASC"
    params.append(limit)
    rows = sess.all(f"SELECT id FROM statuses WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT %s",
                    params)
    ids = [r["id"] for r in rows]
    return sorted(ids, reverse=True)


def local_follower_ids(sess: Session, account_id: int) -> list[int]:
    """Account#followers_for_local_distribution: local followers whose users are not disabled."""
    rows = sess.all(
        "SELECT f.account_id FROM follows f JOIN accounts a ON a.id = f.account_id "
        "JOIN users u ON u.account_id = a.id "
        "WHERE f.target_account_id = %s AND a.domain IS NULL AND u.disabled = false "
        "AND a.suspended_at IS NULL "
        "ORDER BY f.account_id",
        (account_id,),
    )
    return [r["account_id"] for r in rows]


def following_with_last_status(sess: Session, account_id: int) -> list[dict]:
    return sess.all(
        "SELECT f.target_account_id AS id, st.last_status_at FROM follows f "
        "LEFT JOIN account_stats st ON st.account_id = f.target_account_id "
        "WHERE f.account_id = %s ORDER BY f.target_account_id",
        (account_id,),
    )


def followed_statuses(sess: Session, account_id: int, limit: int) -> list[tuple]:
    """(account_id, status_id) of the newest `limit` public/unlisted/private statuses of each followed
    account."""
    return sess.rows(
        "SELECT s.account_id, s.id FROM follows f CROSS JOIN LATERAL ("
        "  SELECT account_id, id FROM statuses WHERE account_id = f.target_account_id AND deleted_at IS NULL"
        "  AND visibility IN (0, 1, 2) ORDER BY id DESC LIMIT %s) s WHERE f.account_id = %s",
        (limit, account_id),
    )


def active_user_account_ids(sess: Session) -> list[int]:
    """Account.joins(:user).merge(User.active): confirmed, signed in within 7 days, not disabled/suspended."""
    rows = sess.all(
        "SELECT a.id FROM accounts a JOIN users u ON u.account_id = a.id "
        "WHERE u.confirmed_at IS NOT NULL AND u.disabled = false AND a.suspended_at IS NULL "
        "AND u.current_sign_in_at >= %s ORDER BY a.id",
        (utcnow() - ACTIVE_DURATION,),
    )
    return [r["id"] for r in rows]


def media_for_ids(sess: Session, account_id: int, ids) -> list[dict]:
    ids = [int(i) for i in ids]
    if not ids:
        return []
    return sess.all("SELECT * FROM media_attachments WHERE id = ANY(%s) AND account_id = %s ORDER BY id",
                    (ids, account_id))
