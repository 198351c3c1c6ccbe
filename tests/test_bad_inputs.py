"""The catalogue of bad inputs (``docs/bad-inputs.md``): each is answered by reidexplain at its boundary.

Every entry either raises a typed error whose message names the argument (and what was expected and
got), or is accepted with a documented behaviour or warning. None may give a NaN result, change the
user's model or tensors, or surface an error from deep inside torch or Captum. Inputs that vary are
property tests (hypothesis, few examples: the file stays fast).
"""

from __future__ import annotations

import math
import pickle
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import AMDTupleNet, amd_batches, amd_sequential_net  # noqa: E402

from reidexplain import Explainer  # noqa: E402
from reidexplain.baselines import SaliencyPair  # noqa: E402
from reidexplain.explainer import NotFittedError, ZeroDistanceWarning  # noqa: E402

M = 5
SIZE = (32, 16)
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FITS = settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------- fixtures
class MarkerNaNNet(nn.Module):
    """A conv net that returns NaN embeddings for images whose top-left red pixel is above 5."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))
        poison = torch.where(x[:, 0, 0, 0:1] > 5.0, torch.full_like(x[:, 0, 0, 0:1], float("nan")),
                             torch.ones_like(x[:, 0, 0, 0:1]))
        return self.head(f.mean(dim=(2, 3))) * poison


class DictNet(nn.Module):
    """Returns ``{"feat": embedding, "logits": ...}``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.conv(x).mean(dim=(2, 3))
        return {"feat": f, "logits": 2 * f}


class FailingLoader:
    """Four batches; raises ``OSError`` at batch ``at`` of its pass ``fail_pass`` (0-based).

    ``Explainer.fit`` reads the first batch once (pass 0) before training: training epoch ``e`` is pass
    ``e + 1``.
    """

    def __init__(self, fail_pass: int, at: int = 1) -> None:
        self.batches = amd_batches(batch_size=4)
        self.epoch, self.at, self.passes = fail_pass, at, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        current, self.passes = self.passes, self.passes + 1
        for i, batch in enumerate(self.batches):
            if current == self.epoch and i == self.at:
                raise OSError("disk went away")
            yield batch


@pytest.fixture(scope="module")
def fitted() -> Explainer:
    torch.manual_seed(0)
    return Explainer(amd_sequential_net()).fit(amd_batches(), epochs=2, lr=1e-3, progress=False)


@pytest.fixture(scope="module")
def marker_fitted() -> Explainer:
    return Explainer(MarkerNaNNet()).fit(amd_batches(), epochs=1, progress=False)


def _images(n: int = 2, seed: int = 0, size: tuple[int, int] = SIZE) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _fit(model: nn.Module | None = None, data: object = None, output: object = None, **kwargs) -> Explainer:
    explainer = Explainer(model if model is not None else amd_sequential_net(), output=output)
    return explainer.fit(amd_batches() if data is None else data, epochs=kwargs.pop("epochs", 1),
                         progress=False, **kwargs)


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


positions = st.tuples(st.integers(0, 1), st.integers(0, 2), st.integers(0, SIZE[0] - 1), st.integers(0, SIZE[1] - 1))
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])


# ------------------------------------------------------------------------------------------- NaN/inf images
@FEW
@given(value=non_finite, where=positions, side=st.integers(0, 1))
def test_non_finite_images_at_explain(fitted: Explainer, value: float, where: tuple, side: int) -> None:
    pair = [_images(2, 0), _images(2, 1)]
    pair[side][where] = value
    saved = [p.clone() for p in pair]
    with pytest.raises(ValueError, match=rf"`pair\[{side}\]`: expected finite images, got 1 NaN or inf"):
        fitted.explain(tuple(pair))
    for p, s in zip(pair, saved, strict=True):  # the caller's tensors are untouched
        torch.testing.assert_close(p, s, equal_nan=True, atol=0, rtol=0)


@FEW
@given(value=non_finite, where=positions, which=st.sampled_from(["query_images", "gallery_images"]))
def test_non_finite_images_at_explain_matrix_and_embed(fitted: Explainer, value: float, where: tuple,
                                                       which: str) -> None:
    images = {"query_images": _images(2, 0), "gallery_images": _images(2, 1)}
    images[which][where] = value
    with pytest.raises(ValueError, match=f"`{which}`: expected finite images"):
        fitted.explain_matrix(**images)
    with pytest.raises(ValueError, match="`images`: expected finite images"):
        fitted.embed(images[which])


