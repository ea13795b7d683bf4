"""Shared by the hooks (not a hook itself): put a generated block where its page holds the marker.

MkDocs puts this folder on ``sys.path`` while it loads a hook, so the hooks import it by name.
"""

from __future__ import annotations


def fill(markdown: str, page, page_path: str, marker: str, render) -> str:
    """``markdown`` with ``marker`` replaced by ``render()`` on ``page_path``; other pages unchanged.

    A page that lost its marker fails the build instead of silently dropping the generated block.
    """
    if page.file.src_uri != page_path:
        return markdown
    if marker not in markdown:
        raise ValueError(f"{page_path} lost its marker {marker}")
    return markdown.replace(marker, render())
