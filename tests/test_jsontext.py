"""The one compact and the one canonical JSON encoder (neoq.jsontext)."""

from __future__ import annotations

import json

import pytest

from neoq.jsontext import FLAT_ENCODE, canonical_json, compact_json


def test_compact_json_keeps_order_and_text_without_whitespace() -> None:
    assert compact_json({"b": [1, 2.5], "a": {"é": None, "t": True}}) == '{"b":[1,2.5],"a":{"é":null,"t":true}}'


def test_canonical_json_sorts_keys_and_escapes_to_ascii() -> None:
    assert canonical_json({"é": "ü", "b": [1, {"y": 1, "x": 2}]}) == '{"b":[1,{"x":2,"y":1}],"\\u00e9":"\\u00fc"}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_both_refuse_what_strict_json_cannot_hold(value: float) -> None:
    with pytest.raises(ValueError):
        compact_json({"x": value})
    with pytest.raises(ValueError):
        canonical_json({"x": value})


def test_the_flat_encoder_writes_what_compact_json_writes() -> None:
    if FLAT_ENCODE is None:  # pragma: no cover - a Python without the C accelerator
        pytest.skip("no C json encoder")
    payload = {"s": 'é"\n\x7f\U0001f389', "i": -(2**70), "f": 0.1, "big": 1e300, "t": False, "n": None}
    text = "".join(FLAT_ENCODE(payload, 0))
    assert text == compact_json(payload)
    assert json.loads(text) == payload
    with pytest.raises(ValueError):
        FLAT_ENCODE({"x": float("nan")}, 0)
