"""HTML pieces shared by the report's panels: every value from data is escaped."""

from __future__ import annotations

import html


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table(headers: list[str], rows: list[list], testid: str, numeric: set[int]) -> str:
    """A table that scrolls inside its own box on a narrow screen; `numeric` columns are right-aligned."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table data-testid="{esc(testid)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')
