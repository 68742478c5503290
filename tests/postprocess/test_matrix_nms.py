import math

import pytest
import torch

from lpsctl.postprocess.matrix_nms import mask_iou_matrix, matrix_nms


def reference_matrix_nms(masks, labels, scores, kernel, sigma):
    """Matrix NMS written out with loops over mask pairs (SOLOv2 paper, Algorithm 1)."""
    count = len(scores)
    flat = [m.flatten().tolist() for m in masks]

    def iou(a, b):
        inter = sum(x and y for x, y in zip(flat[a], flat[b], strict=True))
        union = sum(x or y for x, y in zip(flat[a], flat[b], strict=True))
        return inter / union if union else 0.0

    def same_class_iou(i, j):  # i scored above j
        return iou(i, j) if i < j and labels[i] == labels[j] else 0.0

    def f(x):
        return math.exp(-sigma * x * x) if kernel == "gaussian" else 1 - x

    compensate = [max([same_class_iou(k, i) for k in range(count)]) for i in range(count)]
    decayed = []
    for j in range(count):
        decay = min(f(same_class_iou(i, j)) / f(compensate[i]) for i in range(count))
        decayed.append(scores[j] * decay)
    return decayed


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_loop_reference(kernel, seed):
    generator = torch.Generator().manual_seed(seed)
    count = 12
    # overlapping random rectangles, so IoUs cover a useful range
    masks = torch.zeros(count, 16, 20, dtype=torch.bool)
    corners = torch.randint(0, 10, (count, 2), generator=generator)
    sizes = torch.randint(3, 10, (count, 2), generator=generator)
    for index, ((top, left), (height, width)) in enumerate(zip(corners.tolist(), sizes.tolist(), strict=True)):
        masks[index, top : top + height, left : left + width] = True
    masks |= torch.rand(count, 16, 20, generator=generator) > 0.9
    labels = torch.randint(0, 3, (count,), generator=generator)
    scores = torch.rand(count, generator=generator).sort(descending=True).values
    sigma = 2.0 if seed % 2 == 0 else 0.5
    result = matrix_nms(masks, labels, scores, kernel=kernel, sigma=sigma)
    expected = reference_matrix_nms(masks, labels.tolist(), scores.tolist(), kernel, sigma)
    assert torch.allclose(result, torch.tensor(expected), atol=1e-5)
    # the given areas give the same answer as computed ones
    with_area = matrix_nms(masks, labels, scores, kernel=kernel, sigma=sigma, mask_area=masks.sum((1, 2)))
    assert torch.allclose(with_area, result)


def test_two_masks_hand_computed():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :, :2] = True  # 8 px
    masks[1, :, :3] = True  # 12 px, IoU with mask 0 = 8/12
    masks[2, :, :3] = True  # same as mask 1 but another class
    scores = torch.tensor([0.9, 0.8, 0.7])
    result = matrix_nms(masks, torch.tensor([1, 1, 2]), scores, kernel="gaussian", sigma=2.0)
    assert result[0].item() == pytest.approx(0.9)
    assert result[1].item() == pytest.approx(0.8 * math.exp(-2 * (8 / 12) ** 2))
    assert result[2].item() == pytest.approx(0.7)  # other classes never decay
    linear = matrix_nms(masks, torch.tensor([1, 1, 2]), scores, kernel="linear")
    assert linear[1].item() == pytest.approx(0.8 * (1 - 8 / 12))


def test_iou_matrix():
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[0, 0] = True
    masks[1, :2] = True
    assert torch.allclose(mask_iou_matrix(masks), torch.tensor([[1.0, 0.5], [0.5, 1.0]]))


def test_empty_input_and_empty_masks():
    result = matrix_nms(torch.zeros(0, 5, 5, dtype=torch.bool), torch.zeros(0).long(), torch.zeros(0))
    assert result.shape == (0,)
    blank = matrix_nms(torch.zeros(2, 5, 5, dtype=torch.bool), torch.zeros(2).long(), torch.tensor([0.5, 0.4]))
    assert torch.equal(blank, torch.tensor([0.5, 0.4]))  # empty masks overlap nothing


def test_duplicates_stay_finite_with_the_linear_kernel():
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    result = matrix_nms(masks, torch.zeros(3).long(), torch.tensor([0.9, 0.8, 0.7]), kernel="linear")
    assert torch.isfinite(result).all() and result[0] == 0.9 and (result[1:] == 0).all()


def test_bad_inputs():
    masks, labels = torch.zeros(2, 3, 3, dtype=torch.bool), torch.zeros(2).long()
    with pytest.raises(ValueError, match="sorted in descending order"):
        matrix_nms(masks, labels, torch.tensor([0.1, 0.9]))
    with pytest.raises(ValueError, match="kernel must be 'gaussian' or 'linear'"):
        matrix_nms(masks, labels, torch.tensor([0.9, 0.1]), kernel="box")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 masks, 2 labels, 3 scores"):
        matrix_nms(masks, labels, torch.tensor([0.9, 0.5, 0.1]))
