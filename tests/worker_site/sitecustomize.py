"""Imported at start-up by the Python processes of tests that put this folder on PYTHONPATH (nnQC_make_candidates
runs nnU-Net's planning in worker processes, out of reach of the tests' monkeypatching).

nnU-Net samples 1e8 foreground intensities per dataset for its fingerprint: millions per case of a tiny phantom,
about a minute of a test's time. A few thousand change nothing that planning uses for MRI (z-score), as
conftest.SmallSampleFingerprintExtractor does in the tests' own process."""
from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor

_original_init = fingerprint_extractor.DatasetFingerprintExtractor.__init__


def _small_sample_init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self.num_foreground_voxels_for_intensitystats = 30000


fingerprint_extractor.DatasetFingerprintExtractor.__init__ = _small_sample_init