@FEW
@given(value=non_finite, where=positions)
def test_non_finite_images_at_baselines(value: float, where: tuple) -> None:
    a = _images(2, 0)
    a[where] = value
    with pytest.raises(ValueError, match=r"`pair\[0\]`: expected finite images"):
        SaliencyPair(amd_sequential_net()).explain((a, _images(2, 1)))


@FITS
@given(value=non_finite, batch=st.integers(0, 3), row=st.integers(0, 3))
def test_non_finite_images_at_fit(value: float, batch: int, row: int) -> None:
    data = amd_batches(batch_size=4)
    data[batch] = {**data[batch], "image": data[batch]["image"].clone()}
    data[batch]["image"][row, 1, 3, 2] = value
    explainer = Explainer(amd_sequential_net())
    with pytest.raises(ValueError, match="loader.*expected finite images"):
        explainer.fit(data, epochs=1, progress=False)
    assert not explainer.is_fitted


@FEW
@given(value=non_finite, which=st.sampled_from(["query_loader", "gallery_loader"]))
def test_non_finite_images_at_evaluate(fitted: Explainer, value: float, which: str) -> None:
    bad = amd_batches()
    bad[1] = {**bad[1], "image": bad[1]["image"].clone()}
    bad[1]["image"][0, 0, 0, 0] = value
    loaders = {"query_loader": amd_batches(), "gallery_loader": amd_batches()}
    loaders[which] = bad
    with pytest.raises(ValueError, match=f"`{which} images`: expected finite images"):
        fitted.evaluate(**loaders, progress=False)


# ------------------------------------------------------------------------------------------- NaN embeddings
def test_non_finite_embeddings_at_fit() -> None:
    data = amd_batches(batch_size=4)
    data[2] = {**data[2], "image": data[2]["image"].clone()}
    data[2]["image"][3, 0, 0, 0] = 9.0  # finite, but this model answers NaN
    explainer = Explainer(MarkerNaNNet())
    with pytest.raises(ValueError, match=r"model output: the embeddings contain NaN or inf values \(images 3"):
        explainer.fit(data, epochs=1, progress=False, flip=False)
    assert not explainer.is_fitted


def test_non_finite_embeddings_at_explain(marker_fitted: Explainer) -> None:
    a = _images(2, 0)
    a[1, 0, 0, 0] = 9.0
    with pytest.raises(ValueError, match="model output: the embeddings contain NaN or inf"):
        marker_fitted.explain((a, _images(2, 1)))
    with pytest.raises(ValueError, match="model output: the embeddings contain NaN or inf"):
        marker_fitted.explain_matrix(a, _images(2, 1))
    with pytest.raises(ValueError, match="model output: the embeddings contain NaN or inf"):
        SaliencyPair(MarkerNaNNet()).explain((a, _images(2, 1)))


# ------------------------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("loader, error, message", [
    ([], ValueError, "loader: it yielded no batches"),
    (5, TypeError, "`loader`: expected an iterable of batches.*got int"),
    (torch.rand(4, 3, 32, 16), TypeError, "`loader`: .*got a single Tensor"),
    ({"image": torch.rand(4, 3, 32, 16), "attributes": torch.eye(4)}, TypeError, "got a single dict"),
    (iter(amd_batches()), TypeError, "one-shot generator|one-shot list_iterator"),
])
def test_bad_loaders_at_fit(loader: object, error: type, message: str) -> None:
    explainer = Explainer(amd_sequential_net())
    with pytest.raises(error, match=message):
        explainer.fit(loader, epochs=1, progress=False)
    assert not explainer.is_fitted


@pytest.mark.parametrize("which", ["query_loader", "gallery_loader"])
def test_empty_and_non_iterable_loaders_at_evaluate(fitted: Explainer, which: str) -> None:
    for bad, error, message in (([], ValueError, "it yielded no batches"),
                                (3.5, TypeError, "expected an iterable of batches")):
        loaders = {"query_loader": amd_batches(), "gallery_loader": amd_batches(), which: bad}
        with pytest.raises(error, match=f"`{which}`: {message}"):
            fitted.evaluate(**loaders, progress=False)


