"""The stand-in's database schema: Mastodon's table and column names for what it models (simplified).

Ids: accounts, statuses and media_attachments use Mastodon's `timestamp_id(table)` default (a "snowflake":
milliseconds since the epoch << 16 | a per-table sequence), so new rows get ids that grow with time; users,
follows, tokens and the rest are plain bigserial.
"""

from __future__ import annotations

SCHEMA_VERSION = "20241014010506"

TIMESTAMP_ID = r"""
CREATE OR REPLACE FUNCTION timestamp_id(table_name text)
RETURNS bigint AS
$$
  DECLARE
    time_part bigint;
    sequence_base bigint;
    tail bigint;
  BEGIN
    time_part := ((date_part('epoch', now()) * 1000))::bigint << 16;
    sequence_base := ('x' || substr(md5(table_name || 'standin-snowflake' || time_part::text),
                                    1, 4))::bit(16)::bigint;
    tail := (sequence_base + nextval(table_name || '_id_seq')) & 65535;
    RETURN time_part | tail;
  END
$$ LANGUAGE plpgsql VOLATILE;
"""

TABLES = r"""
CREATE TABLE schema_migrations (version character varying PRIMARY KEY);
CREATE TABLE ar_internal_metadata (
  key character varying PRIMARY KEY,
  value character varying,
  created_at timestamp(6) without time zone NOT NULL,
  updated_at timestamp(6) without time zone NOT NULL
);

CREATE SEQUENCE accounts_id_seq;
CREATE SEQUENCE statuses_id_seq;
CREATE SEQUENCE media_attachments_id_seq;

CREATE TABLE accounts (
  id bigint PRIMARY KEY DEFAULT timestamp_id('accounts'),
  username character varying NOT NULL DEFAULT '',
  domain character varying,
  display_name character varying NOT NULL DEFAULT '',
  note text NOT NULL DEFAULT '',
  uri character varying NOT NULL DEFAULT '',
  url character varying,
  locked boolean NOT NULL DEFAULT false,
  discoverable boolean,
  actor_type character varying,
  suspended_at timestamp without time zone,
  created_at timestamp without time zone NOT NULL,
  updated_at timestamp without time zone NOT NULL
);
CREATE UNIQUE INDEX index_accounts_on_username_and_domain_lower
  ON accounts (lower((username)::text), COALESCE(lower((domain)::text), ''::text));

CREATE TABLE users (
  id bigserial PRIMARY KEY,
  email character varying NOT NULL DEFAULT '',
  encrypted_password character varying NOT NULL DEFAULT '',
  account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  confirmed_at timestamp without time zone,
  current_sign_in_at timestamp without time zone,
  last_sign_in_at timestamp without time zone,
  disabled boolean NOT NULL DEFAULT false,
  approved boolean NOT NULL DEFAULT true,
  locale character varying,
  chosen_languages character varying[],
  created_at timestamp without time zone NOT NULL,
  updated_at timestamp without time zone NOT NULL
);
CREATE UNIQUE INDEX index_users_on_email ON users (email);
CREATE INDEX index_users_on_account_id ON users (account_id);

CREATE TABLE account_stats (
  id bigserial PRIMARY KEY,
  account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  statuses_count bigint NOT NULL DEFAULT 0,
  following_count bigint NOT NULL DEFAULT 0,
  followers_count bigint NOT NULL DEFAULT 0,
  created_at timestamp without time zone NOT NULL,
  updated_at timestamp without time zone NOT NULL,
  last_status_at timestamp without time zone
);
CREATE UNIQUE INDEX index_account_stats_on_account_id ON account_stats (account_id);

CREATE TABLE follows (
  id bigserial PRIMARY KEY,
  created_at timestamp without time zone NOT NULL,
  updated_at timestamp without time zone NOT NULL,
  account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  target_account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  show_reblogs boolean NOT NULL DEFAULT true,
  uri character varying,
  notify boolean NOT NULL DEFAULT false,
  languages character varying[]
);
CREATE UNIQUE INDEX index_follows_on_account_id_and_target_account_id
  ON follows (account_id, target_account_id);
CREATE INDEX index_follows_on_target_account_id ON follows (target_account_id);

CREATE TABLE oauth_applications (
  id bigserial PRIMARY KEY,
  name character varying NOT NULL,
  uid character varying NOT NULL,
  secret character varying NOT NULL,
  redirect_uri text NOT NULL,
  scopes character varying NOT NULL DEFAULT '',
  website character varying,
  created_at timestamp without time zone,
  updated_at timestamp without time zone
);
CREATE UNIQUE INDEX index_oauth_applications_on_uid ON oauth_applications (uid);

CREATE TABLE oauth_access_tokens (
  id bigserial PRIMARY KEY,
  token character varying NOT NULL,
  refresh_token character varying,
  expires_in integer,
  revoked_at timestamp without time zone,
  created_at timestamp without time zone NOT NULL,
  scopes character varying,
  application_id bigint REFERENCES oauth_applications(id) ON DELETE CASCADE,
  resource_owner_id bigint REFERENCES users(id) ON DELETE CASCADE,
  last_used_at timestamp without time zone,
  last_used_ip inet
);
CREATE UNIQUE INDEX index_oauth_access_tokens_on_token ON oauth_access_tokens (token);
CREATE INDEX index_oauth_access_tokens_on_resource_owner_id ON oauth_access_tokens (resource_owner_id);

CREATE TABLE statuses (
  id bigint PRIMARY KEY DEFAULT timestamp_id('statuses'),
  uri character varying,
  text text NOT NULL DEFAULT '',
  created_at timestamp without time zone NOT NULL,
  updated_at timestamp without time zone NOT NULL,
  in_reply_to_id bigint,
  reblog_of_id bigint,
  url character varying,
  sensitive boolean NOT NULL DEFAULT false,
  visibility integer NOT NULL DEFAULT 0,
  spoiler_text text NOT NULL DEFAULT '',
  reply boolean NOT NULL DEFAULT false,
  language character varying,
  conversation_id bigint,
  local boolean,
  account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  application_id bigint,
  in_reply_to_account_id bigint,
  deleted_at timestamp without time zone,
  edited_at timestamp without time zone
);
CREATE INDEX index_statuses_20190820 ON statuses (account_id, id DESC, visibility, updated_at)
  WHERE deleted_at IS NULL;

CREATE TABLE media_attachments (
  id bigint PRIMARY KEY DEFAULT timestamp_id('media_attachments'),
  status_id bigint REFERENCES statuses(id) ON DELETE SET NULL,
  file_file_name character varying,
  file_content_type character varying,
  file_file_size bigint,
  file_updated_at timestamp without time zone,
  remote_url character varying NOT NULL DEFAULT '',
  created_at timestamp without time zone NOT NULL,
  updated_at timestamp without time zone NOT NULL,
  shortcode character varying,
  type integer NOT NULL DEFAULT 0,
  file_meta json,
  account_id bigint REFERENCES accounts(id) ON DELETE SET NULL,
  description text,
  scheduled_status_id bigint,
  blurhash character varying,
  processing integer
);
CREATE INDEX index_media_attachments_on_status_id ON media_attachments (status_id);
CREATE INDEX index_media_attachments_on_account_id_and_status_id
  ON media_attachments (account_id, status_id DESC);

CREATE TABLE scheduled_statuses (
  id bigserial PRIMARY KEY,
  account_id bigint REFERENCES accounts(id) ON DELETE CASCADE,
  scheduled_at timestamp without time zone,
  params jsonb
);
CREATE INDEX index_scheduled_statuses_on_scheduled_at ON scheduled_statuses (scheduled_at);
"""

