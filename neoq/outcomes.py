"""What an attempt hands back, as the stores keep it: its error text, traceback, result and progress.

The runtime turns a handler's return value into JSON text (``result_text``), an exception into
``"<Class>: message"`` (``error_text``) and its formatted traceback (``traceback_text``), and checks
a progress report (``check_progress``); every backend stores the same texts.
"""

from __future__ import annotations

import math
import sys
import traceback
from types import CodeType
from typing import Any

from .defaults import MAX_PAYLOAD_DEPTH, MAX_PROGRESS_NOTE_LENGTH, MAX_RESULT_SIZE, MAX_TRACEBACK_LENGTH
from .errors import InvalidJobError, InvalidProgressError
from .jsontext import compact_json

__all__ = [
    "check_progress",
    "error_text",
    "exception_name",
    "result_text",
    "running_stack_text",
    "storable",
    "traceback_text",
]

#: Modules whose exceptions are named without their module: Python's own, and neoq's.
_BARE_MODULES = frozenset({"builtins", "neoq.errors"})


def exception_name(exc: BaseException) -> str:
    """The name ``Job.error`` gives ``exc``'s class: ``module.QualName``, bare for builtins and neoq's errors."""
    cls = type(exc)
    module = getattr(cls, "__module__", None)
    if not isinstance(module, str) or module in _BARE_MODULES:
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def storable(text: str) -> str:
    """``text`` as every store can keep it: NUL written ``\\x00``, a lone surrogate as its escape."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def error_text(exc: BaseException) -> str:
    """Return ``"<ExceptionClass>: <message>"`` for ``exc``, as kept in ``Job.error``.

    The class is named by ``exception_name``. The text is made storable by every backend, so each
    stores the same: a NUL character is written ``\\x00`` (PostgreSQL's text cannot hold it) and a
    lone surrogate (a file name from ``os.fsdecode``) as its backslash escape, ``\\udce9``. An
    outcome that cannot be stored would lose the attempt's result. An exception whose ``str()``
    raises is named without its message.
    """
    name = exception_name(exc)
    try:
        message = str(exc)
    except BaseException:  # a broken __str__ must not lose the attempt's outcome either
        return f"{name}: <str() of the exception raised>"
    message = storable(message)
    return f"{name}: {message}" if message else name


def traceback_text(exc: BaseException) -> str:
    """The formatted traceback of ``exc`` as ``Job.traceback`` keeps it (storable, at most
    ``MAX_TRACEBACK_LENGTH`` characters: a longer one keeps its start and its end)."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # a broken __str__ or __repr__ in the chain
        text = f"Traceback unavailable: formatting it failed\n{error_text(exc)}\n"
    text = storable(text)
    if len(text) > MAX_TRACEBACK_LENGTH:
        half = MAX_TRACEBACK_LENGTH // 2 - 40
        text = f"{text[:half]}\n... ({len(text) - 2 * half} characters left out) ...\n{text[-half:]}"
    return text


def running_stack_text(code: CodeType, local: str, value: object, error: str) -> str | None:
    """The stack of the thread running ``code`` with ``local`` bound to ``value`` (a handler that an
    attempt's end left running), from that frame inward, as a traceback ending with ``error``;
    ``None`` when no thread runs it (it returned meanwhile). Read only when an attempt times out."""
    try:
        for frame in sys._current_frames().values():
            inner, found = frame, None
            while frame is not None:
                if frame.f_code is code and frame.f_locals.get(local) is value:
                    found = frame
                    break
                frame = frame.f_back  # type: ignore[assignment]
            if found is None:
                continue
            frames = list(traceback.walk_stack(inner))
            frames = frames[: next(i for i, (f, _) in enumerate(frames) if f is found)]
            summary = traceback.StackSummary.extract(reversed(frames), capture_locals=False)
            text = "Stack of the handler when its attempt ended (most recent call last):\n"
            return storable(text + "".join(summary.format()) + error + "\n")[-MAX_TRACEBACK_LENGTH:]
    except Exception:  # a best effort: the attempt's outcome must not depend on it
        return None
    return None


def result_text(value: Any) -> str:
    """The JSON text of a handler's return value, with the payload's rules; ``InvalidJobError`` else.

    Strict JSON (no NaN or infinities), string keys at every depth, no NUL, no lone surrogate, at
    most ``MAX_PAYLOAD_DEPTH`` levels and ``MAX_RESULT_SIZE`` characters.
    """
    _check_result(value)
    try:
        text = compact_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidJobError(
            f"the handler returned a {type(value).__name__} that strict JSON cannot encode: {exc}"
        ) from None
    if len(text) > MAX_RESULT_SIZE:
        raise InvalidJobError(
            f"the handler returned {len(text):,} characters of JSON; the limit is {MAX_RESULT_SIZE:,} "
            "(neoq.defaults.MAX_RESULT_SIZE): store large results elsewhere and return a reference"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJobError("the handler's result holds a lone surrogate, which UTF-8 cannot encode") from None
    return text


def _check_result(value: Any) -> None:
    stack: list[tuple[Any, str, int]] = [(value, "result", 1)]
    while stack:
        item, path, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                raise InvalidJobError(f"the handler's result text at {path} contains a NUL character")
        elif kind is float:
            if math.isnan(item) or math.isinf(item):
                raise InvalidJobError(f"the handler's result at {path} is {item!r}, which strict JSON cannot hold")
        elif isinstance(item, dict):
            if depth > MAX_PAYLOAD_DEPTH:
                raise InvalidJobError(f"the handler's result is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
            for key, sub in item.items():
                if type(key) is not str:
                    raise InvalidJobError(
                        f"the handler's result has the key {key!r} at {path}, a {type(key).__name__}; "
                        "JSON object keys must be strings"
                    )
                stack.append((sub, f"{path}.{key}", depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth > MAX_PAYLOAD_DEPTH:
                raise InvalidJobError(f"the handler's result is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
            stack.extend((sub, f"{path}[{index}]", depth + 1) for index, sub in enumerate(item))
        elif item is not None and kind is not bool and kind is not int and not isinstance(item, (int, float, str)):
            name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            where = "the handler returned a" if path == "result" else f"the handler's result holds at {path} a"
            raise InvalidJobError(
                f"{where} {name}, which strict JSON "
                "cannot encode; return None, a bool, a number, a str, a list or a dict of them"
            )


def check_progress(fraction: object, note: object) -> tuple[float, str | None]:
    """Return a progress report as stored, or raise ``InvalidProgressError`` saying what to fix."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise InvalidProgressError(f"progress fraction must be a number from 0.0 to 1.0, not {type(fraction).__name__}")
    value = float(fraction)
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise InvalidProgressError(f"progress fraction must lie between 0.0 and 1.0, got {fraction!r}")
    if note is None:
        return value, None
    if not isinstance(note, str):
        raise InvalidProgressError(f"progress note must be a str or None, not {type(note).__name__}")
    if len(note) > MAX_PROGRESS_NOTE_LENGTH:
        raise InvalidProgressError(
            f"progress note is {len(note):,} characters; the limit is {MAX_PROGRESS_NOTE_LENGTH:,}"
        )
    return value, storable(note)
