"""cwfs: mount a CoreWeave AI Object Storage bucket as a local directory."""

__version__ = "0.1.0"
