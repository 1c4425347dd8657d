"""Example models that this repository registers with ckptlint (see pyproject.toml)."""
