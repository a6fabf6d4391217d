import numpy as np
import pytest
from PIL import Image

from irnet_moana import io


def test_npz_round_trip_and_truncation(tmp_path):
    path = tmp_path / "a.npz"
    io.save_npz(path, {"keys": np.array([1, 2]), "cam": np.ones((2, 3, 4), np.float32)})
    data = io.load_npz(path, keys=("keys", "cam"))
    assert data["cam"].shape == (2, 3, 4)
    assert io.output_is_valid(path)
    path.write_bytes(path.read_bytes()[:40])
    assert not io.output_is_valid(path)
    with pytest.raises(io.CorruptFileError, match="a.npz"):
        io.load_npz(path)


def test_npz_missing_key(tmp_path):
    io.save_npz(tmp_path / "b.npz", {"cam": np.zeros(1)})
    with pytest.raises(io.CorruptFileError, match="missing arrays"):
        io.load_npz(tmp_path / "b.npz", keys=("keys",))


def test_label_png_is_palette_and_round_trips(tmp_path):
    label = np.array([[0, 1, 255], [20, 3, 0]], np.uint8)
    io.save_label_png(tmp_path / "m.png", label)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    assert np.array_equal(io.load_label_png(tmp_path / "m.png"), label)


def test_truncated_png_detected(tmp_path):
    io.save_label_png(tmp_path / "m.png", np.zeros((50, 50), np.uint8))
    data = (tmp_path / "m.png").read_bytes()
    (tmp_path / "m.png").write_bytes(data[: len(data) // 2])
    assert not io.output_is_valid(tmp_path / "m.png")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert io.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_corrupt_image(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "i.jpg")
    data = (tmp_path / "i.jpg").read_bytes()
    (tmp_path / "i.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(io.CorruptFileError, match="i.jpg"):
        io.load_image(tmp_path / "i.jpg")


def test_voc_palette_known_colours():
    palette = io.voc_palette()
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]


def test_instances_round_trip_as_voc_object_png(tmp_path):
    masks = np.zeros((3, 4, 5), bool)
    masks[0, :2, :2] = masks[1, 2:, :] = masks[2, 0, 4] = True
    io.save_instances(tmp_path / "a", io.Instances(masks, np.array([15, 15, 3]), np.array([0.9, 0.0, 0.25])))
    ids = io.load_label_png(tmp_path / "a.png")
    assert ids[0, 0] == 1 and ids[3, 0] == 2 and ids[0, 4] == 3 and ids[0, 3] == 0
    back = io.load_instances(tmp_path / "a")
    assert np.array_equal(back.masks, masks)
    assert back.labels.tolist() == [15, 15, 3] and back.scores.tolist() == [0.9, 0.0, 0.25]
    empty = io.Instances(np.zeros((0, 4, 5), bool), np.zeros(0), np.zeros(0))
    io.save_instances(tmp_path / "b", empty)
    assert io.load_instances(tmp_path / "b").masks.shape == (0, 4, 5)


def test_instances_refuse_overlap_and_detect_mismatch(tmp_path):
    masks = np.ones((2, 3, 3), bool)
    with pytest.raises(ValueError, match="overlap"):
        io.save_instances(tmp_path / "a", io.Instances(masks, np.array([1, 2]), np.array([1.0, 1.0])))
    masks[1] = False
    io.save_instances(tmp_path / "a", io.Instances(masks[:1], np.array([1]), np.array([1.0])))
    io.write_json(tmp_path / "a.json", {"instances": []})
    with pytest.raises(io.CorruptFileError, match="a.png and .*a.json"):
        io.load_instances(tmp_path / "a")
