"""Network building blocks shared by several models."""
