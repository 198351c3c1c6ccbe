"""The ``reidexplain`` command line: ``demo``, ``explain``, ``fit``, ``persons``.

The ground-truth benchmark is not part of the installed command: it is experiment code of the
repository, run with ``python benchmarks/run_benchmark.py [--quick]`` from a source checkout.

Errors a user can cause (a missing file, a bad ``MODULE:FACTORY``) are reported as one line on stderr
with exit status 2, not as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .interpreter.recipes import DEFAULT_RECIPE, RECIPES

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An error caused by the command line's arguments; printed as one line."""


def _build_model(spec: str):
    """Call the ``MODULE:FACTORY`` of ``--model`` and check that it returns an ``nn.Module``."""
    import torch

    factory = _load_factory(spec)
    try:
        model = factory()
    except Exception as err:  # the user's code: report it in one line, whatever it raised
        raise CLIError(f"--model: {spec}() failed: {type(err).__name__}: {err}") from None
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"--model: {spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_factory(spec: str) -> Callable[[], object]:
    """Resolve ``package.module:factory`` (or ``path/to/file.py:factory``) to a callable."""
    if ":" not in spec:
        raise CLIError(f"--model: expected MODULE:FACTORY (e.g. mypkg.models:build), got {spec!r}")
    module_name, attr = spec.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise CLIError(f"--model: no such file {module_name!r}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise CLIError(f"--model: cannot import {module_name!r}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CLIError(f"--model: {module_name!r} has no callable {attr!r}")
    return factory


def _read_image(path: str, size: tuple[int, int] | None):
    import torch
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"image: no such file {path!r}")
    try:
        img = Image.open(p).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise CLIError(f"image: cannot read {path!r}: {err}") from None
    if size is not None:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    import numpy as np

    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


# ----------------------------------------------------------------------------- commands
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    out = run_demo(out=args.out, quick=args.quick, progress=not args.no_progress, seed=args.seed)
    print(f"reidexplain demo: report written to {out / 'report.md'}")
    return 0


def _cmd_persons(args: argparse.Namespace) -> int:
    from .demo import render_person_grid

    path = render_person_grid(args.out, domain=args.domain, rows=args.rows, cols=args.cols, seed=args.seed)
    print(f"reidexplain persons: grid written to {path}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explainer import Explainer

    if not Path(args.explainer).is_file():
        raise CLIError(f"--explainer: no such file {args.explainer!r}")
    model = _build_model(args.model)
    size = tuple(args.size) if args.size else None
    a, b = _read_image(args.image_a, size), _read_image(args.image_b, size)
    if a.shape != b.shape:
        raise CLIError(f"images differ in size: {tuple(a.shape[1:])} and {tuple(b.shape[1:])}; pass --size H W")
    try:
        explainer = Explainer.load(args.explainer, model)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CLIError(f"--explainer: {err}") from None
    attribution = explainer.explain((a, b))
    print(f"distance {attribution.distance[0]:.4f}  (interpreter: {attribution.reconstructed[0]:.4f})")
    for label, contribution, share in attribution.top(args.top_k):
        print(f"  {label:<28s} {contribution:8.4f}  {100 * share:5.1f} %")
    if args.out:
        fig, _ = attribution.plot(top_k=args.top_k)
        fig.savefig(args.out, dpi=120, bbox_inches="tight")
        print(f"figure written to {args.out}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from .data import Market1501, PKSampler
    from .explainer import Explainer

    root = Path(args.root)
    if not root.is_dir():
        raise CLIError(f"root: no such folder {args.root!r}")
    model = _build_model(args.model)
    size = tuple(args.size)
    try:
        train = Market1501(root, "train", image_size=size)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    rank = _init_distributed()
    # Under torchrun the sampler shares each batch of p identities among the processes.
    loader = DataLoader(train, batch_sampler=PKSampler(train.pids, p=args.p, k=args.k, seed=args.seed))
    explainer = Explainer(model, attributes="market1501", metric=args.metric, recipe=args.recipe)
    explainer.fit(loader, epochs=args.epochs, seed=args.seed, checkpoint=args.checkpoint,
                  checkpoint_every=args.checkpoint_every, progress=rank == 0)
    if rank == 0:  # only rank 0 writes
        explainer.save(args.out)
        print(f"reidexplain fit: interpreter saved to {args.out}")
    return 0


def _init_distributed() -> int:
    """Join the process group that ``torchrun`` describes in the environment; returns this rank."""
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank()


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``reidexplain`` command."""
    parser = argparse.ArgumentParser(
        prog="reidexplain", description="Explain person re-identification models (AMD + Captum baselines)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train/load a reference model, fit AMD, explain pairs, write a report")
    demo.add_argument("--out", default="reidexplain-demo", help="report folder (default: ./reidexplain-demo)")
    demo.add_argument("--quick", action="store_true", help="a smaller, faster run")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(func=_cmd_demo)

    persons = sub.add_parser("persons", help="render a grid of synthetic persons to a PNG")
    persons.add_argument("--out", default="persons.png")
    persons.add_argument("--domain", default="market", choices=["market", "duke"])
    persons.add_argument("--rows", type=int, default=3)
    persons.add_argument("--cols", type=int, default=8)
    persons.add_argument("--seed", type=int, default=0)
    persons.set_defaults(func=_cmd_persons)

    explain = sub.add_parser("explain", help="explain the distance between two image files")
    explain.add_argument("image_a")
    explain.add_argument("image_b")
    explain.add_argument("--explainer", required=True, help="interpreter file written by Explainer.save")
    explain.add_argument("--model", required=True, help="MODULE:FACTORY returning the target nn.Module")
    explain.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize both images")
    explain.add_argument("--top-k", type=int, default=3)
    explain.add_argument("--out", help="save the explanation figure to this PNG")
    explain.set_defaults(func=_cmd_explain)

    fit = sub.add_parser("fit", help="fit an AMD interpreter to a model on a Market-1501-layout folder")
    fit.add_argument("root", help="folder with bounding_box_train/ and market_attribute.mat")
    fit.add_argument("--model", required=True, help="MODULE:FACTORY returning the target nn.Module")
    fit.add_argument("--out", default="interpreter.pt")
    fit.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    fit.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"])
    fit.add_argument("--recipe", "--method", dest="recipe", default=DEFAULT_RECIPE, choices=list(RECIPES.names()),
                     help="the training recipe: amd-subspace (default), the distance split exactly along "
                          "attribute subspaces; amd, the paper's losses; amd+, explanations true to the model "
                          "(docs: AMD+); amd-linear, the linear decomposition; --method is its former name")
    fit.add_argument("--epochs", type=int, default=None)
    fit.add_argument("--p", "--identities-per-batch", dest="p", type=int, default=6, help="identities per batch")
    fit.add_argument("--k", "--images-per-identity", dest="k", type=int, default=4, help="images per identity")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--checkpoint", default=None,
                     help="a file for the fit's state: written as it goes, and resumed from when it exists")
    fit.add_argument("--checkpoint-every", type=int, default=100, help="steps between two writes")
    fit.set_defaults(func=_cmd_fit)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reidexplain`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        if args.threads < 1:
            print(f"reidexplain: error: --threads: expected >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"reidexplain {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"reidexplain {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reidexplain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
