"""Optuna for ``tune``: its import (the ``tune`` extra), the storage, the study and its dead trials.

* :func:`open_storage`: the default is Optuna's journal file in the output folder (``tune.journal``):
  nothing to install or serve, and a killed tune resumes from it. ``--storage`` takes any Optuna RDB
  URL (``sqlite:///path.db``, ``postgresql://...``) or a journal file path on a filesystem several
  machines share; each process started on it (one per GPU, one per SLURM job) takes its own trials.
* Trials of a process that died: with a file storage (journal or SQLite) each running trial holds a
  claim (:mod:`mmix_applied.engine.claims`) in ``<storage file>.claims/``; :func:`recover` fails
  a running trial whose claim nobody holds and enqueues its setting again, so the retry resumes
  the dead trial's runs from their last checkpoints. A server database uses Optuna's heartbeat
  instead (``RDBStorage(heartbeat_interval=...)`` with ``RetryHeartbeatStaleTrialCallback``).
* :func:`open_study` stores what the study was made for (recipe, config, seeds, space) as study user
  attributes and refuses a study made for something else, naming what differs.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmix_applied.engine.claims import claim, flat
from mmix_applied.engine.config import ConfigError
from mmix_applied.engine.rundir import RunLock

try:  # the `tune` extra; the package imports without it
    import optuna
    from optuna.trial import TrialState
except ImportError:  # pragma: no cover - exercised where optuna is absent
    optuna = None
    TrialState = None

__all__ = ["INSTALL_HINT", "MADE_FOR", "StorageError", "StudyStorage", "TrialState", "open_storage", "open_study",
           "optuna", "recover", "require_optuna", "take_trial_claim", "trial_claim"]

INSTALL_HINT = "pip install 'mmix-applied[tune]'"
DEFAULT_JOURNAL = "tune.journal"
MADE_FOR = "mmix:made_for"  # the study user attribute saying what the study was made for
HEARTBEAT_S, GRACE_S = 60, 300
_UNCLAIMED_GRACE_S = 120.0  # a running trial whose claim was never taken (its process died before) is this old


class StorageError(ConfigError):
    """A study storage that cannot be opened, or a study that holds something else's trials."""


def require_optuna() -> Any:
    """The ``optuna`` module.

    Raises:
        ImportError: Optuna is not installed (the message names the extra to install).
    """
    if optuna is None:
        raise ImportError(f"mmix-applied tune needs Optuna, which is not installed; {INSTALL_HINT}")
    return optuna


@dataclasses.dataclass
class StudyStorage:
    """An opened storage: the Optuna storage object, how to name it, and where trials hold their claims.

    Attributes:
        storage: The ``optuna.storages`` object.
        url: The URL or journal path (a password in a URL is hidden).
        claims: The folder of the running trials' claims (file storages), or ``None`` (heartbeat).
    """

    storage: Any
    url: str
    claims: Path | None


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(spec: str | None, out_dir: str | os.PathLike) -> StudyStorage:
    """Open ``spec`` (an RDB URL or a journal file path; ``None``: ``out_dir/tune.journal``).

    Raises:
        StorageError: The storage cannot be opened (the message says why and what is accepted).
    """
    require_optuna()
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    try:  # Optuna >= 5 (the same callback was RetryFailedTrialCallback / failed_trial_callback before)
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
        retry = "heartbeat_stale_trial_callback"
    except ImportError:  # pragma: no cover - older Optuna
        from optuna.storages import RetryFailedTrialCallback as Retry
        retry = "failed_trial_callback"

    accepted = ("give an Optuna RDB URL (sqlite:///path/tune.db, postgresql://user@host/db, mysql://...) or the "
                "path of a journal file on a filesystem every process can reach")
    if spec is None or "://" not in spec:
        path = Path(out_dir) / DEFAULT_JOURNAL if spec is None else Path(spec)
        if path.is_dir():
            raise StorageError(f"--storage {str(path)!r} is a folder; {accepted}")
        if spec is not None and not path.parent.is_dir():
            raise StorageError(f"--storage {str(path)!r}: its folder {str(path.parent)!r} does not exist; {accepted}")
        try:
            _check_journal(path)
            storage = JournalStorage(JournalFileBackend(str(path)))
            storage.get_all_studies()
        except Exception as err:  # a file that is no journal, an unreadable folder
            raise StorageError(f"cannot open --storage {str(path)!r} as an Optuna journal file: "
                               f"{type(err).__name__}: {err}; {accepted}") from None
        return StudyStorage(storage, str(path), path.with_name(path.name + ".claims"))
    sqlite = spec.startswith("sqlite:///")
    try:
        with warnings.catch_warnings():  # the heartbeat's arguments are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if sqlite:  # one file on this filesystem: claims beside it, as for a journal
                storage = RDBStorage(spec, engine_kwargs={"connect_args": {"timeout": 60}})
            else:
                storage = RDBStorage(spec, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **{retry: Retry()})
    except Exception as err:  # a bad URL, an unreachable server, a missing driver
        cause = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StorageError(f"cannot open --storage {_hide_password(spec)!r}: {type(err).__name__}: {cause}; "
                           f"{accepted}") from None
    claims = None
    if sqlite:
        path = Path(spec[len("sqlite:///"):])
        claims = Path(out_dir) / ".trial-claims" if path.name == ":memory:" else path.with_name(path.name + ".claims")
    return StudyStorage(storage, _hide_password(spec), claims)


