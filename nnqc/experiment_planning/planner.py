"""nnQC planner: nnU-Net's ExperimentPlanner reduced to one whole-case 3d_fullres configuration for QCResUNet.

QC looks at the whole case, so instead of a patch size the planner chooses a fixed network input shape that
covers every cropped subject at the target spacing, and derives QCResUNet's five downsampling steps and
kernel sizes from nnU-Net's own pooling logic for that shape.
"""
import json
import os
from collections.abc import Sequence

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from nnqc import paths
from nnqc.atomic_files import copy_atomically, write_json_atomically
from nnqc.metrics.regions import get_regions, nsd_tolerance_mm
from nnqc.network_architecture.regression_outputs import regression_output_count
from nnqc.preprocessing.qc_dataset import QCDatasetError
from nnqc.preprocessing.readers import reader_writer_from_dataset_json

QC_CONFIGURATION = "3d_fullres"
DEFAULT_PLANS_NAME = "nnQCPlans"  # the plans file and the middle of a model folder's name
NUM_DOWNSAMPLINGS = 5  # stem, max-pool, stages 2-4 of QCResUNet
QCRESUNET_CLASS_NAME = "nnqc.network_architecture.qcresunet.QCResUNet"
QC_BATCH_SIZE = 4  # paper §3.5


