"""Model-family adapters: find each FFN, read W1/b1/act/W2/b2, install the TARDIS module."""
