"""Training helpers for chapters 4, 5, 7 and 9, one module per concern:

- :mod:`~bigmodel_utils.cnn.training.precision`: devices, dtype policies, the learning-rate scaling rule;
- :mod:`~bigmodel_utils.cnn.training.pipeline`: augmentation and input pipelines for ``fit``;
- :mod:`~bigmodel_utils.cnn.training.fitting`: compiling, callbacks, resumable training;
- :mod:`~bigmodel_utils.cnn.training.throughput`: images per second of a training setup;
- :mod:`~bigmodel_utils.cnn.training.prediction`: checked inputs in, classes and probabilities out.

The learning-rate schedule is the package's one, :func:`bigmodel_utils.optimizers.warmup_cosine`, re-exported
here as ``training.warmup_cosine`` (chapter 4).

Nothing here imports TensorFlow: the models and training run under any Keras backend. What
needs TensorFlow itself (``tf.data``, ``tf.distribute``) lives in
:mod:`bigmodel_utils.backend.tensorflow_only`; :func:`make_pipeline` uses its ``tf.data`` pipeline
when TensorFlow is installed and NumPy batches otherwise. The names below are re-exported so
that chapters write ``training.make_pipeline(...)``.
"""

from bigmodel_utils.cnn.training.fitting import (
    BACKUP_DIR,
    BEST_MODEL_FILE,
    HISTORY_FILE,
    RUN_SETTINGS_FILE,
    EpochTimer,
    HistoryFile,
    TrainingRun,
    compile_classifier,
    layers_blocking_xla,
    load_or_train_cnn,
    read_history,
    run_folder,
    standard_callbacks,
    train,
)
from bigmodel_utils.cnn.training.pipeline import NumpyBatches, augmentation, make_pipeline, tensorflow_available
from bigmodel_utils.cnn.training.precision import (
    CPU_BFLOAT16_FLAGS,
    PRECISION_POLICIES,
    DeviceInfo,
    cpu_info,
    device_info,
    float32_copy,
    precision_policy,
    resolve_precision_policy,
    scaled_learning_rate,
    set_precision_policy,
)
from bigmodel_utils.cnn.training.prediction import Predictions, check_images, predict
from bigmodel_utils.cnn.training.throughput import (
    Throughput,
    TrainingSetup,
    classic_setup,
    measure_throughput,
    optimised_setup,
)
from bigmodel_utils.optimizers import warmup_cosine

__all__ = [
    "BACKUP_DIR", "BEST_MODEL_FILE", "CPU_BFLOAT16_FLAGS", "HISTORY_FILE", "PRECISION_POLICIES",
    "RUN_SETTINGS_FILE", "DeviceInfo", "EpochTimer", "HistoryFile", "NumpyBatches", "Predictions",
    "Throughput", "TrainingRun", "TrainingSetup", "augmentation", "check_images", "classic_setup",
    "compile_classifier", "cpu_info", "device_info", "float32_copy", "layers_blocking_xla",
    "load_or_train_cnn", "make_pipeline", "measure_throughput", "optimised_setup", "precision_policy",
    "predict", "read_history", "resolve_precision_policy", "run_folder", "scaled_learning_rate",
    "set_precision_policy", "standard_callbacks", "tensorflow_available", "train", "warmup_cosine",
]
