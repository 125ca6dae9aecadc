"""rualign: instruction-tune LLMs for Russian and measure the result honestly."""

__version__ = "0.1.0"
