"""Serializers for remote cache tiers: bytes in Redis, the same value back out.

>>> serializer = JsonSerializer()
>>> serializer.loads(serializer.dumps({"a": [1, 2.5, None]}))
{'a': [1, 2.5, None]}

Every encoded value starts with a one-byte type header, so values come back as they went in:

* ``b"j"`` JSON (orjson): ``dict`` (``str`` keys), ``list``, ``str``, ``int``, ``float``,
  ``bool``, ``None``. Nested tuples come back as lists.
* ``b"m"`` msgpack: the same plus nested ``bytes`` and nested numpy arrays, and non-``str``
  dict keys. Nested tuples come back as lists.
* ``b"t"`` a top-level tuple (its items encoded as a JSON / msgpack list).
* ``b"b"`` raw ``bytes`` (stored as they are).
* ``b"n"`` a numpy array: dtype, shape and the raw C-order bytes, bit-exact. It comes back
  as a read-only array over the stored buffer (zero-copy); ``.copy()`` it to write.
* ``b"p"`` signed pickle (:class:`SignedPickleSerializer`): HMAC-SHA256 of the payload,
  checked with :func:`hmac.compare_digest` before anything is unpickled.

Anything undecodable, truncated, of an unknown header or forged raises
:class:`~redline.exceptions.SerializationError`; so does a type that cannot be encoded.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
import sys
from typing import Any, Protocol, runtime_checkable

import msgpack
import orjson

from redline.exceptions import ConfigError, SerializationError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "Serializer",
    "SignedPickleSerializer",
    "serializer_from_name",
]

_JSON, _MSGPACK, _TUPLE, _BYTES, _NDARRAY, _PICKLE = b"j", b"m", b"t", b"b", b"n", b"p"
_NDARRAY_EXT = 1
_MAC_SIZE = 32


@runtime_checkable
class Serializer(Protocol):
    """Turns cache values into bytes and back; ``loads`` raises ``SerializationError``."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _is_ndarray(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _dump_ndarray(array: Any) -> bytes:
    """dtype length, dtype, ndim, shape (uint64 each), then the raw C-order bytes."""
    if array.dtype.hasobject:
        raise SerializationError("cannot serialize a numpy array of dtype object")
    dtype = array.dtype.str.encode()
    layout = f"<B{len(dtype)}sB{array.ndim}Q"
    header = struct.pack(layout, len(dtype), dtype, array.ndim, *array.shape)
    data: bytes = array.tobytes()
    return header + data


def _load_ndarray(data: bytes | memoryview) -> Any:
    import numpy

    try:
        view = memoryview(data)
        dtype_len = view[0]
        dtype = numpy.dtype(bytes(view[1 : 1 + dtype_len]).decode())
        ndim = view[1 + dtype_len]
        offset = 2 + dtype_len
        shape = struct.unpack_from(f"<{ndim}Q", view, offset)
        offset += 8 * ndim
        count = 1
        for dim in shape:
            count *= dim
        if dtype.hasobject or len(view) - offset != count * dtype.itemsize:
            raise ValueError("array payload does not match its dtype and shape")
        return numpy.frombuffer(view, dtype=dtype, count=count, offset=offset).reshape(shape)
    except (ValueError, TypeError, IndexError, struct.error) as exc:
        raise SerializationError(f"corrupt numpy array value: {exc}") from exc


def _split(data: bytes) -> tuple[bytes, memoryview]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SerializationError(f"expected bytes to decode, got {type(data).__name__}")
    if len(data) == 0:
        raise SerializationError("cannot decode an empty value")
    view = memoryview(data)
    return bytes(view[:1]), view[1:]


class _HeaderedSerializer:
    """The type header shared by the JSON and msgpack serializers: raw ``bytes`` and numpy
    arrays are stored as they are, tuples come back as tuples; everything else goes through
    the subclass's ``_encode`` / ``_decode`` under its own header."""

    _header: bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def dumps(self, value: Any) -> bytes:
        kind = type(value)
        if kind is bytes:
            return _BYTES + bytes(value)
        if _is_ndarray(value):
            return _NDARRAY + _dump_ndarray(value)
        return (_TUPLE if kind is tuple else self._header) + self._encode(value)

    def loads(self, data: bytes) -> Any:
        header, body = _split(data)
        if header == _BYTES:
            return bytes(body)
        if header == _NDARRAY:
            return _load_ndarray(body)
        if header == self._header:
            return self._decode(body)
        if header == _TUPLE:
            value = self._decode(body)
            if type(value) is not list:
                raise SerializationError("corrupt tuple value: payload is not a list")
            return tuple(value)
        raise SerializationError(f"unknown value header {header!r} for {type(self).__name__}")

    def _encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def _decode(self, body: memoryview) -> Any:
        raise NotImplementedError


