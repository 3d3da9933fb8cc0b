"""Prefect flows over the DVC pipeline: `bar-pipeline` (flows/pipeline.py), `upgrade-expert`
(flows/upgrade.py) and their scheduled deployments (flows/serve.py)."""
