"""StainDiffuser (Kataria, Knudsen, Elhabian): multitask conditional diffusion for virtual IHC.

Registers ``stain-diffuser``, ``stain-diffuser-bidirectional`` and ``stain-diffuser-multi``; see
docs/models/stain_diffuser.md.
"""

from vstain.models.stain_diffuser import model  # noqa: F401  (registers the three names)
