"""Text files in an encoding other than UTF-8 (``--encoding``), read as UTF-8.

The readers (``detector.io.csv_source``, ``detector.io.json_lines``) read UTF-8 bytes, and reject
a record holding bytes that are not UTF-8 with its reason. A file in another encoding (a
European Excel export in Windows-1252: 'Müller', '€'; UTF-16 with its byte-order mark) is read
through ``transcoded``: decoded from its encoding as it streams, written out as UTF-8. A byte
that does not decode in that encoding either comes out as a byte that is not UTF-8, so its
record is rejected as a record that is not UTF-8 is without ``--encoding``: the ledger still
adds up, and the rest of the file is read.
"""

from __future__ import annotations

import codecs
import io
from typing import Any

from detector.errors import ConfigError
from detector.wording import offered, option

#: Bytes asked of the underlying stream at a time.
_READ_BYTES = 1 << 20
#: The error handler that keeps an undecodable byte as a byte no UTF-8 reader takes.
_UNDECODABLE = "detector.undecodable"


def encoding_name(name: str | None) -> str | None:
    """The codec ``name`` names (Python's canonical name: 'cp1252', 'utf-16'), or ``None`` for
    UTF-8, read as without an encoding (a byte-order mark skipped). ``ConfigError`` where
    Python knows no text encoding of that name (a typo, or 'base64', which is no text's)."""
    if name is None:
        return None
    try:
        "".encode(name)  # LookupError also for codecs of bytes to bytes ('base64', 'zip')
        canonical = codecs.lookup(name).name
    except (LookupError, ValueError):
        raise ConfigError(
            f"encoding {name!r} is not a text encoding Python knows; give the file's encoding "
            "as Python names it, e.g. cp1252 (Windows Western Europe, Excel's CSV), latin-1, "
            "utf-16 (with its byte-order mark), shift_jis"
        ) from None
    return None if canonical in ("utf-8", "utf-8-sig") else canonical


def read_as(encoding: str | None) -> str:
    """How a refusal names the encoding text was read in: 'UTF-8' by default."""
    return encoding or "UTF-8"


def encoding_fix(encoding: str | None, likely: str = "cp1252") -> str:
    """What to do with text that did not decode as ``encoding`` (``None``: UTF-8): name its
    encoding (``likely`` the one to try), or convert it once; where an encoding was given, it
    was not the file's."""
    if encoding is not None:
        return (
            f"the file may be in an encoding other than {encoding}: give that one, or convert "
            "the file once to UTF-8"
        )
    if not offered("encoding"):  # the service reads UTF-8 bodies
        return "send it as UTF-8"
    return f"give its encoding ({option('encoding', likely)}), or re-save it as UTF-8"


def as_utf8(head: bytes, encoding: str | None) -> bytes:
    """A file's first bytes as UTF-8 (``encoding``: the file's, ``None`` for UTF-8), for telling
    what kind of text it is; a character cut at the end is dropped."""
    if encoding is None:
        return head
    return codecs.getincrementaldecoder(encoding)(errors="replace").decode(head).encode()


def transcoded(stream: Any, encoding: str) -> io.BufferedReader:
    """A buffered reader of ``stream``'s text (a binary stream, in ``encoding``) as UTF-8
    bytes; closing it closes ``stream``."""
    return io.BufferedReader(_Transcoding(stream, encoding), _READ_BYTES)


class _Transcoding(io.RawIOBase):
    """``stream``'s bytes, decoded from ``encoding`` as they come, encoded as UTF-8."""

    def __init__(self, stream: Any, encoding: str) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=_UNDECODABLE)
        # A pipe's bytes as they come (a record written now is read now), a file's in blocks.
        self._read = stream.read1 if hasattr(stream, "read1") else stream.read
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            data = self._read(_READ_BYTES)
            text = self._decoder.decode(data, final=not data)
            self._out = memoryview(text.encode("utf-8", "surrogateescape"))
            if not data:
                break
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _undecodable(error: UnicodeError) -> tuple[str, int]:
    """Each byte that does not decode as itself where it is a byte no UTF-8 character starts
    with or holds alone (0x80-0xBF, as cp1252's five undefined bytes are: the rejects file
    shows it), else as 0xFF, which UTF-8 never holds; ``surrogateescape`` writes them."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(chr(0xDC00 + (b if 0x80 <= b <= 0xBF else 0xFF)) for b in bad), error.end


codecs.register_error(_UNDECODABLE, _undecodable)