def test_single_identity_batches_fit_on_their_pairs() -> None:
    data = [{**b, "pid": torch.zeros_like(b["pid"])} for b in amd_batches()]
    explainer = _fit(data=data, epochs=2)
    assert len(explainer.history) == 2
    assert all(math.isfinite(v) for entry in explainer.history for v in entry.values())
    result = explainer.explain((_images(2, 0), _images(2, 1)))
    assert _finite(result.contributions, result.shares, result.distance)


def test_batches_of_one_image() -> None:
    singles = [{k: v[i:i + 1] for k, v in b.items()} for b in amd_batches() for i in range(2)]
    explainer = Explainer(amd_sequential_net())
    with pytest.raises(ValueError, match="no batch had two or more images; AMD needs pairs"):
        explainer.fit(singles, epochs=1, progress=False)
    assert not explainer.is_fitted
    mixed = singles[:3] + amd_batches()
    assert _fit(data=mixed).history[0]["steps"] == len(amd_batches())  # the single images are skipped


def test_images_of_another_size_within_the_fit() -> None:
    data = amd_batches(batch_size=4)
    data[2] = {**data[2], "image": torch.nn.functional.interpolate(data[2]["image"], size=(16, 8))}
    with pytest.raises(ValueError, match="`loader`: expected every image of size 32x16.*got 16x8 in batch 2"):
        _fit(data=data)


@pytest.mark.parametrize("epoch", [0, 1])
def test_loader_raising_mid_fit_is_reraised_and_the_last_good_state_kept(epoch: int) -> None:
    model = amd_sequential_net().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    explainer = Explainer(model, recipe="amd")  # no target pass: the loader's first pass is epoch 0
    with pytest.raises(OSError, match="disk went away") as info:
        explainer.fit(FailingLoader(epoch + 1), epochs=3, progress=False)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and model.training
    notes = " ".join(getattr(info.value, "__notes__", []))
    if epoch == 0:  # no epoch completed: the explainer is as before the call
        assert not explainer.is_fitted and explainer.history == [] and explainer.input_size is None
        assert "left as it was" in notes
    else:  # the best completed epoch is kept
        assert explainer.is_fitted and len(explainer.history) == 1 and explainer.history[-1]["error"] == 1.0
        assert "best completed epoch" in notes
        assert all(_finite(v) for v in explainer.network.state_dict().values() if v.is_floating_point())
        result = explainer.explain((_images(1, 0), _images(1, 1)))
        assert _finite(result.contributions)


def test_loader_raising_in_a_refit_keeps_the_previous_fit(fitted: Explainer) -> None:
    amd, history, config = fitted.amd, list(fitted.history), fitted.config
    with pytest.raises(OSError):
        fitted.fit(FailingLoader(1), epochs=2, progress=False, flip=False)
    assert fitted.amd is amd and fitted.history == history and fitted.config == config


# ------------------------------------------------------------------------------------------- image formats
@FEW
@given(h=st.integers(8, 48), w=st.integers(4, 24))
def test_images_of_another_size_than_at_fit(fitted: Explainer, h: int, w: int) -> None:
    if (h, w) == SIZE:
        return
    message = rf"expected images of size 32x16 \(the size the interpreter was fitted on\), got {h}x{w}"
    with pytest.raises(ValueError, match=rf"`pair\[0\]`: {message}"):
        fitted.explain((_images(1, 0, (h, w)), _images(1, 1, (h, w))))
    with pytest.raises(ValueError, match=f"`gallery_images`: {message}"):
        fitted.explain_matrix(_images(1, 0), _images(1, 1, (h, w)))
    with pytest.raises(ValueError, match=f"`query_loader images`: {message}"):
        fitted.evaluate([(_images(2, 0, (h, w)), torch.eye(2, M))], amd_batches(), progress=False)


@FEW
@given(channels=st.integers(1, 6).filter(lambda c: c != 3))
def test_wrong_channel_counts(fitted: Explainer, channels: int) -> None:
    x = torch.rand(2, channels, *SIZE)
    with pytest.raises(ValueError, match=rf"`pair\[0\]`: expected shape \(B,3,H,W\) or \(3,H,W\), got \(2, {channels}"):
        fitted.explain((x, x))
    with pytest.raises(ValueError, match="`query_images`: expected shape"):
        fitted.explain_matrix(x, x)
    with pytest.raises(ValueError, match=r"`pair\[0\]`: expected shape"):
        SaliencyPair(amd_sequential_net()).explain((x, x))


