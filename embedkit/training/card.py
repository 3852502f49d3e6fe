"""The training card written beside a fine-tuned model: ``training_card.json`` and a line in its README.md."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..fsutil import atomic_write_bytes, atomic_write_json
from ..provenance import model_fingerprint, versions

CARD_NAME = "training_card.json"
CARD_FORMAT = "embedkit-training-card"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_sha256(model_dir: str | Path) -> dict | None:
    """sha256 of each weight file in a local model directory (``{relative path: hex}``); ``None`` for a
    hub id. Exported graphs (onnx/, openvino/) are not weights of the model itself."""
    p = Path(model_dir)
    if not p.is_dir():
        return None
    out = {}
    for f in sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in WEIGHT_SUFFIXES):
        rel = f.relative_to(p)
        if rel.parts[0] in ("onnx", "openvino") or rel.name.startswith(("optimizer", "scheduler", "rng_state",
                                                                        "training_args")):
            continue
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[rel.as_posix()] = h.hexdigest()
    return out


def base_identity(model: str) -> dict:
    """What the base model was: its path, embedkit's cheap fingerprint and the sha256 of its weights."""
    weights = weights_sha256(model)
    combined = None
    if weights:
        h = hashlib.sha256()
        for rel, digest in weights.items():
            h.update(f"{rel}\0{digest}\n".encode())
        combined = h.hexdigest()
    return {"path": str(model), "fingerprint": model_fingerprint(model), "weights_sha256": weights,
            "sha256": combined}


def library_versions() -> dict:
    from importlib import metadata

    out = versions()
    for dist in ("datasets", "accelerate"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def readme_line(card: dict) -> str:
    v = card["valid"]
    base_name = Path(card["base_model"]["path"]).name
    return (f"Fine-tuned from {base_name} by `embedkit finetune` ({card['loss']}, {card['steps']} steps, "
            f"{card['data']['train']['n_pairs']} training pairs): valid {v['metric']} "
            f"{v['base'] * 100:.2f} -> {v['best'] * 100:.2f} (best at step {v['best_step']}).")


def write_card(model_dir: str | Path, card: dict) -> None:
    """Write ``training_card.json`` and prepend the summary line to the model's README.md (the one
    sentence-transformers writes is kept below it)."""
    model_dir = Path(model_dir)
    atomic_write_json(model_dir / CARD_NAME, card)
    readme = model_dir / "README.md"
    old = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    line = readme_line(card)
    front, body = "", old
    if old.startswith("---\n") and "\n---\n" in old[4:]:  # keep YAML front matter first (model hubs read it)
        end = old.index("\n---\n", 4) + 5
        front, body = old[:end] + "\n", old[end:]
    text = (f"{front}# embedkit fine-tuned model\n\n{line}\n\nThe training card is `{CARD_NAME}` beside this "
            "file.\n" + (f"\n{body.lstrip()}" if body.strip() else ""))
    atomic_write_bytes(readme, text.encode("utf-8"))
