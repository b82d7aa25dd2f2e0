"""Coverage-guided fuzzing (atheris / libFuzzer) of every parser a peer can reach.

``python -m fuzz.run`` runs the targets of :mod:`fuzz.targets`; ``fuzz/regressions/<target>/``
keeps every input that ever crashed one. See ``fuzz/README.md``.
"""
