"""collate_clips: a list of transformed rows -> one batch, joined without a copy where the rows share one tensor."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ferv39k_hf.clips import batchmem


def collate_clips(examples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """DataLoader / Trainer collate for rows made by :class:`VideoClipTransform`.

    ``datasets`` hands a transformed batch to the DataLoader split into per-row
    views; when those are the consecutive rows of one tensor (as for any
    ``with_transform`` dataset read in batches, views included), the batch is that
    tensor again instead of a stacked copy, which for 16-frame clips at 224 costs
    10 MB of freshly faulted memory per clip (in a worker, the transform already
    wrote the batch to shared memory). Anything else goes to torch's ``default_collate``.

    In a DataLoader worker the batch is returned as a dict that, once sent, lets the
    worker write a later batch into the same shared memory after the main process
    has freed every tensor over this one (:mod:`ferv39k_hf.clips.batchmem`); it
    arrives in the main process as a plain dict.

    Args:
        examples: the rows of one batch, each a dict of tensors (``pixel_values``
            (T, 3, S, S) float32, ``labels`` () int64, ...) as datasets splits a
            transformed batch.

    Returns:
        A dict with the same keys and a leading batch dimension B:
        ``pixel_values`` (B, T, 3, S, S), ``labels`` (B,).

    Example::

        loader = torch.utils.data.DataLoader(train, batch_size=8, num_workers=4, collate_fn=ferv39k_hf.collate_clips)
        # with transformers: Trainer(..., data_collator=ferv39k_hf.collate_clips)
    """
    batch: Dict[str, Any] = {}
    for key, first in examples[0].items():
        values = [example[key] for example in examples]
        joined = _rows_of_one_tensor(values) if torch.is_tensor(first) else None
        if joined is None and torch.is_tensor(first):
            return torch.utils.data.default_collate(examples)
        batch[key] = joined if joined is not None else torch.utils.data.default_collate(values)
    return batchmem.lease(batch)


def _rows_of_one_tensor(rows: List[torch.Tensor]) -> Optional[torch.Tensor]:
    """A tensor over the memory that holds ``rows`` back to back, when that is all its storage; else None.

    Rows may be laid out in any dense order (the channels-last clips of
    :class:`VideoClipTransform`); the joined tensor keeps their strides.
    """
    first = rows[0]
    storage = first.untyped_storage()
    row_numel = first.numel()
    row_bytes = row_numel * first.element_size()
    if first.storage_offset() != 0 or storage.nbytes() != row_bytes * len(rows) or not _dense(first):
        return None
    for position, row in enumerate(rows):
        same_storage = row.untyped_storage().data_ptr() == storage.data_ptr()
        if not (same_storage and row.shape == first.shape and row.stride() == first.stride()
                and row.dtype == first.dtype and row.storage_offset() == position * row_numel):
            return None
    return torch.empty(0, dtype=first.dtype).set_(storage, 0, (len(rows),) + tuple(first.shape),
                                                  (row_numel,) + tuple(first.stride()))


def _dense(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s elements fill exactly ``numel`` consecutive elements of memory, in some order."""
    order = sorted(range(tensor.dim()), key=lambda d: tensor.stride(d), reverse=True)
    return tensor.permute(order).is_contiguous()
