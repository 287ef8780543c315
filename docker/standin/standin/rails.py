"""`bundle exec rails <task>` / `bin/rails <task>`: the Rails tasks a migration or an install runs.

  assets:precompile   writes public/packs/ (Webpacker manifest.json + packs) and public/assets/ (Sprockets
                      manifest + a file); content depends only on the version, so every host gets the same
                      files
  assets:clobber      removes them
  db:create           CREATE DATABASE (reports when it already exists)
  db:schema:load      drops and creates the tables; refuses on a database whose ar_internal_metadata says
                      "production" unless DISABLE_DATABASE_ENVIRONMENT_CHECK=1
                      (ActiveRecord::ProtectedEnvironmentError)
  db:setup            db:create + db:schema:load
  db:prepare          db:setup on an empty database, else db:migrate
  db:migrate          creates the schema if it is missing; otherwise nothing to do
  db:version          prints the schema version
  mastodon:seed_standin  the deterministic seeder (SEED_SIZE=small|medium|large|N), see seed.py
Anything else: "Don't know how to build task" and exit status 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone

import psycopg2

from . import config as config_mod
from . import schema


def _abort(msg: str) -> int:
    sys.stderr.write("bin/rails aborted!\n" + msg.rstrip() + "\n")
    return 1


def _connect(cfg, dbname: str | None = None):
    params = cfg.db_params()
    if dbname:
        params["dbname"] = dbname
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn


def _db_error(e: Exception, cfg) -> int:
    text = str(e).strip()
    dbname = cfg.db_params().get("dbname")
    if "does not exist" in text and "database" in text:
        return _abort(f"ActiveRecord::NoDatabaseError: We could not find your database: {dbname}. Available "
                      f"database configurations can be found in config/database.yml.\n\n"
                      f"To resolve this error:\n\n"
                      f"- Did you not create the database, or did you delete it? "
                      f"To create the database, run:\n\n"
                      f"    bin/rails db:create")
    return _abort(f"ActiveRecord::ConnectionNotEstablished: {text}")


# -- assets ------------------------------------------------------------------------------------------------
def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def assets_precompile(cfg) -> int:
    root = cfg.root
    version = config_mod.mastodon_version(root)
    seconds = cfg.float("STANDIN_ASSETS_SECONDS", 2.0)
    print("yarn install v1.22.22\n[1/6] Validating package.json...\n[2/6] Resolving packages...\n"
          "success Already up-to-date.\nDone in 0.41s.", flush=True)
    packs = root / "public" / "packs"
    assets = root / "public" / "assets"
    files = {
        "js/application": ("js", f"/* Mastodon {version} stand-in: application */\n"),
        "js/common": ("js", f"/* Mastodon {version} stand-in: common */\n"),
        "css/common": ("css", f"/* Mastodon {version} stand-in: common */\nbody{{margin:0}}\n"),
    }
    manifest: dict = {"entrypoints": {}}
    print("Compiling...", flush=True)
    deadline = time.monotonic() + max(0.0, seconds)
    for name, (ext, content) in files.items():
        h = _digest(version, name, content)[:20]
        rel = f"{name}-{h}.{ext}"
        path = packs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        (path.parent / (path.name + ".gz")).write_bytes(_gzip(content.encode()))
        manifest[f"{os.path.basename(name)}.{ext}"] = f"/packs/{rel}"
        manifest["entrypoints"].setdefault(os.path.basename(name), {}).setdefault(ext, []).append(
            f"/packs/{rel}")
    while time.monotonic() < deadline:
        time.sleep(0.05)
    tmp = packs / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, packs / "manifest.json")
    print(f"Compiled all packs in {packs}", flush=True)
    assets.mkdir(parents=True, exist_ok=True)
    mailer = f"/* Mastodon {version} stand-in: mailer */\n"
    mh = _digest(version, "mailer", mailer)[:64]
    (assets / f"mailer-{mh}.css").write_text(mailer)
    ts = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    sprockets = {"files": {f"mailer-{mh}.css": {"logical_path": "mailer.css", "mtime": ts,
                                                "size": len(mailer), "digest": mh, "integrity": ""}},
                 "assets": {"mailer.css": f"mailer-{mh}.css"}}
    for old in assets.glob(".sprockets-manifest-*.json"):
        old.unlink()
    (assets / f".sprockets-manifest-{_digest(version, 'sprockets')[:32]}.json").write_text(
        json.dumps(sprockets))
    print(f"I, [{ts} #{os.getpid()}]  INFO -- : Writing {assets}/mailer-{mh}.css", flush=True)
    return 0


def _gzip(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data, mtime=0)


def assets_clobber(cfg) -> int:
    for d in (cfg.root / "public" / "packs", cfg.root / "public" / "assets"):
        if d.exists():
            shutil.rmtree(d)
    print("Removed public/packs and public/assets", flush=True)
    return 0


# -- database ----------------------------------------------------------------------------------------------
def db_create(cfg) -> int:
    dbname = cfg.db_params()["dbname"]
    try:
        _connect(cfg).close()
        print(f"Database '{dbname}' already exists", flush=True)
        return 0
    except psycopg2.OperationalError as e:
        if "does not exist" not in str(e):
            return _db_error(e, cfg)
    try:
        conn = _connect(cfg, "postgres")
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{dbname}" ENCODING \'UTF8\'')
        conn.close()
    except psycopg2.Error as e:
        return _abort(f"ActiveRecord::StatementInvalid: {str(e).strip()}\n"
                      f"Couldn't create '{dbname}' database. Please check your configuration.")
    print(f"Created database '{dbname}'", flush=True)
    return 0


def db_schema_load(cfg) -> int:
    try:
        conn = _connect(cfg)
    except psycopg2.OperationalError as e:
        return _db_error(e, cfg)
    try:
        with conn.cursor() as cur:
            stored = schema.stored_environment(cur)
            if stored == "production" and not os.environ.get("DISABLE_DATABASE_ENVIRONMENT_CHECK"):
                return _abort(
                    "ActiveRecord::ProtectedEnvironmentError: You are attempting to run a destructive action "
                    "against your 'production' database.\nIf you are sure you want to continue, run the same "
                    "command with the environment variable:\nDISABLE_DATABASE_ENVIRONMENT_CHECK=1")
            cur.execute("BEGIN")
            schema.load(cur, cfg.env_name)
            cur.execute("COMMIT")
    except psycopg2.Error as e:
        return _abort(f"ActiveRecord::StatementInvalid: {str(e).strip()}")
    finally:
        conn.close()
    return 0


def db_migrate(cfg) -> int:
    try:
        conn = _connect(cfg)
    except psycopg2.OperationalError as e:
        return _db_error(e, cfg)
    try:
        with conn.cursor() as cur:
            if schema.schema_present(cur):
                return 0
            cur.execute("BEGIN")
            schema.load(cur, cfg.env_name)
            cur.execute("COMMIT")
            print(f"== {schema.SCHEMA_VERSION} CreateStandinSchema: migrated", flush=True)
    finally:
        conn.close()
    return 0


def db_version(cfg) -> int:
    try:
        conn = _connect(cfg)
    except psycopg2.OperationalError as e:
        return _db_error(e, cfg)
    with conn.cursor() as cur:
        v = schema.current_version(cur)
    conn.close()
    print(f"Current version: {v or 0}")
    return 0


def db_setup(cfg) -> int:
    return db_create(cfg) or db_schema_load(cfg)


def db_prepare(cfg) -> int:
    rc = db_create(cfg)
    return rc or db_migrate(cfg)


TASKS = {
    "assets:precompile": assets_precompile,
    "assets:clobber": assets_clobber,
    "db:create": db_create,
    "db:schema:load": db_schema_load,
    "db:setup": db_setup,
    "db:prepare": db_prepare,
    "db:migrate": db_migrate,
    "db:version": db_version,
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("STANDIN_PROCESS", "rails")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("Usage:\n  bin/rails TASK\n\nTasks: " + ", ".join(sorted(TASKS) + ["mastodon:seed_standin"]))
        return 0
    tasks = []
    for arg in argv:             # rake-style VAR=value arguments apply before any task runs
        if "=" in arg and not arg.startswith("-"):
            k, v = arg.split("=", 1)
            os.environ[k] = v
        else:
            tasks.append(arg)
    cfg = config_mod.load()
    for task in tasks:
        if task == "mastodon:seed_standin":
            from . import seed
            rc = seed.main([])
        elif task in TASKS:
            rc = TASKS[task](cfg)
        else:
            return _abort(f"Don't know how to build task '{task}' (See the list of available tasks with "
                          f"`bin/rails --tasks`)")
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
