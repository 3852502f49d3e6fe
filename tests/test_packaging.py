"""The installed distribution: the wheel holds exactly one top-level package, ``embedkit``."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from .conftest import ROOT


def test_wheel_installs_only_the_embedkit_namespace(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path)], check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    [wheel] = tmp_path.glob("embedkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and top - dist_info == {"embedkit"}, sorted(top)
    # the service and its static page travel inside embedkit's namespace
    for path in ("embedkit/server/__init__.py", "embedkit/server/app.py", "embedkit/server/static/index.html"):
        assert path in names, path
    assert not any(n.startswith(("api/", "tests/", "scripts/")) for n in names)
