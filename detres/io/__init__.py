"""File formats detres writes and reads itself: checkpoints (atomic writes, `weights_only` loads)."""
