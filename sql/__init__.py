"""apportion's SQL, one file per model: `line_items/<kind>.sql` (staging -> FOCUS line items),
`allocation/`, `outputs/` (warehouse tables, views, exports, checks) and `macros/`."""

from importlib import resources


def sql_text(name: str) -> str:
    """Text of a file under sql/, e.g. 'line_items/aws_cur.sql'."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
