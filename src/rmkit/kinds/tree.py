"""The Decision-Tree RM (RLHFlow's Decision-Tree-Reward-Llama-3.1-8B and -Gemma-2-27B): a rated RM whose pairs
are judged by a decision tree.

Its model is a multi-attribute RM (layout ``decision-tree``: a linear ``score`` with a bias giving the five
HelpSteer2 attributes, helpfulness, correctness, coherence, complexity and verbosity, at the last token), so it
scores a response as the other multi-attribute heads do: its attributes, and their weighted sum (``--weights``).
Beside it, ``decision_tree.pkl`` is a depth-3 scikit-learn classifier fitted on the difference of two answers'
attribute vectors, ``r1 - r2``, to the label "the first answer is better"; a leaf's probability is the share of
its training pairs whose first answer was better. The tree is a pickle, so it is read only with
``--allow-pickle``, and needs scikit-learn (``pip install 'rmkit[tree]'``). Its features are taken in the order
the pickle records (``feature_names_in_``, else the attributes' order, checked against ``n_features_in_``).

Its verdict on two answers reads the tree in both orders: ``P(a ≻ b) = (f(a - b) + 1 - f(b - a)) / 2``, which
prefers ``a`` exactly when ``f(a - b) > f(b - a)``. For a pair (``eval``, ``score`` of pairs) each answer's
value is its probability of being the better one, ``P(chosen ≻ rejected)`` and its complement; for best-of-N
rows (``rank``, the suites) each answer's value is its mean ``P(answer ≻ other)`` over the other answers. No
one scalar a response reproduces the verdict: the tree splits on differences of several attributes at
thresholds, so whether ``a`` beats ``b`` depends on the two together, not on a score each has alone (and three
answers can beat each other in a circle).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.errors import RMKitError
from rmkit.kinds.base import Checkpoint, Raw, Reading
from rmkit.kinds.rated import RatedKind

TREE_FILE = "decision_tree.pkl"


def load_tree(path: Path, allow_pickle: bool) -> Any:
    """The scikit-learn tree pickled at ``path``: refused without ``allow_pickle`` (unpickling runs code)."""
    if not allow_pickle:
        raise RMKitError(
            f"'{path}' is the Decision-Tree RM's pickled scikit-learn tree; rmkit unpickles it only with "
            "--allow-pickle (allow_pickle=True in Python), since unpickling runs code: only from a source you trust"
        )
    try:
        import sklearn  # noqa: F401  (the pickle's classes are scikit-learn's)
    except ImportError:
        raise RMKitError(
            f"'{path}' is a scikit-learn tree, and scikit-learn is not installed: pip install 'rmkit[tree]'"
        ) from None
    with path.open("rb") as f:
        tree = pickle.load(f)  # noqa: S301 (allowed by the caller's --allow-pickle)
    if not hasattr(tree, "predict_proba") or not hasattr(tree, "n_features_in_"):
        raise RMKitError(f"'{path}' holds a {type(tree).__name__}, not a fitted scikit-learn classifier")
    return tree


class TreeVerdict:
    """A Decision-Tree RM's tree over its model's ``attributes`` (module docstring)."""

    def __init__(self, tree: Any, attributes: list[str], source: Path):
        names = getattr(tree, "feature_names_in_", None)
        self.names = None if names is None else [str(n) for n in names]
        if self.names is not None:
            unknown = [n for n in self.names if n not in attributes]
            if unknown:
                raise RMKitError(
                    f"'{source}': the tree's features {unknown} are not the model's {attributes}"
                )
            self.order = [attributes.index(n) for n in self.names]
        elif tree.n_features_in_ == len(attributes):
            self.order = list(range(len(attributes)))
        else:
            raise RMKitError(
                f"'{source}': the tree reads {tree.n_features_in_} features, the model gives {len(attributes)}"
            )
        classes = [int(c) for c in tree.classes_]
        if 1 not in classes:
            raise RMKitError(f"'{source}': the tree has no class 1 ('the first answer is better'): {classes}")
        self.tree, self.column = tree, classes.index(1)

    def _first_better(self, differences: np.ndarray) -> np.ndarray:
        """The tree's probability that the first answer is better, for each row of ``differences``."""
        x: Any = differences[:, self.order]
        if self.names is not None:
            import pandas as pd

            x = pd.DataFrame(x, columns=self.names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.tree.predict_proba(x)[:, self.column]

    def preferences(self, attributes: np.ndarray) -> np.ndarray:
        """``P[i, j]``: answer ``i`` better than answer ``j`` (N, N), the tree read in both orders, from the
        answers' attribute vectors (N, K); the diagonal is 0.5."""
        n = len(attributes)
        i, j = np.triu_indices(n, 1)
        d = attributes[i] - attributes[j]
        f = self._first_better(np.concatenate([d, -d])) if len(d) else np.zeros(0)
        p = np.full((n, n), 0.5)
        p[i, j] = (f[: len(d)] + 1 - f[len(d) :]) / 2
        p[j, i] = 1 - p[i, j]
        return p


class TreeKind(RatedKind):
    """A Decision-Tree RM: a rated RM with ``decision_tree.pkl`` beside it (module docstring)."""

    name = "decision-tree"

    def recognises(self, checkpoint: Checkpoint) -> bool:
        return (Path(checkpoint.path) / TREE_FILE).is_file()

    def holds(self, path: str | Path, reading: Reading) -> bool:
        return False  # rated data stays the rated kind's, whose evaluation judges these models too

    def load(self, checkpoint: Checkpoint, dtype: Any, device: Any) -> Any:
        source = Path(checkpoint.path) / TREE_FILE
        tree = load_tree(source, bool(checkpoint.options.get("allow_pickle")))  # refused before weights load
        model = super().load(checkpoint, dtype, device)
        if not model.attributes:
            raise RMKitError(
                f"'{checkpoint.path}' has {TREE_FILE} but its head gives one score, not attributes"
            )
        model.tree = TreeVerdict(tree, list(model.attributes), source)
        return model

    def owns(self, model: Any) -> bool:
        return RatedKind.owns(self, model) and getattr(model, "tree", None) is not None

    def convertible(self, model: Any) -> str | None:
        return (
            f"the Decision-Tree RM (its attributes' head with a bias, and {TREE_FILE}) has no standard "
            "layout to write: score, rank, eval and serve read the original checkpoint directly"
        )

    def values(self, model: Any, raw: Raw) -> list[float]:
        """A response's score (the attributes' weighted sum); for several answers to one prompt, each one's
        mean probability, by the tree in both orders, of being better than each other answer."""
        if len(raw) < 2:
            return super().values(model, raw)
        p = model.tree.preferences(np.asarray([outputs[1:] for outputs in raw], dtype=float))
        return [float((row.sum() - 0.5) / (len(raw) - 1)) for row in p]
