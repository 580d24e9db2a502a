"""binwatch's ML core: ABID data, preprocessing, ResNet counter, training, evaluation, checkpoints,
prediction.

Importable without any web or database code: nothing here imports api, worker or records.
"""
