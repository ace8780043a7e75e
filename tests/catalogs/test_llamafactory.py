"""The bundled snapshot of LlamaFactory's keys is the installed LlamaFactory's (refresh: scripts/snapshot_llamafactory.py)."""

from __future__ import annotations

import pytest

from lfgen.errors import InputError
from lfgen.catalogs.llamafactory import probe, snapshot

from ..conftest import needs_llamafactory


@pytest.mark.slow
@needs_llamafactory
def test_snapshot_matches_the_installed_llamafactory():
    live = probe({}).catalog
    snap = snapshot()
    assert live.version == snap.version
    assert set(live.keys) == set(snap.keys), set(live.keys) ^ set(snap.keys)
    assert live.templates == snap.templates
    for name, spec in snap.keys.items():
        assert (spec.type, spec.choices) == (live.keys[name].type, live.keys[name].choices), name


def test_unknown_key_suggests_close_names():
    with pytest.raises(InputError, match=r"'lerning_rate' is not a LlamaFactory .* key \(did you mean: learning_rate"):
        snapshot().check_key("lerning_rate")


def test_snapshot_knows_the_keys_lfgen_writes():
    from lfgen import build

    catalog = snapshot()
    for key in build("a800").config:
        catalog.check_key(key)
