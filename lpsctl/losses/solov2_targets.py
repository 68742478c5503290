"""SOLOv2 target assignment (SPEC §3.5): which grid cells are positive, for which instance, and which are ignored.

Vectorised over instances and cells; the only Python loop is over the five levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

# a downsampled mask / valid pixel is on when at least half of its 4×4 input block is (area resampling)
DOWNSAMPLE_THRESHOLD = 0.5


@dataclass
class SoloTargets:
    """Targets of one batch.

    labels_per_level: Tensor[B, S, S] int64 class per cell, `num_classes` = background.
    ignored_per_level: Tensor[B, S, S] bool, cells excluded from the category loss (centre on ignore, not positive).
    positive_cells_per_level: Tensor[P_l, 3] int64 (batch, row, column) of each positive cell.
    positive_instance_per_level: Tensor[P_l] int64, row of `masks` each positive cell must predict.
    masks: Tensor[M, h, w] bool, every instance of the batch at the mask-feature resolution (images concatenated).
    valid: Tensor[B, h, w] bool, pixels outside the ignore mask at that resolution (Dice is computed there only).
    """

    labels_per_level: list[Tensor]
    ignored_per_level: list[Tensor]
    positive_cells_per_level: list[Tensor]
    positive_instance_per_level: list[Tensor]
    masks: Tensor
    valid: Tensor

    @property
    def num_positive(self) -> int:
        return sum(int(cells.shape[0]) for cells in self.positive_cells_per_level)


def instance_geometry(masks: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Area, centre of mass and bounding-box size of each mask.

    masks: Tensor[N, H, W] bool. Returns (area, centre_y, centre_x, box_height, box_width), each Tensor[N] float;
    centres are in continuous pixel coordinates (pixel (i, j) covers [i, i+1) × [j, j+1), so its centre is i + 0.5);
    box sizes count pixels (last − first + 1). Empty masks get area 0 and zero sizes.
    """
    height, width = masks.shape[-2:]
    row_counts = masks.sum(dim=2).float()  # [N, H]
    column_counts = masks.sum(dim=1).float()  # [N, W]
    area = row_counts.sum(dim=1)
    rows = torch.arange(height, device=masks.device, dtype=torch.float32)
    columns = torch.arange(width, device=masks.device, dtype=torch.float32)
    safe_area = area.clamp(min=1.0)
    centre_y = (row_counts * (rows + 0.5)).sum(dim=1) / safe_area
    centre_x = (column_counts * (columns + 0.5)).sum(dim=1) / safe_area
    box_height = _extent(row_counts > 0, rows)
    box_width = _extent(column_counts > 0, columns)
    return area, centre_y, centre_x, box_height, box_width


def _extent(occupied: Tensor, positions: Tensor) -> Tensor:
    """Tensor[N, L] bool, Tensor[L] → Tensor[N]: last − first occupied position + 1 (0 when none)."""
    first = torch.where(occupied, positions, torch.inf).amin(dim=1)
    last = torch.where(occupied, positions, -torch.inf).amax(dim=1)
    return torch.where(occupied.any(dim=1), last - first + 1, torch.zeros_like(first))


def assign_solov2_targets(
    masks: list[Tensor],
    classes: list[Tensor],
    ignore: Tensor | None,
    *,
    grids: tuple[int, ...],
    scale_ranges: tuple[tuple[int, int], ...],
    sigma: float,
    num_classes: int,
    mask_feature_size: tuple[int, int],
) -> SoloTargets:
    """Assign grid cells to ground-truth instances, following the SOLOv2 code.

    masks[b]: Tensor[N_b, H, W] bool at the padded network-input size (the grid spans this H × W);
    classes[b]: Tensor[N_b] int64 in 0..num_classes-1; ignore: Tensor[B, H, W] bool or None.
    An instance belongs to every level whose [low, high] (inclusive) holds its scale sqrt(w·h); its positives are the
    cells within ±0.5·σ·(h, w) of its centre of mass, clamped to the 3×3 neighbourhood of the centre's cell.
    Conflicts: a cell claimed by several instances goes to the smallest (instances are ordered by descending scale,
    stably, and the later one wins, so among equal scales the later one in the input wins).
    """
    _check_inputs(masks, classes, ignore, num_classes, len(grids), len(scale_ranges))
    batch, device = len(masks), masks[0].device
    all_masks = torch.cat([m.bool() for m in masks])
    counts = torch.tensor([m.shape[0] for m in masks], device=device)
    instances = _BatchInstances.of(all_masks, torch.cat(classes).long().to(device), counts)

    labels_per_level, ignored_per_level, cells_per_level, instance_per_level = [], [], [], []
    for grid, scale_range in zip(grids, scale_ranges, strict=True):
        flat_cells, winner = _assign_level(instances, grid, scale_range, sigma, batch)
        labels = torch.full((batch * grid * grid,), num_classes, dtype=torch.long, device=device)
        labels[flat_cells] = instances.classes[winner]
        labels = labels.view(batch, grid, grid)
        positive = labels != num_classes
        ignored = _cell_centres_on(ignore, grid) & ~positive if ignore is not None else torch.zeros_like(positive)
        labels_per_level.append(labels)
        ignored_per_level.append(ignored)
        cells_per_level.append(torch.stack(torch.unravel_index(flat_cells, (batch, grid, grid)), dim=1))
        instance_per_level.append(winner)

    small_masks = _downsample(all_masks, mask_feature_size)
    if ignore is None:
        valid = torch.ones(batch, *mask_feature_size, dtype=torch.bool, device=device)
    else:
        valid = ~_downsample(ignore.bool(), mask_feature_size)
    return SoloTargets(labels_per_level, ignored_per_level, cells_per_level, instance_per_level, small_masks, valid)


