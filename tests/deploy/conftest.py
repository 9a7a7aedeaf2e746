"""Fixtures for the deploy/ files: one real gateway process scraped once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.process import gateway_process, get, post
from tests.support.scrape import Scrape


@pytest.fixture(scope="session")
def live_scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """/metrics of a real gateway that has received a webhook and delivered it."""
    tmp_path = tmp_path_factory.mktemp("scrape")
    script = tmp_path / "audit.sh"
    script.write_text("#!/bin/sh\ncat > /dev/null\n")
    script.chmod(0o755)
    config = base_config(
        tmp_path,
        destinations={"audit": {"type": "script", "command": [str(script)], "timeout": "5s"}},
        rules=[{"name": "all", "to": ["audit"]}],
    )
    with gateway_process(write_config(tmp_path, config)) as gateway:
        assert post(gateway.url, payload("Finished Journey"))[0] == 200
        status, body = get(gateway.admin + "/metrics")
        assert status == 200
        yield Scrape(body.decode())
