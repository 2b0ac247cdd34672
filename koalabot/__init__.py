"""koalabot: a self-hosted Koala chat model where people already talk, and the data loop
behind it."""

__version__ = "0.1.0"
