"""hba: Hypernetwork-Based Augmentation — search augmentation schedules and replay them."""

__version__ = "0.1.0"
