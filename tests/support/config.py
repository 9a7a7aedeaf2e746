"""Gateway configs for tests: the bearer token every test config accepts, free local ports,
a minimal valid config with fast backoff, and writing it as YAML. Only file I/O."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"  # the shipped Kubernetes, Prometheus and Grafana files
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 nothing listened on a moment ago (connection refused), and never
    one handed out before in this process: the kernel may give a just-closed port again,
    and a config whose server and admin ports came out equal does not load."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connection refused)."""
    return free_port()


def base_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A minimal valid config: bearer auth, fast backoff, store in tmp_path."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": free_port(), "shutdown_grace": "3s"},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"path": str(tmp_path / "gateway.db"), "busy_timeout": "300ms"},
        "auth": {"bearer": [TOKEN]},
        "delivery": {
            "max_attempts": 5,
            "backoff": {"initial": "50ms", "max": "200ms", "multiplier": 2, "jitter": 0},
            "timeout": "2s",
        },
        "destinations": {},
        "rules": [],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
