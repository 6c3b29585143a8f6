"""`nnQC_install_pretrained_model_from_zip`: install a shared model into nnUNet_results, after checking it."""
from __future__ import annotations

import argparse
import os
import sys

from batchgenerators.utilities.file_and_folder_operations import join, load_json

from nnqc.model_sharing.install import install_model_from_zip, other_dataset_names
from nnqc.model_sharing.model_metadata import METADATA_FILE, describe_model


def install_model_from_zip_entry() -> None:
    parser = argparse.ArgumentParser(description="Install an nnQC model zip (from nnQC_export_model_to_zip) into "
                                                 "nnUNet_results, after checking the archive.")
    parser.add_argument("zip", help="the model archive (FILE.zip)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an installed model of the same dataset, trainer, plans and configuration")
    args = parser.parse_args()
    try:
        folder = install_model_from_zip(args.zip, overwrite=args.overwrite)
        metadata = load_json(join(folder, METADATA_FILE))
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError, OSError) as e:
        print(f"nnQC_install_pretrained_model_from_zip: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(describe_model({**metadata, "exported_with": metadata.get("nnqc_version")}))
    print(f"installed to {folder}")
    print(f"predict with: nnQC_predict -m {folder} -i IMAGES -s SEGMENTATIONS -o OUT")
    results, dataset = os.path.dirname(os.path.dirname(folder)), os.path.basename(os.path.dirname(folder))
    others = other_dataset_names(results, dataset)
    if others:
        print(f"WARNING: nnUNet_results also holds {', '.join(others)} with the same dataset id, so '-d "
              f"{dataset[len('Dataset'):len('DatasetXXX')]}' is ambiguous; use -d {dataset} or -m {folder}")


if __name__ == "__main__":
    install_model_from_zip_entry()
