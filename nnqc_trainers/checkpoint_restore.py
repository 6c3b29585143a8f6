"""Restoring an nnQCTrainer from its checkpoint without unpickling code, including checkpoints of models trained
before per-region outputs (two regression outputs): they get a network with that head and validate and predict as
they did."""
from nnqc.checkpoint_files import load_checkpoint
from nnqc.network_architecture.regression_outputs import regression_outputs_in_weights
from nnqc.training.cpu_bf16 import instance_norms_in_fp32


class CheckpointRestore:
    """Mixed into nnQCTrainer ahead of nnUNetTrainer: its load_checkpoint replaces nnU-Net's."""

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Restore what nnU-Net's save_checkpoint stored, reading a file as data only (nnqc.checkpoint_files);
        nnU-Net's own load_checkpoint unpickles with weights_only=False and accepts only a file name."""
        if not self.was_initialized:
            self.initialize()
        checkpoint = (load_checkpoint(filename_or_checkpoint, self.device)
                      if isinstance(filename_or_checkpoint, str) else filename_or_checkpoint)
        self._match_regression_outputs(checkpoint["network_weights"])
        network = self._unwrapped_network()
        network = getattr(network, "_orig_mod", network)  # a torch.compile'd network holds the module inside
        own_keys = network.state_dict().keys()
        network.load_state_dict({key[len("module."):] if key not in own_keys and key.startswith("module.") else key:
                                 value for key, value in checkpoint["network_weights"].items()})
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        self._best_score = self._best_ema

    def _match_regression_outputs(self, weights: dict) -> None:
        """A checkpoint trained before per-region outputs (2 regression outputs) gets a network with that head,
        and a fresh optimizer for it, so that it validates and predicts as it did (without per-region values)."""
        saved = regression_outputs_in_weights(weights)
        network = self._unwrapped_network()
        if saved is None or saved == getattr(network, "num_regression_outputs", saved):
            return
        if network is not self.network or hasattr(network, "_orig_mod"):
            raise RuntimeError(f"the checkpoint has {saved} regression outputs, the network "
                               f"{network.num_regression_outputs}; load it without DDP or torch.compile")
        self.print_to_log_file(f"the checkpoint has {saved} regression outputs (a model trained before per-region "
                               f"outputs): it has no per-region DSC/NSD")
        self.network = self.build_qc_network(self.plans_manager, self.configuration_manager, saved).to(self.device)
        instance_norms_in_fp32(self.network)
        self.optimizer, self.lr_scheduler = self.configure_optimizers()
