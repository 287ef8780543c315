"""REDIS_NAMESPACE as Mastodon <= 4.3 applies it with the redis-namespace gem: every key of a command, and the
channel of PUBLISH, gets `<namespace>:` in front; key names in replies (KEYS, SCAN, BRPOP, ...) come back
without it. Pure functions (no redis import), used by redisconn.NamespacedRedis and tested on their own.

Only the commands listed here may go through a namespaced client: anything else raises, so that a new call
site can never write a key outside the namespace by accident (redis-namespace refuses unknown commands too).
"""

from __future__ import annotations

from typing import Any

# the first argument is the key (or, for PUBLISH, the channel)
FIRST = frozenset("""
APPEND DECR DECRBY DUMP EXPIRE EXPIREAT GET GETDEL GETEX GETRANGE GETSET HDEL HEXISTS HGET HGETALL HINCRBY
HINCRBYFLOAT HKEYS HLEN HMGET HMSET HRANDFIELD HSCAN HSET HSETNX HSTRLEN HVALS INCR INCRBY INCRBYFLOAT LINDEX
LINSERT LLEN LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM PERSIST PEXPIRE PEXPIREAT PFADD PSETEX PTTL PUBLISH
RESTORE RPOP RPUSH RPUSHX SADD SCARD SET SETEX SETNX SETRANGE SISMEMBER SMEMBERS SMISMEMBER SPOP SRANDMEMBER
SREM SSCAN STRLEN TTL TYPE ZADD ZCARD ZCOUNT ZINCRBY ZLEXCOUNT ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE
ZRANGEBYLEX ZRANGEBYSCORE ZRANK ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE
ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE
""".split()) | {"MEMORY USAGE"}
# every argument is a key
ALL = frozenset("DEL EXISTS MGET PFCOUNT SDIFF SDIFFSTORE SINTER SINTERSTORE SUNION SUNIONSTORE TOUCH UNLINK "
                "WATCH".split())
# every argument but the last (a timeout) is a key
ALL_BUT_LAST = frozenset("BLPOP BRPOP BZPOPMAX BZPOPMIN".split())
# the first two arguments are keys
FIRST_TWO = frozenset("BLMOVE BRPOPLPUSH LMOVE RENAME RENAMENX RPOPLPUSH SMOVE ZRANGESTORE".split())
# the second argument is the key
SECOND = frozenset(["OBJECT"])
# no key at all
NONE = frozenset(["CLIENT GETNAME", "CLIENT ID", "CLIENT SETNAME", "DBSIZE", "DISCARD", "ECHO", "EXEC",
                  "INFO", "MULTI", "PING", "SCRIPT EXISTS", "SCRIPT FLUSH", "SCRIPT LOAD", "TIME", "UNWATCH"])
# special: EVAL/EVALSHA (numkeys), MSET/MSETNX (key value ...), ZUNIONSTORE/ZINTERSTORE (dest numkeys
# key ...), KEYS (a pattern), SCAN (MATCH pattern, added when missing), RANDOMKEY (reply only)
SPECIAL = frozenset("EVAL EVALSHA EVAL_RO EVALSHA_RO KEYS MSET MSETNX RANDOMKEY SCAN ZINTERSTORE "
                    "ZUNIONSTORE".split())
# replies that hold key names, stripped of the namespace
REPLY_KEYS = frozenset("BLPOP BRPOP BZPOPMAX BZPOPMIN KEYS RANDOMKEY SCAN".split())

KNOWN = FIRST | ALL | ALL_BUT_LAST | FIRST_TWO | SECOND | NONE | SPECIAL


class UnknownCommand(ValueError):
    pass


def _name(command: Any) -> str:
    return (command.decode() if isinstance(command, bytes) else str(command)).upper()


def add(ns: str, key: Any) -> Any:
    if isinstance(key, bytes):
        return ns.encode() + b":" + key
    return f"{ns}:{key}"


def rem(ns: str, key: Any) -> Any:
    if isinstance(key, bytes):
        p = ns.encode() + b":"
        return key[len(p):] if key.startswith(p) else key
    p = f"{ns}:"
    return key[len(p):] if isinstance(key, str) and key.startswith(p) else key


def command_args(ns: str, args: tuple) -> tuple:
    """redis-py's execute_command(*args): (COMMAND, arg, ...) with the keys namespaced."""
    cmd, rest = args[0], list(args[1:])
    name = _name(cmd)
    if name not in KNOWN:
        raise UnknownCommand(f"{name} is not a command the namespaced Redis client knows "
                             f"(REDIS_NAMESPACE={ns})")
    if name in FIRST:
        if rest:
            rest[0] = add(ns, rest[0])
    elif name in ALL:
        rest = [add(ns, k) for k in rest]
    elif name in ALL_BUT_LAST:
        rest = [add(ns, k) for k in rest[:-1]] + rest[-1:]
    elif name in FIRST_TWO:
        rest = [add(ns, k) for k in rest[:2]] + rest[2:]
    elif name in SECOND:
        if len(rest) >= 2:
            rest[1] = add(ns, rest[1])
    elif name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"):
        n = int(rest[1])
        rest = rest[:2] + [add(ns, k) for k in rest[2:2 + n]] + rest[2 + n:]
    elif name in ("MSET", "MSETNX"):
        rest = [add(ns, a) if i % 2 == 0 else a for i, a in enumerate(rest)]
    elif name in ("ZUNIONSTORE", "ZINTERSTORE"):
        n = int(rest[1])
        rest = [add(ns, rest[0]), rest[1]] + [add(ns, k) for k in rest[2:2 + n]] + rest[2 + n:]
    elif name == "KEYS":
        rest[0] = add(ns, rest[0])
    elif name == "SCAN":
        for i, a in enumerate(rest):
            if _name(a) == "MATCH" and i + 1 < len(rest):
                rest[i + 1] = add(ns, rest[i + 1])
                break
        else:
            rest += ["MATCH", add(ns, "*")]
    return (cmd, *rest)


def reply(ns: str, command: Any, value: Any) -> Any:
    """Strip the namespace from the key names in a parsed reply."""
    name = _name(command)
    if name not in REPLY_KEYS or value is None:
        return value
    if name == "SCAN":
        cursor, keys = value
        return cursor, [rem(ns, k) for k in keys]
    if name in ("KEYS",):
        return [rem(ns, k) for k in value]
    if name == "RANDOMKEY":
        return rem(ns, value)
    # BLPOP/BRPOP/BZPOP*: (key, value[, score])
    return (rem(ns, value[0]), *value[1:])


def channel(ns: str | None, name: str) -> str:
    """Mastodon's streaming server (streaming/index.js `redisPrefix`): `<ns>:` before every channel it
    subscribes to and every `subscribed:<channel>` key it sets; nothing without a namespace."""
    return f"{ns}:{name}" if ns else name
