"""Text from outside (class names, file names) made safe to show: every character that would act instead of print
becomes inert \\xNN text. The terminal's helper (cvtool.cli.output.safe) and the plots' labels use it."""

from __future__ import annotations

import re
from typing import Any

# C0 controls (ESC starts every ANSI sequence; newline and tab included: a name stays on its line), DEL, C1
# controls, and lone surrogates (os.fsdecode's stand-ins for file-name bytes that are not UTF-8)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escaped(m: re.Match) -> str:
    code = ord(m.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def printable(text: Any) -> str:
    """str(text) with control characters, ANSI escapes and non-UTF-8 file-name bytes shown as \\xNN."""
    return _UNSAFE.sub(_escaped, str(text))
