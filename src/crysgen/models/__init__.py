"""Networks (tensor -> tensor); they know nothing about losses or schedules.

Also the model-directory files (:mod:`~crysgen.models.model_dir`) and the ``save_pretrained``/
``from_pretrained`` base of every saved-model bundle (:mod:`~crysgen.models.saved`).
"""
