"""binwatch's ML core: ABID data, preprocessing, EfficientNet-Lite and ResNet counters, training, evaluation,
checkpoints, prediction, and the bundled default model.

Importable without any web or database code: nothing here imports api, worker or records.
"""
