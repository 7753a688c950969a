"""Request bodies in, response bodies out: the body read within ``max_body_bytes``, parsed as
JSON with the hardening hostile requests need, validated against a ``service.schemas`` model
(a 400 that names the problem), and a response model answered as JSON.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import zlib
from functools import partial
from typing import Any, TypeVar

from flask import Response, current_app, g, request
from gunicorn.http.errors import ParseException
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from detector.features.encode import shortened
from detector.io.json_lines import (
    SURROGATE_ESCAPE,
    RepeatedKeys,
    json_error,
    json_object,
    parse_line,
)
from detector.io.tables import GZIP_MAGIC
from service.state import ApiError, ServiceState
from service.throttled_log import ThrottledLog
from service.turns import take_turn

Model = TypeVar("Model", bound=BaseModel)


def read_body(state: ServiceState) -> bytes:
    """The request body, at most ``max_body_bytes``, whether sized by Content-Length or sent
    chunked; 413 past the limit. werkzeug's own ``get_data`` stops a chunked body at the limit
    and returns the truncated bytes (a 50 MB body would be answered as broken JSON), so the body
    is read here with a stream limit one byte above ours: reaching that byte means too large."""
    limit = state.config.max_body_bytes
    transfer = request.headers.get("Transfer-Encoding", "")
    codings = [c.strip().lower() for c in transfer.split(",") if c.strip()]
    undone = [c for c in codings if c not in ("chunked", "identity")]
    if undone:
        # gunicorn takes "gzip, chunked" and undoes only the chunks: the body would be read
        # still compressed.
        raise ApiError(
            400,
            "bad_request",
            f"Transfer-Encoding {', '.join(undone)} is not supported; send the body compressed "
            "with Content-Encoding: gzip, and Transfer-Encoding: chunked or a Content-Length",
        )
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    # Before anything reads request.stream, which werkzeug builds once with this limit.
    request.max_content_length = limit + 1
    body = io.BytesIO()
    held = 0
    try:
        while chunk := request.stream.read(min(1 << 16, limit + 1 - body.tell())):
            body.write(chunk)
            held = _take_reading(state, held, body.tell() - SMALL_BODY_BYTES)
            if body.tell() > limit:
                raise RequestEntityTooLarge()
        if held:
            take_turn(state)
    except ParseException as exc:  # gunicorn's, for a chunked body it cannot frame
        raise ApiError(
            400,
            "bad_request",
            f"the chunked request body is malformed ({type(exc).__name__}: {exc}); send "
            "valid chunks, or the body whole with a Content-Length",
        ) from None
    finally:
        # Read (or refused), a large body is parsed and scored in its turn: bodies arriving
        # and bodies waiting for their turn are held side by side.
        with state.body_bytes_lock:
            state.body_bytes_reading -= held
    declared = request.content_length
    if declared is not None and body.tell() < declared:
        # gunicorn ends a body early when its client closes the connection; scored, the
        # records read so far would enter the series' state, and a retry would be "late".
        raise ApiError(
            400,
            "incomplete_body",
            f"the request body ended after {body.tell()} of its declared {declared} bytes; "
            "send a Content-Length that matches the body",
        )
    text = _as_utf8(_decoded(body.getvalue(), limit))
    g.body_bytes = len(text)  # how much parsing it takes (``service.turns``)
    return text


#: Bytes of request bodies a worker process reads at once, in bodies of ``max_body_bytes``: the
#: body read is held whole, and 100 clients sending 16 MiB each took two workers to 1 GB each
#: (the Kubernetes manifest's limit is 2 GiB); the default 1,000 connections a worker could
#: take it to 16 GB. Past it a request gets 503 with Retry-After.
BODIES_READ_AT_ONCE = 4
#: The first bytes of each body, not counted against that: a request of a few records is never
#: refused because large bodies are arriving (or stalled) beside it, and the worker's
#: connections bound what these add (1,000 x 64 KiB by default).
SMALL_BODY_BYTES = 1 << 16
#: Bodies refused so: logged at most once a minute per worker.
_over_budget = ThrottledLog(logging.getLogger(__name__), "requests refused")


def _take_reading(state: ServiceState, held: int, size: int) -> int:
    """Count ``size`` bytes of this request's body (of which ``held`` are counted already) as
    being read by this worker; 503 with Retry-After where that would pass
    ``BODIES_READ_AT_ONCE`` x ``max_body_bytes`` while other bodies are being read or wait
    their turn (``service.turns``; one body is always read). Returns the bytes counted."""
    more = size - held
    if more <= 0:
        return held
    budget = BODIES_READ_AT_ONCE * state.config.max_body_bytes
    with state.body_bytes_lock:
        others = state.body_bytes_reading - held
        refused = bool(others) and state.body_bytes_reading + more > budget
        if not refused:
            state.body_bytes_reading += more
    if refused:
        _over_budget.error(
            "a request was refused with 503: this worker holds %d bytes of other request bodies "
            "(being read, or waiting their turn to be scored), and at most %d x max_body_bytes "
            "(%d bytes) at once; where clients send many large bodies at once, add workers "
            "(and memory)",
            others,
            BODIES_READ_AT_ONCE,
            budget,
        )
        raise ApiError(
            503,
            "server_busy",
            f"the server holds {others} bytes of other request bodies (being read, or waiting "
            f"their turn to be scored), and at most {budget} at once ({BODIES_READ_AT_ONCE} x "
            "max_body_bytes); retry after a second, or send smaller batches",
            retry_after=1,
        )
    return size


def _as_utf8(body: bytes) -> bytes:
    """``body`` in UTF-8, from the charset its Content-Type names (``text/csv;
    charset=iso-8859-1``): it was read as UTF-8 whatever the header said, and a Latin-1 byte
    answered "'utf-8' codec can't decode byte 0xe9"."""
    charset = (request.mimetype_params.get("charset") or "utf-8").strip().lower()
    try:
        codec = codecs.lookup(charset)
        if not getattr(codec, "_is_text_encoding", True):  # base64, zlib: bytes to bytes
            raise LookupError(charset)
        name = codec.name
    except LookupError:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"charset {shortened(charset)!r} is not an encoding this server knows; send UTF-8",
        ) from None
    if name == "utf-8":
        return body
    try:
        return body.decode(name).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "bad_request", f"the body is not {charset} text, as its Content-Type says ({exc})"
        ) from None


#: Content-Encoding values a body may come in (RFC 9110 8.4.1): as sent, or compressed, as
#: log shippers and batch clients send it. zlib's window bits tell each format apart.
_CODINGS = {"identity": None, "gzip": 16 + 15, "x-gzip": 16 + 15, "deflate": 15}


def _decoded(body: bytes, limit: int) -> bytes:
    """``body`` uncompressed as its Content-Encoding says; 415 naming the codings taken for
    any other, 400 for bytes that are not what the header says, and 413 once the uncompressed
    body passes ``limit`` (a few kilobytes of gzip can hold gigabytes: it is never inflated
    past the limit)."""
    header = request.headers.get("Content-Encoding", "")
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    unknown = [c for c in codings if c not in _CODINGS]
    if unknown:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Encoding {', '.join(unknown)} is not supported; send the body as it is, "
            "or compressed with gzip or deflate",
        )
    for coding in reversed(codings):  # the last coding applied is undone first
        bits = _CODINGS[coding]
        if bits is not None:
            body = _inflated(body, coding, bits, limit)
    if body.startswith(GZIP_MAGIC):  # no text starts so: gzip the header did not name
        raise ApiError(
            400,
            "bad_request",
            "the body is gzip-compressed, and its Content-Encoding does not say so; send "
            "Content-Encoding: gzip",
        )
    return body


def _inflated(data: bytes, coding: str, bits: int, limit: int) -> bytes:
    """``data`` inflated, member after member (``cat a.gz b.gz`` is one gzip body), never
    past ``limit`` bytes."""
    out = io.BytesIO()
    while True:
        inflater = zlib.decompressobj(bits)
        try:
            out.write(inflater.decompress(data, limit + 1 - out.tell()))
        except zlib.error as exc:
            raise ApiError(
                400,
                "bad_request",
                f"the body is not valid {coding} ({exc}), as its Content-Encoding says",
            ) from None
        if out.tell() > limit:
            raise RequestEntityTooLarge()
        if not inflater.eof:
            raise ApiError(400, "bad_request", f"the {coding} body is truncated")
        data = inflater.unused_data
        # Zero bytes after the last member pad a block (tape, some writers): gzip and
        # Python's gzip module ignore them, and so does this.
        if not data.strip(b"\0"):
            return out.getvalue()


#: Media types of JSON Lines (one JSON object a line), as log shippers send records: Vector's
#: newline-delimited framing, Fluent Bit's json_lines.
JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")


def json_lines(body: bytes) -> list[tuple[int, bytes]]:
    """A JSON Lines body's lines that are not blank (a last newline ends a line), each with its
    1-based line number."""
    return [(n, line) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()]


def parse_json_lines(lines: list[tuple[int, bytes]]) -> list[Any]:
    """Each line parsed, or ``Unparsed`` naming why it is not JSON: that record is rejected, the
    others are scored (``detector.io.json_lines.parse_line``, as a JSON Lines file's)."""
    return [parse_line(number, line) for number, line in lines]


def _refuse_repeated_keys(value: Any, found: list[RepeatedKeys], shape: str) -> None:
    """400 for an object that names a key twice, but for the records of a ``records`` list:
    those are rejected one by one, as any other malformed record is."""
    records = value.get("records") if isinstance(value, dict) else None
    own = {id(r) for r in records} if isinstance(records, list) else set()
    for obj in found:
        if id(obj) not in own:
            raise ApiError(
                400,
                "bad_request",
                f"the JSON body names {obj.repeated[0]!r} twice in one object, and only the "
                f"last would count; send each key once in {shape}",
            )


def read_json(state: ServiceState, shape: str, *, empty: Any = None) -> Any:
    """The request body parsed as JSON (``empty`` for an empty body, when given); 400 naming
    ``shape`` (what the route expects) when it is not JSON (``json_type``) or cannot be parsed
    (``parse_json``)."""
    body = read_body(state)
    if not body and empty is not None:
        return empty
    json_type(shape)
    return parse_json(body, shape)


def json_type(shape: str) -> None:
    """400 naming ``shape`` unless the request says its body is JSON."""
    if not request.is_json:
        raise ApiError(400, "bad_request", f"send Content-Type: application/json and {shape}")


def parse_json(body: bytes, shape: str) -> Any:
    """``body`` parsed as JSON; 400 naming ``shape`` when it is not UTF-8 (RFC 8259), not
    valid JSON, holds a lone surrogate escape, is nested deeper than the parser's recursion
    limit (``json`` raises ``RecursionError`` for that, which is not a ``ValueError``), or
    names a key twice. Pure: a large body is parsed in the scoring thread (``service.turns``)."""
    try:
        text = body.decode("utf-8-sig")
        found: list[RepeatedKeys] = []
        value = json.loads(text, object_pairs_hook=partial(json_object, found))
        if SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode()  # raises on a lone surrogate
    except RecursionError:
        raise ApiError(
            400, "bad_request", f"the JSON body is nested too deeply to parse; send {shape}"
        ) from None
    except UnicodeEncodeError:
        raise ApiError(
            400,
            "bad_request",
            "the JSON body holds a \\uD800-\\uDFFF escape that is not half of a surrogate "
            "pair, which is no Unicode character",
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ApiError(
            400, "bad_request", f"the body is not valid JSON ({json_error(exc)}); send {shape}"
        ) from None
    _refuse_repeated_keys(value, found, shape)
    return value


def validated(model: type[Model], body: Any, shape: str) -> Model:
    """``body`` (parsed JSON) as ``model``; 400 with the first problem a validator of the model
    explains in words, else naming ``shape``, what the route expects."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, "bad_request", explained(exc.errors()[0], shape)) from None


def explained(error: Any, shape: str) -> str:
    """A validator's own message (it names the field and the fix), or the shape expected."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if error["type"] == "extra_forbidden":
        return f"unknown field {shortened(str(error['loc'][-1]))!r}: the body must be {shape}"
    field = ".".join(map(str, error["loc"]))
    if error["type"] == "missing":  # "must be a JSON object" misled a body that was one
        return f"the body has no field {field!r}: it must be {shape}"
    if field:
        said = error["msg"][:1].lower() + error["msg"][1:]
        return f"field {field!r}: {said}; the body must be {shape}"
    return f"the body must be {shape}"


def answer(body: BaseModel | bytes, status: int = 200) -> Response:
    """``body`` as the JSON response, serialised by its model (or written already, as a
    model of ``service.schemas`` writes it)."""
    written = body if isinstance(body, bytes) else body.model_dump_json()
    return current_app.response_class(written, status=status, mimetype="application/json")
