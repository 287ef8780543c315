"""Mastodon's services, reduced to what the stand-in models: PostStatusService, media upload, follow."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import jobs, models, render
from .db import Session, utcnow

MAX_CHARS = 500
MIN_SCHEDULE_OFFSET = timedelta(minutes=5)
IDEMPOTENCY_TTL = 3600
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpeg", "image/gif": ".gif", "image/webp": ".webp"}
IMAGE_LIMIT = 16 * 1024 * 1024


class ValidationError(Exception):
    """ActiveRecord::RecordInvalid → 422 {"error": "Validation failed: ..."}"""


class NotFound(Exception):
    pass


def parse_time(value: str) -> datetime:
    v = value.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).replace(tzinfo=None)


def _bool(v) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "t", "yes", "on")


def post_status(sess: Session, r, sidekiq_r, account: dict, params: dict, idempotency: str | None = None):
    """PostStatusService#call. Returns ("status", id) or ("scheduled", scheduled_status_row)."""
    idem_key = f"idempotency:status:{account['id']}:{idempotency}" if idempotency else None
    if idem_key:
        existing = r.get(idem_key)
        if existing:
            return "status", int(existing)

    text = params.get("status") or ""
    if not isinstance(text, str):
        text = str(text)
    media_ids = params.get("media_ids") or []
    if isinstance(media_ids, (str, int)):
        media_ids = [media_ids]
    media_ids = [int(m) for m in media_ids if str(m).strip().isdigit()][:4]
    visibility = params.get("visibility") or "public"
    if visibility not in render.VISIBILITIES[:4]:
        raise ValidationError("Visibility is not included in the list")
    spoiler = params.get("spoiler_text") or ""
    sensitive = _bool(params.get("sensitive", False)) or bool(spoiler)
    language = params.get("language") or "en"
    if not text.strip() and not media_ids:
        raise ValidationError("Text can't be blank")
    if len(text) + len(spoiler) > MAX_CHARS:
        raise ValidationError(f"Text character limit of {MAX_CHARS} exceeded")
    media = models.media_for_ids(sess, account["id"], media_ids)
    if len(media) != len(set(media_ids)) or any(m["status_id"] for m in media):
        raise ValidationError("Media attachments are invalid")

    scheduled_at = params.get("scheduled_at")
    if scheduled_at:
        try:
            at = parse_time(str(scheduled_at))
        except ValueError:
            raise ValidationError("Scheduled at is invalid") from None
        if at < utcnow() + MIN_SCHEDULE_OFFSET:
            raise ValidationError("Scheduled at The scheduled date must be in the future")
        stored = {"text": text, "visibility": visibility, "media_ids": media_ids or None,
                  "sensitive": sensitive, "spoiler_text": spoiler, "language": language,
                  "application_id": None, "idempotency": idempotency, "in_reply_to_id": None, "poll": None,
                  "with_rate_limit": False, "scheduled_at": None}
        with sess.transaction() as cur:
            cur.execute("INSERT INTO scheduled_statuses (account_id, scheduled_at, params) "
                        "VALUES (%s, %s, %s) RETURNING *", (account["id"], at, json.dumps(stored)))
            row = cur.fetchone()
            if media_ids:
                cur.execute("UPDATE media_attachments SET scheduled_status_id = %s WHERE id = ANY(%s)",
                            (row["id"], media_ids))
        jobs.schedule(sidekiq_r, "PublishScheduledStatusWorker", [row["id"]],
                      at.replace(tzinfo=timezone.utc).timestamp())
        return "scheduled", row

    status_id = create_status(sess, account["id"], text, visibility, sensitive, spoiler, language, media_ids)
    if idem_key:
        r.setex(idem_key, IDEMPOTENCY_TTL, status_id)
    enqueue_distribution(sidekiq_r, status_id, visibility)
    return "status", status_id


def create_status(sess: Session, account_id: int, text: str, visibility: str, sensitive: bool, spoiler: str,
                  language: str, media_ids: list[int]) -> int:
    now = utcnow()
    with sess.transaction() as cur:
        cur.execute(
            "INSERT INTO statuses (text, created_at, updated_at, sensitive, visibility, spoiler_text, "
            "language, local, account_id) VALUES (%s, %s, %s, %s, %s, %s, %s, true, %s) RETURNING id",
            (text, now, now, sensitive, render.VISIBILITIES.index(visibility), spoiler, language, account_id),
        )
        status_id = cur.fetchone()["id"]
        if media_ids:
            cur.execute("UPDATE media_attachments SET status_id = %s, updated_at = %s WHERE id = ANY(%s) "
                        "AND account_id = %s", (status_id, now, media_ids, account_id))
        cur.execute(
            "INSERT INTO account_stats (account_id, statuses_count, created_at, updated_at, last_status_at) "
            "VALUES (%s, 1, %s, %s, %s) ON CONFLICT (account_id) DO UPDATE SET "
            "statuses_count = account_stats.statuses_count + 1, updated_at = EXCLUDED.updated_at, "
            "last_status_at = EXCLUDED.last_status_at",
            (account_id, now, now, now),
        )
    return status_id


