"""The apportion config as a Dagster resource: the assets read paths and sources from it."""

from __future__ import annotations

import dagster as dg

from apportion.models.config import ApportionConfig, load_config
from apportion.models.taxonomy import Taxonomy, load_taxonomy


class ApportionResource(dg.ConfigurableResource):
    """Points at apportion.yaml. Credentials are not here: connectors use the SDK default chains."""

    config_path: str

    def config(self) -> ApportionConfig:
        return load_config(self.config_path)

    def taxonomy(self) -> Taxonomy:
        return load_taxonomy(self.config().taxonomy)
