"""apportion's SQL, one file per model: `line_items/<kind>.sql` (staging -> FOCUS line items),
`allocation/`, `warehouse/<table>.sql` (one per warehouse table or view), `checks/` (the warehouse's blocking
checks), `exports/<file>.sql` (the finance pack), `report/` (the report's queries) and `macros/`."""

from importlib import resources


def sql_text(name: str) -> str:
    """Text of a file under sql/, e.g. 'line_items/aws_cur.sql'."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
