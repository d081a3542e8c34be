"""The plugin's one model cache, shared by its widgets: a checkpoint is loaded once, on a job's
thread (never on the UI thread), and asking for another model frees the previous one."""

from vstain.pipeline import ModelCache

MODELS = ModelCache()
