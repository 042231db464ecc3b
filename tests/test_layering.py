"""Dependencies run one way: zigma <- plugins <- harness."""

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return {m.split(".")[0] for m in out.stdout.split()}


def test_zigma_imports_without_pluggy_optuna_mlflow_yaml_or_the_harness():
    loaded = _modules_after("import zigma, zigma.scans, zigma.mixer, zigma.backbones, zigma.interpolants, zigma.random, zigma.data, zigma.metrics")
    forbidden = {"pluggy", "optuna", "mlflow", "yaml", "pydantic", "plugins", "harness", "typer", "rich"}
    assert not loaded & forbidden, loaded & forbidden


def test_plugins_do_not_import_the_harness():
    loaded = _modules_after("import plugins.registry as r; r.load_registries()")
    assert not loaded & {"harness", "optuna", "mlflow"}, loaded & {"harness", "optuna", "mlflow"}
