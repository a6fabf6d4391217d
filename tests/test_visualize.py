"""Run figures: layout sizes, palette colours at known pixels, clean skips, TensorBoard reading."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from deeplab.build import deeplab_net
from irnet_moana import io
from irnet_moana.config import load_config
from irnet_moana.data.synthetic import generate_voc_demo
from irnet_moana.data.voc import VOCData
from irnet_moana.figures import drawing, moana_attention, pipeline_examples, training_curves
from irnet_moana.models.build import cam_net, irnet
from irnet_moana.stages import visualize
from irnet_moana.training import architecture_signature

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # images; shown at 64 px
SHOWN = 64
# VOC palette entries, written out from the devkit's colour map.
GREEN, OLIVE, IGNORE_COLOUR, BLACK = (0, 128, 0), (128, 128, 0), (224, 224, 192), (0, 0, 0)


@pytest.fixture()
def tiny_run(tmp_path: Path) -> dict:
    """Two 32-px images with CAMs, relation labels (class 2 on top, ignore below) and pseudo masks (class 3)."""
    root = tmp_path / "data"
    generate_voc_demo(root, seed=0, image_size=SIZE, num_train=2, num_train_aug_extra=0, num_val=1)
    cfg = load_config("demo", [f"data.root={root}", "device=cpu"])
    cfg["run_dir"] = str(tmp_path / "run")
    run_dir = Path(cfg["run_dir"])
    data = VOCData(root)
    for stem in data.split("train"):
        keys = np.flatnonzero(data.image_labels([stem])[stem])
        high = np.zeros((len(keys), SIZE, SIZE), np.float32)
        high[:, :8, :8] = 1.0
        io.save_npz(run_dir / "cams" / f"{stem}.npz",
                    {"keys": keys, "cam": np.zeros((len(keys), SIZE // 4, SIZE // 4), np.float32), "high_res": high})
        relation = np.full((SIZE, SIZE), 255, np.uint8)
        relation[:SIZE // 2] = 2
        io.save_label_png(run_dir / "ir_labels" / f"{stem}.png", relation)
        io.save_label_png(run_dir / "pseudo_masks" / f"{stem}.png", np.full((SIZE, SIZE), 3, np.uint8))
    return cfg


def _save_model(model: torch.nn.Module, path: Path) -> None:
    """Weights as training.fit writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "signature": architecture_signature(model)}, path)


def _add_models(cfg: dict) -> None:
    torch.manual_seed(0)
    run_dir = Path(cfg["run_dir"])
    num_classes = VOCData(cfg["data"]["root"]).num_classes
    _save_model(cam_net(cfg, num_classes, weights="none"), run_dir / "cam" / "model.pth")
    _save_model(irnet(cfg, weights="none"), run_dir / "irn" / "model.pth")
    _save_model(deeplab_net(cfg, num_classes, weights="none"), run_dir / "deeplab" / "model.pth")


def _write_scalars(log_dir: Path, steps: range, loss, lr=None, walltime: float = 1000.0) -> None:
    writer = SummaryWriter(log_dir=str(log_dir))
    for index, step in enumerate(steps):
        writer.add_scalar("train/loss", loss(step), step, walltime=walltime + index)
        if lr is not None:
            writer.add_scalar("train/lr", lr(step), step, walltime=walltime + index)
    writer.close()


def _pixel(image: np.ndarray, row: int, column: int, y: int, x: int) -> tuple[int, int, int]:
    """Colour of source pixel (y, x) of the cell at (row, column) of the 2-row pipeline grid of 32-px images."""
    top = drawing.TITLE_H + drawing.HEADER_H + row * (drawing.CAPTION_H + SHOWN + drawing.PAD)
    top += drawing.CAPTION_H
    left = drawing.PAD + column * (SHOWN + drawing.PAD)
    return tuple(int(v) for v in image[top + 2 * y, left + 2 * x])


