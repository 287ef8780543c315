"""JSON shapes of Mastodon's REST::StatusSerializer / AccountSerializer / MediaAttachmentSerializer
(subset)."""

from __future__ import annotations

import html
import re
from datetime import datetime

VISIBILITIES = ("public", "unlisted", "private", "direct", "limited")
MEDIA_TYPES = ("image", "gifv", "video", "unknown", "audio")


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def iso_date(dt: datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%d") if dt else None


def html_content(text: str) -> str:
    paragraphs = [p for p in re.split(r"\n{2,}", text.strip()) if p] or [""]
    return "".join("<p>" + html.escape(p, quote=False).replace("\n", "<br />") + "</p>" for p in paragraphs)


def id_partition(i: int) -> str:
    """Paperclip's :id_partition: the zero-padded id in groups of three digits."""
    return "/".join(re.findall(r"\d{3}", "%09d" % int(i)))


def media_path(media_id: int, style: str, file_name: str) -> str:
    """Path below public/system (Mastodon's default :class/:attachment/:id_partition/:style/:filename)."""
    return f"media_attachments/files/{id_partition(media_id)}/{style}/{file_name}"


def account_json(a: dict, domain: str) -> dict:
    return {
        "id": str(a["id"]),
        "username": a["username"],
        "acct": a["username"] if not a.get("domain") else f"{a['username']}@{a['domain']}",
        "display_name": a.get("display_name") or "",
        "locked": bool(a.get("locked")),
        "bot": a.get("actor_type") in ("Application", "Service"),
        "discoverable": a.get("discoverable"),
        "indexable": False,
        "group": False,
        "created_at": (iso(a["created_at"].replace(hour=0, minute=0, second=0, microsecond=0))
                       if a.get("created_at") else None),
        "note": html_content(a.get("note") or "") if a.get("note") else "",
        "url": f"https://{domain}/@{a['username']}",
        "uri": f"https://{domain}/users/{a['username']}",
        "avatar": f"https://{domain}/avatars/original/missing.png",
        "avatar_static": f"https://{domain}/avatars/original/missing.png",
        "header": f"https://{domain}/headers/original/missing.png",
        "header_static": f"https://{domain}/headers/original/missing.png",
        "followers_count": int(a.get("followers_count") or 0),
        "following_count": int(a.get("following_count") or 0),
        "statuses_count": int(a.get("statuses_count") or 0),
        "last_status_at": iso_date(a.get("last_status_at")),
        "hide_collections": None,
        "noindex": False,
        "emojis": [],
        "roles": [],
        "fields": [],
    }


def media_json(m: dict, domain: str) -> dict:
    name = m.get("file_file_name") or ""
    url = f"https://{domain}/system/{media_path(m['id'], 'original', name)}" if name else None
    preview = f"https://{domain}/system/{media_path(m['id'], 'small', name)}" if name else None
    meta = m.get("file_meta") or {}
    return {
        "id": str(m["id"]),
        "type": MEDIA_TYPES[m.get("type") or 0] if (m.get("type") or 0) < len(MEDIA_TYPES) else "unknown",
        "url": url,
        "preview_url": preview,
        "remote_url": None,
        "preview_remote_url": None,
        "text_url": None,
        "meta": meta,
        "description": m.get("description"),
        "blurhash": m.get("blurhash"),
    }


def status_json(s: dict, account: dict, media: list[dict], domain: str, viewer: int | None = None) -> dict:
    username = account["username"]
    out = {
        "id": str(s["id"]),
        "created_at": iso(s["created_at"]),
        "in_reply_to_id": str(s["in_reply_to_id"]) if s.get("in_reply_to_id") else None,
        "in_reply_to_account_id": (str(s["in_reply_to_account_id"]) if s.get("in_reply_to_account_id")
                                   else None),
        "sensitive": bool(s.get("sensitive")),
        "spoiler_text": s.get("spoiler_text") or "",
        "visibility": VISIBILITIES[s.get("visibility") or 0],
        "language": s.get("language"),
        "uri": s.get("uri") or f"https://{domain}/users/{username}/statuses/{s['id']}",
        "url": s.get("url") or f"https://{domain}/@{username}/{s['id']}",
        "replies_count": 0,
        "reblogs_count": 0,
        "favourites_count": 0,
        "edited_at": iso(s.get("edited_at")),
    }
    if viewer is not None:
        out.update({"favourited": False, "reblogged": False, "muted": False, "bookmarked": False,
                    "pinned": False})
    out.update({
        "content": html_content(s.get("text") or ""),
        "filtered": [],
        "reblog": None,
        "application": {"name": "Web", "website": None} if s.get("local", True) else None,
        "account": account_json(account, domain),
        "media_attachments": [media_json(m, domain) for m in media],
        "mentions": [],
        "tags": [],
        "emojis": [],
        "card": None,
        "poll": None,
    })
    return out


def scheduled_status_json(ss: dict, media: list[dict], domain: str) -> dict:
    params = dict(ss.get("params") or {})
    return {
        "id": str(ss["id"]),
        "scheduled_at": iso(ss["scheduled_at"]),
        "params": params,
        "media_attachments": [media_json(m, domain) for m in media],
    }
