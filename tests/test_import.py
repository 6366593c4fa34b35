import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import alt_core

ROOT = Path(alt_core.__file__).parent


def test_no_ray_import_in_alt_core_source():
    pattern = re.compile(r"^\s*(import ray|from ray)", re.MULTILINE)
    offenders = [p.name for p in ROOT.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_alt_core_imports_with_ray_unavailable():
    modules = [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="alt_core.")]
    code = ("import sys; sys.modules['ray'] = None\n"  # any `import ray` now raises ImportError
            + "".join(f"import {m}\n" for m in modules)
            + "assert 'ray' not in [k for k in sys.modules if sys.modules[k] is not None and k.split('.')[0]=='ray']\n"
            + "print('ok', len(sys.argv))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(modules) >= 20 and "alt_core.synthetic.pretrain" in modules
