"""The error map comes back where each voxel came from: a stub network with a known output, through a
non-identity transpose, an anisotropic resampling, the crop to the images' non-zero box and a window smaller
than the case, against an independent computation in the input's own coordinates."""
import copy

import numpy as np
import pytest
import torch
from conftest import QC_ID, TRAINER

from nnqc.inference.predictor import nnQCPredictor
from nnqc.preprocessing.plans_manager import nnQCPlansManager
from nnqc.run.predict import model_folder

SHAPE = (30, 40, 36)  # input (z, y, x), 1 mm
NONZERO = (slice(2, 28), slice(4, 36), slice(3, 33))  # the images' non-zero box
REGIONS = [(1, 2, 3), (2, 3), (3,)]


class CopyCandidateNetwork(torch.nn.Module):
    """Predicts fixed DSC/NSD and, as error map of region c, the candidate's region c mask it was given."""

    def __init__(self, num_image_channels: int):
        super().__init__()
        self.m = num_image_channels

    def forward(self, x):
        masks = x[:, self.m:]
        return torch.tensor([[0.25, 0.75]]).expand(x.shape[0], 2), masks * 2 - 1


def segmentation() -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[6:20, 8:24, 12:22] = 1  # off the box's centre along x, so the window is not the centred one
    seg[8:14, 10:16, 14:20] = 2
    seg[16:26, 20:32, 22:33] = 3
    seg[0:2, 10:14, 10:14] = 1  # outside the non-zero box along z: cropped away by preprocessing
    return seg


@pytest.fixture
def stub_predictor(pipeline_env):
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"), (0,))
    plans = copy.deepcopy(predictor.plans_manager.plans)
    plans["transpose_forward"], plans["transpose_backward"] = [2, 0, 1], [1, 2, 0]
    configuration = plans["configurations"]["3d_fullres"]
    # transposed axes are (x, z, y): y is resampled from 1 to 2 mm; the window is 20 voxels along x
    configuration["spacing"] = [1.0, 1.0, 2.0]
    configuration["patch_size"] = [20, 32, 16]
    predictor.plans_manager = nnQCPlansManager(plans)
    predictor.configuration_manager = predictor.plans_manager.get_configuration("3d_fullres")
    predictor.network = CopyCandidateNetwork(len(predictor.dataset_json["channel_names"]))
    predictor.fold_weights = [{}]
    return predictor


def expected_error_maps(seg: np.ndarray) -> tuple[np.ndarray, float]:
    """Independently, in input (z, y, x) coordinates: the region masks inside the non-zero box and inside the
    window along x, which keeps the foreground that lies in the box centred (20 of the box's 30 voxels)."""
    seen = np.zeros(SHAPE, dtype=bool)
    seen[NONZERO] = True
    in_box = np.argwhere((seg > 0) & seen)
    x0, x1 = NONZERO[2].start, NONZERO[2].stop
    low, high = in_box[:, 2].min() - x0, in_box[:, 2].max() + 1 - x0
    start = x0 + min(max((low + high - 20) // 2, 0), (x1 - x0) - 20)
    window = np.zeros(SHAPE, dtype=bool)
    window[:, :, start:start + 20] = True
    seen &= window
    maps = np.stack([np.isin(seg, labels) & seen for labels in REGIONS])
    outside = 1 - np.count_nonzero((seg > 0) & seen) / np.count_nonzero(seg)
    return maps, outside


def test_error_map_lands_where_its_voxels_came_from(stub_predictor):
    rng = np.random.default_rng(0)
    images = np.zeros((4, *SHAPE), dtype=np.float32)
    images[(slice(None), *NONZERO)] = rng.uniform(1, 2, (4, *[s.stop - s.start for s in NONZERO]))
    seg = segmentation()
    result = stub_predictor.predict_from_arrays(images, seg[None], {"spacing": [1.0, 1.0, 1.0]})
    expected, outside = expected_error_maps(seg)
    assert result["sem"].shape == expected.shape
    for c in range(len(REGIONS)):
        np.testing.assert_array_equal(result["sem"][c], expected[c], err_msg=f"region {c}")
    # the window cut something, and the voxels cropped with the non-zero box are counted as unseen
    assert 0 < outside < 1 and result["partial_view"] is True
    assert result["foreground_outside_view"] == pytest.approx(outside, abs=1e-12)
    assert (result["dsc"], result["nsd"]) == pytest.approx((0.25, 0.75))


def test_a_case_that_fits_is_seen_whole(stub_predictor):
    stub_predictor.configuration_manager.configuration["patch_size"] = [36, 32, 20]
    images = np.ones((4, *SHAPE), dtype=np.float32)
    seg = segmentation()
    result = stub_predictor.predict_from_arrays(images, seg[None], {"spacing": [1.0, 1.0, 1.0]})
    assert result["partial_view"] is False and result["foreground_outside_view"] == 0
    for c, labels in enumerate(REGIONS):
        np.testing.assert_array_equal(result["sem"][c], np.isin(seg, labels))