TABLE_NAMES = ("media_attachments", "scheduled_statuses", "statuses", "oauth_access_tokens",
               "oauth_applications", "follows", "account_stats", "users", "accounts", "ar_internal_metadata",
               "schema_migrations")
SEQUENCES = ("accounts_id_seq", "statuses_id_seq", "media_attachments_id_seq")


def schema_present(cur) -> bool:
    cur.execute("SELECT to_regclass('public.statuses') IS NOT NULL "
                "AND to_regclass('public.accounts') IS NOT NULL")
    return bool(cur.fetchone()[0])


def stored_environment(cur) -> str | None:
    cur.execute("SELECT to_regclass('public.ar_internal_metadata') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT value FROM ar_internal_metadata WHERE key = 'environment'")
    row = cur.fetchone()
    return row[0] if row else None


def load(cur, env_name: str) -> None:
    """db:schema:load: drop what it manages (force: :cascade), create everything, record version and env."""
    for t in TABLE_NAMES:
        cur.execute(f"DROP TABLE IF EXISTS {t} CASCADE")
    for s in SEQUENCES:
        cur.execute(f"DROP SEQUENCE IF EXISTS {s} CASCADE")
    cur.execute(TIMESTAMP_ID)
    cur.execute(TABLES)
    cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION,))
    cur.execute(
        "INSERT INTO ar_internal_metadata (key, value, created_at, updated_at) VALUES "
        "('environment', %s, now(), now()), ('schema_sha1', %s, now(), now())",
        (env_name, "standin-" + SCHEMA_VERSION),
    )


def current_version(cur) -> str | None:
    cur.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT max(version) FROM schema_migrations")
    row = cur.fetchone()
    return row[0] if row else None