class nnQCPlanner(ExperimentPlanner):
    """Plans nnQCPlans.json: only 3d_fullres, QCResUNet, a fixed input shape covering all subjects."""

    def __init__(self, dataset_name_or_id: str | int, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "nnQCPreprocessor", plans_name: str = DEFAULT_PLANS_NAME,
                 overwrite_target_spacing: Sequence[float] | None = None, suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.batch_size = QC_BATCH_SIZE

    def determine_reader_writer(self) -> type[BaseReaderWriter]:
        example_image = next(iter(self.dataset.values()))["images"][0]
        return reader_writer_from_dataset_json(self.dataset_json, example_image)

    @staticmethod
    def shape_covering_all_subjects(spacings: Sequence[Sequence[float]], shapes_after_crop: Sequence[Sequence[int]],
                                    target_spacing: Sequence[float]) -> np.ndarray:
        """Per axis, the largest cropped extent of any subject once resampled to the target spacing."""
        new_shapes = [compute_new_shape(shape, spacing, target_spacing)
                      for spacing, shape in zip(spacings, shapes_after_crop)]
        return np.max(np.array(new_shapes), axis=0)

    @staticmethod
    def network_topology(spacing: Sequence[float], shape: Sequence[int], min_feature_map_size: int = 4) -> dict:
        """QCResUNet strides and kernel sizes from nnU-Net's pooling logic, and the input shape they allow.

        nnU-Net's downsampling steps for (spacing, shape) are truncated or padded with [1, 1, 1] to exactly
        five (stem, max-pool, stages 2-4). The kernel of a stage is nnU-Net's conv kernel at the resolution
        the stage runs at (stage 1 after two downsamplings, ..., stage 4 after five); the stem kernel is 7
        along the axes the stem downsamples and 1 elsewhere. The shape is rounded up per axis to the
        product of the strides.
        """
        _, pool_op_kernel_sizes, conv_kernel_sizes, _, _ = get_pool_and_conv_props(
            list(spacing), list(shape), min_feature_map_size, 999999)
        dim = len(spacing)
        strides = [list(map(int, s)) for s in pool_op_kernel_sizes[1:]][:NUM_DOWNSAMPLINGS]
        strides += [[1] * dim] * (NUM_DOWNSAMPLINGS - len(strides))
        # conv_kernel_sizes[k] is nnU-Net's kernel after k downsamplings; its last entry is the bottleneck's
        kernel_sizes = [list(map(int, conv_kernel_sizes[min(level, len(conv_kernel_sizes) - 1)]))
                        for level in range(2, NUM_DOWNSAMPLINGS + 1)]
        stem_kernel_size = [7 if s > 1 else 1 for s in strides[0]]
        divisor = np.prod(np.array(strides), axis=0)
        input_shape = [int(np.ceil(s / d) * d) for s, d in zip(shape, divisor)]
        return {"input_shape": input_shape, "strides": strides, "kernel_sizes": kernel_sizes,
                "stem_kernel_size": stem_kernel_size}

    def qcresunet_architecture(self, topology: dict, num_image_channels: int, num_regions: int) -> dict:
        """The plans' "architecture" entry: class name, keyword arguments, and which of them are imports."""
        return {
            "network_class_name": QCRESUNET_CLASS_NAME,
            "arch_kwargs": {
                "input_channels": num_image_channels + num_regions,
                "num_regions": num_regions,
                # subject-level DSC and NSD, then each region's (nnqc.network_architecture.regression_outputs)
                "num_regression_outputs": regression_output_count(num_regions),
                "strides": topology["strides"],
                "kernel_sizes": topology["kernel_sizes"],
                "stem_kernel_size": topology["stem_kernel_size"],
                "features_per_stage": [32, 64, 128, 256],
                "blocks_per_stage": [3, 4, 6, 3],
                "decoder_features": [128, 64, 64, 32],
                "dropout_p": 0.3,
                "norm_op": "torch.nn.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-5, "affine": True},
                "nonlin": "torch.nn.ReLU",
                "nonlin_kwargs": {"inplace": True},
                "decoder_nonlin": "torch.nn.LeakyReLU",
                "decoder_nonlin_kwargs": {"negative_slope": 0.01, "inplace": True},
            },
            "_kw_requires_import": ["norm_op", "nonlin", "decoder_nonlin"],
        }

    def get_qc_configuration(self, spacing: Sequence[float], covering_shape: Sequence[int],
                             median_shape: Sequence[float]) -> dict:
        """The 3d_fullres configuration: nnU-Net's keys, the fixed input shape as "patch_size", QCResUNet."""
        topology = self.network_topology(spacing, covering_shape, self.UNet_featuremap_min_edge_length)
        region_names, _ = get_regions(self.dataset_json)
        num_image_channels = len(self.dataset_json["channel_names"])
        resampling_data, resampling_data_kwargs, resampling_seg, resampling_seg_kwargs = self.determine_resampling()
        resampling_softmax, resampling_softmax_kwargs = self.determine_segmentation_softmax_export_fn()
        normalization_schemes, mask_is_used_for_norm = \
            self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        return {
            "data_identifier": self.generate_data_identifier(QC_CONFIGURATION),
            "preprocessor_name": self.preprocessor_name,
            "batch_size": self.batch_size,
            "patch_size": topology["input_shape"],
            "median_image_size_in_voxels": [float(i) for i in median_shape],
            "spacing": [float(i) for i in spacing],
            "normalization_schemes": normalization_schemes,
            "use_mask_for_norm": mask_is_used_for_norm,
            "resampling_fn_data": resampling_data.__name__,
            "resampling_fn_seg": resampling_seg.__name__,
            "resampling_fn_data_kwargs": resampling_data_kwargs,
            "resampling_fn_seg_kwargs": resampling_seg_kwargs,
            "resampling_fn_probabilities": resampling_softmax.__name__,
            "resampling_fn_probabilities_kwargs": resampling_softmax_kwargs,
            "architecture": self.qcresunet_architecture(topology, num_image_channels, len(region_names)),
            "batch_dice": False,
        }

    def plan_experiment(self) -> dict:
        transpose_forward, transpose_backward = self.determine_transpose()
        fullres_spacing = self.determine_fullres_target_spacing()
        spacings = self.dataset_fingerprint["spacings"]
        shapes_after_crop = self.dataset_fingerprint["shapes_after_crop"]
        if len(spacings) != len(self.dataset):
            raise QCDatasetError(f"The fingerprint of {self.dataset_name} covers {len(spacings)} subjects, the "
                                 f"dataset has {len(self.dataset)}: extract the fingerprint again (--clean)")
        covering_shape = self.shape_covering_all_subjects(spacings, shapes_after_crop, fullres_spacing)
        median_shape = np.median([compute_new_shape(j, i, fullres_spacing)
                                  for i, j in zip(spacings, shapes_after_crop)], 0)
        if len(fullres_spacing) != 3 or np.min(median_shape) <= 1:
            raise QCDatasetError(f"{self.dataset_name}: QCResUNet needs 3D images, the median shape is "
                                 f"{median_shape.tolist()}")
        configuration = self.get_qc_configuration(fullres_spacing[transpose_forward],
                                                  covering_shape[transpose_forward],
                                                  median_shape[transpose_forward])
        region_names, region_labels = get_regions(self.dataset_json)
        plans = {
            "dataset_name": self.dataset_name,
            "plans_name": self.plans_identifier,
            "original_median_spacing_after_transp": [float(i) for i in
                                                     np.median(spacings, 0)[transpose_forward]],
            "original_median_shape_after_transp": [int(round(i)) for i in
                                                   np.median(shapes_after_crop, 0)[transpose_forward]],
            "image_reader_writer": self.determine_reader_writer().__name__,
            "transpose_forward": [int(i) for i in transpose_forward],
            "transpose_backward": [int(i) for i in transpose_backward],
            "configurations": {QC_CONFIGURATION: configuration},
            "experiment_planner_used": self.__class__.__name__,
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel":
                self.dataset_fingerprint["foreground_intensity_properties_per_channel"],
            # what the QC trainer and predictor need beyond nnU-Net's keys
            "nnqc": {
                "configuration": QC_CONFIGURATION,
                "input_shape": configuration["patch_size"],
                "shape_covering_all_subjects": [int(i) for i in covering_shape[transpose_forward]],
                "num_image_channels": len(self.dataset_json["channel_names"]),
                "num_regions": len(region_names),
                "regions": {name: list(labels) for name, labels in zip(region_names, region_labels)},
                "nsd_tolerance_mm": nsd_tolerance_mm(self.dataset_json),
                "source_dataset": self.dataset_json.get("nnqc", {}).get("source_dataset"),
            },
        }
        self._copy_dataset_json()
        self.plans = plans
        self.save_plans(plans)
        return plans

    def _preprocessed_folder(self) -> str:
        return join(paths.require("nnUNet_preprocessed"), self.dataset_name)

    def _copy_dataset_json(self) -> None:
        """Copy dataset.json beside the plans, only when it changed (its time stamp marks stale outputs)."""
        source, target = join(self.raw_dataset_folder, "dataset.json"), join(self._preprocessed_folder(),
                                                                              "dataset.json")
        if not isfile(target) or load_json(target) != self.dataset_json:
            os.makedirs(self._preprocessed_folder(), exist_ok=True)
            copy_atomically(source, target)

    def save_plans(self, plans: dict) -> None:
        """Save as nnU-Net does (other configurations of an existing plans file are kept), atomically and
        only when the content changes, so that unchanged plans do not mark preprocessed data as stale."""
        recursive_fix_for_json_export(plans)
        plans_file = join(self._preprocessed_folder(), self.plans_identifier + ".json")
        if isfile(plans_file):
            old_plans = load_json(plans_file)
            kept = {k: v for k, v in old_plans.get("configurations", {}).items() if k not in plans["configurations"]}
            plans["configurations"].update(kept)
            if json.loads(json.dumps(plans)) == old_plans:
                print(f"Plans unchanged: {plans_file}")
                return
        os.makedirs(self._preprocessed_folder(), exist_ok=True)
        write_json_atomically(plans_file, plans)
        print(f"Plans were saved to {plans_file}")