@FEW
@given(shape=st.sampled_from([(32,), (32, 16), (1, 1, 3, 32, 16), (2, 1, 1, 3, 32, 16)]))
def test_wrong_rank(fitted: Explainer, shape: tuple) -> None:
    x = torch.rand(*shape)
    with pytest.raises(ValueError, match=re.escape(f"`images`: expected shape (B,3,H,W) or (3,H,W), got {shape}")):
        fitted.embed(x)


@FEW
@given(dtype=st.sampled_from([torch.uint8, torch.int32, torch.int64, torch.bool, torch.int8]))
def test_integer_images_raise(fitted: Explainer, dtype: torch.dtype) -> None:
    x = (torch.rand(2, 3, *SIZE) * 200).to(dtype)
    with pytest.raises(TypeError, match=rf"`pair\[0\]`: expected floating-point images, got {dtype}.*"
                                        r"images.float\(\) / 255"):
        fitted.explain((x, x))
    with pytest.raises(TypeError, match="expected floating-point images"):
        fitted.fit([(x, torch.eye(2, M))], epochs=1, progress=False)
    with pytest.raises(TypeError, match="expected floating-point images"):
        SaliencyPair(amd_sequential_net()).explain((x, x))


def test_float64_images_are_cast_to_the_models_dtype(fitted: Explainer) -> None:
    a, b = _images(2, 0), _images(2, 1)
    single = fitted.explain((a, b))
    double = fitted.explain((a.double(), b.double()))
    torch.testing.assert_close(double.contributions, single.contributions, atol=1e-6, rtol=1e-5)
    assert a.dtype == torch.float32  # the caller's tensors are not changed


@pytest.mark.parametrize("bad", [[[0.0]], None, "image.png", np.zeros((1, 3, 32, 16), dtype=np.float32)])
def test_non_tensor_images(fitted: Explainer, bad: object) -> None:
    with pytest.raises(TypeError, match=r"`pair\[0\]`: expected a torch.Tensor of shape \(B,3,H,W\)"):
        fitted.explain((bad, _images(1)))
    with pytest.raises(TypeError, match="`images`: expected a torch.Tensor"):
        fitted.embed(bad)
    with pytest.raises(TypeError, match=r"`pair`: expected a tuple \(image_a, image_b\)"):
        fitted.explain(_images(2))


# ------------------------------------------------------------------------------------------- labels
@FEW
@given(width=st.integers(1, 30).filter(lambda w: w not in (M, 26)))
def test_labels_of_the_wrong_width(fitted: Explainer, width: int) -> None:
    labels = torch.randint(0, 2, (8, width)).float()
    with pytest.raises(ValueError, match=f"`attributes`: expected {M} attributes per image.*got {width}"):
        fitted.evaluate([(_images(8), labels)], amd_batches(), progress=False)
    with pytest.raises(ValueError, match=f"expected 26 attributes per image.*got {width}"):
        Explainer(amd_sequential_net(), attributes="market1501").fit([(_images(8), labels)], epochs=1,
                                                                      progress=False)


@FEW
@given(value=st.sampled_from([0.5, 3.0, -2.0, 7.0, 0.25]), row=st.integers(0, 7), col=st.integers(0, M - 1))
def test_non_binary_labels(value: float, row: int, col: int) -> None:
    labels = torch.randint(0, 2, (8, M)).float()
    labels[row, col] = value
    with pytest.raises(ValueError, match=r"`attributes`: labels must be binary \(0/1, -1/\+1 or 1/2\)"):
        Explainer(amd_sequential_net()).fit([(_images(8), labels)], epochs=1, progress=False)


def test_label_rows_other_than_images() -> None:
    with pytest.raises(ValueError, match="attributes: 3 rows for a batch of 8 images"):
        Explainer(amd_sequential_net()).fit([(_images(8), torch.ones(3, M))], epochs=1, progress=False)


