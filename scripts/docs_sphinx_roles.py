"""
A griffe extension for the docs site: Sphinx roles and directives in docstrings, as Markdown.

The docstrings are written for Sphinx (``:class:`~aiosignals.Signal```, ``:meth:`send```,
``.. versionadded:: 0.1``); mkdocstrings renders docstrings as Markdown, where those would
show as raw text. This turns each role into a code span, linked to its API reference entry
when the name resolves to an object of the package, and each ``versionadded`` into a line
of text. mkdocs.yml loads it (``extensions:`` of the python handler).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|data|attr|exc|mod|obj):`([^`]+)`")
VERSION = re.compile(r"^(\s*)\.\. versionadded:: (\S+)\s*$", re.M)
TITLED = re.compile(r"^(.*?)\s*<([^>]+)>$")
# reST's "::" before a literal block: the indented block is a code block in Markdown already.
LITERAL_ALONE = re.compile(r"^[ \t]*::[ \t]*\n", re.M)
LITERAL_SPACED = re.compile(r"[ \t]+::[ \t]*$", re.M)
LITERAL_AFTER = re.compile(r"(\S)::[ \t]*$", re.M)


def _target(scope: griffe.Object, name: str) -> str | None:
    """
    The path of *name* as seen from *scope*, if the site renders that object.

    Rendered means public, documented (the site hides undocumented members) and found: an
    alias (a re-export) is followed to the object it names.
    """
    parts = name.split(".")
    if name.startswith("aiosignals."):
        found: griffe.Object | griffe.Alias | None = _walk_path(scope.package, parts[1:])
    else:
        # A method's or attribute's roles name its class's members first, then the module's.
        scopes = [scope] if scope.is_class or scope.is_module else []
        if scope.parent is not None:
            scopes.append(scope.parent)
        found = next(
            (hit for hit in (_walk_path(c, parts) for c in scopes) if hit is not None), None
        )
    return found.path if found is not None else None


def _walk_path(start: griffe.Object | griffe.Alias, parts: list[str]) -> griffe.Object | None:
    current: griffe.Object | griffe.Alias = start
    for part in parts:
        member = current.members.get(part)
        if member is None or not member.is_public:
            return None
        current = member
    try:
        target = current.final_target if isinstance(current, griffe.Alias) else current
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    if not target.path.startswith("aiosignals") or (target.docstring is None and parts):
        return None
    return target


def _convert(scope: griffe.Object, text: str) -> str:
    def role(match: re.Match[str]) -> str:
        content = match.group(1)
        titled = TITLED.match(content)
        if titled:
            shown, name = titled.group(1), titled.group(2)
        else:
            name = content.lstrip("~")
            shown = name.rsplit(".", 1)[-1] if content.startswith("~") else name
        target = _target(scope, name)
        return f"[`{shown}`][{target}]" if target else f"`{shown}`"

    text = ROLE.sub(role, text)
    text = LITERAL_ALONE.sub("", LITERAL_SPACED.sub("", text))
    text = LITERAL_AFTER.sub(r"\1:", text)
    return VERSION.sub(r"\1*Added in version \2.*", text)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded."""

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _convert(obj, obj.docstring.value)
        for member in obj.members.values():
            # Aliases are re-exports: their target is rewritten where it is defined.
            if not member.is_alias and isinstance(member, griffe.Object):
                self._walk(member)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Griffe 2: the package and its submodules are loaded."""
        self._walk(pkg)

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Griffe 1: the same hook under its earlier name."""
        self._walk(pkg)
