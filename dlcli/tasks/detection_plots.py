"""Detection's figures: precision-recall curves per class (evaluate), pictures with their boxes drawn (evaluate's
grid of true and predicted boxes, predict --save) by torchvision.utils.draw_bounding_boxes."""

from __future__ import annotations

from pathlib import Path

GRID = 16  # evaluate's grid: this many test pictures, each twice (true boxes, predicted boxes)
SHOWN = 0.25  # predicted boxes drawn in the grid score at least this


def colours(k: int) -> list[tuple[int, int, int]]:
    """k distinct RGB colours (evenly spaced hues)."""
    import colorsys

    return [tuple(int(255 * v) for v in colorsys.hsv_to_rgb(i / max(k, 1), 0.85, 1.0)) for i in range(k)]


def draw_boxes(picture, boxes, classes, labels, names: list[str]):
    """A uint8 (3, H, W) picture (grayscale repeated) with `boxes` (n, 4) drawn in their class's colour, each with
    its label."""
    import torch
    from torchvision.utils import draw_bounding_boxes

    picture = picture.cpu()
    picture = picture.expand(3, -1, -1) if picture.shape[0] == 1 else picture
    if not len(boxes):
        return picture.clone()
    palette = colours(len(names))
    width = max(1, round(max(picture.shape[-2:]) / 200))
    return draw_bounding_boxes(picture, torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                               labels=list(labels), colors=[palette[int(c)] for c in classes], width=width)


def write_pr_curves(path: Path, report: dict, title: str) -> Path:
    """Each class's precision against recall at IoU .50 (COCO's 101 recall points) in one figure."""
    from dlcli.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    names = report["classes"]
    for key, curve in report["pr_curves"].items():
        row = report["per_class"][int(key)]
        ap = row.get("map50")
        ax.plot(curve["recall"], curve["precision"], label=f"{names[int(key)]} (AP50 {ap:.3f})" if ap is not None
                else names[int(key)])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=9)
    if report["pr_curves"]:
        ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def write_boxes_grid(path: Path, names: list[str], x, out, y) -> Path:
    """Up to GRID pictures, each shown with its true boxes and, beside it, the predicted ones scoring SHOWN or more."""
    import torch
    from torchvision.utils import make_grid, save_image

    tiles = []
    for i in range(min(GRID, len(y))):
        truth = y[i][y[i][:, 0] >= 0]
        tiles.append(draw_boxes(x[i], truth[:, 1:5], truth[:, 0].long(), [names[int(c)] for c in truth[:, 0]], names))
        found = out[i][out[i][:, 4] >= SHOWN]
        tiles.append(draw_boxes(x[i], found[:, :4], found[:, 5].long(),
                                [f"{names[int(c)]} {s:.2f}" for c, s in zip(found[:, 5], found[:, 4])], names))
    grid = make_grid(torch.stack(tiles).float() / 255, nrow=8, padding=2, pad_value=1.0)
    save_image(grid, str(path))
    return path
