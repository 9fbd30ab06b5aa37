"""Checkpoints of long runs: torch-serialised dicts, read back with one-line errors.

Search and evaluate each keep their own payload; this module holds what they share: the
envelope (format name, version, resolved config) and the refusal to resume a run whose
settings changed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from .errors import HbaError


def checkpoint_bytes(fmt: str, version: int, config: dict[str, Any], **payload: Any) -> bytes:
    """The checkpoint serialised now, so training can move on while the bytes are written."""
    buffer = io.BytesIO()
    torch.save({"format": fmt, "version": version, "config": config, **payload}, buffer)
    return buffer.getvalue()


def config_differences(saved: dict[str, Any], requested: dict[str, Any],
                       ignored: frozenset[str] = frozenset()) -> list[str]:
    """'field: saved → requested' for every setting outside ``ignored`` that differs."""
    keys = sorted((set(saved) | set(requested)) - ignored)
    return [f"{k}: {saved.get(k)!r} → {requested.get(k)!r}"
            for k in keys if saved.get(k) != requested.get(k)]


def read_checkpoint(path: Path, fmt: str, version: int, config: dict[str, Any],
                    ignored: frozenset[str], what: str) -> dict[str, Any]:
    """The checkpoint at ``path``; HbaError when it is unreadable, foreign, of another version,
    or made with other settings than ``config`` (fields in ``ignored`` may change)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise HbaError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except Exception:  # unpickling failed: a damaged or foreign file; only a new run helps
        raise HbaError(f"cannot read checkpoint {path}: the file is damaged or not an hba "
                       f"{what} checkpoint (choose another --run-dir)") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise HbaError(f"{path} is not an hba {what} checkpoint")
    if payload.get("version") != version:
        raise HbaError(f"checkpoint {path} has version {payload.get('version')}, this hba "
                       f"reads version {version}")
    differences = config_differences(payload["config"], config, ignored)
    if differences:
        raise HbaError(f"cannot resume: {path} was made with other settings "
                       f"({'; '.join(differences)}); repeat them or choose another --run-dir")
    return payload