def _check_journal(path: Path) -> None:
    """A journal's first line is one JSON operation (Optuna's reader forgives a bad last line: it may be being
    written, so a one-line file of something else would only fail at the first write)."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as fh:
            first = fh.readline()
        json.loads(first)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys if old.get(k) != new.get(k)]


def open_study(opened: StudyStorage, name: str, *, direction: str, attrs: Mapping[str, Any], sampler: Any = None,
               pruner: Any = None) -> Any:
    """Create or load study ``name``; refuse one made for another recipe, config, seeds or space.

    ``attrs`` (``recipe``, ``config`` (flat), ``seeds``, ``space``, ``objective``) are stored as one
    study user attribute, ``mmix:made_for`` (one write, so a process opening the study meanwhile never
    sees half of it), on creation and compared on every later open.

    Raises:
        StorageError: The study holds trials of something else (the message names what differs).
    """
    require_optuna()
    try:
        study = optuna.create_study(study_name=name, storage=opened.storage, direction=direction,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    except ValueError as err:  # e.g. a study of that name optimised in the other direction
        raise StorageError(f"study {name!r} in {opened.url!r} cannot be used: {err}; choose another --study") from None
    stored = study.user_attrs.get(MADE_FOR)
    if stored is None:
        if study.trials:
            raise StorageError(f"study {name!r} in {opened.url!r} holds {len(study.trials)} trials that mmix-applied "
                               "tune did not make; choose another --study")
        study.set_user_attr(MADE_FOR, dict(attrs))
        stored = study.user_attrs[MADE_FOR]  # two processes creating it at once: the last write is the study's
    where = f"study {name!r} in {opened.url!r}"
    if stored.get("recipe") != attrs["recipe"]:
        raise StorageError(f"{where} holds trials of the {stored.get('recipe')!r} recipe; this config is "
                           f"{attrs['recipe']!r}. Choose another --study (e.g. --study {name}-{attrs['recipe']})")
    for key, what in (("config", "config"), ("seeds", "seeds"), ("space", "search space"),
                      ("objective", "objective")):
        old, new = stored.get(key), attrs[key]
        if json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
            if isinstance(old, Mapping) and isinstance(new, Mapping):
                diff = "; ".join(_differences(_flat_json(old), _flat_json(new)))
            else:
                diff = f"{old!r} -> {new!r}"
            raise StorageError(f"{where} was made with another {what} ({diff}); its trials would be mixed with "
                               "these. Rerun with the earlier settings to continue it, or choose another --study")
    return study


def _flat_json(tree: Mapping[str, Any]) -> dict[str, str]:
    """Dotted keys to JSON text (lists and numbers compare as written)."""
    return {key: json.dumps(value, sort_keys=True) for key, value in flat(dict(tree)).items()}


def trial_claim(study_name: str, number: int) -> str:
    """The claim name of trial ``number`` of ``study_name`` (any study name gives a plain folder name)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)[:40]
    return f"{safe}-{hashlib.sha1(study_name.encode()).hexdigest()[:6]}-trial{number}"


def take_trial_claim(claims: Path, name: str, *, timeout_s: float = 60.0) -> RunLock:
    """Claim the trial this process was just given: waits while another process's :func:`recover` holds
    the claim for its look (taken and released at once); a trial Optuna hands out has no other holder.

    Raises:
        RuntimeError: The claim stayed held for ``timeout_s`` (another process runs the trial).
    """
    deadline = time.monotonic() + timeout_s
    while (lock := claim(claims, name)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the claim {str(Path(claims) / name)!r} of a trial this process was given stayed "
                               f"held by another process for {timeout_s:g} s")
        time.sleep(0.05)
    return lock


def _age_s(trial: Any) -> float:
    start = trial.datetime_start
    return (datetime.datetime.now() - start).total_seconds() if start is not None else float("inf")


def recover(study: Any, opened: StudyStorage) -> list[int]:
    """Fail the running trials of dead processes and enqueue their settings again; their numbers.

    With a file storage, a running trial whose claim no live process holds (and that was claimed once,
    or started over two minutes ago) is dead. A server database (no claims) relies on Optuna's
    heartbeat: its stale trials are failed and retried by :func:`optuna.storages.fail_stale_trials`.
    """
    if opened.claims is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return []
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lock = claim(opened.claims, trial_claim(study.study_name, trial.number))
        if lock is None:
            continue  # its process is alive
        try:
            now = {t.number: t for t in study.get_trials(deepcopy=False)}[trial.number]
            if now.state != TrialState.RUNNING:
                continue
            if "worker" not in now.user_attrs and _age_s(now) < _UNCLAIMED_GRACE_S:
                continue  # just created: its process has not taken the claim yet
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(dict(now.params), user_attrs={"retry_of": trial.number})
            dead.append(trial.number)
        finally:
            lock.release()
    return dead
