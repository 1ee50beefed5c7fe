"""Request bodies of the API (OpenAI-compatible for embeddings); responses are plain dicts
serialised with orjson, documented by the response models here for /docs.

Example::

    EmbeddingRequest(input=["a", "b"], model="all-MiniLM-L6-v2", encoding_format="base64")
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ModelCard",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "Usage",
]


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

    model_config = ConfigDict(extra="ignore")

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
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        return _texts(value, "input", tokens=True)


class PredictRequest(BaseModel):
    """``POST /v1/predict``: zero-shot classification of *text* against *labels*."""

    model_config = ConfigDict(extra="ignore")

    text: str | list[Any] = Field(description="A string or a list of strings to classify.")
    labels: list[str] = Field(min_length=1, max_length=256, description="Candidate labels.")
    model: str | None = None
    user: str | None = Field(default=None, max_length=256)

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
