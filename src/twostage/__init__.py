"""twostage: two-stage domain-adapted training for real-world image SR and restoration."""

__version__ = "0.1.0"
