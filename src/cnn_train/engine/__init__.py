"""The train/eval loop and its metrics."""
