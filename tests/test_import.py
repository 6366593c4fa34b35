import json
import os
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


def run_fresh(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT.parent)


OUR_PACKAGES = ("alt_core", "pipelines", "deploy")
# what the libraries themselves set when imported (Ray, MLflow, torch, tokenizers): imported first, so the
# comparison sees only what our modules do
LIBRARIES = ("torch", "open_clip", "decord", "av", "matplotlib.pyplot", "mlflow", "mlflow.tracking", "ray",
             "ray.data", "ray.train", "ray.train.torch", "ray.tune", "ray.serve", "fastapi")


def test_importing_every_module_leaves_the_environment_unchanged():
    from pipelines.environment import DEFAULTS, LOCAL_RAY_DEFAULTS

    code = ("import importlib, json, os, pkgutil\n"
            + "".join(f"import {name}\n" for name in LIBRARIES)
            + "before = dict(os.environ)\n"
            + f"names = list({OUR_PACKAGES!r})\n"
            + "for package in list(names):\n"
            + "    path = importlib.import_module(package).__path__\n"
            + "    names += [m.name for m in pkgutil.walk_packages(path, package + '.')]\n"
            + "for name in names:\n"
            + "    importlib.import_module(name)\n"
            + "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
            + "print(json.dumps({'modules': len(names), 'changed': changed}))\n")
    unset = set(DEFAULTS) | set(LOCAL_RAY_DEFAULTS)  # as a user's shell has them: none of our defaults set
    result = run_fresh(code, {k: v for k, v in os.environ.items() if k not in unset})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] >= 40 and report["changed"] == []


def test_the_serving_app_loads_neither_plotting_nor_the_pipelines():
    code = ("import sys\nimport deploy.app\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'pipelines'}))")
    result = run_fresh(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
