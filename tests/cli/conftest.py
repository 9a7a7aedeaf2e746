from tests.config.fast_cli import cli

__all__ = ["cli"]
