"""Rebuild an index's :class:`~embedkit.querypath.QueryPath` from its manifest and files."""

from __future__ import annotations

from pathlib import Path

from ..errors import IndexFormatError
from ..querypath import QueryPath, check_encoder
from ..reducers import Reducer

CALIBRATION_FILE = "calibration.json"


def query_path_from_manifest(gen: Path, manifest: dict, *, encoder=None, model: str | None = None,
                             runtime: str = "torch", device: str | None = None) -> QueryPath:
    cfg = dict(manifest["encoder"])
    if model is not None:
        cfg["model"] = model
    if encoder is not None:
        check_encoder(encoder, cfg)
    reducer = Reducer.load(gen)
    if reducer.spec != manifest["reducer"]["spec"]:
        raise IndexFormatError(f"reducer in {gen} is {reducer.spec}, manifest says {manifest['reducer']['spec']}")
    normalizer = None
    norm = manifest.get("normalize", "none")
    if norm not in (None, "none"):
        from ..textnorm import TextNormalizer

        normalizer = TextNormalizer(norm)
    from ..textsplit import PassageSplitter

    qp = QueryPath(encoder, reducer, manifest["metric"], encoder_config=cfg, normalizer=normalizer,
                   runtime=runtime, device=device, splitter=PassageSplitter.from_manifest(manifest.get("passages")))
    qp.calibration = calibration_from_manifest(gen, manifest, qp)
    return qp


def calibration_from_manifest(gen: Path, manifest: dict, qp: QueryPath):
    """The generation's calibration (a Calibrator checked against ``qp``), or None."""
    if not manifest.get("calibration"):
        return None
    from ..calibration import Calibrator

    cal = Calibrator.load(gen / CALIBRATION_FILE)
    cal.check_compatible(qp.identity(), where=f"the index in {gen.parent}")
    return cal
