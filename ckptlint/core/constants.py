"""Names several layers share and that the replay needs before anything else loads.

No imports: the replay of a clean run reads these before argparse or dataclasses load.
"""

VERSION = "0.1.0"  # `ckptlint.__version__`; pyproject.toml says the same (a test keeps them equal)
CACHE_DIRECTORY = ".ckptlint_cache"
CACHE_VERSION = "v2"  # v2: entries record every input of the build (`ckptlint.core.inputs`)
ENV_NO_CACHE = "CKPTLINT_NO_CACHE"
ENV_PYTHON = "CKPTLINT_PYTHON"
VENVS = (".venv", "venv")
# seconds one request to a remote checkpoint may take (connect, each read, the whole request)
ENV_REMOTE_TIMEOUT = "CKPTLINT_REMOTE_TIMEOUT"
