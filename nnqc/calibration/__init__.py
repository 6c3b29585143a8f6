"""Calibrated decisions: recalibrated quality, conformal intervals, training-range checks, pass/review/fail."""
