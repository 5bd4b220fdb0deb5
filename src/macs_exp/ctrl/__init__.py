"""CTRL (Lu et al., arXiv 2012.09092): counterfactual transitions from a structural causal model
learned by a bidirectional conditional GAN, as the ``mode=ctrl`` augmenter (docs/ctrl.md)."""
