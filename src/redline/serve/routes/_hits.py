"""``POST /v1/embeddings`` answered from the in-process cache tier: the answer of a request
whose every input is there, the same bytes the general path sends, spliced from each
vector's JSON kept in ``state.encoded_hits`` (:mod:`redline.serve.encoded_hits`) with the
token counts kept beside it; not public API.

Everything else the general path does for such a request is done here the same way: the hits
counted by the cache, the lookup histogram, usage (with the tokens cached), ``X-Cache``,
``Server-Timing`` and the access log's cache result.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.embedder import l1_hits
from redline.serve.encoded_hits import EncodedHit
from redline.serve.model import Model, count_tokens
from redline.serve.routes._common import (
    InferenceCall,
    encoded_answer,
    record_usage,
    timing_header,
)

__all__ = ["answer_from_l1"]

ROUTE = "/v1/embeddings"
#: ``Server-Timing`` between the cache's and the total (``routes._common.timing_header``).
_NO_BATCH = timing_header(0.0, 0.0, 0.0, 0.0).partition(", ")[2].rpartition("0.000")[0]


async def answer_from_l1(
    request: Request,
    call: InferenceCall[Any],
    texts: list[str],
    dimensions: int | None,
    encoding_format: str,
) -> Response | None:
    """The answer to a request for *texts* when ``embedder.l1_hits`` finds them all, else
    ``None`` (nothing done: the general path answers)."""
    state, model = call.state, call.model
    found = l1_hits(state, model, texts, dimensions)
    if found is None:
        return None
    width = dimensions or model.dimension
    memo = state.encoded_hits
    entries = [
        memo.entry(key, value, width) for key, value in zip(found.keys, found.values, strict=True)
    ]
    uncounted = [index for index, entry in enumerate(entries) if entry.tokens is None]
    if uncounted:
        counts = count_tokens(model, [texts[index] for index in uncounted])
        for index, count in zip(uncounted, counts, strict=True):
            entries[index].tokens = count
    tokens = sum(entry.tokens or 0 for entry in entries)
    await record_usage(request, call, ROUTE, found.cache_result, len(texts), tokens,
                       len(texts), tokens)  # fmt: skip
    if len(entries) == 1:  # the usual request: its answer depends on its one input only
        answers = entries[0].answers
        content = answers.get(encoding_format)
        if content is None:
            content = answers[encoding_format] = _spliced(entries, encoding_format, model, tokens)
    else:
        content = _spliced(entries, encoding_format, model, tokens)
    total = time.perf_counter() - call.started
    timing = f"cache;dur={found.cache_seconds * 1000:.3f}, {_NO_BATCH}{total * 1000:.3f}"
    return encoded_answer(content, found.cache_result, timing, None)


def _spliced(entries: list[EncodedHit], encoding_format: str, model: Model, tokens: int) -> bytes:
    """The OpenAI-style list of *entries*' vectors, as the general path encodes it."""
    parts = [b'{"object":"list","data":[']
    for index, entry in enumerate(entries):
        if index:
            parts.append(b",")
        parts += (b'{"object":"embedding","index":', str(index).encode(), b',"embedding":',
                  entry.json(encoding_format), b"}")  # fmt: skip
    usage = b'"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (tokens, tokens)
    parts += (b'],"model":', orjson.dumps(model.name), b",", usage)
    return b"".join(parts)
