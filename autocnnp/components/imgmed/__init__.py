"""ImgMed: medical volumes to 2D training slices (thesis 3.3.2).

NIfTI (3D/4D, .nii/.nii.gz) -> slices along an axis (a range or a count around the centre) ->
channel selection -> intensity normalisation -> resize -> augmentation -> .npy/.png/.jpg files
in the ``pairs`` layout that :mod:`autocnnp.components.datasets` reads, with a manifest.

Modules: :mod:`.io` (reading volumes, writing slices atomically), :mod:`.slicing`,
:mod:`.transforms`, :mod:`.augment`, :mod:`.pipeline` (:func:`run_preprocessing`).
"""

from __future__ import annotations

__all__ = ["run_preprocessing"]


def run_preprocessing(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`autocnnp.components.imgmed.pipeline.run_preprocessing`."""
    from autocnnp.components.imgmed.pipeline import run_preprocessing as _run
    return _run(*args, **kwargs)
