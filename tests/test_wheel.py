"""The package as a user gets it: `python -m build` makes the sdist and, from it, the
wheel; the wheel installed into a fresh virtual environment without extras imports and
solves HS71. Needs the package index for pip (the only network a test uses); pip's cache
makes reruns fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
F_STAR = 17.0140173  # HS71

HS71 = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import jconstrain as jc
    problem = jc.Problem(
        objective=lambda x, a: x[0] * x[3] * jnp.sum(x[:3]) + x[2],
        eq=lambda x, a: jnp.sum(x ** 2) - 40.0,
        ineq=lambda x, a: 25.0 - jnp.prod(x),
        bounds=(1.0, 5.0),
    )
    sol = jc.solve(problem, jnp.array([1.0, 5.0, 5.0, 1.0]), jc.SQP())
    print(json.dumps({"file": jc.__file__, "status": jc.Status(int(sol.status)).name,
                      "f": float(sol.f), "violation": float(sol.stats.violation)}))
    """
)


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_solves_hs71(tmp_path):
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], timeout=600)
    (wheel,) = dist.glob("jconstrain-*.whl")
    (sdist,) = dist.glob("jconstrain-*.tar.gz")

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(meta).decode()
    assert "jconstrain/py.typed" in names
    assert "jconstrain/qp/_ipm.py" in names  # subpackages ship
    assert not any(n.startswith(("tests/", "notebooks/", "benchmarks/", "docs/")) for n in names)
    assert "Classifier: Typing :: Typed" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "Provides-Extra: docs" in metadata
    with tarfile.open(sdist) as tf:
        assert any(n.endswith("jconstrain/py.typed") for n in tf.getnames())

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    # No extras; the dependencies at the versions the suite is tested with.
    _run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "--constraint", str(ROOT / "constraints.txt"), str(wheel)], env=env, timeout=900)
    out = _run([str(py), "-c", HS71], env=env, cwd=tmp_path, timeout=600)
    result = json.loads(out.strip().splitlines()[-1])

    assert Path(result["file"]).resolve().is_relative_to(venv.resolve())  # the wheel, not the checkout
    assert result["status"] == "CONVERGED"
    assert abs(result["f"] - F_STAR) < 1e-6
    assert result["violation"] < 1e-8
