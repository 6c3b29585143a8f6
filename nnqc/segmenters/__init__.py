"""Real segmenters' candidates for QC training: nnU-Net trained on channel subsets, snapshots along training,
every candidate predicted out of fold (paper §2.2, steps 1-2)."""
