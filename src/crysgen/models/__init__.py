"""Networks (tensor -> tensor) and the saved-model bundles that hold them; no losses.

A bundle (:mod:`~crysgen.models.adversarial`, :mod:`~crysgen.models.atoms`,
:mod:`~crysgen.models.diffusion`, :mod:`~crysgen.models.voxel`) is a trained model as its
directory holds it: networks, settings (the noise schedule it was trained with, which sampling
shares) and data fingerprint, saved and loaded through one ``save_pretrained``/``from_pretrained``
base (:mod:`~crysgen.models.saved`; files: :mod:`~crysgen.models.model_dir`). Training writes
bundles; :mod:`crysgen.pipelines` adds sampling to them.
"""
