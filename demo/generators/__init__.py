"""Deterministic generators of the demo's provider data: `aws_cur` (a CUR 2.0 export), `clouds` (Azure
and GCP exports), `gpu` (Slurm, DCGM, OpenCost), `llm` (LiteLLM, OpenAI and Anthropic pages)."""
