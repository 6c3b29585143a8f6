"""nnU-Net's plans managers with every class and function the plans name taken from explicit tables.

nnU-Net resolves the class and function names stored in plans by walking its packages. nnQC resolves them from
these tables of the objects nnU-Net ships, so that plans (which a shared model brings along) import nothing by
name.
"""
from functools import partial
from typing import Callable

from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import (
    channel_name_to_normalization_mapping,
)
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from nnunetv2.preprocessing.resampling.no_resampling import no_resampling_hack
from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnqc.preprocessing.qc_dataset import QCDatasetError

READER_WRITERS = {rw.__name__: rw for rw in LIST_OF_IO_CLASSES}
RESAMPLING_FUNCTIONS = {fn.__name__: fn for fn in (resample_data_or_seg_to_shape, resample_torch_fornnunet,
                                                   no_resampling_hack)}
NORMALIZATION_SCHEMES = {cls.__name__: cls for cls in channel_name_to_normalization_mapping.values()}
LABEL_MANAGERS = {LabelManager.__name__: LabelManager}


def lookup(table: dict, name: str, what: str):
    """table[name], or a QCDatasetError naming what the plans asked for and what nnQC supports."""
    if name not in table:
        raise QCDatasetError(f"Unknown {what} {name!r} in the plans. nnQC supports: {sorted(table)}")
    return table[name]


class nnQCConfigurationManager(ConfigurationManager):
    """nnU-Net's ConfigurationManager with resampling functions taken from an explicit table."""

    def _resampling_fn(self, key: str) -> Callable:
        fn = lookup(RESAMPLING_FUNCTIONS, self.configuration[key], "resampling function")
        return partial(fn, **self.configuration[key + "_kwargs"])

    @property
    def resampling_fn_data(self) -> Callable:
        return self._resampling_fn("resampling_fn_data")

    @property
    def resampling_fn_seg(self) -> Callable:
        return self._resampling_fn("resampling_fn_seg")

    @property
    def resampling_fn_probabilities(self) -> Callable:
        return self._resampling_fn("resampling_fn_probabilities")

    @property
    def preprocessor_class(self) -> type[DefaultPreprocessor]:
        from nnqc.preprocessing.preprocessor import nnQCPreprocessor  # that module imports this one

        return lookup({c.__name__: c for c in (DefaultPreprocessor, nnQCPreprocessor)}, self.preprocessor_name,
                      "preprocessor")


class nnQCPlansManager(PlansManager):
    """nnU-Net's PlansManager with the reader/writer and label manager taken from explicit tables."""

    def get_configuration(self, configuration_name: str) -> nnQCConfigurationManager:
        if configuration_name not in self.plans["configurations"]:
            raise QCDatasetError(f"Configuration {configuration_name!r} is not in plans {self.plans_name} "
                                 f"(available: {self.available_configurations})")
        return nnQCConfigurationManager(self._internal_resolve_configuration_inheritance(configuration_name))

    @property
    def image_reader_writer_class(self) -> type[BaseReaderWriter]:
        return lookup(READER_WRITERS, self.plans["image_reader_writer"], "image reader/writer")

    @property
    def label_manager_class(self) -> type[LabelManager]:
        return lookup(LABEL_MANAGERS, self.plans.get("label_manager", "LabelManager"), "label manager")
