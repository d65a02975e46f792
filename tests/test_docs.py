"""The README is the front door and docs/ the manual: size limit, no broken links, one page per source kind."""

from __future__ import annotations

import re
from pathlib import Path

from apportion.models.source_kinds import SOURCE_KINDS

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README_LIMIT = 12_000  # characters

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks (links and headings in code are not links and headings)."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: rendered text, lower case, punctuation dropped, spaces to '-', '-1' for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("code", prose(page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def registered_kinds() -> set[str]:
    return set(SOURCE_KINDS)


def test_readme_is_the_front_door():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text) <= README_LIMIT, f"README.md has {len(text)} characters (limit {README_LIMIT}): move detail to docs/"
    for must in ("## Quickstart", "make demo", "make test", "## How it works", "docs/README.md"):
        assert must in text, must


def test_every_relative_link_points_at_an_existing_file_and_heading():
    broken = []
    checked = 0
    for page in pages():
        for target in relative_links(page):
            path_part, _, fragment = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(REPO)}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{where} (no heading #{fragment})")
            checked += 1
    assert checked > 50  # the parser finds the links
    assert broken == []


def test_every_source_kind_has_its_page():
    kinds = registered_kinds()
    assert len(kinds) >= 12
    pages = {p.stem for p in (DOCS / "sources").glob("*.md")} - {"README"}
    assert sorted(kinds - pages) == [], "docs/sources/<kind>.md missing"
    assert sorted(pages - kinds) == [], "docs/sources/ has a page for a kind that is not registered"
    index = (DOCS / "sources" / "README.md").read_text(encoding="utf-8")
    for kind in kinds:
        assert f"({kind}.md)" in index, f"docs/sources/README.md does not link {kind}.md"
