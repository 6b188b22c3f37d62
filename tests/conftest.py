"""Shared test setup: one data cache for the whole session, never the user's ~/.cache/genforge."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def genforge_cache(tmp_path_factory):
    """GENFORGE_CACHE points at a temporary folder shared by every test of the session."""
    path = tmp_path_factory.mktemp("genforge-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENFORGE_CACHE", str(path))
        yield path
