"""tgdp.model: the CAV-MAE Sync backbone and TG-DP. Imports without Ray or pyarrow."""
