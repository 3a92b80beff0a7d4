"""Text from strangers made safe to show on a terminal (sans-IO).

Anyone can write to a user, so a subject or body may hold terminal escapes (ESC sequences that
move the cursor, set the window title or, through OSC 52, write the clipboard), carriage returns
that overwrite a line, or Unicode bidirectional controls that reorder what is seen. Whatever the
CLI prints from a message goes through :func:`for_terminal`: every control or format character
becomes a visible escape (``\\x1b``, ``\\u202e``), so the text shows what it holds and the
terminal never acts on it. Newlines and tabs survive only where the caller allows them (bodies).
Backslashes are left as they are: the escapes are for the eye, not a reversible encoding.
"""

from __future__ import annotations

import unicodedata

__all__ = ["for_terminal", "body_for_terminal"]

#: Unicode categories never printed raw: controls, format (bidi, zero-width), separators, surrogates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def for_terminal(text: str, *, keep: str = "") -> str:
    """``text`` with every control/format character shown as an escape (except those in ``keep``)."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        if char in keep:
            out.append(char)
        elif unicodedata.category(char) in _UNSAFE_CATEGORIES:
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def body_for_terminal(body: bytes) -> str:
    """A message body for the terminal: UTF-8 (bad bytes as ``\\xNN``), lines and tabs kept."""
    return for_terminal(body.decode("utf-8", errors="backslashreplace"), keep="\n\t")
