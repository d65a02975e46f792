"""Quoting for the SQL the connectors generate: identifiers and literals (values are parameters wherever
DuckDB allows one; these are for names and constants in generated view text)."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