def _figure(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.array(image)


def test_pipeline_figure_without_models_has_na_cells_and_palette_colours(tiny_run):
    written = visualize.run(tiny_run)
    run_dir = Path(tiny_run["run_dir"])
    # no CAM / IRNet / DeepLab weights and no TensorBoard logs: only the pipeline grid
    assert written == [run_dir / "figures" / "pipeline_examples.png"]
    figure = _figure(written[0])

    data = VOCData(tiny_run["data"]["root"])
    stems = data.split("train")
    gt = [data.load_mask(s) for s in stems]
    shown = {2, 3, 255}.union(*[np.unique(m).tolist() for m in gt])
    names = ["background", *data.names]
    entries = [(tuple(io.voc_palette()[v].tolist()), names[v]) for v in sorted(shown) if v != 255]
    entries.append((IGNORE_COLOUR, "ignore / void (255)"))
    assert drawing.legend_entries(shown, names) == entries
    width = 8 + 7 * (64 + 8)
    height = 30 + 22 + 2 * (18 + 64 + 8) + drawing.legend_height(entries, width)
    assert figure.shape == (height, width, 3)

    for row in range(2):
        assert _pixel(figure, row, 2, 4, 4) == GREEN  # relation labels: class 2 on the top half
        assert _pixel(figure, row, 2, 28, 20) == IGNORE_COLOUR  # and 255 below, drawn light
        assert _pixel(figure, row, 4, 16, 16) == OLIVE  # pseudo mask: class 3
        for column in (3, 5):  # boundary and DeepLab: no weights
            assert _pixel(figure, row, column, 0, 0) == drawing.NA_FILL
        for y, x in ((3, 5), (20, 9), (30, 30)):
            assert _pixel(figure, row, 6, y, x) == tuple(io.voc_palette()[gt[row][y, x]].tolist())
        reference = np.array(Image.fromarray(data.load_image(stems[row])).resize((SHOWN, SHOWN), Image.BILINEAR))
        assert np.abs(np.array(_pixel(figure, row, 0, 10, 10)) - reference[20, 20]).max() <= 2
        # CAM = 1 in the top-left corner: the jet overlay pulls the picture towards dark red there
        image_pixel, cam_pixel = np.array(_pixel(figure, row, 0, 2, 2)), np.array(_pixel(figure, row, 1, 2, 2))
        assert np.abs(cam_pixel - np.round(image_pixel / 2 + np.array([128, 0, 0]) / 2)).max() <= 3
    # the legend's swatch of the first entry (background) sits at the left of the band under the grid
    legend_top = 30 + 22 + 2 * (18 + 64 + 8)
    swatch_y = legend_top + (drawing.LEGEND_LINE_H - drawing.SWATCH) // 2 + drawing.SWATCH // 2
    assert tuple(figure[swatch_y, drawing.PAD + drawing.SWATCH // 2]) == BLACK


def test_skips_are_logged(tiny_run, caplog):
    log = logging.getLogger("test-visualize")
    with caplog.at_level(logging.INFO, logger="test-visualize"):
        moana = moana_attention.moana_figure(tiny_run, Path(tiny_run["run_dir"]), ["demo_000001"],
                                             torch.device("cpu"), log)
        curves = training_curves.curves_figure(tiny_run, Path(tiny_run["run_dir"]), log)
    assert moana is None and curves is None
    assert "trained CAM network" in caplog.text and "no TensorBoard logs" in caplog.text
    tiny_run["cam"]["moana"] = False
    with caplog.at_level(logging.INFO, logger="test-visualize"):
        assert moana_attention.moana_figure(tiny_run, Path(tiny_run["run_dir"]), ["demo_000001"],
                                            torch.device("cpu"), log) is None
    assert "cam.moana is false" in caplog.text


def test_all_figures_with_models_and_logs(tiny_run):
    _add_models(tiny_run)
    run_dir = Path(tiny_run["run_dir"])
    _write_scalars(run_dir / "cam" / "tensorboard", range(1, 41), lambda s: 1.0 / s, lambda s: 0.1 * (1 - s / 40))
    _write_scalars(run_dir / "plain_cam" / "cam" / "tensorboard", range(1, 41), lambda s: 2.0 / s)
    _write_scalars(run_dir / "irn" / "tensorboard", range(1, 6), lambda s: 5.0 - s, lambda s: 0.1)
    written = visualize.run(tiny_run, num_images=2)
    assert [p.name for p in written] == ["pipeline_examples.png", "moana_attention.png", "instance_examples.png",
                                         "training_curves.png"]

    grid = _figure(written[0])
    for row in range(2):
        boundary = np.array(_pixel(grid, row, 3, 16, 16))
        assert tuple(boundary) != drawing.NA_FILL and boundary[0] == boundary[1] == boundary[2]
        # DeepLab computed from its weights: a palette colour of a class 0..6
        deeplab = _pixel(grid, row, 5, 16, 16)
        assert deeplab in {tuple(c) for c in io.voc_palette()[:7].tolist()}

    moana = _figure(written[1])
    assert moana.shape[:2] == (30 + 22 + 2 * (18 + 64 + 44 + 8), 8 + 64 + 8 + 64 + 44 + 8 + 230 + 8)
    # the z_h profile runs in the band right of the M picture of the first row
    band = moana[30 + 22 + 18:30 + 22 + 18 + 64, 8 + 64 + 8 + 64 + 4:8 + 64 + 8 + 64 + 44 - 6]
    assert (np.all(band == moana_attention.PROFILE_COLOUR, axis=2)).any()

    instances = _figure(written[2])
    for row in range(2):
        # displacement and centroid groups computed from IRNet's weights; no instance masks in this run
        assert tuple(_pixel(instances, row, 1, 16, 16)) != drawing.NA_FILL
        assert tuple(_pixel(instances, row, 2, 16, 16)) != drawing.NA_FILL
        assert tuple(_pixel(instances, row, 3, 1, 1)) == drawing.NA_FILL

    curves = _figure(written[3])
    assert curves.shape[:2] == (30 + 2 * (250 + 8), 8 + 2 * (460 + 8))
    # the CAM loss panel shows the MoANA and the plain-CAM series in their own colours
    cam_panel = curves[30:30 + 250, 8:8 + 460]
    for colour in drawing.SERIES_COLOURS[:2]:
        assert (np.all(cam_panel == colour, axis=2)).sum() > 50


def test_displacement_colours_follow_direction_and_length():
    field = np.zeros((2, 1, 3), np.float32)
    field[1, 0, 0] = 2.0   # right, longest: full red
    field[0, 0, 1] = 1.0   # down, half as long: half-bright chartreuse (hue 90 degrees)
    picture = drawing.displacement_picture(field)
    assert picture[0, 0].tolist() == [255, 0, 0]
    assert picture[0, 1].tolist() == [64, 128, 0]
    assert picture[0, 2].tolist() == [0, 0, 0]  # no displacement: black


def test_read_scalars_keeps_the_last_value_of_a_repeated_step(tmp_path):
    _write_scalars(tmp_path, range(1, 6), lambda s: 1.0, walltime=100.0)
    _write_scalars(tmp_path, range(4, 8), lambda s: 2.0, walltime=200.0)  # a resumed run logs 4, 5 again
    steps, values = training_curves.read_scalars(tmp_path)["train/loss"]
    assert steps.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert values.tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert training_curves.read_scalars(tmp_path / "absent") == {}


def test_layout_helpers():
    assert drawing.display_size(32, 32) == (64, 64)
    assert drawing.display_size(128, 96) == (256, 192)
    assert drawing.display_size(200, 150) == (200, 150)
    assert drawing.display_size(375, 500) == (192, 256)
    np.testing.assert_allclose(drawing.nice_ticks(0.0, 1.0), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(drawing.nice_ticks(0.13, 0.87), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(drawing.nice_ticks(3.0, 3.0), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(drawing.smooth(np.array([1.0, 1.0, 1.0]), 0.8), [1, 1, 1])
    # (0.5 * 0 + 0.5 * 1) / (1 - 0.5 ** 2)
    np.testing.assert_allclose(drawing.smooth(np.array([0.0, 1.0]), 0.5), [0, 2 / 3])
    assert drawing.smoothing_weight(60) == 0.0
    assert drawing.smoothing_weight(100) == pytest.approx(0.7)
    assert drawing.smoothing_weight(100_000) == 0.95


def test_cli_writes_into_the_given_run_dir(tiny_run, tmp_path, capsys):
    sys.path.insert(0, str(REPO / "pipelines"))
    try:
        from pipelines import visualize as cli
    finally:
        sys.path.remove(str(REPO / "pipelines"))
    other = tmp_path / "other"
    argv = ["demo", "--set", f"data.root={tiny_run['data']['root']}", "--run-dir", str(other), "--num-images", "1"]
    written = cli.main(argv)
    assert written == [other / "figures" / "pipeline_examples.png"]
    assert str(written[0]) in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(argv[:-1] + ["0"])


def test_stored_deeplab_predictions_are_preferred(tiny_run):
    run_dir = Path(tiny_run["run_dir"])
    data = VOCData(tiny_run["data"]["root"])
    stems = data.split("train")
    io.save_label_png(run_dir / "deeplab" / "pred_ss" / f"{stems[0]}.png", np.full((SIZE, SIZE), 2, np.uint8))
    io.save_label_png(run_dir / "deeplab" / "pred_msf" / f"{stems[0]}.png", np.full((SIZE, SIZE), 1, np.uint8))
    columns = pipeline_examples.pipeline_columns(tiny_run, run_dir, data, stems, torch.device("cpu"),
                                                 logging.getLogger("test-visualize"))
    assert columns[5].title == "DeepLab (MSF)"
    figure = np.asarray(pipeline_examples.pipeline_figure(tiny_run, run_dir, stems, torch.device("cpu"),
                                                          logging.getLogger("test-visualize")))
    assert _pixel(figure, 0, 5, 16, 16) == (128, 0, 0)  # class 1 from pred_msf, not class 2 from pred_ss
    assert _pixel(figure, 1, 5, 2, 2) == drawing.NA_FILL  # the second image has no prediction
