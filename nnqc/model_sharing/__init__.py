"""Sharing trained nnQC models the way nnU-Net shares its own: export to a zip, install from one.

The archive holds exactly what prediction needs, laid out as in nnUNet_results
(DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION/...), plus a metadata file that lists every file with its
checksum, so that installing is a checked extraction into nnUNet_results.
"""