def enqueue_distribution(sidekiq_r, status_id: int, visibility: str) -> None:
    """postprocess_status!: DistributionWorker (fan-out) and ActivityPub::DistributionWorker (federation)."""
    jobs.push(sidekiq_r, "DistributionWorker", [status_id])
    if visibility != "direct":
        jobs.push(sidekiq_r, "ActivityPub::DistributionWorker", [status_id])


def publish_scheduled(sess: Session, r, sidekiq_r, scheduled_id: int) -> int | None:
    """PublishScheduledStatusWorker: destroy the scheduled status, post it for real."""
    with sess.transaction() as cur:
        cur.execute("DELETE FROM scheduled_statuses WHERE id = %s RETURNING *", (scheduled_id,))
        row = cur.fetchone()
    if row is None:
        return None
    p = row["params"] or {}
    media_ids = p.get("media_ids") or []
    status_id = create_status(sess, row["account_id"], p.get("text") or "", p.get("visibility") or "public",
                              bool(p.get("sensitive")), p.get("spoiler_text") or "",
                              p.get("language") or "en", [int(m) for m in media_ids])
    enqueue_distribution(sidekiq_r, status_id, p.get("visibility") or "public")
    return status_id


def store_media(sess: Session, app_root: Path, account_id: int, data: bytes, content_type: str,
                filename: str | None, description: str | None) -> dict:
    """MediaAttachment.create!: Paperclip writes original + small styles under public/system, then the row."""
    ext = IMAGE_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if ext is None:
        raise ValidationError("File content type is invalid, File is invalid")
    if not data:
        raise ValidationError("File can't be blank")
    if len(data) > IMAGE_LIMIT:
        raise ValidationError("File file size must be less than 16 MB")
    media_id = sess.scalar("SELECT timestamp_id('media_attachments')")
    name = secrets.token_hex(8) + ext
    system = app_root / "public" / "system"
    written = []
    try:
        for style in ("original", "small"):
            path = system / render.media_path(media_id, style, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            written.append(path)
        now = utcnow()
        meta = {"original": {"size": len(data)}, "small": {"size": len(data)}}
        blurhash = "L" + hashlib.sha1(data).hexdigest()[:27]
        with sess.transaction() as cur:
            cur.execute(
                "INSERT INTO media_attachments (id, file_file_name, file_content_type, file_file_size, "
                "file_updated_at, created_at, updated_at, type, file_meta, account_id, description, "
                "blurhash, processing) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, 2) "
                "RETURNING *",
                (media_id, name, content_type, len(data), now, now, now, json.dumps(meta), account_id,
                 description, blurhash),
            )
            return cur.fetchone()
    except BaseException:
        for p in written:
            try:
                p.unlink()
            except OSError:
                pass
        raise


def follow(sess: Session, sidekiq_r, account_id: int, target_id: int) -> bool:
    """FollowService for a local, unlocked target: the follow row, counters, and MergeWorker (feed merge)."""
    now = utcnow()
    with sess.transaction() as cur:
        cur.execute("INSERT INTO follows (created_at, updated_at, account_id, target_account_id) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                    (now, now, account_id, target_id))
        created = cur.fetchone() is not None
        if created:
            for acc, col in ((account_id, "following_count"), (target_id, "followers_count")):
                cur.execute(
                    f"INSERT INTO account_stats (account_id, {col}, created_at, updated_at) "
                    f"VALUES (%s, 1, %s, %s) ON CONFLICT (account_id) "
                    f"DO UPDATE SET {col} = account_stats.{col} + 1, updated_at = %s",
                    (acc, now, now, now))
    if created:
        jobs.push(sidekiq_r, "MergeWorker", [target_id, account_id])
    return created


def unfollow(sess: Session, sidekiq_r, account_id: int, target_id: int) -> bool:
    now = utcnow()
    with sess.transaction() as cur:
        cur.execute("DELETE FROM follows WHERE account_id = %s AND target_account_id = %s RETURNING id",
                    (account_id, target_id))
        deleted = cur.fetchone() is not None
        if deleted:
            for acc, col in ((account_id, "following_count"), (target_id, "followers_count")):
                cur.execute(f"UPDATE account_stats SET {col} = GREATEST({col} - 1, 0), updated_at = %s "
                            f"WHERE account_id = %s", (now, acc))
    if deleted:
        jobs.push(sidekiq_r, "UnmergeWorker", [target_id, account_id])
    return deleted


def relationship(sess: Session, account_id: int, target_id: int) -> dict:
    following = sess.scalar("SELECT count(*) FROM follows WHERE account_id = %s AND target_account_id = %s",
                            (account_id, target_id))
    followed_by = sess.scalar("SELECT count(*) FROM follows WHERE account_id = %s AND target_account_id = %s",
                              (target_id, account_id))
    return {"id": str(target_id), "following": bool(following), "showing_reblogs": bool(following),
            "notifying": False, "languages": None, "followed_by": bool(followed_by), "blocking": False,
            "blocked_by": False, "muting": False, "muting_notifications": False, "requested": False,
            "requested_by": False, "domain_blocking": False, "endorsed": False, "note": ""}
