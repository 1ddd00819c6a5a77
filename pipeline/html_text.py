"""User strings (file names, paths, camera URLs, errors naming them) in emoray's HTML pages, shown as
they are: escaped, their direction controls made visible, bidi-isolated from the text around them.

A name holding U+202E (right-to-left override) would otherwise turn the rest of its line backwards
("holiday<U+202E>gpj.mp4" reads "holiday4pm.jpg"); right-to-left names (Hebrew, Arabic) are shown
right to left, but only inside their own isolate.
"""

from __future__ import annotations

import html

# explicit direction controls (embeddings, overrides, isolates): shown as their code points, never obeyed
_DIRECTION_CONTROLS = {code: f"[U+{code:04X}]" for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def visible(value: object) -> str:
    """``value`` as a string whose direction controls are shown ("[U+202E]"), not obeyed."""
    return str(value).translate(_DIRECTION_CONTROLS)


def text(value: object) -> str:
    """``value`` as page text: escaped, controls shown, in a ``<bdi>`` (isolated; it wraps anywhere where
    the page's style says ``bdi { overflow-wrap: anywhere }``)."""
    return f"<bdi>{html.escape(visible(value))}</bdi>"


def isolated(value: object) -> str:
    """The same where no element may go (a ``<title>``, an attribute): between U+2068 and U+2069, escaped."""
    return html.escape(f"\u2068{visible(value)}\u2069", quote=True)
