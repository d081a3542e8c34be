"""Training: losses, the trainer and paired region sampling.

Kept free of imports so that ``vstain.models`` can use ``vstain.train.losses`` without cycles.
"""
