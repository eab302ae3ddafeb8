"""``POST /v1/responses`` (a ``GenerationRoute`` like chat's), ``GET`` and ``DELETE
/v1/responses/{id}``: OpenAI's Responses API.

The request is translated once (``protocol/responses.to_chat``), after the response it
continues (``previous_response_id``) is read from the store, and takes the one request
path: key, limits, ledger row (endpoint ``responses``), routing, voice. The deltas that
come back are built into the response's output items by ``_Builder``, which gives the
typed events of the stream (each with its ``sequence_number``) and, gathered, the
response object; both come from the same deltas. Reasoning deltas become a
``reasoning`` item (its text as ``reasoning_text``, no summary) before the message. A response with ``store`` (the
default where the server has a store, as OpenAI's is) is written to the store before
its last event or its JSON goes out, so that the client can continue it at once; it
belongs to the caller's account, and another account's ``GET`` or ``DELETE`` is a 404.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from kathan.api import responses as docs
from kathan.api.deps import ApiKeyDep, admitted, refused
from kathan.api.disconnect import unless_disconnected
from kathan.api.errors import as_kathan_error
from kathan.api.routes import GenerationRoute
from kathan.api.sse import EventStreamResponse, encode
from kathan.auth.principal import Principal
from kathan.backends.base import Delta, TokenUsage
from kathan.errors import InternalServerError, InvalidRequestError, KathanError, NotFoundError
from kathan.protocol import responses as wire
from kathan.protocol.chat import TokenLogprob
from kathan.service.chat import ChatService
from kathan.service.generation import Generation
from kathan.store import repo
from kathan.store.db import Database

logger = logging.getLogger(__name__)

PATH = "/v1/responses"

_STREAM_DOC = {
    "description": "A response, or with `stream: true` its typed events (`response.created`, "
    "..., `response.completed`), each with a `sequence_number`.",
    "content": {"text/event-stream": {"schema": {
        "type": "object",
        "description": "One event: `event` names it, `data` is its JSON.",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        "required": ["data"],
    }}},
}


def owner_of(principal: Principal) -> str:
    """Whose stored responses a caller sees: its account's, or for the keys of
    ``KATHAN_API_KEYS`` (admins with no account) theirs together."""
    return principal.account_id or "static"


def _logprobs(items: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    return [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes or [],
             "top_logprobs": [{"token": top.token, "logprob": top.logprob,
                               "bytes": top.bytes or []} for top in t.top_logprobs]}
            for t in items]


def _usage(usage: TokenUsage) -> wire.ResponseUsage:
    return wire.ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=wire.InputTokensDetails(cached_tokens=usage.cached_tokens),
        output_tokens=usage.completion_tokens,
        output_tokens_details=wire.OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
        total_tokens=usage.prompt_tokens + usage.completion_tokens)


Event = dict[str, Any]
Item = wire.OutReasoning | wire.OutMessage | wire.OutFunctionCall


class _Builder:
    """A response's output items, built from its deltas: each step gives the stream's
    events (``feed``, ``finish``, ``fail``), and ``response`` is the object they build."""

    def __init__(self, response: wire.ResponseObject, want_logprobs: bool) -> None:
        self.response = response
        self._logprobs = want_logprobs
        self._sequence = 0
        self._open: Item | None = None
        self._text: list[str] = []  # the open message's, or the open reasoning's
        self._text_logprobs: list[dict[str, Any]] = []
        self._calls: dict[int, wire.OutFunctionCall] = {}  # a tool call's index -> its item
        self._finish: str | None = None
        self._usage: TokenUsage | None = None
        self._ids = response.id.removeprefix("resp_")

    def event(self, kind: str, **data: Any) -> Event:
        event = {"type": kind, **data, "sequence_number": self._sequence}
        self._sequence += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return self.response.model_dump(mode="json")

    def start(self) -> list[Event]:
        return [self.event("response.created", response=self._snapshot()),
                self.event("response.in_progress", response=self._snapshot())]

    def _add(self, item: Item) -> Event:
        self.response.output.append(item)
        self._open = item
        return self.event("response.output_item.added", output_index=len(
            self.response.output) - 1, item=item.model_dump(mode="json"))

    def _close(self, status: wire.Status) -> list[Event]:
        item, self._open = self._open, None
        if item is None:
            return []
        index = self.response.output.index(item)
        item.status = status
        events = []
        if isinstance(item, wire.OutReasoning):
            reasoning = wire.OutReasoningText(text="".join(self._text))
            item.content = [reasoning]
            self._text = []
            events += [
                self.event("response.reasoning_text.done", item_id=item.id,
                           output_index=index, content_index=0, text=reasoning.text),
                self.event("response.content_part.done", item_id=item.id,
                           output_index=index, content_index=0,
                           part=reasoning.model_dump(mode="json")),
            ]
        elif isinstance(item, wire.OutMessage):
            text = "".join(self._text)
            part = wire.OutTextPart(text=text, logprobs=self._text_logprobs
                                    if self._logprobs else None)
            item.content = [part]
            self._text, self._text_logprobs = [], []
            events += [
                self.event("response.output_text.done", item_id=item.id, output_index=index,
                           content_index=0, text=text, logprobs=part.logprobs or []),
                self.event("response.content_part.done", item_id=item.id,
                           output_index=index, content_index=0,
                           part=part.model_dump(mode="json")),
            ]
        else:
            events.append(self.event(
                "response.function_call_arguments.done", item_id=item.id, output_index=index,
                name=item.name, arguments=item.arguments))
        events.append(self.event("response.output_item.done", output_index=index,
                                 item=item.model_dump(mode="json")))
        return events

    def feed(self, delta: Delta) -> list[Event]:
        if delta.usage is not None:
            self._usage = delta.usage
        if delta.index != 0:
            return []  # n is 1: a response has one answer
        events: list[Event] = []
        if delta.reasoning:
            events += self._think(delta.reasoning)
        # A reasoning token's logprobs are not the answer's: OpenAI gives none for them.
        if delta.content or (delta.logprobs and not delta.reasoning):
            if not isinstance(self._open, wire.OutMessage):
                events += self._begin(
                    wire.OutMessage(id=f"msg_{self._ids}_{len(self.response.output)}",
                                    status="in_progress", content=[]),
                    wire.OutTextPart(text="", logprobs=[] if self._logprobs else None))
            writing = self._open
            assert isinstance(writing, wire.OutMessage)
            probs = _logprobs(delta.logprobs) if self._logprobs else []
            self._text.append(delta.content or "")
            self._text_logprobs += probs
            events.append(self.event(
                "response.output_text.delta", item_id=writing.id,
                output_index=self.response.output.index(writing), content_index=0,
                delta=delta.content or "", logprobs=probs))
        for piece in delta.tool_calls:
            call = self._calls.get(piece.index)
            if call is None:
                events += self._close("completed")
                number = len(self.response.output)
                call = wire.OutFunctionCall(
                    id=f"fc_{self._ids}_{number}", call_id=piece.id or f"call_{self._ids}_"
                    f"{number}", name=piece.name or "", arguments="", status="in_progress")
                self._calls[piece.index] = call
                events.append(self._add(call))
            if piece.arguments:
                call.arguments += piece.arguments
                events.append(self.event(
                    "response.function_call_arguments.delta", item_id=call.id,
                    output_index=self.response.output.index(call), delta=piece.arguments))
        if delta.finish_reason is not None:
            self._finish = delta.finish_reason
        return events

    def _begin(self, item: wire.OutMessage | wire.OutReasoning,
               part: wire.OutTextPart | wire.OutReasoningText) -> list[Event]:
        """Close the open item, then open ``item`` and its first, empty content part."""
        events = self._close("completed")
        events.append(self._add(item))
        events.append(self.event(
            "response.content_part.added", item_id=item.id,
            output_index=len(self.response.output) - 1, content_index=0,
            part=part.model_dump(mode="json")))
        return events

    def _think(self, text: str) -> list[Event]:
        events: list[Event] = []
        if not isinstance(self._open, wire.OutReasoning):
            events += self._begin(
                wire.OutReasoning(id=f"rs_{self._ids}_{len(self.response.output)}",
                                  status="in_progress", content=[]),
                wire.OutReasoningText(text=""))
        thinking = self._open
        assert isinstance(thinking, wire.OutReasoning)
        self._text.append(text)
        events.append(self.event(
            "response.reasoning_text.delta", item_id=thinking.id,
            output_index=self.response.output.index(thinking), content_index=0, delta=text))
        return events

    def finish(self) -> list[Event]:
        """The last events of a response whose deltas all came."""
        response = self.response
        reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
            self._finish or "")
        events = self._close("incomplete" if reason else "completed")
        response.status = "incomplete" if reason else "completed"
        if reason is not None:
            response.incomplete_details = wire.IncompleteDetails(reason=reason)
        response.completed_at = time.time() if reason is None else None
        response.usage = _usage(self._usage) if self._usage is not None else None
        kind = "response.incomplete" if reason else "response.completed"
        return [*events, self.event(kind, response=self._snapshot())]

    def fail(self, error: KathanError) -> list[Event]:
        """The events of a response that failed after its stream began: the error, then
        the failed response with what it had produced."""
        response = self.response
        item = self._open
        if item is not None:  # what it had written, as it stood
            item.status = "incomplete"
            if isinstance(item, wire.OutReasoning):
                item.content = [wire.OutReasoningText(text="".join(self._text))]
            elif isinstance(item, wire.OutMessage):
                item.content = [wire.OutTextPart(
                    text="".join(self._text),
                    logprobs=self._text_logprobs if self._logprobs else None)]
        response.status = "failed"
        response.error = wire.ResponseError(code=error.code or "server_error",
                                            message=error.message)
        response.usage = _usage(self._usage) if self._usage is not None else None
        return [self.event("error", code=error.code, message=error.message,
                           param=error.param),
                self.event("response.failed", response=self._snapshot())]


def _sse(event: Event) -> bytes:
    return encode(json.dumps(event, ensure_ascii=False), event["type"])


class _Store:
    """Where a response is kept (``store``), and the conversation it continues."""

    def __init__(self, db: Database | None, owner: str, keep: bool) -> None:
        self.db = db
        self.owner = owner
        self.keep = keep
        self.items: list[dict[str, Any]] = []

    async def history(self, previous_id: str | None) -> list[Any]:
        """The items of the stored response ``previous_id`` and its output."""
        if previous_id is None:
            return []
        if self.db is None:
            raise InvalidRequestError(
                "previous_response_id: this server keeps no responses (it runs without a "
                "store: accounts: false); send the whole conversation as input.",
                param="previous_response_id", code="store_disabled")
        async with self.db.session() as session:
            row = await repo.get_response(session, previous_id, self.owner)
        if row is None:
            raise NotFoundError(f"previous_response_id: no response '{previous_id}' (it may "
                                "have been deleted, or made with store: false).", param="previous_response_id",
                                code="response_not_found")
        output = cast(list[dict[str, Any]], row.response["output"])
        return [*wire.load_items(row.items), *wire.output_items(output)]

    async def save(self, response: wire.ResponseObject) -> None:
        if not self.keep or self.db is None:
            return
        async with self.db.session() as session:
            await repo.store_response(session, response_id=response.id, owner=self.owner,
                                      items=self.items,
                                      response=response.model_dump(mode="json"))
            await session.commit()


def _skeleton(body: wire.ResponsesRequest, response_id: str, model: str,
              stored: bool) -> wire.ResponseObject:
    """The response before its output: the request's settings as OpenAI echoes them."""
    text: dict[str, Any] = {"format": {"type": "text"}}
    if body.text is not None and body.text.format is not None:
        text = {"format": body.text.format.model_dump(mode="json", by_alias=True,
                                                      exclude_none=True)}
    tools = [t.model_dump(mode="json", exclude_none=True) for t in body.tools or ()]
    choice = body.tool_choice
    return wire.ResponseObject(
        id=response_id, created_at=time.time(), status="in_progress", model=model,
        output=[], instructions=body.instructions, max_output_tokens=body.max_output_tokens,
        metadata=body.metadata or {}, parallel_tool_calls=body.parallel_tool_calls
        if body.parallel_tool_calls is not None else True,
        previous_response_id=body.previous_response_id,
        reasoning=body.reasoning.model_dump(mode="json") if body.reasoning else {
            "effort": None, "summary": None},
        store=stored, temperature=body.temperature, top_p=body.top_p,
        top_logprobs=body.top_logprobs, text=text,
        tool_choice=(choice if isinstance(choice, str) else choice.model_dump(mode="json"))
        if choice is not None else "auto",
        tools=tools, truncation=body.truncation or "disabled", user=body.user,
        safety_identifier=body.safety_identifier, prompt_cache_key=body.prompt_cache_key,
        service_tier="default")


