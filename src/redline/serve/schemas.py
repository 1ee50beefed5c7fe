"""Request bodies of the API (OpenAI-compatible for embeddings); responses are plain dicts
serialised with orjson, documented by the response models here for /docs.

The request models validate; :func:`request_body_schemas` is what the OpenAPI document says
about the same bodies, with the server's limits in it (the pydantic schema cannot know them),
so that a body valid by the document is one the server accepts, and the other way round.

Example::

    EmbeddingRequest(input=["a", "b"], model="all-MiniLM-L6-v2", encoding_format="base64")
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MAX_LABELS",
    "NON_BLANK",
    "WHITESPACE",
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ErrorDetail",
    "ErrorResponse",
    "HealthResponse",
    "ModelCard",
    "ModelList",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "ReadyResponse",
    "RequestLimits",
    "Usage",
    "request_body_schemas",
]

MAX_LABELS = 256
MAX_USER_CHARS = 256
#: What ``str.strip()`` strips (``str.isspace``): an input of only these is empty to the server.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
#: A JSON Schema pattern (``\\uXXXX`` escapes read the same in every regex dialect) matching a
#: string with at least one character that is not :data:`WHITESPACE`.
NON_BLANK = "[^" + "".join(f"\\u{ord(char):04x}" for char in WHITESPACE) + "]"


def _texts(value: Any, field: str, *, tokens: bool = False) -> Any:
    """Accept a string or a non-empty list of strings (with *tokens*, also OpenAI's token-id
    forms, turned into marker strings: see :mod:`redline.serve.token_input`)."""
    if isinstance(value, str):
        return value
    if tokens:
        from redline.serve.token_input import token_inputs

        markers = token_inputs(value)
        if markers is not None:
            return markers
    if not isinstance(value, list):
        raise ValueError(f"{field} must be a string or a list of strings")
    if not value:
        raise ValueError(f"{field} must not be an empty list")
    if all(isinstance(item, str) for item in value):
        return value
    if all(isinstance(item, int) for item in value) or all(
        isinstance(item, list) for item in value
    ):
        raise ValueError(f"token-id arrays are not supported in {field}; send strings")
    raise ValueError(f"{field} must be a string or a list of strings")


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` (OpenAI-compatible)."""

    # strict: "5" or true is not an integer, as the JSON Schema says.
    model_config = ConfigDict(extra="ignore", strict=True)

    input: str | list[Any] = Field(
        description="A string, a list of strings, a list of token ids or a list of such lists."
    )
    model: str | None = Field(default=None, description="Served model id (see /v1/models).")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64 = little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(
        default=None, ge=1, description="Truncate to this many dimensions and renormalise."
    )
    user: str | None = Field(default=None, max_length=MAX_USER_CHARS)

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        return _texts(value, "input", tokens=True)

    @field_validator("dimensions", mode="before")
    @classmethod
    def _integral_float(cls, value: Any) -> Any:
        # JSON Schema counts 8.0 as an integer; strict mode alone would refuse it.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class PredictRequest(BaseModel):
    """``POST /v1/predict``: zero-shot classification of *text* against *labels*."""

    model_config = ConfigDict(extra="ignore", strict=True)

    text: str | list[Any] = Field(description="A string or a list of strings to classify.")
    labels: list[str] = Field(min_length=1, max_length=MAX_LABELS, description="Candidate labels.")
    model: str | None = None
    user: str | None = Field(default=None, max_length=MAX_USER_CHARS)

    @field_validator("text", mode="before")
    @classmethod
    def _check_text(cls, value: Any) -> Any:
        return _texts(value, "text")

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: list[str]) -> list[str]:
        if any(not label.strip() for label in value):
            raise ValueError("labels must be non-empty strings")
        if len(set(value)) != len(value):
            raise ValueError("labels must be distinct")
        return value


class RequestLimits(NamedTuple):
    """What the server enforces on a request body beyond its type (see ``Settings``)."""

    max_inputs: int
    max_chars: int | None  # None: over-long inputs are truncated, not refused
    model_ids: tuple[str, ...] | None  # None: not known before the model loads
    dimension: int | None


def request_body_schemas(limits: RequestLimits) -> dict[str, dict[str, Any]]:
    """JSON Schemas of the ``POST /v1/embeddings`` and ``/v1/predict`` bodies, by path."""
    text: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": NON_BLANK}
    if limits.max_chars is not None:
        text["maxLength"] = limits.max_chars

    def texts(description: str) -> dict[str, Any]:
        many = {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_inputs}
        return {"description": description, "anyOf": [text, many]}

    model: dict[str, Any] = {"type": "string"}
    if limits.model_ids is not None:
        model["enum"] = list(limits.model_ids)
    dimensions: dict[str, Any] = {"type": "integer", "minimum": 1}
    if limits.dimension is not None:
        dimensions["maximum"] = limits.dimension
    common = {
        "model": {
            "anyOf": [model, {"type": "null"}],
            "description": "Served model id (see /v1/models); null or absent: the served one.",
        },
        "user": {"anyOf": [{"type": "string", "maxLength": MAX_USER_CHARS}, {"type": "null"}]},
    }
    embeddings = {
        "title": "EmbeddingRequest",
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": texts("A string or a list of strings to embed (not blank)."),
            "encoding_format": {
                "type": "string",
                "enum": ["float", "base64"],
                "default": "float",
                "description": "base64 = little-endian float32 bytes, base64-encoded.",
            },
            "dimensions": {
                "anyOf": [dimensions, {"type": "null"}],
                "description": "Truncate to this many dimensions and renormalise.",
            },
            **common,
        },
    }
    predict = {
        "title": "PredictRequest",
        "type": "object",
        "required": ["text", "labels"],
        "properties": {
            "text": texts("A string or a list of strings to classify (not blank)."),
            "labels": {
                "type": "array",
                "items": text,
                "minItems": 1,
                "maxItems": min(MAX_LABELS, limits.max_inputs),
                "uniqueItems": True,
                "description": "Candidate labels (distinct, not blank).",
            },
            **common,
        },
    }
    return {"/v1/embeddings": embeddings, "/v1/predict": predict}


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong and what is allowed.")
    type: str = Field(description="invalid_request_error, authentication_error, ...")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="A machine-readable code, e.g. empty_input.")


class ErrorResponse(BaseModel):
    """Every error answer of the API (OpenAI's shape)."""

    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="model, batcher, cache, database: ok or why not")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class Prediction(BaseModel):
    index: int
    label: str
    scores: dict[str, float] = Field(description="softmax(20 * cosine) over the labels; sums to 1")
    similarities: dict[str, float] = Field(description="raw cosine similarity per label")


class PredictResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Prediction]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    version: str
    dimension: int
    max_input_tokens: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
