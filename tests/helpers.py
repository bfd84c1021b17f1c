"""Helpers shared by the test modules (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))


async def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05
) -> None:
    """Poll ``predicate`` until it holds (counters, stats rows and event lists have no
    signal to wait on); the test fails with TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)


def require_system(program: str | Path, package: str, what: str) -> None:
    """Skip the calling test module when a Debian program is missing, except in CI
    (``CI`` set), where that is a failure: CI must run every real component."""
    found = Path(program).exists() if os.sep in str(program) else shutil.which(program)
    if found:
        return
    if not IN_CI:
        pytest.skip(
            f"{program} is missing (Debian package `{package}`; `make test` installs it)",
            allow_module_level=True,
        )
    pytest.fail(f"CI: {program} is required by {what} but is missing", pytrace=False)
