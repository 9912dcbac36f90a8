"""A checkpoint's model card: base model, dataset and label order, clip protocol, WAR/UAR overall and per
scenario (a table, and ``model-index`` metadata with the Hub's metric types), and what the faces in the training
data mean for users."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from ferv39k_hf.taxonomy import CITATION, HOMEPAGE, LICENSE_SUMMARY, SCENARIOS, personal_data

__all__ = ["render_model_card"]


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


# The Hub's metric ids (hf.co/metrics): WAR is accuracy over the clips; UAR is the
# unweighted mean of the per-class recalls, i.e. recall with average="macro".
_METRICS = {"war": ("accuracy", "WAR", None), "uar": ("recall", "UAR", {"average": "macro"})}


def _eval_results(results: Mapping[str, Any], dataset_name: str, config: str, split: str) -> List[Any]:
    """``model-index`` rows as huggingface_hub EvalResults: WAR and UAR overall, then per scenario (percent)."""
    from huggingface_hub import EvalResult

    if results.get("war") is None:
        return []
    common = dict(task_type="video-classification", task_name="Video facial expression recognition",
                  dataset_type="ferv39k", dataset_name=dataset_name, dataset_config=config, dataset_split=split)
    subsets = [("", results)] + [(f" ({scenario})", results["per_scenario"][scenario]) for scenario in SCENARIOS
                                 if results.get("per_scenario", {}).get(scenario)]
    return [EvalResult(metric_type=metric_type, metric_name=name + suffix, metric_args=args,
                       metric_value=round(100 * score[key], 2), **common)
            for suffix, score in subsets for key, (metric_type, name, args) in _METRICS.items()]


def _clips(entry: Mapping[str, Any]) -> Any:
    # score() gives the overall support per class word, a scenario's as one count
    support = entry.get("support")
    return sum(support.values()) if isinstance(support, Mapping) else ("-" if support is None else support)


def _results_table(results: Mapping[str, Any]) -> str:
    lines = ["| subset | clips | WAR (%) | UAR (%) |", "|---|---|---|---|",
             f"| all test clips | {_clips(results)} | {_percent(results['war'])} | "
             f"{_percent(results['uar'])} |"]
    for scenario in SCENARIOS:
        score = results.get("per_scenario", {}).get(scenario)
        if score:
            lines.append(f"| {scenario} | {_clips(score)} | {_percent(score['war'])} | "
                         f"{_percent(score['uar'])} |")
    return "\n".join(lines)


def _protocol_lines(protocol: Mapping[str, Any], dataset_config: str) -> str:
    """The clip protocol as the card's bullet list."""
    side, sampling = protocol.get("image_size"), protocol.get("sampling")
    if sampling == "window" and protocol.get("window_stride", 1) != 1:
        sampling = f"{sampling} (frame step {protocol['window_stride']})"
    return "\n".join([
        f"- {protocol.get('num_frames')} frames per clip from the {dataset_config} frames, **{sampling}** sampling"
        " (training: random positions; evaluation: fixed positions); clips shorter than that are padded by"
        " repeating their last frame.",
        f"- Input size {side}x{side}: evaluation resizes the short side to {side} and takes the centre crop.",
        f"- Pixels scaled to [0, 1], normalised with mean {protocol.get('mean')} and std {protocol.get('std')}.",
        f"- Test: {protocol.get('test_views', '1x1')} views per clip (temporal x spatial), softmax-averaged per clip"
        " before scoring.",
    ])


def _dataset_facts(dataset: str, fold: Optional[int], eval_split: str):
    """(title, homepage, terms, citation, (what it was trained on, what it was scored on)) of the dataset."""
    if dataset == "ferv39k":
        return ("FERV39k", f"(Wang et al., CVPR 2022) {HOMEPAGE}", LICENSE_SUMMARY, CITATION,
                ("official train split", f"its `{eval_split}` split"))
    from ferv39k_hf.dfer_taxonomy import facts

    info = facts(dataset)
    return (info.title, info.homepage, info.licence, info.citation,
            (f"the train set of official fold {fold}", f"fold {fold}'s test set"))


def render_model_card(
    *,
    model_name: str,
    base_model: Optional[str],
    label_names: Sequence[str],
    label_order: str,
    dataset_config: str,
    protocol: Mapping[str, Any],
    results: Mapping[str, Any],
    eval_split: str = "test",
    training: Optional[Mapping[str, Any]] = None,
    dataset: str = "ferv39k",
    fold: Optional[int] = None,
) -> str:
    """The README.md of a FERV39k (or DFEW, MAFW) checkpoint: metadata the Hub reads, then what a user needs to know.

    Args:
        model_name: the checkpoint's name (``model-index`` name and the title).
        base_model: the Hub id or local folder it was fine-tuned from; None if trained from scratch.
            Only a Hub id goes into the metadata.
        label_names: the 7 class words in the checkpoint's ``id2label`` order.
        label_order: that order's name (``alphabetical`` or ``dfew``).
        dataset_config: ``faces``, ``scenes`` or ``videos``.
        protocol: the clip protocol: ``num_frames``, ``image_size``, ``sampling``, ``test_views``
            (temporal x spatial, e.g. ``"2x2"``), ``mean``, ``std`` and optionally ``window_stride``.
        results: ``war``, ``uar`` (fractions), ``support`` and ``per_scenario``
            ``{scenario: {war, uar, support}}``, as :func:`ferv39k_hf.metrics.score` returns them;
            ``war`` None for a checkpoint not scored (no ``model-index`` then).
        eval_split: the split the results are on.
        training: hyperparameters to list, name -> value.
        dataset: ``ferv39k``, ``dfew`` or ``mafw``: whose title, terms and citation the card states.
        fold: for DFEW and MAFW, the official fold (1..5) trained on its train set and scored on its test set.

    Returns:
        The card as text: YAML front matter (licence, pipeline tag, base model and ``model-index`` with
        WAR as ``accuracy`` and UAR as ``recall`` with ``average: macro``, overall and per scenario, in
        percent), then the labels, the clip protocol, the results table, training, terms, personal data
        and citation. ``huggingface_hub.ModelCard(text)`` parses it.

    Example:
        >>> card = render_model_card(model_name="videomae-ferv39k", base_model="MCG-NJU/videomae-base",
        ...     label_names=label_names("alphabetical"), label_order="alphabetical", dataset_config="faces",
        ...     protocol=model.config.ferv39k, results=score(...))  # doctest: +SKIP
        >>> Path("videomae-ferv39k/README.md").write_text(card)  # doctest: +SKIP
    """
    from huggingface_hub import ModelCardData

    title, homepage, terms, citation, where = _dataset_facts(dataset, fold, eval_split)
    dataset_name = f"{title} ({dataset_config})" + (f" fold {fold}" if fold else "")
    local_base = bool(base_model) and os.path.isdir(base_model)
    data = ModelCardData(
        model_name=model_name,
        base_model=None if local_base or not base_model else base_model,  # metadata takes Hub ids only
        license="other",
        library_name="transformers",
        pipeline_tag="video-classification",
        tags=["video-classification", "facial-expression-recognition", dataset],
        metrics=["accuracy", "recall"],
        eval_results=_eval_results(results, dataset_name, dataset_config, eval_split) or None,
    )
    labels = "\n".join(f"| {i} | {name} |" for i, name in enumerate(label_names))
    if not base_model:
        base = "none: trained from scratch"
    elif local_base:
        base = f"`{Path(base_model).name}` (a local checkpoint)"
    else:
        base = f"[{base_model}](https://huggingface.co/{base_model})"
    hyper = "\n".join(f"- {key}: {value}" for key, value in (training or {}).items())
    frames = protocol.get("num_frames")
    return f"""---
{data.to_yaml()}
---

# {model_name}

A video classifier of facial expressions trained on **{title}** ({dataset_config} config,
{where[0]}) and scored on {where[1]}.

- Base model: {base}
- Dataset: {title}, {homepage}. The data is licence-gated and is **not** included in or distributed with
  this checkpoint.

## Labels ({label_order} order)

`config.json`'s `id2label` holds this order; a prediction's index means the class below.

| id | expression |
|---|---|
{labels}

## Clip protocol

{_protocol_lines(protocol, dataset_config)}

The same protocol is written where transformers reads it: `video_preprocessor_config.json` (for
`AutoVideoProcessor`: `num_frames`, resize, crop, mean and std), `preprocessor_config.json` (the image
processor the video-classification pipeline uses without torchvision), each with the whole protocol
under `ferv39k`, and `config.json` (`ferv39k`). transformers picks frames its own way: its video
processor takes the first frame of each of {frames} equal segments and refuses shorter clips, and the
pipeline with an image processor takes the first {frames} frames. To reproduce the scores below, sample
with `ferv39k_hf.VideoClipTransform`, as ferv39k-hf's `examples/predict.py` does.

## Results on {title} `{eval_split}`{f" (fold {fold})" if fold else ""}

WAR is accuracy over the clips; UAR is the mean of the per-class recalls of the classes with test clips. In
the `model-index` metadata WAR is `accuracy` and UAR is `recall` with `average: macro`, in percent as papers
print them.

{_results_table(results)}

## Training

{hyper or "See `training_args.bin` and `all_results.json`."}

## Terms

{terms} Use of this model is subject to the terms of the data it was trained on.

## Personal data

{personal_data(title, len(label_names))}
## Citation

```bibtex
{citation.strip()}
```
"""
