"""Calibrated similarity for an index: fit score → P(similar) on labelled pairs, commit it with the
query path (``calibration.json``), refuse it when the query path changes."""

from __future__ import annotations

import shutil

from . import directory as dirs


def calibrate_index(idx, pairs_path, *, method: str = "isotonic", objective: str = "probability",
                    positive_label: float | None = None) -> dict:
    from ..calibration import Calibrator, read_labelled_pairs
    from .querypaths import CALIBRATION_FILE

    pairs = read_labelled_pairs(pairs_path)
    scores = idx.query_path.score_pairs(pairs.sentences1, pairs.sentences2)
    cal = Calibrator(method, objective, positive_label).fit(scores, pairs.scores,
                                                            query_path=idx.query_path.identity())
    summary = dict(cal.describe(), pairs_file=str(pairs_path), skipped_rows=dict(pairs.skipped))
    build_id = idx.manifest.get("build_id")
    tmp = dirs.new_tmp(idx.directory)
    try:
        with idx._lock, dirs.writer_lock(idx.directory):
            idx._reload_locked(build_id)
            dirs.link_files(idx.generation, tmp, skip=(dirs.MANIFEST, CALIBRATION_FILE))
            cal.save(tmp / CALIBRATION_FILE)
            idx._publish(tmp, idx.store, next_iid=int(idx.manifest["next_iid"]),
                          calibration={k: summary[k] for k in ("method", "objective", "threshold", "n_pairs",
                                                               "n_positive", "pairs_file")})
            idx.query_path.calibration = cal
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
