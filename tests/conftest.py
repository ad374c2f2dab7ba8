"""Test configuration: 8 simulated CPU devices, set before JAX starts."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


# -- The reliability matrix: every (optimizer, cell) -> pass/fail/skip, printed at the end of the
# run and written to $OPTIX_MATRIX_OUT (markdown) when set. A test joins the table by being
# parametrized over a registry entry (`entry`); its column is named by MATRIX_CELLS below. A cell
# that did not run says why: its own skip reason, "slow" when the `slow` marker deselected it, or
# why its test is not parametrized over that entry (_static_reason).

import pathlib  # noqa: E402

import pytest  # noqa: E402

# test function name -> column of the table. Order = column order.
MATRIX_CELLS = {
    "test_contract_fp32": "fp32-jit",
    "test_bf16_params_keep_fp32_state": "bf16-jit",
    "test_complex_params_are_stepped_in_complex_or_refused": "complex64",
    "test_sharded_matches_unsharded": "sharded8",
    "test_sharded_bf16": "bf16-sharded8",
    "test_extra_args_accepted": "extra-args",
    "test_inject_hyperparams": "inject",
    "test_scan_cond_state_stable": "scan/cond",
    "test_checkpoint_round_trip_resumes_bit_exactly": "ckpt",
    "test_restore_onto_other_mesh": "ckpt->mesh",
    "test_nan_inf_guarded": "nan/inf",
    "test_bad_hyperparameters_rejected": "bad-hp",
    "test_tree_mismatch_is_named": "mismatch",
    "test_state_can_be_donated": "donate",
    "test_matches_optax": "optax-parity",
    "test_counter_saturates": "count-2^31",
    "test_fused_step_matches_update": "fused",
}
_RANK = {"failed": 3, "skipped": 1, "passed": 0}


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: heavy cells and load tests; run with `make test-all`")


def _matrix_key(item):
  entry = getattr(item, "callspec", None) and item.callspec.params.get("entry")
  name = getattr(item, "originalname", None)
  return (str(entry), name) if entry is not None and name in MATRIX_CELLS else None


def pytest_collection_modifyitems(config, items):
  for item in items:
    key = _matrix_key(item)
    if key is not None:
      item.user_properties.append(("matrix", key))


def pytest_deselected(items):
  """Cells left out by -m/-k never report: remember why (under xdist each worker sends its list
  to the controller in workeroutput, read back in pytest_testnodedown)."""
  for item in items:
    key = _matrix_key(item)
    if key is not None:
      why = ("slow: run `make test-all`" if item.get_closest_marker("slow")
             else "deselected by -k/-m in this run")
      _DESELECTED[key] = why


def pytest_sessionfinish(session):
  workeroutput = getattr(session.config, "workeroutput", None)
  if workeroutput is not None:  # an xdist worker
    workeroutput["optix_matrix_deselected"] = [[e, n, why] for (e, n), why in _DESELECTED.items()]


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the controller, as each worker ends
def pytest_testnodedown(node, error):
  for e, n, why in getattr(node, "workeroutput", {}).get("optix_matrix_deselected", []):
    _DESELECTED[e, n] = why


def pytest_runtest_logreport(report):
  props = dict(report.user_properties)
  if "matrix" not in props or (report.passed and report.when != "call"):
    return
  if hasattr(report, "wasxfail"):
    outcome = ("passed", "") if report.passed else ("skipped", "xfail: " + report.wasxfail)
  elif report.skipped:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    outcome = ("skipped", reason.replace("Skipped: ", ""))
  elif report.failed:
    outcome = ("failed", f"{report.when} failed")
  else:
    outcome = ("passed", "")
  key = tuple(props["matrix"])
  old = _MATRIX.get(key)
  if old is None or _RANK[outcome[0]] > _RANK[old[0]]:
    _MATRIX[key] = outcome


_MATRIX = {}  # (entry name, test name) -> (outcome, reason)
_DESELECTED = {}  # (entry name, test name) -> why it did not run


# Entries (by name prefix) without an optax_ref because optax (0.2.8) has no such optimizer.
_NO_OPTAX_REF = {
    "kfac": "optax has no K-FAC",
    "shampoo": "optax has no Shampoo (distributed_shampoo is a separate package)",
    "soap": "optax has no SOAP",
    "psgd": "optax has no PSGD",
    "adam8bit": "optax has no 8-bit quantized state",
    "adamw8bit": "optax has no 8-bit quantized state",
    "adafactor_relative_step": "optax.adafactor has no relative step size",
    "mars": "optax has no MARS",
    "cautious": "optax has no cautious masking",
    "spike_guard": "optax has no spike guard",
}


def _static_reason(entry, name):
  """Why a cell has no test for this entry (not parametrized over it)."""
  if name == "test_matches_optax" and entry.optax_ref is None:
    for prefix, why in _NO_OPTAX_REF.items():
      if entry.name.startswith(prefix):
        return why
    return "no optax_ref in its registry entry"
  if name == "test_bad_hyperparameters_rejected" and not entry.bad:
    return "no validated argument of its own (pieces' args tested in their entries)"
  if name == "test_fused_step_matches_update":
    return "no one-pass kernel for this chain: the plain chain runs"
  return "its test is not parametrized over this entry"


def _cell_text(outcome, reason):
  if outcome == "passed":
    return "pass"
  if outcome == "failed":
    return "FAIL"
  return f"skip ({reason})"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  if not _MATRIX:
    return
  try:
    from registry import ENTRIES  # noqa: PLC0415  (tests/ is on sys.path)
  except ImportError:
    return
  seen_cells = {c for _, c in _MATRIX}
  cells = [c for c in MATRIX_CELLS if c in seen_cells]
  rows, counts = [], {"pass": 0, "FAIL": 0, "skip": 0}
  for entry in ENTRIES:
    row = [entry.name]
    for c in cells:
      outcome, reason = _MATRIX.get((entry.name, c), ("skipped", _DESELECTED.get(
          (entry.name, c)) or _static_reason(entry, c)))
      text = _cell_text(outcome, reason)
      counts[text.split(" ")[0]] += 1
      row.append(text)
    rows.append(row)
  header = ["optimizer"] + [MATRIX_CELLS[c] for c in cells]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  summary = (f"{len(rows)} optimizers x {len(cells)} cells: {counts['pass']} pass, "
             f"{counts['FAIL']} fail, {counts['skip']} skip")
  tr = terminalreporter
  tr.write_sep("=", "optix reliability matrix")
  short = {"pass": ".", "FAIL": "F"}
  width = max(len(r[0]) for r in rows)
  tr.write_line(" " * width + "  " + " ".join(f"{h[:6]:>6}" for h in header[1:]))
  for r in rows:
    tr.write_line(f"{r[0]:<{width}}  " + " ".join(
        f"{short.get(t, 's' if t.startswith('skip') else t):>6}" for t in r[1:]))
  tr.write_line(". pass, F fail, s skip (reasons in $OPTIX_MATRIX_OUT). " + summary)
  out = os.environ.get("OPTIX_MATRIX_OUT")
  if out:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# optix reliability matrix\n\n" + summary + "\n\n" + "\n".join(lines) + "\n")
    tr.write_line(f"matrix table written to {path}")