@FITS
@given(unknown=st.lists(st.tuples(st.integers(0, 7), st.integers(0, M - 1)), min_size=1, max_size=20),
       as_mask=st.booleans())
def test_partly_unknown_labels_are_accepted(unknown: list, as_mask: bool) -> None:
    data = []
    for b in amd_batches():
        labels, mask = b["attributes"].clone(), torch.ones_like(b["attributes"], dtype=torch.bool)
        for row, col in unknown:
            mask[row, col] = False
            if not as_mask:
                labels[row, col] = float("nan")
        data.append({**b, "attributes": labels, **({"attribute_mask": mask} if as_mask else {})})
    explainer = _fit(data=data)
    assert all(math.isfinite(v) for v in explainer.history[0].values())
    scores = explainer.evaluate(data, data, progress=False)
    assert all(math.isfinite(v) for v in scores.values())


@pytest.mark.parametrize("as_mask", [False, True])
def test_all_unknown_labels_raise(as_mask: bool) -> None:
    data = [{**b, "attributes": b["attributes"] if as_mask else torch.full_like(b["attributes"], float("nan")),
             **({"attribute_mask": torch.zeros_like(b["attributes"], dtype=torch.bool)} if as_mask else {})}
            for b in amd_batches()]
    explainer = Explainer(amd_sequential_net())
    with pytest.raises(ValueError, match="`loader`: every attribute label is unknown"):
        explainer.fit(data, epochs=1, progress=False)
    assert not explainer.is_fitted


# ------------------------------------------------------------------------------------------- models
def test_tuple_and_dict_outputs_say_how_to_select() -> None:
    with pytest.raises(TypeError, match=r"got a tuple of 2 items \(Tensor, Tensor\); say which part is the "
                                        r"embedding with output=.*Explainer\(model, output=0\)"):
        Explainer(AMDTupleNet()).fit(amd_batches(), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"got a dict with keys \['feat', 'logits'\].*output='feat'"):
        Explainer(DictNet()).fit(amd_batches(), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"model output: expected a tensor of shape \(B,D\), got a dict.*"
                                        r"select_output\(model, 'feat'\)"):
        SaliencyPair(DictNet()).explain((_images(1), _images(1)))
    # With the selection named, the same models are explained.
    result = _fit(DictNet(), output="feat").explain((_images(1, 0), _images(1, 1)))
    assert _finite(result.contributions)


def test_a_model_in_train_mode_stays_in_train_mode_and_is_explained_in_eval_mode() -> None:
    model = amd_sequential_net().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    explainer = _fit(model)
    a, b = _images(2, 0), _images(2, 1)
    result = explainer.explain((a, b))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    reference = amd_sequential_net().eval()
    with torch.no_grad():
        expected = (reference(a) - reference(b)).norm(dim=1)
    torch.testing.assert_close(result.distance, expected, atol=1e-5, rtol=1e-4)


def test_model_on_several_devices_or_meta() -> None:
    split = amd_sequential_net()
    split[0].bias = nn.Parameter(torch.zeros(8, device="meta"))
    with pytest.raises(ValueError, match="`model`: expected a model with weights, got parameters on the meta"):
        Explainer(split)
    two = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    two[1].register_buffer("scale", torch.ones(1, device="meta"))
    with pytest.raises(ValueError, match="meta device"):
        Explainer(two)
    with pytest.raises(ValueError, match="device: expected a device with data"):
        Explainer(amd_sequential_net(), device="meta")


def test_model_devices_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose tensors report two devices (mocked: only a CPU here) is refused."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    fake = torch.device("cuda", 1)
    first, second = list(model.parameters())[:2]
    monkeypatch.setattr(model, "parameters", lambda recurse=True: iter([first, _OnDevice(second, fake)]))
    with pytest.raises(ValueError, match=r"`model`: expected its parameters and buffers on one device, got "
                                         r"\['cpu', 'cuda:1'\]"):
        Explainer(model)


class _OnDevice:
    """A stand-in for a tensor on another device (only ``device`` is read by the check)."""

    def __init__(self, tensor: torch.Tensor, device: torch.device) -> None:
        self.tensor, self.device = tensor, device


