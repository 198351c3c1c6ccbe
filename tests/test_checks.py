import pytest
import torch

from reidexplain._checks import check_embeddings, check_images, check_pair, normalize_labels


def test_check_images_adds_batch_axis_and_rejects_bad_shapes():
    assert check_images(torch.rand(3, 8, 4)).shape == (1, 3, 8, 4)
    with pytest.raises(ValueError, match=r"expected shape \(B,3,H,W\).*got \(2, 1, 8, 4\)"):
        check_images(torch.rand(2, 1, 8, 4))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        check_images([[0.0]])
    with pytest.raises(ValueError, match="the batch is empty"):
        check_images(torch.rand(0, 3, 8, 4))


def test_check_pair_sizes():
    a, b = check_pair((torch.rand(3, 8, 4), torch.rand(3, 8, 4)))
    assert a.shape == b.shape == (1, 3, 8, 4)
    with pytest.raises(ValueError, match="same shape"):
        check_pair((torch.rand(3, 8, 4), torch.rand(3, 16, 8)))
    with pytest.raises(TypeError, match="expected a tuple"):
        check_pair(torch.rand(2, 3, 8, 4))


def test_check_embeddings():
    check_embeddings(torch.rand(2, 5), 2)
    with pytest.raises(TypeError, match="got a tuple"):
        check_embeddings((torch.rand(2, 5),), 2)
    with pytest.raises(ValueError, match=r"expected shape \(2, D\)"):
        check_embeddings(torch.rand(2, 5, 1), 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        check_embeddings(torch.tensor([[0.0, float("nan")]]), 1)


def test_normalize_labels_codings():
    assert torch.equal(normalize_labels(torch.tensor([[0, 1]])), torch.tensor([[0.0, 1.0]]))
    with pytest.warns(UserWarning, match="-1/\\+1"):
        assert torch.equal(normalize_labels(torch.tensor([[-1, 1]])), torch.tensor([[0.0, 1.0]]))
    with pytest.warns(UserWarning, match="1/2"):
        assert torch.equal(normalize_labels(torch.tensor([[2, 1]])), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="must be binary"):
        normalize_labels(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="expected 26 attributes"):
        normalize_labels(torch.zeros(2, 3), num_attributes=26)
