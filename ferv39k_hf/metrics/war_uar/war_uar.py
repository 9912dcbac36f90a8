"""WAR and UAR for FERV39k, overall and by class, scene and scenario: an ``evaluate`` metric.

Load it by path, offline: ``evaluate.load(ferv39k_hf.metrics.WAR_UAR)``. The
numbers come from ``ferv39k_hf.metrics.scoring``, so the package must be
installed wherever this module runs; that keeps one implementation of the
metric and one copy of the dataset's facts.
"""

import datasets
import evaluate

from ferv39k_hf.metrics.comparison import compare as compare_predictions
from ferv39k_hf.metrics.scoring import NO_SCENE
from ferv39k_hf.metrics.scoring import ScoringError
from ferv39k_hf.metrics.scoring import scene_column
from ferv39k_hf.metrics.scoring import score
from ferv39k_hf.taxonomy import CITATION
from ferv39k_hf.taxonomy import LABEL_ORDERS

_DESCRIPTION = """\
FERV39k is scored with WAR (weighted average recall: plain accuracy over the
test clips) and UAR (unweighted average recall: the mean of the per-class
recalls, over the classes present in the references; all 7 on the official
test set). This metric also returns per-class recall and support, the 7x7
confusion matrix (rows are references, columns predictions) and, given each
example's scene, WAR and UAR per scene and per scenario. Optional seeded
percentile-bootstrap intervals help read the small per-scene test sets.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids, 0..6.
    references (`list` of `int`): true class ids, 0..6, one per prediction.
    scenes (`list` of `str` or `int`, optional): each example's scene name (e.g. "Crime"), or its
        id in the dataset's `scene` ClassLabel. Adds `per_scene` and `per_scenario`. An input like
        predictions: give it to `add_batch`/`add` with each batch (it then survives distributed
        evaluation), or to `compute` with the predictions, or to a final `compute()` in the order
        the examples were added.
    label_order (`str`, optional): "alphabetical" (default) or "dfew": the words the ids stand for.
        Defaults to the config name given to `evaluate.load` when that is a label order.
    class_words (`list` of `str`, optional): the 7 class words in id order, e.g. a model's id2label.
    bootstrap (`int`, optional): number of bootstrap resamples for 95% intervals; 0 (default) is off.
    seed (`int`, optional): seed of the bootstrap, 0 by default.
    confidence (`float`, optional): interval coverage, 0.95 by default.
Returns:
    war (`float`), uar (`float`): fractions in [0, 1].
    per_class_recall (`dict`): class word -> recall, None for a class absent from the references.
    support (`dict`): class word -> number of references of that class.
    confusion_matrix (`list` of `list` of `int`): 7x7 counts, rows references, columns predictions.
    class_words (`list`): the word of each id; uar_classes (`int`): classes UAR averages over.
    war_ci, uar_ci (`tuple`): (low, high), only with `bootstrap` > 0.
    per_scene, per_scenario (`dict`): name -> {war, uar, support (examples), uar_classes[, war_ci, uar_ci]},
        only with `scenes`.
Examples:
    >>> import evaluate
    >>> import ferv39k_hf
    >>> war_uar = evaluate.load(ferv39k_hf.metrics.WAR_UAR)
    >>> result = war_uar.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    >>> round(result["war"], 4), round(result["uar"], 4)
    (0.75, 0.8333)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WarUar(evaluate.Metric):
    """WAR, UAR and their breakdowns for FERV39k."""

    def _info(self):
        if self.config_name not in ("default", *LABEL_ORDERS):
            raise ScoringError(
                f"unknown config {self.config_name!r}: use 'default' or a label order {sorted(LABEL_ORDERS)}"
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # scenes is optional: the add/add_batch/compute overrides below store NO_SCENE when not given
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                    "scenes": datasets.Value("string"),
                }
            ),
            format="numpy",
            reference_urls=["https://arxiv.org/abs/2203.09463"],
        )

    # evaluate (0.4.0 to 0.4.6) requires every feature in every add/add_batch and in compute with
    # predictions, and takes a feature passed to a bare compute() for a new batch. These overrides
    # make scenes optional: each example's scene is stored as its name, or as NO_SCENE ("") when not
    # given (evaluate refuses None in a string feature).

    def add_batch(self, *, predictions=None, references=None, scenes=None, **kwargs):
        """Add a batch of predictions and references, and optionally each example's scene."""
        count = len(predictions if predictions is not None else references if references is not None else [])
        super().add_batch(
            predictions=predictions, references=references, scenes=scene_column(scenes, count), **kwargs
        )

    def add(self, *, prediction=None, reference=None, scenes=None, **kwargs):
        """Add one prediction and reference, and optionally the example's scene (a name or an id)."""
        [scene] = scene_column(None if scenes is None else [scenes], 1)
        super().add(prediction=prediction, reference=reference, scenes=scene, **kwargs)

    def compute(self, *, predictions=None, references=None, scenes=None, **kwargs):
        """Score what was added (and ``predictions``/``references`` if given); see the module's inputs."""
        if predictions is None and references is None:
            # scenes for the examples added earlier, in the order they were added
            return super().compute(compute_time_scenes=scenes, **kwargs)
        return super().compute(predictions=predictions, references=references, scenes=scenes, **kwargs)

    def compare(self, *, predictions_a, predictions_b, references, **kwargs):
        """Paired comparison of two models on the same clips: ``ferv39k_hf.metrics.compare(...).to_dict()``."""
        return compare_predictions(
            predictions_a=predictions_a, predictions_b=predictions_b, references=references, **kwargs
        ).to_dict()

    def _compute(
        self,
        predictions,
        references,
        scenes=None,
        compute_time_scenes=None,
        label_order=None,
        class_words=None,
        bootstrap=0,
        seed=0,
        confidence=0.95,
    ):
        if label_order is None and class_words is None and self.config_name in LABEL_ORDERS:
            label_order = self.config_name
        return score(
            predictions=predictions,
            references=references,
            scenes=stored_or_given_scenes(scenes, compute_time_scenes),
            label_order=label_order,
            class_words=class_words,
            bootstrap=bootstrap,
            seed=seed,
            confidence=confidence,
        )


def stored_or_given_scenes(stored, given):
    """The scenes stored with the examples, or those given to the final compute(), never a mix."""
    stored = [] if stored is None else list(stored)
    missing = sum(scene == NO_SCENE for scene in stored)
    if missing == len(stored):
        return given
    if missing:
        raise ScoringError(
            f"{missing} of {len(stored)} examples were added without scenes: give scenes with every batch or with none"
        )
    if given is not None:
        raise ScoringError("scenes were given both with the batches and to compute(): give them once")
    return stored
