"""CI runs exactly the README's test command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nas_mtl.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert len(blocks) >= 2
    run_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert "nas-mtl run studies/quickstart.toml" in run_cmd
    ci_lines = [
        ln
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln and not ln.startswith(("#", "set ", "cd ", "export "))
    ]
    assert ci_lines == [test_cmd]


TINY_STUDY = """
name = "tiny"
spaces = ["no_sharing", "snr_trans"]
seeds = [0]

[data]
name = "synthetic"
params = { n_train = 256, n_val = 64, n_test = 64, input_dim = 8, groups = [2, 1], m = 2 }

[space_params]
snr_trans = { subnetworks = 2, width = 8 }
no_sharing = { width = 8 }

[search]
epochs = 3
batch_size = 64

[retrain]
lr = 3e-2  # enough to beat a constant prediction (else the run fails)
epochs = 3
batch_size = 64
"""


def _comparable(report: dict) -> dict:
    """A report without what differs between two runs of the same study: times and paths."""
    drop = {"wall_s", "created", "out"}

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(report)


def test_readme_python_example_runs_and_matches_the_cli(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Python\n\n```python\n(.*?)\n```", readme, flags=re.S).group(1)
    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    assert '"studies/quickstart.toml"' in block and '"runs/quickstart"' in block
    code = block.replace('"studies/quickstart.toml"', repr(str(study)))
    code = code.replace('"runs/quickstart"', repr(str(tmp_path / "python")))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("no_sharing ")
    assert main(["run", str(study), "--out", str(tmp_path / "cli")]) == 0
    from_python = json.loads((tmp_path / "python" / "report.json").read_text())
    from_cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert _comparable(from_python) == _comparable(from_cli)
    arch = "default/snr_trans/seed_0/architecture.json"
    a_py = json.loads((tmp_path / "python" / arch).read_text())
    a_cli = json.loads((tmp_path / "cli" / arch).read_text())
    assert _comparable(a_py) == _comparable(a_cli)


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, nas_mtl.cli, nas_mtl; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_root_api_names_resolve():
    import nas_mtl

    for name in nas_mtl.__all__:
        assert callable(getattr(nas_mtl, name)), name
    assert nas_mtl.search.__module__ == "nas_mtl.stages.search"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nas_mtl.nope  # noqa: B018


def test_python_derive_gives_the_architecture_the_cli_wrote(tmp_path):
    import nas_mtl
    from nas_mtl.model.graph_files import architecture_record
    from nas_mtl.pipeline import load_searched

    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    assert main(["run", str(study), "--out", str(tmp_path / "cli")]) == 0
    run = tmp_path / "cli" / "default" / "snr_trans" / "seed_0"
    written = json.loads((run / "architecture.json").read_text())
    target = nas_mtl.load_study(study).search.target_open
    derived = architecture_record(nas_mtl.derive(load_searched(run), target_open=target), {})
    for key in ("graph", "task_edges", "open_fraction"):
        assert derived[key] == written[key], key


def test_the_study_file_example_is_a_valid_study():
    import tomllib

    from nas_mtl.study import parse_study

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Study files\n\n```toml\n(.*?)\n```", readme, flags=re.S).group(1)
    study = parse_study(tomllib.loads(block), "README.md")
    assert study.report.cluster and study.tune.params and study.controls.random == 3
