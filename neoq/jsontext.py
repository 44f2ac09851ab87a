"""The JSON text neoq writes: the compact text a payload is stored as, and the canonical text of a fingerprint.

One encoder of each, built once: ``json.dumps()`` with any option builds a new encoder per call, a
third of its cost for a small payload. Both refuse NaN and the infinities (``ValueError``), which
strict JSON, and so PostgreSQL's ``jsonb``, cannot hold: every backend stores the same text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

try:
    from _json import encode_basestring as _c_encode_basestring
    from _json import make_encoder as _c_make_encoder
except ImportError:  # pragma: no cover - no C accelerator (PyPy): JSONEncoder.encode only
    _c_make_encoder = None  # type: ignore[assignment, misc]

__all__ = ["FLAT_ENCODE", "canonical_json", "compact_json"]

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

#: ``compact_json(value)`` returns the text a payload is stored as: no whitespace, keys in the
#: mapping's order, non-ASCII text as it is. The encoder's own method, so a call costs no more.
compact_json: Callable[[Any], str] = _COMPACT.encode


def canonical_json(payload: Any) -> str:
    """Return the canonical JSON text of ``payload``: sorted keys, no whitespace, ASCII only."""
    return _CANONICAL.encode(payload)


def _flat_encoder() -> Callable[[object, int], Sequence[str]] | None:
    """``compact_json``'s C encoder built once (``JSONEncoder.encode`` builds one per call, most of its
    cost for a small payload), for flat payloads only (a dict of str keys and JSON scalars): they
    hold no container, so the encoder needs no cycle check. ``None`` where the C accelerator is
    missing, or where it does not take these arguments or write what ``compact_json`` writes (it
    is private to ``json``)."""
    if _c_make_encoder is None:
        return None
    sample = {"s": '\u00e9"\n', "i": -1, "f": 1e16, "t": True, "n": None}
    try:
        encode = _c_make_encoder(None, _COMPACT.default, _c_encode_basestring, None, ":", ",", False, False, False)
        if "".join(encode(sample, 0)) != _COMPACT.encode(sample):
            return None
    except Exception:  # pragma: no cover - another Python's json internals
        return None
    return encode


#: For a flat payload only: ``"".join(FLAT_ENCODE(payload, 0)) == compact_json(payload)``, at a
#: fraction of the cost. ``None`` where the C accelerator cannot serve (use ``compact_json``).
FLAT_ENCODE = _flat_encoder()
