"""The model: routing graphs, their components and gates, the search spaces that build them,
the supernet that runs them, their cost, and their files.

Everything here is about *what* a sharing architecture is; training, derive and retrain are in
``nas_mtl.stages``, the studies and reports in the package root.
"""
