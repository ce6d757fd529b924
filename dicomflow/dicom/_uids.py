"""UIDs (PS3.5 9.1): the one check every layer applies before a UID names a file or a record.

A UID is at most 64 characters of digits and dots; its components (between the dots) are
never empty and have no leading zero, except the component ``0`` itself. A value that keeps
to this rule is also a safe path component: it has no separator, is not hidden (no leading
dot), and two different UIDs never give the same name.
"""

from __future__ import annotations

__all__ = ["MAX_UID_LENGTH", "uid_problem"]

#: The longest UID PS3.5 9.1 allows, in characters.
MAX_UID_LENGTH = 64
_ALLOWED = frozenset("0123456789.")


def uid_problem(value: str, *, strict: bool = True) -> str | None:
    """Why ``value`` is not a valid UID, in a few words; ``None`` when it is one.

    With ``strict=False`` a leading zero in a component is let through: PS3.5 forbids it, but
    legacy archives hold such UIDs, and such a value is still a distinct, safe file name (a
    receiver that refused it would leave a pull of those series incomplete for ever).

    The reason is short enough to follow the attribute's name in a DIMSE Error Comment
    (64 characters), e.g. ``f"SOP Instance UID {problem}"``.

    Parameters
    ----------
    value
        The UID without its padding (a trailing NUL or space already removed).
    strict
        Apply the leading-zero rule too (the default).

    Returns
    -------
    str or None
        ``None`` for a valid UID, else the first rule it breaks.

    Examples
    --------
    >>> uid_problem("1.2.840.10008.1.2.1") is None
    True
    >>> uid_problem("1.2.3/4")
    "has '/' (digits and dots only)"
    >>> uid_problem("1.02")
    "has a leading zero in '02'"
    >>> uid_problem(".1.2")
    'starts with a dot'
    """
    if not value:
        return "is empty"
    for char in value:
        if char not in _ALLOWED:
            return f"has {char!r} (digits and dots only)"
    if len(value) > MAX_UID_LENGTH:
        return f"has {len(value)} characters (at most {MAX_UID_LENGTH})"
    if value.startswith("."):
        return "starts with a dot"
    if value.endswith("."):
        return "ends with a dot"
    for component in value.split("."):
        if not component:
            return "has an empty component ('..')"
        if strict and len(component) > 1 and component[0] == "0":
            return f"has a leading zero in {component!r}"
    return None
