"""Packaging: optix works without its optional extras, the kernels build portably, and the
wheel built from the sdist installs into a fresh venv with its kernels loading."""

import os
import pathlib
import subprocess
import sys
import sysconfig
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Makes `import flax` (and every flax submodule) fail, as in an environment without flax.
_BLOCK_FLAX = textwrap.dedent("""
    import sys
    class _NoFlax:
      def find_spec(self, name, path=None, target=None):
        if name == "flax" or name.startswith("flax."):
          raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
    sys.meta_path.insert(0, _NoFlax())
    """)


def _env(python):
  env = dict(os.environ)
  if python != sys.executable:  # another venv: nothing of this one's path
    env.pop("PYTHONPATH", None)
  return env


def _run_python(code, *, python=sys.executable, cwd=ROOT, timeout=600):
  env_code = "import os; os.environ.setdefault('JAX_PLATFORMS', 'cpu')\n"
  out = subprocess.run([python, "-c", env_code + code], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=_env(python))
  assert out.returncode == 0, out.stdout + out.stderr
  return out.stdout


def _without_flax(init_every_entry):
  return _run_python(_BLOCK_FLAX + textwrap.dedent(f"""
      sys.path.insert(0, "tests")
      import jax, jax.numpy as jnp
      import optix
      from registry import ENTRIES, params_for
      for entry in ENTRIES:
        tx = entry.make()
        if {init_every_entry}:
          params = params_for(entry)
          grads = jax.tree.map(jnp.ones_like, params)
          tx.update(grads, tx.init(params), params, **entry.extra_args)
      tx = optix.adamw(1e-3)
      params = {{"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}}
      step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p))
      params, _ = step(params, tx.init(params), jax.tree.map(jnp.ones_like, params))
      assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(params))
      assert not any(m == "flax" or m.startswith("flax.") for m in sys.modules)
      try:
        import optix.contrib.nnx
      except ImportError as err:
        print("nnx:", err)
      print("entries:", len(ENTRIES))
      """))


def test_optix_and_every_registry_optimizer_build_without_flax():
  """Flax is an extra (K-FAC's NNX capture): `import optix`, building every registry optimizer
  and a jitted step must not need it; only optix.contrib.nnx asks for it."""
  out = _without_flax(False)
  assert "nnx:" in out and "flax" in out.split("nnx:")[1]
  assert int(out.split("entries:")[1]) > 50


@pytest.mark.slow
def test_every_registry_optimizer_steps_without_flax():
  assert "entries:" in _without_flax(True)


def test_the_kernels_are_built_portably():
  """A wheel runs on other machines: no flag that ties the build to this CPU."""
  setup = (ROOT / "setup.py").read_text()
  assert "=native" not in setup  # -march=native, -mtune=native, -mcpu=native


def _dev_site_packages():
  return sysconfig.get_paths()["purelib"]


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_kernel(tmp_path):
  """sdist, then a wheel built from the sdist (without build isolation: this venv's setuptools
  and jaxlib headers), installed with --no-deps into a fresh venv whose dependencies resolve
  from this venv's site-packages through a path entry (its .pth files, hence the editable
  optix, are not processed there). The installed optix, not the checkout's, takes a fused step."""
  pytest.importorskip("build")
  pytest.importorskip("wheel")  # setuptools < 70 builds wheels with it
  dist = tmp_path / "dist"
  subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist),
                  str(ROOT)], check=True, capture_output=True, timeout=900)
  wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
  assert len(wheels) == 1 and len(sdists) == 1
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  site = pathlib.Path(_run_python("import sysconfig; print(sysconfig.get_paths()['purelib'])",
                                  python=str(python), cwd=tmp_path).strip())
  # Outside the checkout, whose optix.egg-info would read as optix already installed.
  subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                  "--no-deps", "--no-index", str(wheels[0])], check=True, timeout=300,
                 cwd=tmp_path, env=_env(str(python)))
  (site / "_optix_deps.pth").write_text(_dev_site_packages() + "\n")
  out = _run_python(textwrap.dedent("""
      import jax, jax.numpy as jnp
      import optix
      from optix import fused
      assert optix.__file__.startswith(%r), optix.__file__
      assert fused.available(), fused._registered()
      tx = optix.adamw(1e-3)
      params = {"w": jnp.ones((64, 32))}
      step = jax.jit(lambda p, s, g: optix.apply_step(tx, g, s, p, fused=True))
      params, _ = step(params, tx.init(params), {"w": jnp.full((64, 32), 0.5)})
      assert "optix_fused_adam" in step.lower(params, tx.init(params), params).as_text()
      print("ok", float(params["w"][0, 0]))
      """) % str(site), python=str(python), cwd=tmp_path)
  assert out.startswith("ok ")