@dataclass(frozen=True)
class _BatchInstances:
    """Every instance of the batch (images concatenated), Tensor[M] each: its image, class, `instance_geometry`,
    scale sqrt(w·h) and rank in descending scale (stable), plus the padded input size (height, width)."""

    image_of: Tensor
    classes: Tensor
    area: Tensor
    centre_y: Tensor
    centre_x: Tensor
    box_height: Tensor
    box_width: Tensor
    scale: Tensor
    rank: Tensor
    size: tuple[int, int]

    @classmethod
    def of(cls, masks: Tensor, classes: Tensor, counts: Tensor) -> _BatchInstances:
        device = masks.device
        image_of = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
        area, centre_y, centre_x, box_height, box_width = instance_geometry(masks)
        scale = torch.sqrt(box_height * box_width)
        rank = torch.empty(scale.numel(), dtype=torch.long, device=device)
        rank[torch.argsort(scale, descending=True, stable=True)] = torch.arange(scale.numel(), device=device)
        size = (int(masks.shape[-2]), int(masks.shape[-1]))
        return cls(image_of, classes, area, centre_y, centre_x, box_height, box_width, scale, rank, size)


def _assign_level(
    instances: _BatchInstances, grid: int, scale_range: tuple[int, int], sigma: float, batch: int
) -> tuple[Tensor, Tensor]:
    """The positive cells of one S×S level (flat ids b·S² + row·S + column, Tensor[P] int64) and the instance each
    must predict (Tensor[P], rows of the batch's masks): the latest claimant in descending-scale order wins."""
    low, high = scale_range
    (height, width), device = instances.size, instances.scale.device
    chosen = ((instances.area > 0) & (instances.scale >= low) & (instances.scale <= high)).nonzero().squeeze(1)
    rows, row_inside = _span(instances.centre_y[chosen], instances.box_height[chosen], sigma, height, grid)  # [K, 3]
    columns, column_inside = _span(instances.centre_x[chosen], instances.box_width[chosen], sigma, width, grid)
    claimed = row_inside[:, :, None] & column_inside[:, None, :]  # [K, 3, 3]
    cell_ids = instances.image_of[chosen, None, None] * grid * grid + rows[:, :, None] * grid + columns[:, None, :]
    claimant = chosen[:, None, None].expand_as(claimed)[claimed]
    winner_rank = torch.full((batch * grid * grid,), -1, dtype=torch.long, device=device)
    winner_rank.scatter_reduce_(0, cell_ids[claimed], instances.rank[claimant], reduce="amax")
    flat_cells = (winner_rank >= 0).nonzero().squeeze(1)
    return flat_cells, torch.argsort(instances.rank)[winner_rank[flat_cells]]


def _check_inputs(
    masks: list[Tensor], classes: list[Tensor], ignore: Tensor | None, num_classes: int, grids: int, ranges: int
) -> None:
    if not masks or len(masks) != len(classes) or (ignore is not None and ignore.shape[0] != len(masks)):
        raise ValueError("masks, classes and ignore need one entry per image (at least one image)")
    if grids != ranges:
        raise ValueError(f"{grids} grid sizes but {ranges} scale ranges: one of each per level")
    size = masks[0].shape[-2:]
    if any(m.dim() != 3 or m.shape[-2:] != size for m in masks) or (ignore is not None and ignore.shape[-2:] != size):
        raise ValueError("every masks[b] must be [N_b, H, W] with the padded input size shared by the ignore map")
    for image_masks, image_classes in zip(masks, classes, strict=True):
        if image_masks.shape[0] != image_classes.shape[0]:
            raise ValueError(f"{image_masks.shape[0]} masks but {image_classes.shape[0]} classes in one image")
        if image_classes.numel() and (int(image_classes.min()) < 0 or int(image_classes.max()) >= num_classes):
            raise ValueError(f"instance classes must lie in 0..{num_classes - 1}, got {image_classes.tolist()}")


def _span(centre: Tensor, extent: Tensor, sigma: float, size: int, grid: int) -> tuple[Tensor, Tensor]:
    """Along one axis (Tensor[K] centres and box extents in pixels): the cells centre-1, centre, centre+1
    (Tensor[K, 3], clamped into the grid) and whether each lies inside the centre region (Tensor[K, 3] bool)."""

    def cell_of(coordinate: Tensor) -> Tensor:
        return torch.floor(coordinate / size * grid).long().clamp(0, grid - 1)

    half = 0.5 * sigma * extent
    centre_cell, first, last = cell_of(centre), cell_of(centre - half), cell_of(centre + half)
    neighbours = centre_cell[:, None] + torch.arange(-1, 2, device=centre.device)
    # first/last are inside the grid, so neighbours that fall off it (−1, S) are never inside
    inside = (neighbours >= first[:, None]) & (neighbours <= last[:, None])
    return neighbours.clamp(0, grid - 1), inside


def _cell_centres_on(ignore: Tensor, grid: int) -> Tensor:
    """Tensor[B, H, W] bool → Tensor[B, S, S] bool: whether each grid cell's centre pixel is set."""
    height, width = ignore.shape[-2:]
    centres = torch.arange(grid, device=ignore.device, dtype=torch.float32) + 0.5
    rows = torch.floor(centres * height / grid).long().clamp(max=height - 1)
    columns = torch.floor(centres * width / grid).long().clamp(max=width - 1)
    return ignore.bool()[:, rows][:, :, columns]


def _downsample(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Tensor[N, H, W] bool → Tensor[N, h, w] bool by area resampling, on where at least half is on."""
    if masks.shape[0] == 0:
        return torch.zeros(0, *size, dtype=torch.bool, device=masks.device)
    fraction = F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]
    return fraction >= DOWNSAMPLE_THRESHOLD
