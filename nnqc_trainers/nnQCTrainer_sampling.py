"""How training batches are drawn over the DSC range."""
from nnqc.sampling import TOP_WEIGHTED_EDGES
from nnqc_trainers.nnQCTrainer import nnQCTrainer


class nnQCTrainer_TopBins(nnQCTrainer):
    """Balances batches over 14 DSC bins, of 0.1 up to 0.6 and of 0.05 above (nnqc.sampling.TOP_WEIGHTED_EDGES):
    57 % of the draws above DSC 0.6 instead of 40 %, in narrower quality steps, where real segmenters' candidates
    lie. Validation and the epoch length keep the 10 equal bins, so its figures compare with nnQCTrainer's."""
    hyperparameters = {"dsc_bin_edges": TOP_WEIGHTED_EDGES}
