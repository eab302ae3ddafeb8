"""Server-sent events framing for chat completion chunks.

Once the response headers have gone out, an error can no longer change the
status code, so it becomes an ``error`` event followed by ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel

from kathan.errors import EngineError, KathanError

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def encode(data: str, event: str | None = None) -> bytes:
    """Frame one event. ``data`` may span lines; each line gets its own ``data:``."""
    lines = [f"event: {event}"] if event else []
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


async def encode_stream(items: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    """Frame every item as JSON, then ``[DONE]``; errors become an ``error`` event."""
    try:
        async for item in items:
            yield encode(item.model_dump_json())
    except KathanError as exc:
        yield encode(json.dumps(exc.body()), event="error")
    except Exception:
        logger.exception("stream failed after headers were sent")
        error = EngineError("The stream failed; see the server log.")
        yield encode(json.dumps(error.body()), event="error")
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE
