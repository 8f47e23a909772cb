"""The book's image classifiers: the models (:mod:`.models`), how they are trained fast (:mod:`.training`) and a
command line that trains one (``python -m bigmodel_utils.cnn``). Chapters 2, 4, 5, 7 and 9."""
