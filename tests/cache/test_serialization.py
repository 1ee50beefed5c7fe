"""Serializers: round trips keep types (numpy bit-exact), garbage and forgeries are refused."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

import numpy as np
import pytest

from redline.cache.serialization import (
    JsonSerializer,
    MsgpackSerializer,
    Serializer,
    SignedPickleSerializer,
    serializer_from_name,
)
from redline.exceptions import ConfigError, SerializationError

SERIALIZERS: list[Serializer] = [
    JsonSerializer(),
    MsgpackSerializer(),
    SignedPickleSerializer(secret="test-secret"),
]

JSON_LIKE: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    3.25,
    "héllo",
    "",
    [],
    {},
    [1, "a", None, [2.5, {"x": [True]}]],
    {"nested": {"list": [1, 2, {"deep": None}], "f": 1e-300}},
]


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=repr)
@pytest.mark.parametrize("value", JSON_LIKE, ids=repr)
def test_json_like_values_round_trip_with_their_types(serializer: Serializer, value: Any) -> None:
    back = serializer.loads(serializer.dumps(value))
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=repr)
def test_bytes_and_tuples_round_trip(serializer: Serializer) -> None:
    raw = bytes(range(256))
    assert serializer.loads(serializer.dumps(raw)) == raw
    assert type(serializer.loads(serializer.dumps(raw))) is bytes
    assert serializer.loads(serializer.dumps((1, "a", None))) == (1, "a", None)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=repr)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int8", "uint64", "bool"])
def test_numpy_arrays_round_trip_bit_exact(serializer: Serializer, dtype: str) -> None:
    rng = np.random.default_rng(7)
    array = (rng.standard_normal((3, 384)) * 100).astype(dtype)
    back = serializer.loads(serializer.dumps(array))
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert back.tobytes() == array.tobytes()


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=repr)
def test_special_floats_and_non_contiguous_arrays_round_trip(serializer: Serializer) -> None:
    array = np.array([np.nan, -0.0, np.inf, 1e-45], dtype=np.float32)
    assert serializer.loads(serializer.dumps(array)).tobytes() == array.tobytes()
    strided = np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2]
    assert np.array_equal(serializer.loads(serializer.dumps(strided)), strided)
    scalar_shape = np.array(5.0)
    assert serializer.loads(serializer.dumps(scalar_shape)).shape == ()


def test_json_serializer_returns_read_only_arrays_without_copying() -> None:
    back = JsonSerializer().loads(JsonSerializer().dumps(np.ones(4)))
    assert not back.flags.writeable


def test_msgpack_nests_bytes_arrays_and_int_keys() -> None:
    serializer = MsgpackSerializer()
    emb = np.arange(3, dtype=np.float32)
    back = serializer.loads(serializer.dumps({"emb": emb, "raw": b"\x00\x01", 7: "seven"}))
    assert back["raw"] == b"\x00\x01"
    assert back[7] == "seven"
    assert back["emb"].tobytes() == emb.tobytes()


@pytest.mark.parametrize("serializer", [JsonSerializer(), MsgpackSerializer()], ids=repr)
def test_unsupported_types_name_the_type(serializer: Serializer) -> None:
    class Opaque:
        pass

    with pytest.raises(SerializationError, match="Opaque"):
        serializer.dumps(Opaque())
    with pytest.raises(SerializationError, match="set"):
        serializer.dumps({1, 2})


def test_object_arrays_are_refused() -> None:
    with pytest.raises(SerializationError, match="dtype object"):
        JsonSerializer().dumps(np.array([object()]))


GARBAGE: list[bytes] = [
    b"",
    b"\xff\x00\x01",
    b"jnot json{",
    b"m\xc1",
    b"n\x03<f4\x01" + (5).to_bytes(8, "little") + b"\x00" * 7,  # 5 floats promised, 7 bytes
    b"t{}",
]


@pytest.mark.parametrize("serializer", [JsonSerializer(), MsgpackSerializer()], ids=repr)
@pytest.mark.parametrize("data", GARBAGE, ids=repr)
def test_garbage_raises_serialization_error(serializer: Serializer, data: bytes) -> None:
    with pytest.raises(SerializationError):
        serializer.loads(data)


def test_signed_pickle_round_trips_any_picklable_value() -> None:
    serializer = SignedPickleSerializer(b"k" * 32)
    value = {"set": {1, 2}, "complex": 1 + 2j, "tuple": (1, (2, 3))}
    assert serializer.loads(serializer.dumps(value)) == value


class Boom:
    """Unpickling this would run code: a forged payload must never get that far."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (pytest.fail, ("unsigned pickle was unpickled",))


def test_unsigned_forged_and_garbage_pickles_are_refused_without_unpickling() -> None:
    serializer = SignedPickleSerializer("right-secret")
    evil = pickle.dumps(Boom())
    with pytest.raises(SerializationError, match="not a signed pickle value"):
        serializer.loads(evil)
    wrong_mac = hmac.new(b"wrong-secret", evil, hashlib.sha256).digest()
    with pytest.raises(SerializationError, match="bad signature"):
        serializer.loads(b"p" + wrong_mac + evil)
    signed = serializer.dumps([1, 2, 3])
    tampered = signed[:-2] + bytes([signed[-2] ^ 1]) + signed[-1:]
    with pytest.raises(SerializationError, match="bad signature"):
        serializer.loads(tampered)
    with pytest.raises(SerializationError):
        serializer.loads(b"p" + b"\x00" * 10)
    other = SignedPickleSerializer("another-secret")
    with pytest.raises(SerializationError, match="bad signature"):
        other.loads(signed)
    with pytest.raises(SerializationError, match="not a signed pickle value"):
        serializer.loads(JsonSerializer().dumps({"a": 1}))


def test_signed_pickle_rejects_an_empty_or_odd_secret() -> None:
    with pytest.raises(ValueError, match=r"^secret must not be empty$"):
        SignedPickleSerializer("")
    with pytest.raises(ValueError, match=r"^secret must not be empty$"):
        SignedPickleSerializer(b"")
    with pytest.raises(TypeError, match=r"^secret must be bytes or str, got int$"):
        SignedPickleSerializer(123)  # type: ignore[arg-type]
    assert "s3" not in repr(SignedPickleSerializer("s3"))


def test_serializer_from_name() -> None:
    assert isinstance(serializer_from_name("json"), JsonSerializer)
    assert isinstance(serializer_from_name("msgpack"), MsgpackSerializer)
    assert isinstance(serializer_from_name("pickle", secret="x"), SignedPickleSerializer)
    with pytest.raises(ConfigError, match="needs a secret"):
        serializer_from_name("pickle")
    with pytest.raises(ConfigError, match=r"unknown serializer 'yaml'"):
        serializer_from_name("yaml")


def test_loads_rejects_non_bytes() -> None:
    with pytest.raises(SerializationError, match="expected bytes to decode, got str"):
        JsonSerializer().loads("j{}")  # type: ignore[arg-type]
