"""Which nnU-Net reader/writer reads a dataset's images, and its candidate segmentations."""
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnqc.preprocessing.plans_manager import READER_WRITERS, lookup
from nnqc.preprocessing.qc_dataset import QCDatasetError
from nnqc.qc_data.layout import CANDIDATE_FILE_ENDING


def reader_writer_from_dataset_json(dataset_json: dict, example_file: str) -> type[BaseReaderWriter]:
    """The reader/writer nnU-Net would pick for this dataset: the declared override, else the first class
    supporting the file ending that can open `example_file`."""
    declared = dataset_json.get("overwrite_image_reader_writer")
    if declared is not None and declared != "None":
        return lookup(READER_WRITERS, declared, "image reader/writer (overwrite_image_reader_writer)")
    ending = dataset_json["file_ending"].lower()
    for rw in LIST_OF_IO_CLASSES:
        if ending in rw.supported_file_endings:
            try:
                rw().read_images((example_file,))
            except Exception:
                continue
            return rw
    raise QCDatasetError(f"No nnU-Net reader/writer can read {example_file} (file ending {ending})")


def candidate_reader_writer(plans_manager: PlansManager) -> type[BaseReaderWriter]:
    """The subject's reader when it reads candidate files (same axes handling), SimpleITK otherwise."""
    rw = plans_manager.image_reader_writer_class
    return rw if CANDIDATE_FILE_ENDING in rw.supported_file_endings else SimpleITKIO