async def _events(generation: Generation, builder: _Builder,
                  store: _Store) -> AsyncGenerator[bytes, None]:
    """The generation's deltas as the Responses stream (rendering only: the response owns
    and closes the generation)."""
    for event in builder.start():
        yield _sse(event)
    try:
        async for delta in generation:
            for event in builder.feed(delta):
                yield _sse(event)
        last = builder.finish()
        await store.save(builder.response)
    except Exception as exc:  # noqa: BLE001 - every error ends the stream as its events
        error = as_kathan_error(exc, where="stream")
        if isinstance(error, InternalServerError):
            error = InternalServerError("The stream failed; see the server log.")
        for event in builder.fail(error):
            yield _sse(event)
        return
    for event in last:
        yield _sse(event)


async def _collect(generation: Generation, builder: _Builder) -> None:
    async with generation:
        async for delta in generation:
            builder.feed(delta)
    builder.finish()


async def create_response(request: Request) -> Response:
    """A model response (the openai SDK's `client.responses.create` and `.stream`)."""
    principal, body, meter = await admitted(request, wire.ResponsesRequest)
    db: Database | None = request.app.state.db
    try:
        if body.store and db is None:
            raise InvalidRequestError(
                "store: this server keeps no responses (it runs without a store: accounts: "
                "false); send store: false.", param="store", code="store_disabled")
        store = _Store(db, owner_of(principal), keep=body.store is not False and db is not None)
        history = await store.history(body.previous_response_id)
        chat = wire.to_chat(body, history)
        store.items = wire.dump_items([*history, *wire.items_of(body)])
    except KathanError as error:
        await refused(meter, body.model, error)
        raise
    service: ChatService = request.app.state.chat
    headers = meter.rate_headers() if meter else None
    if body.stream:
        generation = await unless_disconnected(request.receive, service.open(chat, meter=meter))
        try:
            builder = _Builder(_skeleton(body, f"resp_{generation.request_id}",
                                         generation.model, store.keep),
                               want_logprobs=bool(chat.logprobs))
            return EventStreamResponse(_events(generation, builder, store), owner=generation,
                                       headers=headers)
        except BaseException:
            await generation.aclose()
            raise

    async def answer() -> wire.ResponseObject:
        generation = await service.open(chat, meter=meter)
        builder = _Builder(_skeleton(body, f"resp_{generation.request_id}", generation.model,
                                     store.keep), want_logprobs=bool(chat.logprobs))
        await _collect(generation, builder)
        await store.save(builder.response)
        return builder.response

    response = await unless_disconnected(request.receive, answer())
    return Response(response.model_dump_json(), media_type="application/json",
                    headers=headers)


