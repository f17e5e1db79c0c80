"""l7ctl - control tool for KTCPVS, the in-kernel Layer-7 content switch."""

__version__ = "0.3.0"
