"""The Redis backend's scripts (``lua/*.lua``): every state change is one of them, atomic on the
server and timed by the server's clock (``TIME``).

Each script is ``base.lua`` (and ``common.lua`` for those that read rows or store batches)
followed by its own file, run by its SHA (``EVALSHA``) and loaded
with ``SCRIPT LOAD`` when the server answers ``NOSCRIPT``: at its first use, and after a server
restart (or ``SCRIPT FLUSH``). ``KEYS[1]`` is the
namespace's ``seq`` key, so a Cluster client sends the call to the namespace's slot;
``ARGV[1]`` is the namespace (the prefix and hash tag of every key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import resources
from time import monotonic
from typing import Any

import redis

from ...errors import BackendConnectionError, BackendError
from .settings import RedisSettings

__all__ = ["SCRIPT_NAMES", "Scripts", "wrap_error"]

SCRIPT_NAMES = (
    "enqueue",
    "enqueue_one",
    "tick",
    "fetch",
    "settle",
    "renew",
    "give_back",
    "cancel",
    "retry",
    "read",
    "stats",
    "prune",
    "progress",
    "pause",
    "rate",
)


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


#: The scripts that neither read rows nor store batches: base.lua alone in front (each call runs
#: the whole text, so every helper defined costs a little).
_BASE_ONLY = frozenset({"enqueue_one", "fetch"})
_BASE, _COMMON = _source("base"), _source("common")
_SOURCES = {
    name: "\n".join((_BASE, _source(name)) if name in _BASE_ONLY else (_BASE, _COMMON, _source(name)))
    for name in SCRIPT_NAMES
}


def wrap_error(settings: RedisSettings, exc: BaseException, doing: str) -> BackendError:
    """A redis-py error as neoq's: ``BackendConnectionError`` when the server cannot be reached."""
    detail = settings.scrub(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BackendConnectionError(f"Redis at {settings.safe_url} cannot be reached while {doing} ({detail})")
    return BackendError(f"Redis at {settings.safe_url} failed while {doing} ({detail})")


class Scripts:
    """The scripts of one client; ``run`` calls one by its SHA and wraps the driver's errors.

    On one server, a call packs ``EVALSHA`` itself (the SHA, the key and the namespace packed
    once) and sends it over a connection of the client's own (``_Connections``): redis-py's
    ``execute_command`` adds pool bookkeeping, metrics and a retry wrapper that cost about as
    much as the rest of an enqueue on the client (callgrind: 155k instructions a call, against
    61k this way). A Cluster client routes each call itself: ``execute_command``. A ``NOSCRIPT``
    answer loads the script and sends it again.
    """

    def __init__(self, client: redis.Redis, settings: RedisSettings) -> None:
        self.settings = settings
        self._client = client
        self._execute: Callable[..., Any] = client.execute_command
        self._key = settings.key("seq")
        self._namespace = settings.namespace
        self._shas = {name: hashlib.sha1(source.encode("utf-8")).hexdigest() for name, source in _SOURCES.items()}
        self._heads = {name: _bulk(("EVALSHA", sha, 1, self._key, self._namespace)) for name, sha in self._shas.items()}
        pool = getattr(client, "connection_pool", None)
        self._connections = _Connections(pool) if type(client) is redis.Redis and pool is not None else None

    def close(self) -> None:
        """Close the connections of the client's own (the pool closes the rest)."""
        if self._connections is not None:
            self._connections.close()

    def run(self, name: str, args: list[Any], doing: str) -> Any:
        """Run script ``name`` with ``args`` after the namespace; its reply, or a ``BackendError``."""
        try:
            try:
                return self._call(name, args)
            except redis.exceptions.NoScriptError:
                # Not loaded yet, or the server restarted (or ran SCRIPT FLUSH) since: load it again.
                self._client.script_load(_SOURCES[name])
                return self._call(name, args)
        except redis.RedisError as exc:
            raise wrap_error(self.settings, exc, doing) from exc

    def _call(self, name: str, args: list[Any]) -> Any:
        connections = self._connections
        if connections is None:
            return self._execute("EVALSHA", self._shas[name], 1, self._key, self._namespace, *args)
        return connections.call(b"*%d\r\n%s%s" % (5 + len(args), self._heads[name], _bulk(args)))


#: A connection whose last reply came less than this many seconds ago is used without first
#: polling it for a close by the server (a system call and 20k instructions, a fifth of an
#: enqueue's client side): a server that closed it within that time and is back already (a
#: restart takes longer) would fail the call with ``BackendConnectionError``, nothing done.
_FRESH = 0.05


def _bulk(args: Any) -> bytes:
    """``args`` as RESP bulk strings (text as UTF-8, numbers as their decimal text)."""
    parts: list[bytes] = []
    for arg in args:
        data = arg.encode() if type(arg) is str else arg if type(arg) is bytes else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


#: What ``_parse`` answers for a reply not all received yet.
_MORE = object()


def _read(connection: Any) -> Any:
    """The reply to the command just sent, read from the connection's socket here (RESP2 or
    RESP3, as the connection speaks): redis-py's parser cost 25k instructions a reply, most of
    an enqueue's call. As redis-py answers with
    ``decode_responses``: text as ``str``, an error reply raised as its ``RedisError``, a lost
    connection as ``ConnectionError`` (``TimeoutError`` after ``socket_timeout``), disconnected."""
    sock = getattr(connection, "_sock", None)
    if sock is None:  # pragma: no cover - a redis-py without the attribute: its own parser
        return connection.read_response()
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise redis.ConnectionError("Connection closed by server.")
            data += chunk
            reply, end = _parse(data, 0)
            if reply is not _MORE:
                break
    except TimeoutError:
        connection.disconnect()
        raise redis.TimeoutError("Timeout reading from the Redis server") from None
    except (OSError, redis.ConnectionError) as exc:
        connection.disconnect()
        raise redis.ConnectionError(f"Error while reading from the Redis server: {exc}") from None
    except BaseException:
        connection.disconnect()
        raise
    if end != len(data):  # pragma: no cover - more than one reply: the connection is not ours to trust
        connection.disconnect()
        raise redis.ConnectionError("the Redis server sent more than the one reply expected")
    if isinstance(reply, _Error):
        raise reply.exception(connection)
    return reply


class _Error(str):
    """An error reply, raised by ``_read`` as redis-py would raise it."""

    def exception(self, connection: Any) -> redis.RedisError:
        parse = getattr(getattr(connection, "_parser", None), "parse_error", None)
        return parse(str(self)) if parse is not None else redis.ResponseError(str(self))


def _parse(data: bytes, at: int) -> tuple[Any, int]:
    """One RESP2 or RESP3 reply of ``data`` from ``at``, decoded as redis-py decodes it: (the
    value, where it ends), or (``_MORE``, 0) when it is not all there yet."""
    end = data.find(b"\r\n", at)
    if end < 0:
        return _MORE, 0
    kind, line, at = data[at], data[at + 1 : end], end + 2
    if kind == 58 or kind == 40:  # ":" an integer, "(" a big number
        return int(line), at
    if kind == 36 or kind == 61 or kind == 33:  # "$" a bulk string, "=" verbatim text, "!" a bulk error
        size = int(line)
        if size < 0:
            return None, at
        if len(data) < at + size + 2:
            return _MORE, 0
        text = data[at + 4 if kind == 61 else at : at + size].decode()  # verbatim text: after "txt:"
        return (_Error(text) if kind == 33 else text), at + size + 2
    if kind == 42 or kind == 126 or kind == 37:  # "*" an array, "~" a set, "%" a map
        size = int(line)
        if size < 0:
            return None, at
        items = []
        for _ in range(size * 2 if kind == 37 else size):
            item, at = _parse(data, at)
            if item is _MORE:
                return _MORE, 0
            items.append(item)
        return (dict(zip(items[::2], items[1::2], strict=True)) if kind == 37 else items), at
    if kind == 43:  # "+" a simple string
        return line.decode(), at
    if kind == 45:  # "-" an error
        return _Error(line.decode()), at
    if kind == 95:  # "_" null (RESP3)
        return None, at
    if kind == 35:  # "#" a boolean (RESP3)
        return line == b"t", at
    if kind == 44:  # "," a double (RESP3)
        return float(line), at
    # A push message or an attribute: nothing the scripts' connections ask for.
    raise redis.ConnectionError(f"the Redis server sent a reply of an unexpected kind {chr(kind)!r}")


class _Connections:
    """Connections of the scripts' own, made by the client's pool with its settings (timeouts,
    TLS, password, health checks) but kept apart from its bookkeeping: an idle one is popped
    from a list (atomic under the GIL) and pushed back after its reply, with the time of it."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[tuple[Any, float]] = []
        self._made: list[Any] = []
        self._closed = False

    def call(self, packed: bytes) -> Any:
        """Send one packed command and read its reply (a ``redis.RedisError`` when it fails)."""
        try:
            connection, used = self._idle.pop()
        except IndexError:
            if self._closed:
                raise redis.ConnectionError("the Redis backend was closed") from None
            connection, used = self._pool.make_connection(), 0.0
            self._made.append(connection)
        try:
            if monotonic() - used > _FRESH:
                # As the pool does: an idle connection with something to read (the server closed
                # it, or a reply was left unread) is connected again before it is used.
                try:
                    if connection.can_read():
                        raise redis.ConnectionError("the connection has data")
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    connection.disconnect()
                    connection.connect()
            connection.send_packed_command((packed,))
            reply = _read(connection)
        except BaseException:
            used = 0.0  # looked at again before its next use
            raise
        else:
            used = monotonic()
        finally:
            if self._closed:
                connection.disconnect()
            else:
                self._idle.append((connection, used))
        return reply

    def close(self) -> None:
        self._closed = True
        for connection in self._made:
            connection.disconnect()
