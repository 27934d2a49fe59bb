"""Characters that can end a line or rewrite a terminal, wherever text is shown or logged (D14).

C0 (newline, carriage return, tab, ESC...), DEL, C1 (NEL, CSI...), the Unicode line and paragraph
separators, and the bidi embeddings, overrides and isolates (text shown in another order than it
is written). str.splitlines alone splits on eight of them. The worker logs escape them in every
line; names, codes and external ids refuse them at the API and in the admin.
"""

import re

from django.core.exceptions import ValidationError

CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_control_characters(text: str) -> str:
    """`text` on one line, its control characters written as Python escapes (\\n, \\x1b,
    \\u2028). Backslashes are left as they are: the aim is that no value can start a line of
    its own or move the cursor, not a reversible encoding."""
    return CONTROL_CHARACTERS.sub(_escaped, text)


def refuse_control_characters(value: str) -> None:
    """A model field validator, so the admin's forms and the API's model serializers refuse them
    alike. A plain function, not a RegexValidator: drf-spectacular would publish that one's regex
    as the field's `pattern` and ignore that the match is inverted."""
    if CONTROL_CHARACTERS.search(value):
        raise ValidationError(
            "must not contain control characters (line breaks, tabs, escape sequences)",
            code="control_characters",
        )
