"""The work directory of a fine-tuning run and the atomic hand-over of its model.

Layout (default ``OUT_DIR.partial/`` beside the output)::

    run.json                 the settings the checkpoints belong to (a rerun with other settings is refused)
    checkpoints/checkpoint-N the trainer's checkpoints (model, optimizer, scheduler, RNG states, state)
    model/                   the finished model, staged; renamed to OUT_DIR only once it is complete

A kill at any point leaves OUT_DIR as it was (absent, or the previous model) and the last complete
checkpoint resumable: running the same command again continues from it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from ..errors import InputError
from ..fsutil import atomic_write_json, fsync_dir

RUN_FILE = "run.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def default_work_dir(out_dir: Path) -> Path:
    return out_dir.parent / f"{out_dir.name}.partial"


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"output path {str(out_dir)!r} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise InputError(f"output directory {str(out_dir)!r} exists and is not empty; pass --overwrite "
                             "(overwrite=True) to replace it once the new model is ready")
    if out_dir.parent.exists() and not out_dir.parent.is_dir():
        raise InputError(f"the parent of the output directory, {str(out_dir.parent)!r}, is not a directory")


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def prepare(work_dir: Path, settings: dict, *, restart: bool = False) -> None:
    """Create ``work_dir`` for ``settings``, or check that the run already in it has the same settings."""
    run_file = work_dir / RUN_FILE
    key = settings_key(settings)
    if work_dir.exists() and restart:
        shutil.rmtree(work_dir)
    if run_file.is_file():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("key") != key:
            changed = sorted(k for k in set(settings) | set(old.get("settings", {}))
                             if settings.get(k) != old.get("settings", {}).get(k))
            raise InputError(f"work directory {str(work_dir)!r} holds checkpoints of a run with other settings "
                             f"(changed: {', '.join(changed) or 'unknown'}); pass --restart (restart=True) to "
                             "discard them, or use another --work-dir")
        return
    if work_dir.exists() and any(work_dir.iterdir()):
        raise InputError(f"work directory {str(work_dir)!r} exists, is not empty and is not an embedkit "
                         "fine-tuning run; remove it or pass another --work-dir")
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_file, {"key": key, "settings": settings})


def _complete(ckpt: Path) -> bool:
    """The trainer writes ``trainer_state.json`` last: a checkpoint without a parseable one was cut short."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return True


def last_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones (a kill while saving) are removed."""
    if not ckpt_root.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in ckpt_root.iterdir()
                    if p.is_dir() and (m := _CKPT.match(p.name))), reverse=True)
    best = None
    for _, p in found:
        if _complete(p):
            best = best or p
        elif best is None:
            shutil.rmtree(p, ignore_errors=True)
    return best


def finished_state(ckpt: Path | None):
    """The trainer state of ``ckpt`` if that checkpoint ends the run (its step reached the planned
    ``max_steps``), else ``None``. Resuming such a checkpoint would make the trainer take one more step."""
    if ckpt is None:
        return None
    from types import SimpleNamespace

    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    if not state.get("max_steps") or state.get("global_step", 0) < state["max_steps"]:
        return None
    return SimpleNamespace(global_step=state["global_step"], best_metric=state.get("best_metric"),
                           best_model_checkpoint=state.get("best_model_checkpoint"),
                           log_history=state.get("log_history", []))


def publish(staged: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Rename the finished model ``staged`` to ``out_dir`` (same file system). An existing non-empty
    ``out_dir`` is replaced only with ``overwrite``; it is moved aside first and removed after."""
    old = None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        elif not overwrite:
            raise InputError(f"output directory {str(out_dir)!r} appeared during training and is not empty; "
                             f"the model is left in {str(staged)!r}")
        else:
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
    os.replace(staged, out_dir)
    fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
