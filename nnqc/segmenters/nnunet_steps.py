"""nnU-Net's planner and preprocessor for the segmenters, with classes resolved from explicit tables.

nnU-Net finds reader/writers and normalization schemes by walking its packages for class names; these
subclasses use nnQC's tables of the very same nnU-Net classes, and change nothing else.
"""
from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

from nnqc.preprocessing.preprocessor import nnQCPreprocessor
from nnqc.preprocessing.readers import reader_writer_from_dataset_json


class SegmenterPlanner(ExperimentPlanner):
    """nnU-Net's default planner (nnUNetPlans: 2d, 3d_fullres and, where needed, 3d_lowres)."""

    def determine_reader_writer(self) -> type[BaseReaderWriter]:
        example_image = next(iter(self.dataset.values()))["images"][0]
        return reader_writer_from_dataset_json(self.dataset_json, example_image)


class SegmenterPreprocessor(DefaultPreprocessor):
    """nnU-Net's DefaultPreprocessor; normalization schemes from nnQC's explicit table."""

    _normalize = nnQCPreprocessor._normalize
