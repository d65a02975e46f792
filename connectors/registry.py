"""Source kinds. Adding a source = a connector module, its SQL under sql/line_items/, tests, one entry here."""

from __future__ import annotations

from connectors.aws_cur import AwsCurConnector

CONNECTORS = {
    AwsCurConnector.kind: AwsCurConnector,
}


def connector_for(source):
    return CONNECTORS[source.kind](source)