route = GenerationRoute(
    PATH, create_response, body=wire.ResponsesRequest, answer=wire.ResponseObject,
    responses={200: _STREAM_DOC, **docs.errors(400, 401, 403, 404, 413, 422, 429, 503)},
    summary="Create Response",
)

router = APIRouter(tags=["responses"])
ResponseId = Path(min_length=1, max_length=40, description="The response's id (`resp_...`).")


async def _stored(request: Request, principal: Principal, response_id: str,
                  delete: bool = False) -> dict[str, Any]:
    db: Database | None = request.app.state.db
    missing = NotFoundError(f"No response '{response_id}'.", param="response_id",
                            code="response_not_found")
    if db is None:
        raise missing
    owner = owner_of(principal)
    async with db.session() as session:
        row = await repo.get_response(session, response_id, owner)
        if row is None:
            raise missing
        if delete:
            await repo.delete_response(session, response_id, owner)
            await session.commit()
        return row.response


@router.get("/v1/responses/{response_id}", response_model=wire.ResponseObject,
            responses=docs.errors(401, 404, 422, 503))
async def get_response(request: Request, principal: ApiKeyDep,
                       response_id: str = ResponseId) -> Response:
    """A stored response (one of the caller's account)."""
    stored = await _stored(request, principal, response_id)
    return Response(json.dumps(stored), media_type="application/json")


@router.delete("/v1/responses/{response_id}", response_model=wire.DeletedResponse,
               responses=docs.errors(401, 404, 422, 503))
async def delete_response(request: Request, principal: ApiKeyDep,
                          response_id: str = ResponseId) -> wire.DeletedResponse:
    """Delete a stored response; what continued it already is unaffected."""
    await _stored(request, principal, response_id, delete=True)
    return wire.DeletedResponse(id=response_id)
