"""SBD .mat masks to VOC palette PNGs, on tiny hand-made .mat files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from irnet_moana import io
from irnet_moana.data.sbd import convert_sbd, read_sbd_mask, sbd_lists
from irnet_moana.data.voc import DatasetError

MASKS = {
    "2008_000002": np.array([[0, 0, 15], [0, 15, 15]], dtype=np.uint8),
    "2008_000003": np.array([[20, 1], [1, 0], [0, 0]], dtype=np.uint8),
    "2011_003276": np.zeros((2, 4), dtype=np.uint8),
}


def _save_gtcls(path: Path, segmentation: np.ndarray) -> None:
    """A .mat shaped like SBD's: struct GTcls with Boundaries (cell of sparse), Segmentation, CategoriesPresent."""
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(segmentation.shape, dtype=np.uint8)
    present = np.unique(segmentation)
    scipy.io.savemat(path, {"GTcls": {
        "Boundaries": boundaries,
        "Segmentation": segmentation,
        "CategoriesPresent": present[present > 0].astype(np.uint8),
    }})


@pytest.fixture
def sbd_root(tmp_path):
    dataset = tmp_path / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    for stem, mask in MASKS.items():
        _save_gtcls(dataset / "cls" / f"{stem}.mat", mask)
    (dataset / "train.txt").write_text("2008_000002\n2011_003276\n")
    (dataset / "val.txt").write_text("2008_000003\n")
    return tmp_path / "benchmark_RELEASE"


def test_savemat_struct_reads_back_like_sbd(sbd_root):
    contents = scipy.io.loadmat(sbd_root / "dataset" / "cls" / "2008_000003.mat",
                                struct_as_record=False, squeeze_me=True)
    gtcls = contents["GTcls"]
    assert set(gtcls._fieldnames) == {"Boundaries", "Segmentation", "CategoriesPresent"}
    assert gtcls.Segmentation.dtype == np.uint8
    np.testing.assert_array_equal(gtcls.Segmentation, MASKS["2008_000003"])
    assert gtcls.Boundaries.shape == (20,)  # squeeze_me turns the 20x1 cell into a vector
    np.testing.assert_array_equal(gtcls.CategoriesPresent, [1, 20])


def test_convert_writes_palette_pngs(sbd_root, tmp_path):
    voc_root = tmp_path / "VOC2012"
    assert convert_sbd(sbd_root, voc_root, progress=False) == 3
    out = voc_root / "SegmentationClassAug"
    assert sorted(p.name for p in out.iterdir()) == [f"{s}.png" for s in sorted(MASKS)]
    for stem, mask in MASKS.items():
        with Image.open(out / f"{stem}.png") as image:
            assert image.mode == "P"
            assert image.getpalette()[15 * 3:16 * 3] == [192, 128, 128]  # VOC colour of class 15 (person)
            np.testing.assert_array_equal(np.array(image), mask)


def test_rerun_converts_nothing_and_redoes_a_broken_png(sbd_root, tmp_path):
    voc_root = tmp_path / "VOC2012"
    convert_sbd(sbd_root, voc_root, progress=False)
    assert convert_sbd(sbd_root, voc_root, progress=False) == 0
    broken = voc_root / "SegmentationClassAug" / "2008_000003.png"
    broken.write_bytes(broken.read_bytes()[:20])
    assert convert_sbd(sbd_root, voc_root, progress=False) == 1
    np.testing.assert_array_equal(io.load_label_png(broken), MASKS["2008_000003"])


def test_convert_in_worker_processes(sbd_root, tmp_path):
    voc_root = tmp_path / "VOC2012"
    assert convert_sbd(sbd_root, voc_root, workers=2, progress=False) == 3
    np.testing.assert_array_equal(
        io.load_label_png(voc_root / "SegmentationClassAug" / "2008_000002.png"), MASKS["2008_000002"])


def test_dataset_folder_itself_is_accepted(sbd_root, tmp_path):
    assert convert_sbd(sbd_root / "dataset", tmp_path / "VOC2012", progress=False) == 3


def test_sbd_lists(sbd_root):
    assert sbd_lists(sbd_root) == (["2008_000002", "2011_003276"], ["2008_000003"])


def test_mat_without_gtcls_names_the_file(sbd_root, tmp_path):
    bad = sbd_root / "dataset" / "cls" / "2008_000004.mat"
    scipy.io.savemat(bad, {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(DatasetError, match=r"2008_000004\.mat: expected a struct 'GTcls'.*\['GTinst'\]"):
        convert_sbd(sbd_root, tmp_path / "VOC2012", progress=False)


def test_gtcls_without_segmentation_names_the_file(tmp_path):
    bad = tmp_path / "x.mat"
    scipy.io.savemat(bad, {"GTcls": {"Boundaries": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(DatasetError, match=r"x\.mat: expected a struct 'GTcls' with a field 'Segmentation'"):
        read_sbd_mask(bad)


def test_unreadable_mat_names_the_file(tmp_path):
    bad = tmp_path / "y.mat"
    bad.write_bytes(b"this is not a MATLAB file" * 8)
    with pytest.raises(DatasetError, match=r"y\.mat: not a readable MATLAB file"):
        read_sbd_mask(bad)


def test_out_of_range_class_names_the_file(tmp_path):
    bad = tmp_path / "z.mat"
    _save_gtcls(bad, np.array([[0, 21], [3, 3]], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"z\.mat: label values \[21\]"):
        read_sbd_mask(bad)


def test_missing_cls_folder(tmp_path):
    with pytest.raises(DatasetError, match="benchmark_RELEASE folder"):
        convert_sbd(tmp_path / "nowhere", tmp_path / "VOC2012", progress=False)
