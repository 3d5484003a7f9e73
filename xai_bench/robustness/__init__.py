"""Robustness of image classifiers: adversarial attacks, common corruptions, ensembles and their uncertainty.

Submodules (imported on demand, so that e.g. an attack does not load the corruption registry):

- :mod:`.attacks`: the :class:`~.attacks.Attack` template, FGSM, PGD, ``build_attack``, ``parse_eps``;
- :mod:`.sweeps`: per-ε numbers of attack sweeps, over one batch or summed over a split;
- :mod:`.corruptions`: parametric and ImageNet-C corruptions, ``corrupt``, ``list_corruptions``, ``build_suite``;
- :mod:`.corruption_eval`: accuracy under a corruption suite, mean corruption error, flipped images;
- :mod:`.ensemble`: members' predictions and per-member / ensemble accuracy;
- :mod:`.uncertainty`: votes, predictive entropy, mutual information, certainty rankings.

Everything here is library code: it takes built models and tensors and never imports ``xai_bench.tasks``.
"""
