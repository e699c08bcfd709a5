"""The command line: fast help, plugin listing, errors instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from invdiff.cli import main


def run_py(code: str, env=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("argv", [["--help"], ["plugins"], ["plugins", "--json"]])
def test_help_and_plugins_do_not_import_torch(argv):
    code = (
        "import sys\nfrom invdiff.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'scipy', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_plugins_json_lists_builtins(capsys, fresh_registry):
    assert main(["plugins", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = next(p for p in out["plugins"] if p["name"] == "reference")
    assert {"kind": "prior", "name": "gaussian-field",
            "help": "Gaussian random field, squared-exponential covariance"} in ref["components"]


def test_config_error_is_a_message_not_a_traceback(tmp_path, capsys, fresh_registry):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('name = "x"\n[problem.prior]\nname = "frob-prior"\n'
                   '[problem.forward_model]\nname = "blur"\n[problem.noise_model]\n'
                   'name = "gaussian"\nparams = { std = 0.1 }\n[net]\nname = "unet"\n')
    code = main(["simulate", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "problem.prior: unknown prior 'frob-prior'" in err
    assert "pip install invdiff-<plugin>" in err and "invdiff plugins" in err
    assert "Traceback" not in err


def test_set_overrides_reach_the_config(tmp_path, capsys, fresh_registry):
    """``--set`` values are validated like the file's: a bad one is a message naming it."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "x"\n[problem.prior]\nname = "gaussian-field"\nparams = { n = 4 }\n'
                   '[problem.forward_model]\nname = "blur"\nparams = { n = 4 }\n'
                   '[problem.noise_model]\nname = "gaussian"\nparams = { std = 0.1 }\n'
                   '[net]\nname = "unet"\n[data]\nn_train = 8\nn_val = 0\nn_test = 1\n')
    out = tmp_path / "o"
    assert main(["simulate", str(cfg), "--out", str(out), "-q", "--set", "data.n_train=5"]) == 0
    capsys.readouterr()
    from invdiff.data import load_dataset

    assert len(load_dataset(out / "data" / "train.npz")) == 5
    assert main(["simulate", str(cfg), "--set", "data.n_train=0"]) == 2
    assert "data.n_train" in capsys.readouterr().err


def test_missing_config_file(capsys):
    assert main(["train", "/nonexistent/cfg.toml"]) == 2
    assert "no config file" in capsys.readouterr().err
