"""Checkpoints of long runs: torch-serialised dicts, read back with one-line errors.

Search and evaluate each keep their own payload; this module holds what they share: the
envelope (format name, version, resolved config), ``CheckpointFormat`` (one command's
envelope and the settings its resume may change) and the refusal to resume a run whose
settings changed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import HbaError

# Settings that never change what a run computes: every command's resume may change them.
SETTINGS_WITHOUT_EFFECT = frozenset({"device", "data_dir", "compile"})


def checkpoint_bytes(fmt: str, version: int, config: dict[str, Any], **payload: Any) -> bytes:
    """The checkpoint serialised now, so training can move on while the bytes are written."""
    buffer = io.BytesIO()
    torch.save({"format": fmt, "version": version, "config": config, **payload}, buffer)
    return buffer.getvalue()


def config_differences(saved: dict[str, Any], requested: dict[str, Any],
                       ignored: frozenset[str] = frozenset()) -> list[str]:
    """'field: saved → requested' for every setting outside ``ignored`` that differs.

    Sizes are compared as the run uses them: train_size/val_size None (the dataset's) equals
    the dataset's size typed out (``presets.effective_sizes``)."""
    from .presets import effective_sizes

    saved, requested = effective_sizes(saved), effective_sizes(requested)
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


@dataclass(frozen=True)
class CheckpointFormat:
    """One command's checkpoints: their envelope, and the settings a resume may change
    (``resume_ignored``; every other difference from the saved config refuses the resume)."""

    name: str                      # the envelope's "format", e.g. "hba-search-checkpoint"
    version: int
    what: str                      # in messages: "an hba {what} checkpoint"
    resume_ignored: frozenset[str] = SETTINGS_WITHOUT_EFFECT

    def serialise(self, config: dict[str, Any], **payload: Any) -> bytes:
        return checkpoint_bytes(self.name, self.version, config, **payload)

    def read(self, path: Path, config: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint at ``path`` if it may resume a run with ``config``; else HbaError
        (``read_checkpoint``)."""
        return read_checkpoint(path, self.name, self.version, config, self.resume_ignored,
                               self.what)


# The searched network (Algorithm 1's θ̂φ(λ)): a plain state dict, so one line loads it into
# the ``--model`` it was made for (see the README).

def network_bytes(model: torch.nn.Module) -> bytes:
    """``model``'s state dict, on the CPU, serialised."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_network_weights(model: torch.nn.Module, path: Path, model_name: str) -> None:
    """Load a state dict file into ``model``; HbaError (one line) when the file is unreadable,
    not a state dict, or made for another network."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise HbaError(f"cannot read --init-weights {path}: {exc.strerror or exc}") from None
    except Exception:
        raise HbaError(f"cannot read --init-weights {path}: the file is damaged or not a "
                       f"state dict saved by torch.save") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise HbaError(f"--init-weights {path} is not a state dict (a dict of tensors)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
                 if unexpected else f"{mismatched[0]} has shape {tuple(state[mismatched[0]].shape)}"
                 f", {model_name} needs {tuple(own[mismatched[0]].shape)}")
        raise HbaError(f"--init-weights {path} does not fit {model_name} "
                       f"({len(missing)} missing, {len(unexpected)} unexpected, "
                       f"{len(mismatched)} of another shape; e.g. {first})")
    model.load_state_dict(state)
