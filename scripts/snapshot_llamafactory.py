"""Write lfgen/data/llamafactory.json: the keys and templates of the installed LlamaFactory.

lfgen checks `--set` keys and validates files against this snapshot without importing
LlamaFactory (startup stays fast, and it works on the light install). Refresh it after
upgrading the pinned llamafactory:  .venv/bin/python scripts/snapshot_llamafactory.py
tests/test_llamafactory_snapshot.py fails when the snapshot and the installed version differ.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from lfgen._lf import probe as _lf_probe  # noqa: E402

snapshot = _lf_probe.describe()
out = pathlib.Path(__file__).resolve().parents[1] / "lfgen" / "data" / "llamafactory.json"
out.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n", encoding="utf-8")
print(f"wrote {out}: llamafactory {snapshot['llamafactory']}, {len(snapshot['keys'])} keys, "
      f"{len(snapshot['templates'])} templates")
