"""Training and evaluation of hyperspectral foundation models on a built store (``[train]`` extra).

Imports torch; the rest of the package never imports this subpackage.
"""
