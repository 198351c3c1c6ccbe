import pytest

import reidexplain
from reidexplain.cli import main


def test_public_api_is_exported():
    for name in reidexplain.__all__:
        assert hasattr(reidexplain, name), name
    assert reidexplain.Explainer is reidexplain.explainer.Explainer


def test_persons_renders_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["persons", "--out", str(out), "--rows", "1", "--cols", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "grid written" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["explain", "a.png", "b.png", "--explainer", "missing.pt", "--model", "x:y"], "no such file 'missing.pt'"),
        (["fit", "no/such/folder", "--model", "x:y"], "no such folder"),
    ],
)
def test_bad_paths_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_bad_model_spec_and_images(tmp_path, capsys):
    explainer_file = tmp_path / "e.pt"
    explainer_file.write_bytes(b"")
    argv = ["explain", "a.png", "b.png", "--explainer", str(explainer_file), "--model", "nocolon"]
    assert main(argv) == 2
    assert "expected MODULE:FACTORY" in capsys.readouterr().err
    argv[-1] = "reidexplain.zoo:no_such_factory"
    assert main(argv) == 2
    assert "has no callable 'no_such_factory'" in capsys.readouterr().err
    argv[-1] = "reidexplain.zoo:create_model"  # needs a name: the factory itself fails
    assert main(argv) == 2
    assert "reidexplain.zoo:create_model() failed: TypeError" in capsys.readouterr().err
    argv[-1] = "reidexplain.zoo:list_models"  # returns a list, not a model
    assert main(argv) == 2
    assert "returned list, not a torch.nn.Module" in capsys.readouterr().err


def test_threads_option_is_checked(capsys):
    assert main(["--threads", "0", "persons", "--out", "x.png"]) == 2
    assert "--threads: expected >= 1" in capsys.readouterr().err


def test_fit_with_the_amd_plus_method(tmp_path, capsys):
    from reidexplain.data import synthetic_splits, write_market1501
    from reidexplain.explainer import Explainer

    write_market1501(synthetic_splits(4, 2, 4, image_size=(64, 32)), tmp_path / "market", progress=False,
                     pid_offset=1)
    factory = tmp_path / "tiny_model.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),"
        " nn.Flatten())\n"
    )
    out = tmp_path / "interp.pt"
    argv = ["fit", str(tmp_path / "market"), "--model", f"{factory}:build", "--size", "64", "32",
            "--epochs", "1", "--p", "2", "--k", "2", "--recipe", "amd+", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_model", factory)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded = Explainer.load(out, module.build())
    assert loaded.recipe.name == "amd+" and loaded.network.decomposition.shared
    with pytest.raises(SystemExit):
        main(argv[:-4] + ["--recipe", "amd++"])


def test_benchmark_code_is_not_in_the_installed_package(capsys):
    """The benchmark is experiment code of ``benchmarks/``: no subcommand, no ``reidexplain.benchmark``."""
    import pkgutil

    assert "benchmark" not in {m.name for m in pkgutil.iter_modules(reidexplain.__path__)}
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--quick"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'benchmark'" in capsys.readouterr().err
