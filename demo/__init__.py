"""The bundled demo: its config and taxonomy (files beside this one) and the generators of its data
(`generators/`, one module per source family). Not used by the engine."""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_CONFIG = DEMO_DIR / "apportion.yaml"
DEMO_TAXONOMY = DEMO_DIR / "taxonomy.yaml"
