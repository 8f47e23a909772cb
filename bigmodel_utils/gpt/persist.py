"""Keeping a trained GPT: saved as a ``.keras`` file with its tokeniser beside it, loaded back in Keras's safe
mode, or trained small when chapter 6's model is not there. Used in chapter 6 (saving) and chapter 7
(loading).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from bigmodel_utils.data import text
from bigmodel_utils.gpt.model import GPT, GPTConfig, build_gpt
from bigmodel_utils.gpt.train import train_language_model


def save_language_model(model: GPT, tokenizer, directory: str | Path, name: str) -> Path:
    """Save ``model`` as ``<directory>/<name>.keras`` and its tokeniser beside it
    (``<name>.tokenizer.json``); returns the model's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.keras"
    model.save(path)
    (directory / f"{name}.tokenizer.json").write_text(json.dumps(text.tokenizer_to_dict(tokenizer)))
    return path


def load_language_model(directory: str | Path, name: str):
    """Load ``(model, tokenizer)`` saved by :func:`save_language_model`, in Keras's safe
    mode.

    Raises FileNotFoundError, naming the folder, when no model of that name is there.
    """
    directory = Path(directory)
    path, tokenizer_path = directory / f"{name}.keras", directory / f"{name}.tokenizer.json"
    if not (path.is_file() and tokenizer_path.is_file()):
        raise FileNotFoundError(
            f"no language model {name!r} in {directory} (expected {path.name} and "
            f"{tokenizer_path.name}); run chapter 6 or use load_or_train"
        )
    model = keras.saving.load_model(path, safe_mode=True)
    return model, text.tokenizer_from_dict(json.loads(tokenizer_path.read_text()))


SMALL_MODEL = {"num_layers": 2, "num_heads": 4, "width": 64, "context": 64}
"""The shape of the small model :func:`load_or_train` trains when chapter 6's is not
there.
"""


def load_or_train(directory: str | Path, name: str = "shakespeare", steps: int = 300,
                  seed: int = 0, jit_compile=None):
    """Return ``(model, tokenizer)``: chapter 6's saved model ``name``, or, when there
    is none (a fresh build, Colab), a small character-level one trained now for
    ``steps`` steps on the bundled corpus ``name`` and saved there for next time. Which
    of the two happened is printed. Used in chapter 7.
    """
    try:
        model, tokenizer = load_language_model(directory, name)
        print(f"Loaded chapter 6's model {name!r} from {directory}.")
        return model, tokenizer
    except FileNotFoundError:
        pass
    except Exception as error:  # a file from an older version of this code, or a damaged one
        print(f"Could not load the saved model {name!r} from {directory} "
              f"({type(error).__name__}: {str(error).splitlines()[0][:120]}).")
    corpus = text.load_corpus(name)
    train_text, val_text, window_start = corpus.train, corpus.validation, None
    if name == "tang":  # as chapter 6 does: the five-character quatrains, one a line
        train_text, val_text = ("\n".join(text.quatrains(part, 5)) + "\n" for part in (train_text, val_text))
    tokenizer = text.CharTokenizer.train(train_text + val_text)
    if name == "tang":
        window_start = int(tokenizer.encode("\n")[0])
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **SMALL_MODEL)
    print(f"No saved model {name!r} in {directory}: training a small one ({steps} steps) instead.")
    run = train_language_model(
        build_gpt(config, seed=seed),
        tokenizer.encode(train_text),
        tokenizer.encode(val_text),
        steps=steps,
        batch_size=32,
        learning_rate=3e-3,
        warmup_steps=min(50, steps // 5),
        eval_every=steps,
        seed=seed,
        jit_compile=jit_compile,
        window_start=window_start,
    )
    save_language_model(run.model, tokenizer, directory, name)
    return run.model, tokenizer