def test_images_on_the_meta_device(fitted: Explainer) -> None:
    x = torch.empty(2, 3, *SIZE, device="meta")
    with pytest.raises(ValueError, match=r"`pair\[0\]`: expected images with data, got a tensor on the meta"):
        fitted.explain((x, x))
    with pytest.raises(ValueError, match="`query_images`: expected images with data"):
        fitted.explain_matrix(x, x)
    with pytest.raises(ValueError, match=r"`pair\[0\]`: expected images with data"):
        SaliencyPair(amd_sequential_net()).explain((x, x))


# ------------------------------------------------------------------------------------------- checkpoints
_PWNED: list[str] = []


def _payload(tag: str) -> str:
    _PWNED.append(tag)
    return tag


class Hostile:
    """Unpickling it would call :func:`_payload`."""

    def __reduce__(self):
        return (_payload, ("pwned",))


@pytest.fixture(scope="module")
def saved(fitted: Explainer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "amd.pt"
    fitted.save(path)
    return path


@FEW
@given(data=st.binary(min_size=0, max_size=400))
def test_random_bytes_checkpoint(fitted: Explainer, tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("junk") / "junk.pt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="path: .* is not an interpreter file written by Explainer.save"):
        Explainer.load(path, fitted.model)


@FEW
@given(fraction=st.floats(0.0, 0.98))
def test_truncated_checkpoint(fitted: Explainer, saved: Path, tmp_path_factory: pytest.TempPathFactory,
                              fraction: float) -> None:
    data = saved.read_bytes()
    path = tmp_path_factory.mktemp("cut") / "cut.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match="is not an interpreter file written by Explainer.save"):
        Explainer.load(path, fitted.model)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_hostile_pickle_is_refused_and_never_run(fitted: Explainer, tmp_path: Path, writer: str) -> None:
    path = tmp_path / "evil.pt"
    obj = {"magic": "reidexplain.amd", "format_version": 2, "schema": Hostile()}
    if writer == "torch":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    _PWNED.clear()
    with pytest.raises(ValueError, match="is not an interpreter file written by Explainer.save") as info:
        Explainer.load(path, fitted.model)
    assert _PWNED == []
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("damage, message", [
    (lambda c: c.pop("network"), "damaged interpreter file: its 'network' entry is missing"),
    (lambda c: c.__setitem__("schema", 5), "damaged interpreter file: its 'schema' entry is a int"),
    (lambda c: c["adapter"].pop("grid_shape"), "adapter or recipe entry lacks \\['grid_shape'\\]"),
    (lambda c: c["network"].__setitem__(next(iter(c["network"])), torch.tensor([float("nan")])),
     "are not finite tensors"),
    (lambda c: c["recipe"].__setitem__("name", "amd-from-the-future"), "cannot rebuild"),
    (lambda c: c.__setitem__("format_version", 99), "format version 99"),
])
def test_damaged_checkpoints(fitted: Explainer, saved: Path, tmp_path: Path, damage, message: str) -> None:
    ckpt = torch.load(saved, weights_only=True)
    damage(ckpt)
    path = tmp_path / "damaged.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=message):
        Explainer.load(path, fitted.model)


def test_checkpoint_of_another_architecture_or_vocabulary(fitted: Explainer, saved: Path) -> None:
    with pytest.raises(ValueError, match="`?model`?: Sequential is not the architecture"):
        Explainer.load(saved, amd_sequential_net(dim=7))
    with pytest.raises(ValueError, match="attributes: the interpreter was fitted with schema 'generic5'.*"
                                         "got 'market1501'"):
        Explainer.load(saved, fitted.model, attributes="market1501")
    with pytest.raises(FileNotFoundError, match="path: no such file"):
        Explainer.load(saved.with_name("missing.pt"), fitted.model)


# ------------------------------------------------------------------------------------------- zero distances
@FEW
@given(seed=st.integers(0, 1000), n=st.integers(1, 4))
def test_identical_images_have_nothing_to_explain(fitted: Explainer, seed: int, n: int) -> None:
    a = _images(n, seed)
    with pytest.warns(ZeroDistanceWarning, match="the distance is 0 .*nothing to explain"):
        result = fitted.explain((a, a.clone()))
    assert _finite(result.shares, result.contributions, result.heatmaps[0])
    assert torch.equal(result.contributions, torch.zeros(n, M)) and torch.equal(result.shares, torch.zeros(n, M))
    assert torch.equal(result.distance, torch.zeros(n)) and torch.equal(result.reconstructed, torch.zeros(n))


def test_identical_images_in_a_matrix(fitted: Explainer) -> None:
    x = _images(3, 5)
    with pytest.warns(ZeroDistanceWarning, match="3 of 9 pairs"):
        mat = fitted.explain_matrix(x, x)
    assert _finite(mat.shares)
    torch.testing.assert_close(mat.distance.diagonal(), torch.zeros(3))
    torch.testing.assert_close(mat.shares.diagonal(dim1=0, dim2=1), torch.zeros(M, 3))
    assert bool((mat.distance + torch.eye(3) > 0).all())


def test_different_images_give_no_zero_distance_warning(fitted: Explainer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroDistanceWarning)
        fitted.explain((_images(2, 0), _images(2, 1)))


def test_identical_images_at_baselines() -> None:
    a = _images(2, 3)
    with pytest.warns(ZeroDistanceWarning, match="saliency: 2 of 2 pairs"):
        result = SaliencyPair(amd_sequential_net()).explain((a, a.clone()))
    assert _finite(result.maps[0], result.maps[1])


# ------------------------------------------------------------------------------------------- chunking
@FEW
@given(batch_size=st.integers(1, 7), n=st.integers(1, 9))
def test_large_batches_are_processed_in_chunks(fitted: Explainer, batch_size: int, n: int) -> None:
    a, b = _images(n, 0), _images(n, 1)
    whole = fitted.explain((a, b), batch_size=64)
    chunked = fitted.explain((a, b), batch_size=batch_size)
    torch.testing.assert_close(chunked.contributions, whole.contributions, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.maps[0], whole.maps[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fitted.embed(a, batch_size).components, fitted.embed(a, 64).components,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fitted.explain_matrix(a, b, batch_size).contributions,
                               fitted.explain_matrix(a, b, 64).contributions, atol=1e-5, rtol=1e-5)


def test_chunks_are_really_used(fitted: Explainer, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    forward = type(fitted.amd).forward

    def spy(self, images, side=()):
        sizes.append(images.shape[0])
        return forward(self, images, side)

    monkeypatch.setattr(type(fitted.amd), "forward", spy)
    fitted.embed(_images(10), batch_size=3)
    assert sizes == [3, 3, 3, 1]


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError),
                                        ("8", TypeError)])
def test_bad_batch_sizes(fitted: Explainer, bad: object, error: type) -> None:
    a, b = _images(2, 0), _images(2, 1)
    for call in (lambda: fitted.explain((a, b), batch_size=bad), lambda: fitted.embed(a, bad),
                 lambda: fitted.explain_matrix(a, b, bad),
                 lambda: SaliencyPair(amd_sequential_net()).explain((a, b), batch_size=bad)):
        with pytest.raises(error, match="`batch_size`: expected a positive int"):
            call()


# ------------------------------------------------------------------------------------------- evaluate
def test_evaluate_with_a_single_image(fitted: Explainer) -> None:
    one = [(_images(1), torch.ones(1, M))]
    with pytest.raises(ValueError, match="expected at least one pair of different images, got 1 query and 1"):
        fitted.evaluate(one, one, progress=False)


def test_evaluate_never_returns_nan(fitted: Explainer) -> None:
    same_labels = [{**b, "attributes": torch.ones_like(b["attributes"]),
                    "pid": torch.arange(len(b["pid"])) + 8 * i} for i, b in enumerate(amd_batches())]
    with pytest.warns(UserWarning, match="had nothing to be computed on"):
        scores = fitted.evaluate(same_labels, same_labels, progress=False)
    assert "x_map_e" not in scores and "rank1_target" not in scores
    assert all(math.isfinite(v) for v in scores.values()) and scores["num_pairs"] > 0


def test_not_fitted() -> None:
    explainer = Explainer(amd_sequential_net())
    for call in (lambda: explainer.explain((_images(1), _images(1))), lambda: explainer.embed(_images(1)),
                 lambda: explainer.evaluate(amd_batches(), amd_batches(), progress=False),
                 lambda: explainer.save("never.pt")):
        with pytest.raises(NotFittedError, match=r"call fit\(loader\) first"):
            call()
