"""tgdp.train: TG-DP training from the Arrow store (one process, or torchrun + DDP)."""