class JsonSerializer(_HeaderedSerializer):
    """orjson with a type header (the default for Redis); see the module docstring."""

    _header = _JSON

    def _encode(self, value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError as exc:
            raise SerializationError(
                f"JsonSerializer cannot encode a value of type {type(value).__name__}: {exc}"
            ) from exc

    def _decode(self, body: memoryview) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"corrupt JSON value: {exc}") from exc


def _msgpack_default(value: Any) -> Any:
    if _is_ndarray(value):
        return msgpack.ExtType(_NDARRAY_EXT, _dump_ndarray(value))
    raise TypeError(f"cannot encode a value of type {type(value).__name__}")


def _msgpack_ext(code: int, data: bytes) -> Any:
    if code == _NDARRAY_EXT:
        return _load_ndarray(data)
    raise SerializationError(f"unknown msgpack extension type {code}")


class MsgpackSerializer(_HeaderedSerializer):
    """msgpack with a type header: compact, and nests ``bytes`` and numpy arrays."""

    _header = _MSGPACK

    def _encode(self, value: Any) -> bytes:
        try:
            packed: bytes = msgpack.packb(value, use_bin_type=True, default=_msgpack_default)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"MsgpackSerializer cannot encode a value of type {type(value).__name__}: {exc}"
            ) from exc
        return packed

    def _decode(self, body: memoryview) -> Any:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=_msgpack_ext)
        except SerializationError:
            raise
        except Exception as exc:  # msgpack raises a zoo of types on garbage
            raise SerializationError(f"corrupt msgpack value: {exc}") from exc


class SignedPickleSerializer:
    """pickle behind an HMAC-SHA256: any Python value, never unpickles an unsigned payload.

    >>> serializer = SignedPickleSerializer(secret="s3cret")
    >>> serializer.loads(serializer.dumps({1, 2}))
    {1, 2}

    Use it only when every writer shares *secret*; a forged, truncated or unsigned value
    raises :class:`~redline.exceptions.SerializationError` and is never unpickled.
    """

    def __init__(self, secret: bytes | str) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes):
            raise TypeError(f"secret must be bytes or str, got {type(secret).__name__}")
        if not secret:
            raise ValueError("secret must not be empty")
        self._secret = secret

    def __repr__(self) -> str:
        return "SignedPickleSerializer(secret=***)"

    def _mac(self, payload: bytes | memoryview) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError...
            raise SerializationError(
                f"SignedPickleSerializer cannot pickle a value of type {type(value).__name__}: "
                f"{exc}"
            ) from exc
        return _PICKLE + self._mac(payload) + payload

    def loads(self, data: bytes) -> Any:
        header, body = _split(data)
        if header != _PICKLE or len(body) < _MAC_SIZE:
            raise SerializationError("not a signed pickle value; refusing to unpickle it")
        mac, payload = body[:_MAC_SIZE], body[_MAC_SIZE:]
        if not hmac.compare_digest(self._mac(payload), bytes(mac)):
            raise SerializationError("signed pickle value has a bad signature; refusing it")
        try:
            return pickle.loads(payload)
        except Exception as exc:  # a correctly signed payload should always load
            raise SerializationError(f"signed pickle value cannot be unpickled: {exc}") from exc


def serializer_from_name(name: str, secret: bytes | str | None = None) -> Serializer:
    """The serializer called ``"json"``, ``"msgpack"`` or ``"pickle"`` (which needs *secret*).

    >>> serializer_from_name("msgpack")
    MsgpackSerializer()
    """
    if name == "json":
        return JsonSerializer()
    if name == "msgpack":
        return MsgpackSerializer()
    if name == "pickle":
        if secret is None:
            raise ConfigError("the pickle serializer needs a secret (HMAC key)")
        return SignedPickleSerializer(secret)
    raise ConfigError(f"unknown serializer {name!r}; expected 'json', 'msgpack' or 'pickle'")
