"""Training on a built store: torch datasets, device-side transforms (the ``[train]`` extra)."""
