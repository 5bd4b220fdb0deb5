"""The trainer: the loop (``trainer.py``), the augmenter protocol it calls (``augmenter.py``) and
the composition root (``run.py``)."""
