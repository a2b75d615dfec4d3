"""The numbers of the README and of docs/ are the ones the code's own files hold (`scripts/readme_tables.py`)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_readme_numbers_match_their_source_files():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_generated_block_has_a_source():
    """Each block names a source that exists: a block cannot silently stay empty."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_tables

    pages = [page.read_text() for page in readme_tables.DOCUMENTS]
    names = [m.group("name") for text in pages for m in readme_tables.BLOCK.finditer(text)]
    assert {"bundled", "leak", "summary", "bench/select_model", "bench/train_throughput", "bench/batch_predict",
            "bench/app_speed", "bench/xray_check", "bench/dedup_real", "bench/recipe", "bench/unseen_site",
            "bench/cold_start", "bench/container", "bench/soup", "bench/jpeg_draft",
            "bench/look_shortcut", "bench/retrain"} <= set(names)
    for name in names:
        assert readme_tables.block(name).strip(), name
